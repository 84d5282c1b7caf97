// One sample's input as the controller keeps it for delayed labels and replay: the float values of
// an image (or any fixed-shape input), or a text model's token ids (int64 or int32, one row of any
// length). Rows go back into a batch for a labelled step: float rows must all have the model's
// per-sample shape; token rows of different lengths are padded at the end with the pad token, the
// id the model's attention mask leaves out (withTokenInputs' padToken), as a tokenizer pads a batch.
import { tensor, type Tensor } from '../onnx/tensor.ts';
import type { RefitModel } from '../model.ts';
import { TOKEN_DTYPES, vocabularySize } from '../onnx/token-companions.ts';

export type InputRow = Float32Array | Int32Array | BigInt64Array;

/** Row i of a batch tensor [n, …] (a copy). */
export function rowOf(x: Tensor, i: number): InputRow {
  const data = x.data as InputRow, per = data.length / x.dims[0]!;
  return data.slice(i * per, (i + 1) * per);
}

/**
 * Stack rows into one batch. Float rows: each must have `shape`'s size (the model's input after the
 * batch axis). Token rows: [rows, longest], shorter rows padded with `padToken`; rows of different
 * lengths without a pad token are refused, since any id would be read as a token.
 */
export function stackRows(rows: InputRow[], shape: number[], padToken?: number): Tensor {
  const first = rows[0];
  if (!first || first instanceof Float32Array) {
    const per = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(rows.length * per);
    rows.forEach((r, i) => {
      if (!(r instanceof Float32Array) || r.length !== per) throw new Error(`stackRows: row ${i} has ${r.length} ${r instanceof Float32Array ? 'values' : 'token ids'}, expected ${per} float values`);
      data.set(r, i * per);
    });
    return tensor('float32', [rows.length, ...shape], data);
  }
  const longest = Math.max(...rows.map((r) => r.length));
  if (padToken === undefined && rows.some((r) => r.length !== longest)) {
    throw new Error(`stackRows: token rows of ${[...new Set(rows.map((r) => r.length))].join(' and ')} ids cannot be stacked without a pad token`);
  }
  const big = first instanceof BigInt64Array;
  const data = big ? new BigInt64Array(rows.length * longest).fill(BigInt(padToken ?? 0)) : new Int32Array(rows.length * longest).fill(padToken ?? 0);
  rows.forEach((r, i) => {
    if (r instanceof BigInt64Array !== big || r instanceof Float32Array) throw new Error(`stackRows: row ${i} is a ${r.constructor.name}, the first a ${first.constructor.name}`);
    (data as BigInt64Array | Int32Array).set(r as never, i * longest);
  });
  return tensor(big ? 'int64' : 'int32', [rows.length, longest], data);
}

/** Rows of this input as one batch (stackRows with the spec's shape or pad token). */
export function batchOfRows(spec: InputSpec, rows: InputRow[]): Tensor {
  return spec.kind === 'float' ? stackRows(rows, spec.shape) : stackRows(rows, [], spec.padToken);
}

/** What the controller's model takes: float inputs of a fixed shape, or one row of token ids per sample. */
export type InputSpec =
  | { kind: 'float'; name: string; shape: number[] }
  | { kind: 'tokens'; name: string; dtype: 'int64' | 'int32'; vocab: number | null; padToken?: number };

/** The model's (first) input as the controller sees it; throws for an input it cannot keep rows of. padToken: checked by the options' schema. */
export function inputSpec(model: RefitModel, padToken?: number): InputSpec {
  const input = model.inputs[0]!;
  if (TOKEN_DTYPES.has(input.dtype)) {
    if (model.inputs.length > 1) throw new Error(`continual: the model takes ${model.inputs.length} inputs (${model.inputs.map((i) => i.name).join(', ')}) and the controller feeds one; for a Hugging Face token model, withTokenInputs(model, { padToken }) makes the others from the token ids`);
    return { kind: 'tokens', name: input.name, dtype: input.dtype as 'int64' | 'int32', vocab: vocabularySize(model, input.name), ...(padToken !== undefined ? { padToken } : {}) };
  }
  if (padToken !== undefined) throw new Error(`continual: padToken is for token models; this model's input '${input.name}' is ${input.dtype}`);
  const shape = input.shape?.slice(1);
  if (!shape || shape.some((d) => typeof d !== 'number')) throw new Error('continual: the model input must have a fixed shape after the batch axis');
  return { kind: 'float', name: input.name, shape: shape as number[] };
}

/** A batch the controller will not take (the caller's input, not a fault: the service answers 400). */
export class RefusedInput extends Error {}

/**
 * Throws RefusedInput, naming the first bad value, for a batch the controller must not predict or learn from:
 * a non-finite float, or a token id outside the model's vocabulary. `length`:
 * without a pad token, the one sequence length the controller's rows have (null: none yet).
 */
export function checkBatch(spec: InputSpec, x: Tensor, length: number | null, where = 'continual.predict'): void {
  const refuse = (what: string) => { throw new RefusedInput(`${where}: ${what}; refusing to predict or adapt on it (nothing changed)`); };
  if (spec.kind === 'float') {
    if (x.dtype !== 'float32') refuse(`input '${spec.name}' takes float32 values, got ${x.dtype}`);
    const d = x.data as Float32Array;
    for (let i = 0; i < d.length; i++) if (!Number.isFinite(d[i]!)) refuse(`input value ${i} is ${d[i]}`);
    return;
  }
  if (x.dtype !== spec.dtype) refuse(`input '${spec.name}' takes ${spec.dtype} token ids, got ${x.dtype}`);
  if (x.dims.length !== 2 || x.dims[1]! < 1) refuse(`input '${spec.name}' takes token ids [batch, length], got [${x.dims.join(', ')}]`);
  if (length !== null && spec.padToken === undefined && x.dims[1] !== length) {
    refuse(`sequences of ${x.dims[1]} ids after sequences of ${length}: without padToken (the id withTokenInputs masks) labelled rows of different lengths cannot be batched together`);
  }
  const limit = spec.vocab ?? 2 ** 31;
  const d = x.data as BigInt64Array | Int32Array;
  for (let i = 0; i < d.length; i++) {
    const v = Number(d[i]!);
    if (v < 0 || v >= limit) refuse(`token id ${i} is ${v}, outside ${spec.vocab !== null ? `the model's vocabulary of ${spec.vocab}` : '[0, 2^31)'}`);
  }
}
