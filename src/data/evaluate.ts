// Predicted classes and accuracy of a classifier over a set of samples, in batches.
import type { RefitModel } from '../model.ts';
import { f32 } from '../onnx/tensor.ts';

/** The index of each row's largest value, for `logits` of `classes` columns. */
export function argmaxRows(logits: Float32Array, classes: number): Int32Array {
  const n = logits.length / classes;
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let c = 1; c < classes; c++) if (logits[i * classes + c]! > logits[i * classes + best]!) best = c;
    out[i] = best;
  }
  return out;
}

/**
 * The fraction of the `n` samples in `images` (float32, one after another) whose largest `logits`
 * value is at their label. The model's first input takes the batches; its dimensions after the
 * batch come from the model where it states them, else a sample is 1×28×28 (the bundled data's).
 */
export async function evaluate(model: RefitModel, images: Float32Array, labels: ArrayLike<number>, n: number, batch = 500, logits = 'logits'): Promise<number> {
  const input = model.inputs[0]!;
  const hw = images.length / n;
  const stated = input.shape?.slice(1);
  const sample = stated?.every((d): d is number => typeof d === 'number') ? stated : [1, 28, 28];
  if (sample.reduce((a, b) => a * b, 1) !== hw) {
    throw new Error(`evaluate: ${n} samples of ${hw} values each, but input '${input.name}' takes samples of [${sample.join(', ')}]`);
  }
  let correct = 0;
  for (let s = 0; s < n; s += batch) {
    const b = Math.min(batch, n - s);
    const x = f32([b, ...sample], images.subarray(s * hw, (s + b) * hw));
    const out = (await model.run({ [input.name]: x }, { outputs: [logits] }))[logits]!;
    const pred = argmaxRows(out.data as Float32Array, out.dims[1]!);
    for (let i = 0; i < b; i++) if (pred[i] === labels[s + i]) correct++;
  }
  return correct / n;
}
