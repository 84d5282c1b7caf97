// How much can revealed labels cut the controller's error at all? Issue 11 asks 1 % of labels,
// 5 batches late, to cut the label-free controller's error by ≥ 10 % relative. Two measurements
// on the validation stream (Fashion-MNIST training images 10000-19999, seed 1; no test image):
//
//   1. The controller itself with more and earlier labels: the chosen options
//      (bench/results/continual-tuned-<model>.json) with `--fractions` of the stream's labels
//      revealed `--delays` batches late (0 = right after the batch is predicted).
//   2. A supervised bound per domain of the continual stream: a fresh copy of the source model
//      trained with each domain's first k labelled samples (Adam, `--epochs` passes, batch ≤ 50,
//      BatchNorm on batch statistics) and scored on the domain's last 500 samples, for the
//      normalization affine parameters (the controller's trainable set) and for every parameter;
//      "untrained" is the source model (BatchNorm, where it has any, on batch statistics). Offline, many epochs and
//      no delay: more than an online learner gets from the same labels.
//
//   npx tsx bench/continual/label-headroom.ts <cnn|vit> [--labels 10,100,500] [--epochs 10]
//        [--fractions 0,0.01,0.1,0.5] [--delays 5,0] [--out bench/results/label-headroom-<model>]
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { streamFor, validationData, heldOutCleanData, runController, type Sizes } from './lib.ts';
import { loadSourceSet } from '../../src/tta/index.ts';
import { loadModel } from '../../src/model.ts';
import { Trainer } from '../../src/train/trainer.ts';
import * as losses from '../../src/train/losses.ts';
import * as optim from '../../src/train/optim/index.ts';
import { normAffineParams } from '../../src/tta/common.ts';
import { f32, i64 } from '../../src/onnx/tensor.ts';
import { argmaxRows } from '../../src/data/evaluate.ts';

const args = process.argv.slice(2);
const model = args[0] ?? 'cnn';
const opt = (k: string, d: string) => { const i = args.indexOf(`--${k}`); return i >= 0 ? args[i + 1]! : d; };
const list = (k: string, d: string) => opt(k, d).split(',').map(Number);
const labelCounts = list('labels', '10,100,500'), epochs = Number(opt('epochs', '10'));
const fractions = list('fractions', '0,0.01,0.1,0.5'), delays = list('delays', '5,0');
const out = opt('out', `bench/results/label-headroom-${model}`);
const modelPath = `models/fmnist-${model}.onnx`;
const sizes: Sizes = { samples: 1000, correlatedSamples: 1000, roundSamples: 100, levelSamples: 125, cleanSamples: 1000 };
const EVAL = 500, BATCH = 50;

// ---- 1. the controller with more labels
const tuned = JSON.parse(readFileSync(`bench/results/continual-tuned-${model}.json`, 'utf8')).chosen.controller;
const validation = validationData(), clean = heldOutCleanData();
const source = loadSourceSet();
const controller: { fraction: number; delay: number; mean: number; clean: number; seconds: number }[] = [];
for (const fraction of fractions) {
  for (const delay of fraction === 0 ? [delays[0]!] : delays) {
    const t0 = Date.now();
    const row = await runController(modelPath, streamFor('continual', validation, sizes, 1), clean, sizes, tuned, source, fraction, delay);
    controller.push({ fraction, delay, mean: row.mean, clean: row.clean, seconds: (Date.now() - t0) / 1000 });
    process.stderr.write(`controller, ${fraction} of labels ${delay} batches late: ${(100 * row.mean).toFixed(2)} %\n`);
  }
}

// ---- 2. the supervised bound per domain
interface Domain { x: Float32Array[]; y: number[] }
const domains = new Map<string, Domain>();
for (const b of streamFor('continual', validation, sizes, 1)) {
  const d = domains.get(b.domain) ?? domains.set(b.domain, { x: [], y: [] }).get(b.domain)!;
  for (let i = 0; i < b.size; i++) { d.x.push(b.x.slice(i * 784, (i + 1) * 784)); d.y.push(b.y[i]!); }
}
const base = await loadModel(modelPath, { threads: 2 });
const batchOf = (d: Domain, rows: number[]) => {
  const x = new Float32Array(rows.length * 784);
  rows.forEach((r, i) => x.set(d.x[r]!, i * 784));
  return { x: f32([rows.length, 1, 28, 28], x), y: i64([rows.length], rows.map((r) => d.y[r]!)) };
};
type Which = 'untrained' | 'norm' | 'all';
const supervised: { labels: number; which: Which; mean: number; perDomain: Record<string, number> }[] = [];
for (const k of labelCounts) {
  for (const which of ['untrained', 'norm', 'all'] as Which[]) {
    if (which === 'untrained' && k !== labelCounts[0]) continue; // untrained: the same for every k
    const perDomain: Record<string, number> = {};
    for (const [name, d] of domains) {
      const n = d.y.length;
      if (n < EVAL + k) throw new Error(`domain ${name} has ${n} samples, fewer than ${k} labelled + ${EVAL} scored`);
      const m = base.clone();
      const trainable = which === 'all' ? 'all' : normAffineParams('label-headroom', m);
      const step = m.compileTrainStep({ trainable, loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }), batchNorm: 'train', outputs: ['logits'] });
      if (which !== 'untrained') {
        const t = new Trainer(step, optim.adam({ lr: which === 'all' ? 1e-4 : 1e-3 }));
        const b = Math.min(BATCH, k);
        for (let e = 0; e < epochs; e++) for (let s = 0; s + b <= k; s += b) await t.step(batchOf(d, [...Array(b).keys()].map((i) => s + i)));
      }
      let wrong = 0;
      for (let s = n - EVAL; s < n; s += BATCH) {
        const rows = [...Array(Math.min(BATCH, n - s)).keys()].map((i) => s + i);
        const r = await step.run(batchOf(d, rows)); // the forward before any update: the trained model's logits
        const pred = argmaxRows(r.outputs.logits!.data as Float32Array, r.outputs.logits!.dims[1]!);
        rows.forEach((row, i) => { if (pred[i] !== d.y[row]) wrong++; });
      }
      perDomain[name] = wrong / EVAL;
    }
    const mean = Object.values(perDomain).reduce((a, v) => a + v, 0) / domains.size;
    supervised.push({ labels: which === 'untrained' ? 0 : k, which, mean, perDomain });
    process.stderr.write(`supervised ${which}, ${k} labels a domain: ${(100 * mean).toFixed(2)} %\n`);
  }
}

// ---- report
const pct = (v: number) => (100 * v).toFixed(2);
const free = controller.find((c) => c.fraction === 0)!;
const md = [
  `# Label headroom (${model}, validation continual stream)`,
  '',
  `\`npx tsx bench/continual/label-headroom.ts ${args.join(' ')}\` on ${new Date().toISOString()}. See the script's header for what each row is.`,
  '',
  '## The controller (chosen options) with more labels',
  '',
  '| labels revealed | delay (batches) | mean online error % | relative cut | clean error after % |',
  '|---:|---:|---:|---:|---:|',
  ...controller.map((c) => `| ${100 * c.fraction} % | ${c.delay} | ${pct(c.mean)} | ${c.fraction ? `${(100 * (1 - c.mean / free.mean)).toFixed(1)} %` : '–'} | ${(100 * c.clean).toFixed(1)} |`),
  '',
  `## Supervised per domain: k labelled samples, ${epochs} epochs, scored on the domain's last ${EVAL}`,
  '',
  '| labelled a domain (share of 1000) | trained | mean error % | against the label-free controller |',
  '|---:|---|---:|---:|',
  ...supervised.map((s) => `| ${s.labels} (${s.labels / 10} %) | ${s.which === 'untrained' ? 'nothing (source weights; BatchNorm, where the model has it, on batch statistics)' : s.which === 'norm' ? 'normalization affine' : 'every parameter'} | ${pct(s.mean)} | ${(100 * (s.mean / free.mean - 1)).toFixed(1)} % |`),
  '',
];
mkdirSync('bench/results', { recursive: true });
writeFileSync(`${out}.json`, JSON.stringify({ model, date: new Date().toISOString(), args, epochs, evalSamples: EVAL, controller, supervised }, null, 1));
writeFileSync(`${out}.md`, md.join('\n'));
console.log(md.join('\n'));
