// An upload (UploadPayload) on the wire: one safetensors file, so the bytes a device sends are
// the same format refit uses for adapters and model state, read and written by src/io.
//   x          float32 [n, ...sample dims]   (codec 'f32', the default)
//              uint8   [n, ...sample dims]   (codec 'u8': min + x·(max − min)/255)
//   x_jpeg     uint8   [bytes]               (codec jpeg: the n samples tiled in one JPEG, upload-images.ts)
//   entropy    float32 [n]   (optional)
//   predicted  int32   [n]   (optional)
//   __metadata__ { format: 'refit.fleet.upload', version: '1', model, device, round,
//                  and for 'u8' and jpeg: x_codec, x_min, x_max (float32 bits in 8 hex digits), x_n;
//                  for jpeg also x_quality }
// Decoding is the cloud's first line of defence against a bad device: every field is checked
// before anything is built, and every failure is a FleetError('invalid') naming what was wrong.
import { parseSafetensors, serializeSafetensors } from '../io/safetensors.ts';
import type { Tensor } from '../onnx/tensor.ts';
import { FleetError, type UploadPayload } from './types.ts';
import { codecName, quantize, dequantize, encodeJpeg, decodeJpeg, jpegable } from './upload-images.ts';

export const UPLOAD_FORMAT = 'refit.fleet.upload';
export const UPLOAD_FORMAT_VERSION = '1';
const TENSORS = new Set(['x', 'x_jpeg', 'entropy', 'predicted']);
const DTYPES: Record<string, string> = { x: 'F32', x_jpeg: 'U8', entropy: 'F32', predicted: 'I32' };
const BYTES: Record<string, number> = { F32: 4, I32: 4, U8: 1 };
/** A float32's bits as 8 hex digits: exact, and of one length whatever the value (sizes are known before encoding). */
const f32hex = (v: number) => new Uint32Array(Float32Array.of(v).buffer)[0]!.toString(16).padStart(8, '0');
const hexf32 = (h: string) => new Float32Array(Uint32Array.of(parseInt(h, 16)).buffer)[0]!;
/** Model and device names: what a registry name and a URL path segment can both carry. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export interface DecodeUploadOptions {
  /** The sample dims the model expects (without the batch dim), e.g. [1, 28, 28]; required. */
  sampleDims: readonly number[];
  /** Most samples accepted in one upload. @default 4096 */
  maxSamples?: number;
  /** Largest encoded upload accepted, in bytes. @default 64 MiB */
  maxBytes?: number;
  /** Largest JSON header accepted, in bytes. @default 64 KiB */
  maxHeaderBytes?: number;
  /** When set, the payload's model must be this one. */
  model?: string;
  /** When set, the payload's device must be this one (the authenticated caller). */
  device?: string;
  /** When set, every `predicted` class must be below it. */
  classes?: number;
}

const bad = (msg: string): never => { throw new FleetError(`upload: ${msg}`, 'invalid'); };

function checkPayload(p: UploadPayload): number {
  if (typeof p.model !== 'string' || !NAME.test(p.model)) bad(`model ${JSON.stringify(p.model)} is not a valid name (letters, digits, '.', '_', '-'; at most 128)`);
  if (typeof p.device !== 'string' || !NAME.test(p.device)) bad(`device ${JSON.stringify(p.device)} is not a valid name (letters, digits, '.', '_', '-'; at most 128)`);
  if (!Number.isSafeInteger(p.round) || p.round < 1) bad(`round must be an integer ≥ 1, got ${p.round}`);
  if (!Array.isArray(p.dims) || p.dims.length < 2 || !p.dims.every((d) => Number.isSafeInteger(d) && d >= 0)) bad(`dims must be [n, ...sample dims] of non-negative integers, got ${JSON.stringify(p.dims)}`);
  const n = p.dims[0]!;
  let count = 1;
  for (const d of p.dims) count *= d;
  if (!(p.data instanceof Float32Array) || p.data.length !== count) bad(`x must be a Float32Array of ${count} values for dims [${p.dims.join(', ')}], got ${p.data?.length}`);
  if (p.entropy !== undefined && (!(p.entropy instanceof Float32Array) || p.entropy.length !== n)) bad(`entropy must be a Float32Array of ${n} values, got ${p.entropy?.length}`);
  if (p.predicted !== undefined && (!(p.predicted instanceof Int32Array) || p.predicted.length !== n)) bad(`predicted must be an Int32Array of ${n} values, got ${p.predicted?.length}`);
  return n;
}

/**
 * UploadPayload → safetensors bytes, for the 'f32' and 'u8' codecs (JPEG: encodeUploadAsync).
 * Refuses (FleetError 'invalid') a payload that would not decode.
 */
export function encodeUpload(p: UploadPayload): Uint8Array {
  checkPayload(p);
  const codec = codecName(p.codec);
  if (codec === 'jpeg') throw new FleetError('upload: the JPEG codec encodes asynchronously; use encodeUploadAsync', 'invalid');
  if (codec === 'f32') return pack(p, ['x', { dtype: 'float32', dims: [...p.dims], data: p.data }]);
  const { q, min, max } = quantize(p.data);
  return pack(p, ['x', { dtype: 'uint8', dims: [...p.dims], data: q }], { x_codec: 'u8', x_min: f32hex(min), x_max: f32hex(max), x_n: String(p.dims[0]) });
}

/** encodeUpload for every codec, JPEG included (sharp in Node, OffscreenCanvas in a browser). */
export async function encodeUploadAsync(p: UploadPayload): Promise<Uint8Array> {
  if (codecName(p.codec) !== 'jpeg') return encodeUpload(p);
  checkPayload(p);
  const sample = p.dims.slice(1);
  if (!jpegable(sample)) throw new FleetError(`upload: the JPEG codec takes images [1 or 3, H, W], got samples [${sample.join(', ')}]`, 'invalid');
  const { q, min, max } = quantize(p.data);
  const quality = (p.codec as { jpeg: number }).jpeg;
  const bytes = await encodeJpeg(q, p.dims[0]!, sample, quality);
  return pack(p, ['x_jpeg', { dtype: 'uint8', dims: [bytes.length], data: bytes }], { x_codec: 'jpeg', x_min: f32hex(min), x_max: f32hex(max), x_n: String(p.dims[0]), x_quality: String(quality) });
}

function pack(p: UploadPayload, x: [string, Tensor], meta: Record<string, string> = {}): Uint8Array {
  const tensors = new Map<string, Tensor>([x]);
  if (p.entropy) tensors.set('entropy', { dtype: 'float32', dims: [p.dims[0]!], data: p.entropy });
  if (p.predicted) tensors.set('predicted', { dtype: 'int32', dims: [p.dims[0]!], data: p.predicted });
  return serializeSafetensors(tensors, { ...uploadMetadata(p), ...meta });
}

function uploadMetadata(p: { model: string; device: string; round: number }): Record<string, string> {
  return { format: UPLOAD_FORMAT, version: UPLOAD_FORMAT_VERSION, model: p.model, device: p.device, round: String(p.round) };
}

/**
 * The exact length of `encodeUpload` for n samples, without building it (a device sizes an
 * upload to its byte budget with this). Mirrors serializeSafetensors' header: same keys, same
 * order, padded to 8 bytes; test/fleet/upload-codec.test.ts pins the two together.
 */
export function encodedUploadSize(p: { model: string; device: string; round: number }, n: number, sampleDims: readonly number[], has: { entropy?: boolean; predicted?: boolean } = { entropy: true, predicted: true }, codec: 'f32' | 'u8' = 'f32'): number {
  let per = codec === 'u8' ? 1 : 4;
  for (const d of sampleDims) per *= d;
  const meta = codec === 'u8' ? { ...uploadMetadata(p), x_codec: 'u8', x_min: f32hex(0), x_max: f32hex(0), x_n: String(n) } : uploadMetadata(p);
  const header: Record<string, unknown> = { __metadata__: meta };
  let off = 0;
  header.x = { dtype: codec === 'u8' ? 'U8' : 'F32', shape: [n, ...sampleDims], data_offsets: [off, (off += per * n)] };
  if (has.entropy) header.entropy = { dtype: 'F32', shape: [n], data_offsets: [off, (off += 4 * n)] };
  if (has.predicted) header.predicted = { dtype: 'I32', shape: [n], data_offsets: [off, (off += 4 * n)] };
  const raw = new TextEncoder().encode(JSON.stringify(header)).byteLength;
  return 8 + Math.ceil(raw / 8) * 8 + off;
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Safetensors bytes → UploadPayload, after checking everything: sizes against the byte length,
 * the header's structure, dtypes, shapes (x's sample dims must be the expected ones; entropy and
 * predicted must have x's n), finite values, and the metadata's types. Throws FleetError('invalid').
 */
export function decodeUpload(bytes: Uint8Array, opts: DecodeUploadOptions): UploadPayload {
  if (!(bytes instanceof Uint8Array)) bad('body is not bytes');
  const maxBytes = opts.maxBytes ?? 64 * 2 ** 20;
  const maxHeader = opts.maxHeaderBytes ?? 64 * 1024;
  const maxSamples = opts.maxSamples ?? 4096;
  const sampleDims = [...opts.sampleDims];
  if (bytes.byteLength > maxBytes) bad(`${bytes.byteLength} bytes is over the ${maxBytes}-byte limit`);
  if (bytes.byteLength < 8) bad(`${bytes.byteLength} bytes is too short for a safetensors header`);
  // The header is checked here first, so that the shared reader only ever sees a well-formed one.
  const headerLen = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(0, true);
  if (headerLen > BigInt(maxHeader)) bad(`header length ${headerLen} is over the ${maxHeader}-byte limit`);
  const hl = Number(headerLen);
  if (8 + hl > bytes.byteLength) bad(`header claims ${hl} bytes but only ${bytes.byteLength - 8} follow the length field (truncated?)`);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + hl)));
  } catch (e) {
    bad(`header is not valid JSON (${(e as Error).message})`);
  }
  if (!isObj(header)) bad('header is not a JSON object');
  const h = header as Record<string, unknown>;
  const dataLen = bytes.byteLength - 8 - hl;

  // Metadata: strings only, the right format and version, names and round well formed.
  const meta = h.__metadata__;
  if (!isObj(meta)) bad('__metadata__ is missing or not an object');
  const m = meta as Record<string, unknown>;
  for (const [k, v] of Object.entries(m)) if (typeof v !== 'string') bad(`__metadata__.${k} must be a string, got ${typeof v}`);
  const codec = m.x_codec ?? 'f32';
  if (codec !== 'f32' && codec !== 'u8' && codec !== 'jpeg') bad(`__metadata__.x_codec is ${JSON.stringify(codec)}, expected 'u8' or 'jpeg' (or none: float32)`);
  let range: [number, number] = [0, 0], nDeclared = 0;
  if (codec !== 'f32') {
    if (!/^[0-9a-f]{8}$/.test(m.x_min as string ?? '') || !/^[0-9a-f]{8}$/.test(m.x_max as string ?? '')) bad(`__metadata__.x_min and x_max must be float32 bits in 8 hex digits, got ${JSON.stringify(m.x_min)}, ${JSON.stringify(m.x_max)}`);
    range = [hexf32(m.x_min as string), hexf32(m.x_max as string)];
    if (!(Number.isFinite(range[0]) && Number.isFinite(range[1]) && range[0] <= range[1])) bad(`__metadata__.x_min ${range[0]} and x_max ${range[1]} must be finite with x_min ≤ x_max`);
    nDeclared = /^[1-9][0-9]{0,8}$/.test(m.x_n as string ?? '') ? Number(m.x_n) : NaN;
    if (!Number.isSafeInteger(nDeclared)) bad(`__metadata__.x_n must be the number of samples, got ${JSON.stringify(m.x_n)}`);
  }
  const quality = codec === 'jpeg' && /^([1-9][0-9]?|100)$/.test(m.x_quality as string ?? '') ? Number(m.x_quality) : NaN;
  if (codec === 'jpeg' && Number.isNaN(quality)) bad(`__metadata__.x_quality must be the JPEG quality 1–100, got ${JSON.stringify(m.x_quality)}`);
  if (m.format !== UPLOAD_FORMAT) bad(`__metadata__.format is ${JSON.stringify(m.format)}, expected '${UPLOAD_FORMAT}'`);
  if (m.version !== UPLOAD_FORMAT_VERSION) bad(`__metadata__.version is ${JSON.stringify(m.version)}, this build reads version ${UPLOAD_FORMAT_VERSION}`);
  const round = /^[1-9][0-9]{0,15}$/.test(m.round as string ?? '') ? Number(m.round) : NaN;
  if (!Number.isSafeInteger(round)) bad(`__metadata__.round must be a positive integer, got ${JSON.stringify(m.round)}`);
  const model = m.model as string | undefined;
  const device = m.device as string | undefined;
  if (typeof model !== 'string' || !NAME.test(model)) bad(`__metadata__.model ${JSON.stringify(model)} is not a valid name`);
  if (typeof device !== 'string' || !NAME.test(device)) bad(`__metadata__.device ${JSON.stringify(device)} is not a valid name`);
  if (opts.model !== undefined && model !== opts.model) bad(`model is '${model}', expected '${opts.model}'`);
  if (opts.device !== undefined && device !== opts.device) bad(`device is '${device}', but the caller is '${opts.device}'`);

  // Tensor entries: known names, dtypes, integer shapes, offsets that tile the data section.
  const entries: [string, { dtype: string; shape: number[]; data_offsets: [number, number] }][] = [];
  for (const [name, e] of Object.entries(h)) {
    if (name === '__metadata__') continue;
    if (!TENSORS.has(name)) bad(`unexpected tensor '${name}' (an upload holds x or x_jpeg, entropy, predicted)`);
    if (!isObj(e)) bad(`tensor '${name}': entry is not an object`);
    const { dtype, shape, data_offsets: off } = e as Record<string, unknown>;
    if ((name === 'x' && codec === 'jpeg') || (name === 'x_jpeg' && codec !== 'jpeg')) bad(`tensor '${name}' does not go with codec ${codec}`);
    const want = name === 'x' && codec === 'u8' ? 'U8' : DTYPES[name];
    if (dtype !== want) bad(`tensor '${name}' has dtype ${JSON.stringify(dtype)}, expected ${want}`);
    if (!Array.isArray(shape) || shape.length > 8 || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) bad(`tensor '${name}' has shape ${JSON.stringify(shape)}, expected a list of non-negative integers`);
    if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) bad(`tensor '${name}' has data_offsets ${JSON.stringify(off)}, expected [begin, end]`);
    const [b, end] = off as [number, number];
    if (end < b || end > dataLen) bad(`tensor '${name}' data [${b}, ${end}) lies outside the ${dataLen}-byte data section (truncated?)`);
    let count = 1;
    for (const d of shape as number[]) count *= d;
    if (count * BYTES[dtype as string]! !== end - b) bad(`tensor '${name}' ${JSON.stringify(shape)} needs ${count * BYTES[dtype as string]!} bytes, its offsets give ${end - b}`);
    entries.push([name, { dtype: dtype as string, shape: shape as number[], data_offsets: [b, end] }]);
  }
  const spans = entries.map(([, e]) => e.data_offsets).sort((a, b) => a[0] - b[0]);
  let at = 0;
  for (const [b, end] of spans) {
    if (b !== at) bad(`tensor data overlaps or leaves a gap at byte ${Math.min(b, at)} of the data section`);
    at = end;
  }
  if (at !== dataLen) bad(`data section has ${dataLen} bytes but the tensors cover ${at}`);

  const byName = new Map(entries);
  const xName = codec === 'jpeg' ? 'x_jpeg' : 'x';
  const x = byName.get(xName);
  if (!x) bad(`missing tensor '${xName}' (the samples)`);
  if (codec === 'jpeg' && !jpegable(sampleDims)) bad(`a JPEG upload needs image samples [1 or 3, H, W]; this model's are [${sampleDims.join(', ')}]`);
  const xs = codec === 'jpeg' ? [nDeclared, ...sampleDims] : x!.shape;
  if (xs.length !== sampleDims.length + 1 || xs.slice(1).some((d, i) => d !== sampleDims[i])) bad(`tensor 'x' has shape [${xs.join(', ')}], expected [n, ${sampleDims.join(', ')}]`);
  if (codec === 'u8' && xs[0] !== nDeclared) bad(`__metadata__.x_n is ${nDeclared}, but tensor 'x' holds ${xs[0]} samples`);
  const n = xs[0]!;
  if (n < 1) bad('tensor \'x\' holds no samples');
  if (n > maxSamples) bad(`${n} samples is over the limit of ${maxSamples} per upload`);
  for (const k of ['entropy', 'predicted']) {
    const t = byName.get(k);
    if (t && (t.shape.length !== 1 || t.shape[0] !== n)) bad(`tensor '${k}' has shape [${t.shape.join(', ')}], expected [${n}] (x holds ${n} samples)`);
  }

  let file;
  try {
    file = parseSafetensors(bytes, 'upload');
  } catch (e) {
    bad((e as Error).message); // unreachable after the checks above, kept so no reader error escapes as anything else
  }
  let data: Float32Array;
  if (codec === 'f32') data = file!.tensors.get('x')!.data as Float32Array;
  else if (codec === 'u8') data = dequantize(file!.tensors.get('x')!.data as Uint8Array, range[0], range[1]);
  else {
    let q: Uint8Array;
    try {
      q = decodeJpeg(file!.tensors.get('x_jpeg')!.data as Uint8Array, n, sampleDims);
    } catch (e) {
      bad(`tensor 'x_jpeg': ${(e as Error).message}`);
    }
    data = dequantize(q!, range[0], range[1]);
  }
  for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i]!)) bad(`tensor 'x' has a non-finite value (${data[i]}) at index ${i}`);
  const entropy = file!.tensors.get('entropy')?.data as Float32Array | undefined;
  if (entropy) for (let i = 0; i < n; i++) if (!(Number.isFinite(entropy[i]!) && entropy[i]! >= 0)) bad(`tensor 'entropy' has ${entropy[i]} at index ${i}, expected a finite value ≥ 0`);
  const predicted = file!.tensors.get('predicted')?.data as Int32Array | undefined;
  const classes = opts.classes ?? 2 ** 31 - 1;
  if (predicted) for (let i = 0; i < n; i++) if (predicted[i]! < 0 || predicted[i]! >= classes) bad(`tensor 'predicted' has ${predicted[i]} at index ${i}, expected a class index in [0, ${classes})`);
  return { model: model!, device: device!, round, dims: [...xs], data, ...(entropy ? { entropy } : {}), ...(predicted ? { predicted } : {}), ...(codec !== 'f32' ? { codec: codec === 'u8' ? 'u8' as const : { jpeg: quality } } : {}) };
}
