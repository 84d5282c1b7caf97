// Update cost per batch, measured alternating in one process (the machine is shared, so absolute
// times drift; ratios of interleaved medians do not): plain inference (source), Tent, and the
// controller (tuned options, label-free), each predicting the same shifted batch in turn.
// The controller's first `warm` batches (calibration, climbing to its adapting levels) are not timed.
// Ratios use the mean ms per batch (the deep learner steps on every k-th batch only, so a median
// would hide its steps); medians are reported beside them.
//
//   nice -n 15 npx tsx bench/continual/overhead.ts --model cnn [--batches 40] [--batch 64] [--every K] [--tag T]
//
// `--every K` replaces the tuned deep learner's updateEvery (a step on every K-th batch at level 3).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { loadModel } from '../../src/model.ts';
import { createAdapter, loadSourceSet } from '../../src/tta/index.ts';
import { ContinualController } from '../../src/continual/index.ts';
import { continualStream } from '../../src/data/streams.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { testData, calibration, withSourceSet } from './lib.ts';

const args = process.argv.slice(2);
const opt = (k: string, d: string) => { const i = args.indexOf(`--${k}`); return i >= 0 ? args[i + 1]! : d; };
const which = opt('model', 'cnn');
const n = Number(opt('batches', '40')), batch = Number(opt('batch', '64')), warm = 10;
const tunedPath = `bench/results/continual-tuned-${which}.json`;
const tuned = existsSync(tunedPath) ? JSON.parse(readFileSync(tunedPath, 'utf8')).chosen : {};
const every = opt('every', '');
if (every) tuned.controller = { ...tuned.controller, deep: { ...tuned.controller?.deep, updateEvery: Number(every) } };
const path = `models/fmnist-${which}.onnx`;
const batches = [...continualStream(testData(), { domains: ['gaussian_noise', 'fog'], batchSize: batch, batchesPerDomain: Math.ceil((n + warm) / 2) })].map((b) => f32([b.size, 1, 28, 28], b.x));
const m1 = await loadModel(path, { threads: 1 }), m2 = await loadModel(path, { threads: 1 }), m3 = await loadModel(path, { threads: 1 });
const source = createAdapter(m1, 'source'), tent = createAdapter(m2, 'tent', tuned.tent ?? {});
const sourceSet = loadSourceSet();
const ctl = new ContinualController(m3, { logits: 'logits', embedding: 'features', ...withSourceSet(tuned.controller ?? {}, sourceSet) });
await ctl.calibrate(calibration(sourceSet, batch));
const t: Record<string, number[]> = { source: [], tent: [], controller: [] };
const levels: number[] = [];
for (let i = 0; i < batches.length; i++) {
  const x = batches[i]!;
  let s = performance.now(); await source.predict(x); const a = performance.now() - s;
  s = performance.now(); await tent.predict(x); const b = performance.now() - s;
  s = performance.now(); const r = await ctl.predict(x); const c = performance.now() - s;
  levels.push(r.level);
  if (i >= warm) { t.source!.push(a); t.tent!.push(b); t.controller!.push(c); }
}
const med = (v: number[]) => [...v].sort((p, q) => p - q)[Math.floor(v.length / 2)]!;
const avg = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
const out = {
  model: which, batch, timed: t.source!.length, levels: levels.join(''), options: tuned.controller ?? {},
  medianMs: Object.fromEntries(Object.entries(t).map(([k, v]) => [k, med(v)])),
  meanMs: Object.fromEntries(Object.entries(t).map(([k, v]) => [k, avg(v)])),
  tentOverSource: avg(t.tent!) / avg(t.source!), controllerOverSource: avg(t.controller!) / avg(t.source!), controllerOverTent: avg(t.controller!) / avg(t.tent!),
};
console.log(JSON.stringify(out));
writeFileSync(`bench/results/continual-overhead-${which}${opt('tag', '')}.json`, JSON.stringify(out, null, 1));
await Promise.all([source.release(), tent.release(), ctl.release()]);
