// A lead, not a feature: helper measurements showed that moving each prediction from the batch's
// mean prediction m towards a uniform prior (p' ∝ p·(1/C / m)^α, Saerens et al. 2002's adjustment)
// cuts the ViT's continual error a lot (the ViT predicts few classes under fog and contrast) but
// wrecks correlated-label streams, where a concentrated m is the truth. This scores, after the
// fact on one label-free run, a gate that tells the two apart by persistence: a collapsed model
// predicts the same few classes batch after batch, while correlated labels move between classes
// (here every ~100 samples). The adjustment applies only when the cosine similarity of m to the
// moving average of the previous batches' m (momentum 0.8) is at least `s`.
//
//   npx tsx bench/continual/collapse-prior-sweep.ts <cnn|vit> <setting> 1000 '<controller options JSON>' [val]
import { streamFor, testData, validationData, withSourceSet, calibration, type Sizes, type Setting } from './lib.ts';
import { loadSourceSet } from '../../src/tta/index.ts';
import { loadModel } from '../../src/model.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { ContinualController } from '../../src/continual/controller.ts';
import { argmaxRows } from '../../src/data/evaluate.ts';

const [model, setting, samples, json, which] = process.argv.slice(2);
const n = Number(samples);
const sizes: Sizes = { samples: n, correlatedSamples: n, roundSamples: Math.max(16, n / 10), levelSamples: Math.max(16, n / 8), cleanSamples: 512 };
const stream = streamFor(setting as Setting, which === 'val' ? validationData() : testData(), sizes, which === 'val' ? 1 : 0);
const opts = JSON.parse(json ?? '{}');
const src = loadSourceSet();
const m = await loadModel(`models/fmnist-${model}.onnx`, { threads: 1 });
const c = new ContinualController(m, { logits: 'logits', embedding: 'features', ...withSourceSet(opts, src) });
await c.calibrate(calibration(src, stream.batchSize));
const gates = [-1, 0.8, 0.9, 0.95, 0.98]; // -1: always
const alphas = [0.5, 1];
const tally = new Map<string, { wrong: number; n: number }>();
const add = (key: string, pred: Int32Array, y: Uint8Array) => {
  const t = tally.get(key) ?? { wrong: 0, n: 0 };
  for (let i = 0; i < y.length; i++) if (pred[i] !== y[i]) t.wrong++;
  t.n += y.length;
  tally.set(key, t);
};
let avg: Float64Array | null = null;
for (const b of stream) {
  const r = await c.predict(f32([b.size, 1, 28, 28], b.x));
  const C = r.probs.length / b.size;
  const mean = new Float64Array(C);
  for (let i = 0; i < b.size; i++) for (let j = 0; j < C; j++) mean[j]! += r.probs[i * C + j]! / b.size;
  let sim = 0;
  if (avg) {
    let d = 0, na = 0, nb = 0;
    for (let j = 0; j < C; j++) { d += mean[j]! * avg[j]!; na += mean[j]! ** 2; nb += avg[j]! ** 2; }
    sim = d / Math.sqrt(na * nb);
  }
  add('none', r.predictions, b.y);
  for (const a of alphas) {
    const w = Float64Array.from(mean, (v) => (1 / C / Math.max(v, 1e-6)) ** a);
    const adjusted = argmaxRows(Float32Array.from(r.probs, (v, q) => v * w[q % C]!), C);
    for (const s of gates) add(`${s < 0 ? 'always' : `similarity≥${s}`} α=${a}`, avg && sim >= s ? adjusted : s < 0 ? adjusted : r.predictions, b.y);
  }
  avg = avg ? avg.map((v, j) => 0.8 * v + 0.2 * mean[j]!) : mean.slice();
}
await c.release();
await m.release();
// Sample-weighted error over the stream (the benchmark's mean over segments differs slightly).
console.log(JSON.stringify({ model, setting, samples: n, stream: which === 'val' ? 'validation' : 'test', options: opts, error: Object.fromEntries([...tally].map(([k, t]) => [k, +(100 * t.wrong / t.n).toFixed(2)])) }));
