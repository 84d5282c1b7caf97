// The safetensors format (8-byte little-endian header length, JSON header, raw data).
// Written here because the npm candidates are unmaintained stubs; the format is ~50 lines.
import { type Tensor, type DType, fromBytes, size, toBytes, formatShape } from '../onnx/tensor.ts';

const TO_DTYPE: Record<string, DType> = {
  F32: 'float32', F64: 'float64', F16: 'float16', I8: 'int8', U8: 'uint8', I16: 'int16', U16: 'uint16',
  I32: 'int32', U32: 'uint32', I64: 'int64', U64: 'uint64', BOOL: 'bool',
};
const FROM_DTYPE = Object.fromEntries(Object.entries(TO_DTYPE).map(([k, v]) => [v, k])) as Record<DType, string>;

export interface SafetensorsFile {
  tensors: Map<string, Tensor>;
  metadata: Record<string, string>;
}

export function parseSafetensors(bytes: Uint8Array, what = 'safetensors data'): SafetensorsFile {
  if (bytes.byteLength < 8) throw new Error(`${what}: ${bytes.byteLength} bytes is too short for a safetensors header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = Number(view.getBigUint64(0, true));
  if (8 + headerLen > bytes.byteLength) throw new Error(`${what}: header claims ${headerLen} bytes but the file has ${bytes.byteLength - 8} after the length field (truncated?)`);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLen)));
  } catch (e) {
    throw new Error(`${what}: header is not valid JSON (${(e as Error).message})`);
  }
  const data = bytes.subarray(8 + headerLen);
  const tensors = new Map<string, Tensor>();
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') { metadata = entry as Record<string, string>; continue; }
    const e = entry as { dtype: string; shape: number[]; data_offsets: [number, number] };
    const dtype = TO_DTYPE[e.dtype];
    if (!dtype) throw new Error(`${what}: tensor '${name}' has unsupported dtype ${e.dtype}`);
    const [b, end] = e.data_offsets;
    if (!(b >= 0 && end >= b && end <= data.byteLength)) throw new Error(`${what}: tensor '${name}' data [${b}, ${end}) lies outside the ${data.byteLength}-byte data section (truncated?)`);
    const n = size(e.shape);
    try {
      tensors.set(name, { dtype, dims: [...e.shape], data: fromBytes(dtype, data.subarray(b, end), n) });
    } catch (err) {
      throw new Error(`${what}: tensor '${name}' ${formatShape(e.shape)}: ${(err as Error).message}`);
    }
  }
  return { tensors, metadata };
}

export function serializeSafetensors(tensors: Map<string, Tensor> | Record<string, Tensor>, metadata?: Record<string, string>): Uint8Array {
  const entries = tensors instanceof Map ? [...tensors] : Object.entries(tensors);
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let off = 0;
  for (const [name, t] of entries) {
    header[name] = { dtype: FROM_DTYPE[t.dtype], shape: t.dims, data_offsets: [off, off + t.data.byteLength] };
    off += t.data.byteLength;
  }
  const raw = new TextEncoder().encode(JSON.stringify(header));
  const hb = new Uint8Array(Math.ceil(raw.byteLength / 8) * 8).fill(0x20); // pad with spaces to 8 bytes
  hb.set(raw);
  const out = new Uint8Array(8 + hb.byteLength + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(hb.byteLength), true);
  out.set(hb, 8);
  let p = 8 + hb.byteLength;
  for (const [, t] of entries) {
    out.set(toBytes(t), p);
    p += t.data.byteLength;
  }
  return out;
}
