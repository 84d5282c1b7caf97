// Accuracy of a model's `logits` over a set of 1×28×28 images, in batches.
import type { RefitModel } from '../model.ts';
import { f32 } from '../onnx/tensor.ts';

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

export async function evaluate(model: RefitModel, images: Float32Array, labels: ArrayLike<number>, n: number, batch = 500, logits = 'logits'): Promise<number> {
  let correct = 0;
  const hw = images.length / n;
  for (let s = 0; s < n; s += batch) {
    const b = Math.min(batch, n - s);
    const x = f32([b, 1, 28, 28], images.subarray(s * hw, (s + b) * hw));
    const out = (await model.run({ x }, { outputs: [logits] }))[logits]!;
    const pred = argmaxRows(out.data as Float32Array, out.dims[1]!);
    for (let i = 0; i < b; i++) if (pred[i] === labels[s + i]) correct++;
  }
  return correct / n;
}
