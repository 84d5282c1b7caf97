// Token ids in a predict request, for a model whose input is int64/int32 token ids (a BERT-style
// classifier; its attention_mask and other companions made inside the graph by withTokenInputs):
// the request's numbers (parsed as float64, as JSON gives them: ./inputs.ts) must be whole ids
// within the model's vocabulary. Anything else is a 400 naming the first bad value, before the model runs.
import { tensorOf, type Tensor } from '../onnx/tensor.ts';
import { HttpError } from './inputs.ts';

/** The largest id each dtype holds, when the model's vocabulary is not known. */
const LIMIT = { int32: 2 ** 31, int64: Number.MAX_SAFE_INTEGER };

/** The parsed values of `x` (toInputTensor's float64) as token ids of `dtype`, each a whole number in [0, vocab). */
export function toTokenTensor(x: Tensor, input: { name: string; dtype: 'int64' | 'int32' }, vocab: number | null): Tensor {
  const d = x.data as Float64Array;
  const limit = vocab ?? LIMIT[input.dtype];
  for (let i = 0; i < d.length; i++) {
    const v = d[i]!;
    if (!Number.isInteger(v) || v < 0 || v >= limit) {
      throw new HttpError(400, `input '${input.name}' takes token ids (whole numbers in [0, ${limit})${vocab !== null ? ', the model\'s vocabulary' : ''}); value ${i} is ${v}`, 'bad-token');
    }
  }
  return tensorOf(input.dtype, [...x.dims], (i) => d[i]!);
}
