// A host tensor: dtype, dims and a typed array. The one value type the IR, the
// optimizers and the onnxruntime bridge all share.

export type DType = 'float32' | 'float64' | 'float16' | 'int8' | 'uint8' | 'int16' | 'uint16' | 'int32' | 'uint32' | 'int64' | 'uint64' | 'bool';

export type TypedArray =
  | Float32Array | Float64Array | Uint16Array | Int8Array | Uint8Array | Int16Array
  | Int32Array | Uint32Array | BigInt64Array | BigUint64Array;

export interface Tensor {
  dtype: DType;
  dims: number[];
  data: TypedArray;
}

/** ONNX TensorProto.DataType codes. */
export const ONNX_DTYPE: Record<DType, number> = {
  float32: 1, uint8: 2, int8: 3, uint16: 4, int16: 5, int32: 6, int64: 7, bool: 9,
  float16: 10, float64: 11, uint32: 12, uint64: 13,
};

const CODE_TO_DTYPE = new Map<number, DType>(Object.entries(ONNX_DTYPE).map(([k, v]) => [v, k as DType]));

/** ONNX's names for the element types refit does not hold (TensorProto.DataType). */
const UNSUPPORTED_DTYPE: Record<number, string> = {
  8: 'string', 14: 'complex64', 15: 'complex128', 16: 'bfloat16', 17: 'float8e4m3fn', 18: 'float8e4m3fnuz',
  19: 'float8e5m2', 20: 'float8e5m2fnuz', 23: 'float4e2m1', // (uint4 21 and int4 22: proto.ts holds them as uint8/int8)
};

export function dtypeFromOnnx(code: number): DType {
  const d = CODE_TO_DTYPE.get(code);
  if (d) return d;
  const name = UNSUPPORTED_DTYPE[code];
  const hint = code === 16 ? ': convert the model to float32 or float16' : code >= 17 && code <= 20 ? ': 8-bit floats are not supported; convert the model to float32 or float16' : '';
  throw new Error(`unsupported ONNX tensor data type ${code}${name ? ` (${name})` : ''}${hint} (supported: ${[...CODE_TO_DTYPE.values()].join(', ')})`);
}

export const BYTES_PER_ELEMENT: Record<DType, number> = {
  float32: 4, float64: 8, float16: 2, int8: 1, uint8: 1, int16: 2, uint16: 2, int32: 4, uint32: 4,
  int64: 8, uint64: 8, bool: 1,
};

export function size(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) n *= d;
  return n;
}

export function allocate(dtype: DType, n: number): TypedArray {
  switch (dtype) {
    case 'float32': return new Float32Array(n);
    case 'float64': return new Float64Array(n);
    case 'float16': case 'uint16': return new Uint16Array(n);
    case 'int8': return new Int8Array(n);
    case 'uint8': case 'bool': return new Uint8Array(n);
    case 'int16': return new Int16Array(n);
    case 'int32': return new Int32Array(n);
    case 'uint32': return new Uint32Array(n);
    case 'int64': return new BigInt64Array(n);
    case 'uint64': return new BigUint64Array(n);
  }
}

/** A tensor of `dtype` whose element i is value(i) (as a BigInt for the 64-bit integer types). */
export function tensorOf(dtype: DType, dims: number[], value: (i: number) => number): Tensor {
  const data = allocate(dtype, size(dims));
  if (data instanceof BigInt64Array || data instanceof BigUint64Array) for (let i = 0; i < data.length; i++) data[i] = BigInt(value(i));
  else for (let i = 0; i < data.length; i++) data[i] = value(i);
  return { dtype, dims, data };
}

/** The dtype of a Float32Array, BigInt64Array or Int32Array (what model inputs and saved states hold: values or token ids); null for anything else. */
export function inputArrayDtype(data: unknown): 'float32' | 'int64' | 'int32' | null {
  return data instanceof Float32Array ? 'float32' : data instanceof BigInt64Array ? 'int64' : data instanceof Int32Array ? 'int32' : null;
}

/** View little-endian raw bytes as a typed array (copies, so alignment never matters). */
export function fromBytes(dtype: DType, bytes: Uint8Array, n: number): TypedArray {
  const need = n * BYTES_PER_ELEMENT[dtype];
  if (bytes.byteLength !== need) throw new Error(`tensor data has ${bytes.byteLength} bytes, expected ${need} for ${n} ${dtype} elements`);
  const out = allocate(dtype, n);
  new Uint8Array(out.buffer, out.byteOffset, need).set(bytes);
  return out;
}

export function toBytes(t: Tensor): Uint8Array {
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

export function tensor(dtype: DType, dims: number[], data?: TypedArray | number[]): Tensor {
  const n = size(dims);
  let arr: TypedArray;
  if (data === undefined) arr = allocate(dtype, n);
  else if (Array.isArray(data)) {
    arr = allocate(dtype, n);
    if (data.length !== n) throw new Error(`tensor of shape [${dims}] needs ${n} values, got ${data.length}`);
    if (arr instanceof BigInt64Array || arr instanceof BigUint64Array) data.forEach((v, i) => { (arr as BigInt64Array)[i] = BigInt(Math.trunc(v)); });
    else (arr as Float32Array).set(data);
  } else {
    if (data.length !== n) throw new Error(`tensor of shape [${dims}] needs ${n} values, got ${data.length}`);
    arr = data;
  }
  return { dtype, dims: [...dims], data: arr };
}

export const f32 = (dims: number[], data?: Float32Array | number[]) => tensor('float32', dims, data);
export const i64 = (dims: number[], data?: BigInt64Array | number[]) => tensor('int64', dims, data);

export function cloneTensor(t: Tensor): Tensor {
  return { dtype: t.dtype, dims: [...t.dims], data: t.data.slice() as TypedArray };
}

export const isFloat = (d: DType) => d === 'float32' || d === 'float64' || d === 'float16';

/** Read any numeric tensor as plain numbers (for small shape/axes constants). */
export function toNumbers(t: Tensor): number[] {
  return Array.from(t.data as ArrayLike<number | bigint>, Number);
}

export function formatShape(dims: readonly (number | string | null)[]): string {
  return `[${dims.map((d) => (d === null ? '?' : String(d))).join(', ')}]`;
}
