// Conversion between onnx-proto messages and the IR in ./ir.ts.
import onnxProto from 'onnx-proto';
import type { Attr, Graph, Model, Node, ValueInfo, Dim } from './ir.ts';
import { type Tensor, type DType, ONNX_DTYPE, dtypeFromOnnx, fromBytes, size, allocate, toBytes } from './tensor.ts';
import { inlineModelFunctions } from './inline-functions.ts';

const { onnx } = onnxProto;
type Long = { toNumber(): number };

const num = (v: number | Long | null | undefined): number => (v == null ? 0 : typeof v === 'number' ? v : v.toNumber());

/** Resolves a tensor stored outside the model file (ONNX external data). */
export type ExternalDataReader = (location: string, offset: number, length: number | undefined) => Uint8Array;

/** The bytes of a tensor stored as ONNX external data, or undefined for one stored in the model. */
function externalBytes(p: onnxProto.onnx.ITensorProto, readExternal?: ExternalDataReader): Uint8Array | undefined {
  if (p.dataLocation !== onnx.TensorProto.DataLocation.EXTERNAL) return undefined;
  const name = p.name ?? '';
  const kv = Object.fromEntries((p.externalData ?? []).map((e) => [e.key ?? '', e.value ?? '']));
  if (!kv.location) throw new Error(`tensor '${name}' uses external data but names no location`);
  if (!readExternal) throw new Error(`tensor '${name}' uses external data ('${kv.location}'): load the model from a file path so the data file can be found`);
  return readExternal(kv.location, Number(kv.offset ?? 0), kv.length === undefined ? undefined : Number(kv.length));
}

/** ONNX's 4-bit element types (TensorProto.UINT4, INT4): held unpacked, one value a byte, as uint8 / int8. */
const FOUR_BIT: Record<number, 'uint8' | 'int8'> = { 21: 'uint8', 22: 'int8' };

/**
 * A uint4/int4 tensor (two values a byte, the low nibble first) as uint8/int8 with one value a
 * byte. DequantizeLinear (opset 21) takes int8 with the same block_size and axis, so a graph that
 * only dequantizes its 4-bit weights computes the same; it is written back as 8-bit.
 */
function unpackFourBit(p: onnxProto.onnx.ITensorProto, dtype: 'uint8' | 'int8', readExternal?: ExternalDataReader): Tensor {
  const name = p.name ?? '';
  const dims = (p.dims ?? []).map(num);
  const n = size(dims), bytesNeeded = Math.ceil(n / 2);
  const packed = externalBytes(p, readExternal)
    ?? (p.rawData && p.rawData.length > 0 ? p.rawData : Uint8Array.from((p.int32Data ?? []).map((v) => num(v) & 0xff))); // one packed byte per entry
  if (packed.length < bytesNeeded) throw new Error(`tensor '${name}' of shape [${dims}] (4-bit) has ${packed.length} bytes, expected ${bytesNeeded}`);
  const data = dtype === 'int8' ? new Int8Array(n) : new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const v = (packed[i >> 1]! >> ((i & 1) * 4)) & 15;
    data[i] = dtype === 'int8' && v >= 8 ? v - 16 : v;
  }
  return { dtype, dims, data };
}

export function tensorFromProto(p: onnxProto.onnx.ITensorProto, readExternal?: ExternalDataReader): Tensor {
  const fourBit = FOUR_BIT[p.dataType ?? 0];
  if (fourBit) return unpackFourBit(p, fourBit, readExternal);
  const name = p.name ?? '';
  const dtype = dtypeFromOnnx(p.dataType ?? 0);
  const dims = (p.dims ?? []).map(num);
  const n = size(dims);
  const external = externalBytes(p, readExternal);
  if (external) return { dtype, dims, data: fromBytes(dtype, external, n) };
  if (p.rawData && p.rawData.length > 0) return { dtype, dims, data: fromBytes(dtype, p.rawData, n) };
  const data = allocate(dtype, n);
  const src: ArrayLike<number | Long> | null | undefined =
    dtype === 'float32' ? p.floatData
    : dtype === 'float64' ? p.doubleData
    : dtype === 'int64' ? p.int64Data
    : dtype === 'uint64' || dtype === 'uint32' ? p.uint64Data
    : p.int32Data; // int8/16/32, uint8/16, bool, float16 bits all live in int32_data
  const count = src?.length ?? 0;
  if (count !== n) throw new Error(`tensor '${name}' of shape [${dims}] has ${count} values, expected ${n}`);
  for (let i = 0; i < n; i++) {
    const v = src![i];
    if (data instanceof BigInt64Array || data instanceof BigUint64Array) data[i] = typeof v === 'number' ? BigInt(v) : BigInt(String(v));
    else data[i] = num(v);
  }
  return { dtype, dims, data };
}

export function tensorToProto(name: string, t: Tensor): onnxProto.onnx.ITensorProto {
  return { name, dataType: ONNX_DTYPE[t.dtype], dims: t.dims, rawData: toBytes(t) };
}

function attrFromProto(a: onnxProto.onnx.IAttributeProto, readExternal?: ExternalDataReader): Attr {
  const T = onnx.AttributeProto.AttributeType;
  switch (a.type) {
    case T.INT: return { kind: 'int', value: num(a.i) };
    case T.FLOAT: return { kind: 'float', value: a.f ?? 0 };
    case T.STRING: return { kind: 'string', value: new TextDecoder().decode(a.s ?? new Uint8Array()) };
    case T.INTS: return { kind: 'ints', value: (a.ints ?? []).map(num) };
    case T.FLOATS: return { kind: 'floats', value: [...(a.floats ?? [])] };
    case T.STRINGS: return { kind: 'strings', value: (a.strings ?? []).map((s) => new TextDecoder().decode(s)) };
    case T.TENSOR: return { kind: 'tensor', value: tensorFromProto(a.t!, readExternal) };
    default: return { kind: 'opaque', value: a };
  }
}

/**
 * An int64 attribute value for protobufjs. Exporters write INT64_MAX/MIN as "to the end" (Slice
 * ends); it decodes to the double ±2^63, which protobufjs would wrap to INT64_MIN on the way out,
 * silently turning `x[:, 1:]` into an empty slice. Values past the int64 range are clamped.
 */
function int64(v: number): number | string {
  if (v >= 9223372036854775807) return '9223372036854775807';
  if (v <= -9223372036854775808) return '-9223372036854775808';
  return v;
}

function attrToProto(name: string, a: Attr): onnxProto.onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  switch (a.kind) {
    case 'int': return { name, type: T.INT, i: int64(a.value) as number };
    case 'float': return { name, type: T.FLOAT, f: a.value };
    case 'string': return { name, type: T.STRING, s: new TextEncoder().encode(a.value) };
    case 'ints': return { name, type: T.INTS, ints: a.value.map(int64) as number[] };
    case 'floats': return { name, type: T.FLOATS, floats: a.value };
    case 'strings': return { name, type: T.STRINGS, strings: a.value.map((s) => new TextEncoder().encode(s)) };
    case 'tensor': return { name, type: T.TENSOR, t: tensorToProto('', a.value) };
    case 'opaque': return { ...(a.value as onnxProto.onnx.IAttributeProto), name };
  }
}

function valueInfoFromProto(v: onnxProto.onnx.IValueInfoProto): ValueInfo | null {
  const tt = v.type?.tensorType;
  if (!tt) return null; // sequences/maps: not used by refit
  let dtype: DType;
  // a 4-bit value is held as 8-bit (unpackFourBit), and so described
  try { dtype = FOUR_BIT[tt.elemType ?? 0] ?? dtypeFromOnnx(tt.elemType ?? 0); } catch { return null; }
  const shape: Dim[] | null = tt.shape
    ? (tt.shape.dim ?? []).map((d) => (d.dimValue != null && num(d.dimValue) > 0 ? num(d.dimValue) : d.dimParam ? d.dimParam : null))
    : null;
  return { name: v.name ?? '', dtype, shape };
}

function valueInfoToProto(v: ValueInfo): onnxProto.onnx.IValueInfoProto {
  if (v.untyped) return { name: v.name };
  return {
    name: v.name,
    type: {
      tensorType: {
        elemType: ONNX_DTYPE[v.dtype],
        shape: v.shape ? { dim: v.shape.map((d) => (typeof d === 'number' ? { dimValue: d } : typeof d === 'string' ? { dimParam: d } : {})) } : undefined,
      },
    },
  };
}

export function graphFromProto(g: onnxProto.onnx.IGraphProto, readExternal?: ExternalDataReader): Graph {
  const initializers = new Map<string, Tensor>();
  for (const t of g.initializer ?? []) initializers.set(t.name ?? '', tensorFromProto(t, readExternal));
  const nodes: Node[] = (g.node ?? []).map((n, i) => ({
    name: n.name || `${n.opType ?? 'node'}_${i}`,
    opType: n.opType ?? '',
    domain: n.domain ?? '',
    inputs: [...(n.input ?? [])],
    outputs: [...(n.output ?? [])],
    attrs: Object.fromEntries((n.attribute ?? []).map((a) => [a.name ?? '', attrFromProto(a, readExternal)])),
  }));
  const vis = (list: onnxProto.onnx.IValueInfoProto[] | null | undefined) =>
    (list ?? []).map(valueInfoFromProto).filter((v): v is ValueInfo => v !== null);
  return {
    name: g.name ?? 'graph',
    nodes,
    // Older exporters list initializers as graph inputs too; they are parameters, not inputs.
    inputs: vis(g.input).filter((v) => !initializers.has(v.name)),
    outputs: vis(g.output),
    initializers,
    valueInfo: vis(g.valueInfo),
  };
}

/** A tensor handed to onnxruntime beside the model bytes: `data` is a view of the tensor's own memory. */
export interface ExternalTensorFile { path: string; data: Uint8Array }

function graphToProto(g: Graph, external?: (name: string, t: Tensor) => onnxProto.onnx.ITensorProto | undefined): onnxProto.onnx.IGraphProto {
  return {
    name: g.name,
    node: g.nodes.map((n) => ({
      name: n.name, opType: n.opType, domain: n.domain || undefined, input: n.inputs, output: n.outputs,
      attribute: Object.entries(n.attrs).map(([k, a]) => attrToProto(k, a)),
    })),
    input: g.inputs.map(valueInfoToProto),
    output: g.outputs.map(valueInfoToProto),
    initializer: [...g.initializers].map(([name, t]) => external?.(name, t) ?? tensorToProto(name, t)),
    valueInfo: g.valueInfo.map(valueInfoToProto),
  };
}

/** Decode ONNX model bytes. Truncated or malformed bytes fail with a message that says so. */
export function decodeModel(bytes: Uint8Array, readExternal?: ExternalDataReader): Model {
  let p: onnxProto.onnx.ModelProto;
  try {
    p = onnx.ModelProto.decode(bytes);
  } catch (e) {
    throw new Error(`not a valid ONNX model (${bytes.byteLength} bytes; truncated or not ONNX protobuf): ${(e as Error).message}`);
  }
  if (!p.graph) throw new Error(`not a valid ONNX model: no graph found in ${bytes.byteLength} bytes`);
  if (!p.opsetImport || p.opsetImport.length === 0) throw new Error('not a valid ONNX model: no opset_import');
  inlineModelFunctions(p, bytes); // refit's IR is one flat graph
  const metadata: Record<string, string> = {};
  for (const e of p.metadataProps ?? []) metadata[e.key ?? ''] = e.value ?? '';
  return {
    irVersion: num(p.irVersion),
    opsets: p.opsetImport.map((o) => ({ domain: o.domain ?? '', version: num(o.version) })),
    producerName: p.producerName ?? '',
    producerVersion: p.producerVersion ?? '',
    docString: p.docString ?? '',
    metadata,
    graph: graphFromProto(p.graph, readExternal),
  };
}

export function encodeModel(m: Model): Uint8Array {
  return encode(m);
}

/**
 * Encode for an onnxruntime session, with every top-level initializer of at least `minBytes` left
 * out of the bytes as ONNX external data whose "file" is a view of the tensor's own memory (for
 * onnxruntime's SessionOptions.externalData, which copies it while creating the session). The
 * weights are then never copied into one large JS buffer that stays garbage until V8 collects it
 * (64 MB for ResNet-18's Tent step, still held at the step's peak: docs/speed.md, session 6).
 */
export function encodeModelExternal(m: Model, minBytes = 65536): { bytes: Uint8Array; files: ExternalTensorFile[] } {
  const files: ExternalTensorFile[] = [];
  const bytes = encode(m, (name, t) => {
    if (t.data.byteLength < minBytes) return undefined;
    const path = `refit-initializer-${files.length}`;
    files.push({ path, data: toBytes(t) });
    return {
      name, dataType: ONNX_DTYPE[t.dtype], dims: t.dims, dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
      externalData: [{ key: 'location', value: path }, { key: 'offset', value: '0' }, { key: 'length', value: String(t.data.byteLength) }],
    };
  });
  return { bytes, files };
}

/**
 * Encode for a file with its weights beside it: every top-level initializer of at least `minBytes`
 * goes to one data file named `location` (ONNX external data, as onnx's save_model writes it with
 * all_tensors_to_one_file), at consecutive offsets. Returns the model bytes and the data file's
 * chunks in order (views of the tensors' own memory, not copies).
 */
export function encodeModelWithDataFile(m: Model, location: string, minBytes = 1024): { bytes: Uint8Array; chunks: Uint8Array[] } {
  const chunks: Uint8Array[] = [];
  let offset = 0;
  const bytes = encode(m, (name, t) => {
    if (t.data.byteLength < minBytes) return undefined;
    const data = toBytes(t);
    const proto = {
      name, dataType: ONNX_DTYPE[t.dtype], dims: t.dims, dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
      externalData: [{ key: 'location', value: location }, { key: 'offset', value: String(offset) }, { key: 'length', value: String(data.byteLength) }],
    };
    chunks.push(data);
    offset += data.byteLength;
    return proto;
  });
  return { bytes, chunks };
}

function encode(m: Model, external?: (name: string, t: Tensor) => onnxProto.onnx.ITensorProto | undefined): Uint8Array {
  const msg = onnx.ModelProto.create({
    irVersion: m.irVersion,
    opsetImport: m.opsets.map((o) => ({ domain: o.domain, version: o.version })),
    producerName: m.producerName,
    producerVersion: m.producerVersion,
    docString: m.docString || undefined,
    metadataProps: Object.entries(m.metadata).map(([key, value]) => ({ key, value })),
    graph: graphToProto(m.graph, external),
  });
  return onnx.ModelProto.encode(msg).finish();
}
