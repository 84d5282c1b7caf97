// Continual benchmark (issue 11), first version: the escalation controller against the source
// model and single TTA methods on the bundled Fashion-MNIST-C streams, label-free and with 1% of
// labels revealed 5 batches late. Reports online error per domain and mean, and the controller's
// level timeline. Hyperparameters are refit's defaults, not tuned (no validation stream yet).
//
//   npx tsx bench/continual.ts [--model cnn|vit] [--samples 1024] [--batch 64] [--methods source,bn-adapt,tent,rmt]
import { writeFileSync, mkdirSync } from 'node:fs';
import { loadModel } from '../src/model.ts';
import { loadFashionMnist } from '../src/data/fashion-mnist.ts';
import { continualStream } from '../src/data/streams.ts';
import { argmaxRows } from '../src/data/evaluate.ts';
import { f32, type Tensor } from '../src/onnx/tensor.ts';
import { createAdapter, loadSourceSet, sourceDataOptions } from '../src/tta/index.ts';
import { ContinualController } from '../src/continual/index.ts';

const args = process.argv.slice(2);
const opt = (k: string, d: string) => { const i = args.indexOf(`--${k}`); return i >= 0 ? args[i + 1]! : d; };
const which = opt('model', 'cnn') as 'cnn' | 'vit';
const samples = Number(opt('samples', '1024'));
const batch = Number(opt('batch', '64'));
const methods = opt('methods', 'source,bn-adapt,tent,rmt').split(',');
const modelPath = `models/fmnist-${which}.onnx`;
const data = loadFashionMnist('test');
const stream = () => continualStream(data, { severity: 5, batchSize: batch, seed: 0, samplesPerDomain: samples });
const source = loadSourceSet();

interface Row { method: string; domains: Record<string, number>; mean: number; ms: number; timeline?: number[] }
const rows: Row[] = [];

function score(perDomain: Map<string, { wrong: number; n: number }>): { domains: Record<string, number>; mean: number } {
  const domains = Object.fromEntries([...perDomain].map(([k, v]) => [k, v.wrong / v.n]));
  const vals = Object.values(domains);
  return { domains, mean: vals.reduce((a, b) => a + b, 0) / vals.length };
}

for (const m of methods) {
  const model = await loadModel(modelPath, { threads: 2 });
  const adapter = createAdapter(model, m, sourceDataOptions(m, source, { quick: true }) as Record<string, unknown>);
  const per = new Map<string, { wrong: number; n: number }>();
  const t0 = performance.now();
  for (const b of stream()) {
    const r = await adapter.predict(f32([b.size, 1, 28, 28], b.x));
    const pred = argmaxRows(r.logits.data as Float32Array, r.logits.dims[1]!);
    const d = per.get(b.domain) ?? { wrong: 0, n: 0 };
    for (let i = 0; i < b.size; i++) if (pred[i] !== b.y[i]) d.wrong++;
    d.n += b.size;
    per.set(b.domain, d);
  }
  rows.push({ method: m, ...score(per), ms: performance.now() - t0 });
  console.log(m, rows.at(-1)!.mean.toFixed(4));
  await adapter.release?.();
}

for (const labels of [0, 0.01]) {
  const model = await loadModel(modelPath, { threads: 2 });
  const c = new ContinualController(model, { logits: 'logits', embedding: 'features', lr: 0.00025 });
  const calib: Tensor[] = [];
  for (let i = 0; i + batch <= 512; i += batch) calib.push(f32([batch, 1, 28, 28], (source.images.data as Float32Array).subarray(i * 784, (i + batch) * 784)));
  await c.calibrate(calib);
  const per = new Map<string, { wrong: number; n: number }>();
  const timeline: number[] = [];
  const pending: { at: number; ids: string[]; labels: number[] }[] = [];
  let k = 0;
  const t0 = performance.now();
  for (const b of stream()) {
    const r = await c.predict(f32([b.size, 1, 28, 28], b.x));
    timeline.push(r.level);
    const d = per.get(b.domain) ?? { wrong: 0, n: 0 };
    for (let i = 0; i < b.size; i++) if (r.predictions[i] !== b.y[i]) d.wrong++;
    d.n += b.size;
    per.set(b.domain, d);
    if (labels > 0) {
      const ids: string[] = [], ys: number[] = [];
      for (let i = 0; i < b.size; i++) if ((k++ * labels) % 1 + labels >= 1) { ids.push(r.ids[i]!); ys.push(b.y[i]!); }
      pending.push({ at: b.index + 5, ids, labels: ys });
      while (pending.length && pending[0]!.at <= b.index) { const p = pending.shift()!; await c.feedback(p.ids, p.labels); }
    }
  }
  const name = labels ? 'controller (1% labels, 5 batches late)' : 'controller (label-free)';
  rows.push({ method: name, ...score(per), ms: performance.now() - t0, timeline });
  console.log(name, rows.at(-1)!.mean.toFixed(4), 'levels', timeline.join(''));
  await c.release();
}

mkdirSync('bench/results', { recursive: true });
const doms = Object.keys(rows[0]!.domains);
const md = [
  `# Continual benchmark (first version)`, '',
  `\`npx tsx bench/continual.ts --model ${which} --samples ${samples} --batch ${batch}\`: continual stream, severity 5, ${samples} samples per corruption, 15 corruptions, batch ${batch}, 2 threads. Untuned defaults; not yet the issue's full benchmark.`, '',
  `| method | ${doms.map((d) => d.slice(0, 8)).join(' | ')} | mean | s |`, `|---|${doms.map(() => '---:').join('|')}|---:|---:|`,
  ...rows.map((r) => `| ${r.method} | ${doms.map((d) => (100 * r.domains[d]!).toFixed(1)).join(' | ')} | **${(100 * r.mean).toFixed(1)}** | ${(r.ms / 1000).toFixed(0)} |`), '',
  ...rows.filter((r) => r.timeline).map((r) => `${r.method} level timeline (one digit per batch): \`${r.timeline!.join('')}\``), '',
].join('\n');
writeFileSync(`bench/results/continual-${which}.md`, md);
writeFileSync(`bench/results/continual-${which}.json`, JSON.stringify({ which, samples, batch, rows }, null, 1));
console.log(md);
