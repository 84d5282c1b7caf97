// Request inputs → a float32 tensor for the model, checked before anything reaches the model:
// nested arrays or { dims, data }, a rectangular shape equal to the model's input shape (a single
// sample without the batch axis gets one), a batch within the limit, finite values only.
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

function flatten(v: unknown, dims: number[], out: Float32Array, path: string, depth: number, offset: { i: number }): void {
  if (depth === dims.length) {
    if (typeof v !== 'number') throw new HttpError(400, `inputs${path} is ${v === null ? 'null' : typeof v}; every value must be a number`, 'not-a-number');
    if (!Number.isFinite(v)) throw new HttpError(400, `inputs${path} is ${v}; refusing non-finite values (nothing was predicted or adapted)`, 'non-finite');
    out[offset.i++] = v;
    return;
  }
  if (!Array.isArray(v) || v.length !== dims[depth]) {
    throw new HttpError(400, `inputs are not rectangular: inputs${path} has ${Array.isArray(v) ? `${v.length} entries` : `a ${typeof v}`}, expected an array of ${dims[depth]} (shape ${formatShape(dims)} from the first entries)`, 'ragged');
  }
  for (let i = 0; i < v.length; i++) flatten(v[i], dims, out, `${path}[${i}]`, depth + 1, offset);
}

function checkFinite(d: ArrayLike<number>): void {
  for (let i = 0; i < d.length; i++) {
    const x = d[i];
    if (typeof x !== 'number') throw new HttpError(400, `inputs.data[${i}] is ${x === null ? 'null' : typeof x}; every value must be a number`, 'not-a-number');
    if (!Number.isFinite(x)) throw new HttpError(400, `inputs.data[${i}] is ${x}; refusing non-finite values (nothing was predicted or adapted)`, 'non-finite');
  }
}

/**
 * Build the input tensor for `inputName` of declared `shape` (symbolic axes match any size).
 * Accepts a batch ([N, ...]) or one sample (the shape without its batch axis).
 */
export function toInputTensor(raw: unknown, inputName: string, shape: InputShape, maxBatch: number): Tensor {
  let dims: number[];
  let data: Float32Array;
  if (Array.isArray(raw)) {
    dims = nestedDims(raw);
    const n = dims.reduce((a, b) => a * b, 1);
    if (n > 64 * 1024 * 1024) throw new HttpError(413, `inputs hold ${n} values, over the limit`, 'too-large');
    data = new Float32Array(n);
    flatten(raw, dims, data, '', 0, { i: 0 });
  } else if (raw && typeof raw === 'object' && Array.isArray((raw as { dims?: unknown }).dims) && Array.isArray((raw as { data?: unknown }).data)) {
    const r = raw as { dims: unknown[]; data: number[] };
    if (!r.dims.every((d) => Number.isInteger(d) && (d as number) >= 0)) throw new HttpError(400, `inputs.dims must be non-negative integers, got ${JSON.stringify(r.dims)}`, 'bad-dims');
    dims = r.dims as number[];
    const n = dims.reduce((a, b) => a * b, 1);
    if (n !== r.data.length) throw new HttpError(400, `inputs.dims ${formatShape(dims)} hold ${n} values but inputs.data has ${r.data.length}`, 'shape');
    checkFinite(r.data);
    data = Float32Array.from(r.data);
  } else {
    throw new HttpError(400, `inputs must be a nested array or { dims, data } (input '${inputName}'${shape ? `, shape ${formatShape(shape)}` : ''})`, 'schema');
  }
  if (shape) {
    if (dims.length === shape.length - 1) dims = [1, ...dims]; // one sample, no batch axis
    const ok = dims.length === shape.length && shape.every((d, i) => typeof d !== 'number' || d === dims[i]);
    if (!ok) throw new HttpError(400, `input '${inputName}' expects shape ${formatShape(shape)} (or one sample ${formatShape(shape.slice(1))}); got ${formatShape(dims)}`, 'shape');
  }
  if (dims.length === 0 || dims[0] === 0) throw new HttpError(400, `inputs hold no sample (shape ${formatShape(dims)})`, 'empty');
  if (dims[0]! > maxBatch) throw new HttpError(413, `batch of ${dims[0]} samples is over the limit of ${maxBatch}; split it into smaller requests`, 'batch-limit');
  return { dtype: 'float32', dims, data };
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
