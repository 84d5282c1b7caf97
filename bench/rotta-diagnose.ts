// Why RoTTA trails BN-adapt on the continual Fashion-MNIST-C stream (docs/tta.md, "RoTTA against its
// reference code"): RoTTA runs unchanged on bench/continual's stream while, before each batch, the
// same state is probed without changing it:
//   - rotta: the returned prediction (teacher, eval mode: RBN global statistics);
//   - teacher+batch-stats: the teacher's parameters normalised with this batch's statistics (α = 1);
//   - student: the student in eval mode (its own global statistics);
//   - bn-adapt: a BN-adapt adapter on the same batches;
//   - lag: per BatchNorm layer d(global, batch) / d(source, batch) for the teacher's statistics (0: the
//     global statistics are this batch's, 1: as far from it as the source's), averaged over layers;
//     d: the means' distance in batch standard deviations and the log variance ratios, over channels;
//   - bank: share of memory-bank samples whose pseudo-label (their class list) is their true label,
//     and share that came from the current corruption.
//
//   - lag end: the lag at the corruption's last batch; stem lag: the lag of the first layer alone
//     (the only one whose input does not depend on how earlier layers normalise);
//
//   npx tsx bench/rotta-diagnose.ts [samples per corruption = 1000] ['<rotta options JSON>'] [corruptions = all]
import { loadModel } from '../src/model.ts';
import { f32, type Tensor } from '../src/onnx/tensor.ts';
import { argmaxRows } from '../src/data/evaluate.ts';
import { createAdapter } from '../src/tta/index.ts';
import { CSTU } from '../src/tta/memory-bank.ts';
import { rbnName } from '../src/tta/robust-bn.ts';
import type { RoTTA } from '../src/tta/rotta.ts';
import { streamFor, testData, type Sizes } from './continual/lib.ts';

const n = Number(process.argv[2] ?? 1000);
const opts = JSON.parse(process.argv[3] ?? '{}');
const sizes: Sizes = { samples: n, correlatedSamples: n, roundSamples: n / 10, levelSamples: n / 8, cleanSamples: 0 };
const stream = streamFor('continual', testData(), sizes, 0);
const maxDomains = Number(process.argv[4] ?? Infinity);

// True label and corruption of each bank entry, keyed by the stored array (labels are read for scoring only).
const tag = new WeakMap<Float32Array, { y: number; domain: string }>();
let cur: { y: Uint8Array; domain: string; i: number } = { y: new Uint8Array(), domain: '', i: 0 };
const add = CSTU.prototype.add;
CSTU.prototype.add = function (x, prediction, uncertainty) {
  tag.set(x, { y: cur.y[cur.i++]!, domain: cur.domain });
  return add.call(this, x, prediction, uncertainty);
};

const model = await loadModel('models/fmnist-cnn.onnx', { threads: 1 });
const bnModel = await loadModel('models/fmnist-cnn.onnx', { threads: 1 });
const ad = createAdapter(model, 'rotta', opts) as unknown as RoTTA;
const bn = createAdapter(bnModel, 'bn-adapt', {});
// Internals of RoTTA read for the probe only (TypeScript `private`; nothing is written).
const inner = ad as unknown as {
  prepare(x: Tensor): Promise<{ student: typeof model; teacher: typeof model }>;
  statFeeds(f: Record<string, Tensor>, s: RoTTA['teacherStats'], a: number): Record<string, Tensor>;
  sourceStats(): RoTTA['teacherStats'];
  trainable: string[];
};
const src = inner.sourceStats();
const input = model.inputs[0]!.name;

type Acc = { n: number; rotta: number; tbatch: number; student: number; bn: number; lag: number; lagN: number; lagEnd: number; lag0: number; bankOk: number; bankCur: number; bankN: number };
const per = new Map<string, Acc>();
const wrong = (p: Int32Array, y: Uint8Array) => p.reduce((s, v, i) => s + (v !== y[i] ? 1 : 0), 0);
// Distance of statistics s from the batch's b: means in units of the batch's standard deviation,
// variances as log ratios (a corruption such as noise moves the variance more than the mean).
type Moments = { mean: Float32Array; variance: Float32Array };
const dist = (s: Moments, b: Moments) => Math.sqrt(s.mean.reduce((t, m, c) => {
  const v = b.variance[c]! + 1e-5;
  return t + (m - b.mean[c]!) ** 2 / v + Math.log((s.variance[c]! + 1e-5) / v) ** 2;
}, 0));
const t0 = Date.now();
for (const b of stream) {
  if (!per.has(b.domain) && per.size >= maxDomains) break;
  const x = f32([b.size, 1, 28, 28], b.x);
  const p = await inner.prepare(x);
  const C = 10;
  const layers = ad.layers.flatMap((_, k) => [rbnName('mean_out', k), rbnName('var_out', k)]);
  const tb = await p.teacher.run(inner.statFeeds({ [input]: x }, ad.teacherStats, 1), { outputs: ['logits', ...layers], feedParams: inner.trainable });
  const st = await p.student.run(inner.statFeeds({ [input]: x }, ad.studentStats, 0), { outputs: ['logits'], feedParams: inner.trainable });
  const lags = ad.layers.map((_, k) => {
    const b = { mean: tb[rbnName('mean_out', k)]!.data as Float32Array, variance: tb[rbnName('var_out', k)]!.data as Float32Array };
    return dist(ad.teacherStats[k]!, b) / Math.max(1e-12, dist(src[k]!, b));
  });
  const lag = lags.reduce((s, v) => s + v, 0);
  cur = { y: b.y, domain: b.domain, i: 0 };
  const r = await ad.predict(x);
  const rb = await bn.predict(x);
  const a = per.get(b.domain) ?? per.set(b.domain, { n: 0, rotta: 0, tbatch: 0, student: 0, bn: 0, lag: 0, lagN: 0, lagEnd: 0, lag0: 0, bankOk: 0, bankCur: 0, bankN: 0 }).get(b.domain)!;
  a.n += b.size;
  a.rotta += wrong(argmaxRows(r.logits.data as Float32Array, C), b.y);
  a.tbatch += wrong(argmaxRows(tb.logits!.data as Float32Array, C), b.y);
  a.student += wrong(argmaxRows(st.logits!.data as Float32Array, C), b.y);
  a.bn += wrong(argmaxRows(rb.logits.data as Float32Array, C), b.y);
  a.lag += lag / ad.layers.length; a.lagN++; a.lagEnd = lag / ad.layers.length; a.lag0 += lags[0]!;
  ad.bank!.data.forEach((list, c) => list.forEach((it) => {
    const t = tag.get(it.data)!;
    a.bankN++; if (t.y === c) a.bankOk++; if (t.domain === b.domain) a.bankCur++;
  }));
}
const pct = (v: number, d: number) => (100 * v / d).toFixed(1);
console.log(`rotta-diagnose cnn continual ${n} ${JSON.stringify(opts)}: ${((Date.now() - t0) / 1000).toFixed(0)} s`);
console.log('corruption | rotta % | teacher+batch-stats % | student % | bn-adapt % | lag | lag end | stem lag | bank pseudo-label correct % | bank from current corruption %');
const tot: Acc = { n: 0, rotta: 0, tbatch: 0, student: 0, bn: 0, lag: 0, lagN: 0, lagEnd: 0, lag0: 0, bankOk: 0, bankCur: 0, bankN: 0 };
for (const [d, a] of per) {
  console.log(`${d} | ${pct(a.rotta, a.n)} | ${pct(a.tbatch, a.n)} | ${pct(a.student, a.n)} | ${pct(a.bn, a.n)} | ${(a.lag / a.lagN).toFixed(2)} | ${a.lagEnd.toFixed(2)} | ${(a.lag0 / a.lagN).toFixed(2)} | ${pct(a.bankOk, a.bankN)} | ${pct(a.bankCur, a.bankN)}`);
  for (const k of Object.keys(tot) as (keyof Acc)[]) tot[k] += a[k];
}
// Mean over corruptions of each corruption's error (the benchmark's mean online error).
const m = (k: 'rotta' | 'tbatch' | 'student' | 'bn') => (100 * [...per.values()].reduce((s, a) => s + a[k] / a.n, 0) / per.size).toFixed(2);
console.log(`mean | ${m('rotta')} | ${m('tbatch')} | ${m('student')} | ${m('bn')} | ${(tot.lag / tot.lagN).toFixed(2)} | ${(tot.lagEnd / per.size).toFixed(2)} | ${(tot.lag0 / tot.lagN).toFixed(2)} | ${pct(tot.bankOk, tot.bankN)} | ${pct(tot.bankCur, tot.bankN)}`);
await ad.release(); await bn.release(); await model.release(); await bnModel.release();
