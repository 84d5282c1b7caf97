// Output-side use of delayed labels, scored after the fact on one run with 1 % of labels 5 batches
// late: each batch's returned probabilities are moved from the batch's mean prediction towards a
// target prior, p'(y|x) ∝ p(y|x)·(π(y)/m(y))^α (Saerens et al. 2002's prior adjustment, with the
// batch's mean prediction m standing for the model's current prior), where π is uniform or the
// recent revealed labels' frequencies. Not exact for the controller: the corrected predictions
// would also feed its labelled-error detector; a run with the option itself confirms a choice.
//
//   npx tsx bench/continual/label-prior-sweep.ts <cnn|vit> <setting> <samples per corruption> '<controller options JSON>' [val] [nolabels]
// `nolabels`: no label is revealed (the 'labels' target is then uniform: only the uniform rows mean anything).
import { streamFor, testData, validationData, withSourceSet, calibration, type Sizes, type Setting } from './lib.ts';
import { loadSourceSet } from '../../src/tta/index.ts';
import { loadModel } from '../../src/model.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { ContinualController } from '../../src/continual/controller.ts';
import { argmaxRows } from '../../src/data/evaluate.ts';

const [model, setting, samples, json, which, labelMode] = process.argv.slice(2);
const every = labelMode === 'nolabels' ? 0 : 100;
const n = Number(samples);
const sizes: Sizes = { samples: n, correlatedSamples: n, roundSamples: Math.max(16, n / 10), levelSamples: Math.max(16, n / 8), cleanSamples: 512 };
const data = which === 'val' ? validationData() : testData();
const stream = streamFor(setting as Setting, data, sizes, which === 'val' ? 1 : 0);
const opts = JSON.parse(json ?? '{}');
const src = loadSourceSet();
const m = await loadModel(`models/fmnist-${model}.onnx`, { threads: 1 });
const c = new ContinualController(m, { logits: 'logits', embedding: 'features', ...withSourceSet(opts, src) });
await c.calibrate(calibration(src, stream.batchSize));
const alphas = [0, 0.25, 0.5, 1];
// 'labels:w': the frequencies of the newest w revealed labels.
const targets = ['uniform', 'labels:20', 'labels:50', 'labels:100'];
const score = new Map<string, Map<string, { wrong: number; n: number }>>();
const add = (key: string, domain: string, pred: Int32Array, y: Uint8Array) => {
  const d = (score.get(key) ?? score.set(key, new Map()).get(key)!);
  const s = d.get(domain) ?? { wrong: 0, n: 0 };
  for (let i = 0; i < y.length; i++) if (pred[i] !== y[i]) s.wrong++;
  s.n += y.length;
  d.set(domain, s);
};
const recent: number[] = [];
const pending: { at: number; ids: string[]; labels: number[] }[] = [];
let k = 0;
for (const b of stream) {
  const r = await c.predict(f32([b.size, 1, 28, 28], b.x));
  const C = r.probs.length / b.size;
  const mean = new Float64Array(C);
  for (let i = 0; i < b.size; i++) for (let j = 0; j < C; j++) mean[j]! += r.probs[i * C + j]! / b.size;
  const prior = (t: string): Float64Array => {
    if (t === 'uniform') return new Float64Array(C).fill(1 / C);
    // The newest w labels' frequencies, with one pseudo-count per class.
    const freq = new Float64Array(C).fill(1);
    for (const y of recent.slice(-Number(t.slice(7)))) freq[y]!++;
    const tot = freq.reduce((a, v) => a + v, 0);
    return freq.map((v) => v / tot);
  };
  for (const t of targets) for (const a of alphas) {
    if (a === 0 && t !== 'uniform') continue;
    const pi = prior(t);
    const w = Float64Array.from(mean, (v, j) => (pi[j]! / Math.max(v, 1e-6)) ** a);
    add(a === 0 ? 'none' : `${t} α=${a}`, b.domain, argmaxRows(Float32Array.from(r.probs, (v, q) => v * w[q % C]!), C), b.y);
  }
  // As lib.ts runController: every 100th sample's label arrives 5 batches later.
  const ids: string[] = [], ys: number[] = [];
  for (let i = 0; i < b.size; i++) if (every && k++ % every === 0) { ids.push(r.ids[i]!); ys.push(b.y[i]!); }
  if (ids.length) pending.push({ at: b.index + 5, ids, labels: ys });
  while (pending.length && pending[0]!.at <= b.index) {
    const p = pending.shift()!;
    await c.feedback(p.ids, p.labels);
    for (const y of p.labels) { recent.push(y); if (recent.length > 100) recent.shift(); }
  }
}
await c.release();
await m.release();
const out = Object.fromEntries([...score].map(([key, d]) => [key, +(100 * [...d.values()].reduce((a, s) => a + s.wrong / s.n, 0) / d.size).toFixed(2)]));
console.log(JSON.stringify({ model, setting, samples: n, stream: which === 'val' ? 'validation' : 'test', options: opts, labels: every ? '1% 5 batches late' : 'none', error: out }));
