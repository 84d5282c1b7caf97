// Request inputs → a float32 tensor for the model, checked before anything reaches the model:
// nested arrays, { dims, data } or { dims, base64 } (float32 bytes), a rectangular shape equal
// to the model's input shape (a single sample without the batch axis gets one), a batch within
// the limit, finite values only.
import type { Tensor } from '../onnx/tensor.ts';
import { formatShape } from '../onnx/tensor.ts';

/** An error with an HTTP status; `reason` labels the rejected-input counter. */
export class HttpError extends Error {
  constructor(readonly statusCode: number, message: string, readonly reason?: string) {
    super(message);
    this.name = 'HttpError';
  }
}

export type InputShape = readonly (number | string | null)[] | null;

/** The dims of a rectangular nested array, or an error naming the first ragged place. */
function nestedDims(v: unknown): number[] {
  const dims: number[] = [];
  let cur: unknown = v;
  while (Array.isArray(cur)) {
    dims.push(cur.length);
    if (cur.length === 0) break;
    cur = cur[0];
  }
  return dims;
}

// The path of an element (`[0][3][1]`) is built only for the error message: building it for
// every element cost a string per value on the hot path.
const at = (idx: number[], depth: number) => idx.slice(0, depth).map((i) => `[${i}]`).join('');

function flatten(v: unknown, dims: number[], out: Float32Array | Float64Array, idx: number[], depth: number, offset: { i: number }): void {
  if (depth === dims.length - 1) {
    // Innermost arrays: a plain loop, no recursion per value.
    if (!Array.isArray(v) || v.length !== dims[depth]) throw ragged(v, dims, idx, depth);
    let i = offset.i;
    for (let k = 0; k < v.length; k++) {
      const x = v[k];
      if (typeof x !== 'number' || !Number.isFinite(x)) {
        idx[depth] = k;
        throw badValue(x, `inputs${at(idx, depth + 1)}`);
      }
      out[i++] = x;
    }
    offset.i = i;
    return;
  }
  if (!Array.isArray(v) || v.length !== dims[depth]) throw ragged(v, dims, idx, depth);
  for (let i = 0; i < v.length; i++) {
    idx[depth] = i;
    flatten(v[i], dims, out, idx, depth + 1, offset);
  }
}

function ragged(v: unknown, dims: number[], idx: number[], depth: number): HttpError {
  return new HttpError(400, `inputs are not rectangular: inputs${at(idx, depth)} has ${Array.isArray(v) ? `${v.length} entries` : `a ${v === null ? 'null' : typeof v}`}, expected an array of ${dims[depth]} (shape ${formatShape(dims)} from the first entries)`, 'ragged');
}

function badValue(x: unknown, where: string): HttpError {
  if (typeof x !== 'number') return new HttpError(400, `${where} is ${x === null ? 'null' : typeof x}; every value must be a number`, 'not-a-number');
  return new HttpError(400, `${where} is ${x}; refusing non-finite values (nothing was predicted or adapted)`, 'non-finite');
}

function checkFinite(d: ArrayLike<number>): void {
  for (let i = 0; i < d.length; i++) {
    const x = d[i];
    if (typeof x !== 'number' || !Number.isFinite(x)) throw badValue(x, `inputs.data[${i}]`);
  }
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** The bytes of `s`, or a 400 saying `what` is not base64 (RFC 4648, with padding) `of`. */
export function strictBase64(s: string, what: string, of = ''): Buffer {
  const bytes = Buffer.from(s, 'base64');
  // Buffer.from skips what is not base64; encoding back and comparing refuses it (and is cheaper
  // than a regular expression over the string).
  if (bytes.toString('base64') !== s) throw new HttpError(400, `${what} is not base64 (RFC 4648, with padding)${of}`, 'bad-base64');
  return bytes;
}

/** base64 of little-endian float32 bytes → a Float32Array of `n` values (copied: aligned, owned). */
function fromBase64(s: string, n: number, dims: number[]): Float32Array {
  const bytes = strictBase64(s, 'inputs.base64', ' of little-endian float32 values');
  if (bytes.byteLength !== 4 * n) throw new HttpError(400, `inputs.dims ${formatShape(dims)} hold ${n} values (${4 * n} bytes of float32) but inputs.base64 decodes to ${bytes.byteLength} bytes`, 'shape');
  const out = new Float32Array(n);
  if (LITTLE_ENDIAN) new Uint8Array(out.buffer).set(bytes);
  else {
    const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < n; i++) out[i] = v.getFloat32(4 * i, true);
  }
  for (let i = 0; i < n; i++) {
    if (!Number.isFinite(out[i]!)) throw badValue(out[i], `inputs.base64 value ${i}`);
  }
  return out;
}

/** Encode float32 values as the `base64` input form (little-endian), for clients and tests. */
export function float32ToBase64(d: Float32Array): string {
  if (!LITTLE_ENDIAN) {
    const b = Buffer.alloc(4 * d.length);
    for (let i = 0; i < d.length; i++) b.writeFloatLE(d[i]!, 4 * i);
    return b.toString('base64');
  }
  return Buffer.from(d.buffer, d.byteOffset, d.byteLength).toString('base64');
}

/**
 * Build the input tensor for `inputName` of declared `shape` (symbolic axes match any size).
 * Accepts a batch ([N, ...]) or one sample (the shape without its batch axis). `float64`: the
 * values as JSON gave them (a token model's ids, checked whole before they become integers:
 * float32 would round 14.0000001 to 14); the tensor is then float64.
 */
export function toInputTensor(raw: unknown, inputName: string, shape: InputShape, maxBatch: number, precision: 'float32' | 'float64' = 'float32'): Tensor {
  let dims: number[];
  let data: Float32Array | Float64Array;
  const Values = precision === 'float64' ? Float64Array : Float32Array;
  const obj = raw && typeof raw === 'object' && !Array.isArray(raw) ? (raw as { dims?: unknown; data?: unknown; base64?: unknown }) : undefined;
  if (Array.isArray(raw)) {
    dims = nestedDims(raw);
    const n = dims.reduce((a, b) => a * b, 1);
    if (n > 64 * 1024 * 1024) throw new HttpError(413, `inputs hold ${n} values, over the limit`, 'too-large');
    data = new Values(n);
    if (n > 0) flatten(raw, dims, data, [], 0, { i: 0 });
  } else if (obj && Array.isArray(obj.dims) && (Array.isArray(obj.data) || typeof obj.base64 === 'string')) {
    if (obj.data !== undefined && obj.base64 !== undefined) throw new HttpError(400, 'inputs has both data and base64; give one', 'schema');
    if (!obj.dims.every((d) => Number.isInteger(d) && (d as number) >= 0)) throw new HttpError(400, `inputs.dims must be non-negative integers, got ${JSON.stringify(obj.dims)}`, 'bad-dims');
    dims = obj.dims as number[];
    const n = dims.reduce((a, b) => a * b, 1);
    if (typeof obj.base64 === 'string') data = fromBase64(obj.base64, n, dims);
    else {
      const d = obj.data as unknown[];
      if (n !== d.length) throw new HttpError(400, `inputs.dims ${formatShape(dims)} hold ${n} values but inputs.data has ${d.length}`, 'shape');
      checkFinite(d as number[]);
      data = Values.from(d as number[]);
    }
  } else {
    throw new HttpError(400, `inputs must be a nested array, { dims, data } or { dims, base64 } (input '${inputName}'${shape ? `, shape ${formatShape(shape)}` : ''})`, 'schema');
  }
  if (shape) {
    if (dims.length === shape.length - 1) dims = [1, ...dims]; // one sample, no batch axis
    const ok = dims.length === shape.length && shape.every((d, i) => typeof d !== 'number' || d === dims[i]);
    if (!ok) throw new HttpError(400, `input '${inputName}' expects shape ${formatShape(shape)} (or one sample ${formatShape(shape.slice(1))}); got ${formatShape(dims)}`, 'shape');
  }
  if (dims.length === 0 || dims[0] === 0) throw new HttpError(400, `inputs hold no sample (shape ${formatShape(dims)})`, 'empty');
  if (dims[0]! > maxBatch) throw new HttpError(413, `batch of ${dims[0]} samples is over the limit of ${maxBatch}; split it into smaller requests`, 'batch-limit');
  return { dtype: precision, dims, data };
}

/** Softmax of [n, C] rows (float64 accumulation). */
export function softmaxRows(d: Float32Array, n: number, C: number): Float32Array {
  const out = new Float32Array(n * C);
  for (let i = 0; i < n; i++) {
    let m = -Infinity;
    for (let c = 0; c < C; c++) m = Math.max(m, d[i * C + c]!);
    let z = 0;
    for (let c = 0; c < C; c++) z += Math.exp(d[i * C + c]! - m);
    for (let c = 0; c < C; c++) out[i * C + c] = Math.exp(d[i * C + c]! - m) / z;
  }
  return out;
}

export function argmaxRows(d: Float32Array, n: number, C: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    let b = 0;
    for (let c = 1; c < C; c++) if (d[i * C + c]! > d[i * C + b]!) b = c;
    out.push(b);
  }
  return out;
}

/** [n, C] flat → n rows of C plain numbers. */
export function rows(d: Float32Array, n: number, C: number): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < n; i++) out.push(Array.from(d.subarray(i * C, (i + 1) * C)));
  return out;
}
