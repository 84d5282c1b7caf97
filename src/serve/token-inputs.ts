// Token ids in a predict request, for a model whose input is int64/int32 token ids (a BERT-style
// classifier; its attention_mask and other companions made inside the graph by withTokenInputs):
// the request's numbers (parsed as any input is, ./inputs.ts) must be whole ids within the
// model's vocabulary. Anything else is a 400 naming the first bad value, before the model runs.
import { tensor, type Tensor } from '../onnx/tensor.ts';
import { HttpError } from './inputs.ts';

/** Ids above this cannot be told apart after the float32 parse (2^24), whatever the vocabulary. */
const EXACT = 2 ** 24;

/** The parsed values of `x` as token ids of `dtype`, each a whole number in [0, vocab). */
export function toTokenTensor(x: Tensor, input: { name: string; dtype: 'int64' | 'int32' }, vocab: number | null): Tensor {
  const d = x.data as Float32Array;
  const limit = Math.min(vocab ?? EXACT, EXACT);
  for (let i = 0; i < d.length; i++) {
    const v = d[i]!;
    if (!Number.isInteger(v) || v < 0 || v >= limit) {
      throw new HttpError(400, `input '${input.name}' takes token ids (whole numbers in [0, ${limit})${vocab !== null ? ', the model\'s vocabulary' : ''}); value ${i} is ${v}`, 'bad-token');
    }
  }
  return tensor(input.dtype, [...x.dims], input.dtype === 'int64' ? BigInt64Array.from(d, (v) => BigInt(v)) : Int32Array.from(d));
}
