// BN-adapt in the blocked NCHWc layout (src/onnx/nchwc-batchstats.ts) against the standard
// lowering, on the foreign CNNs (tmp/foreign-models, bench/foreign_torch.py --export), in ONE
// process: plain inference, BN-adapt 'standard', 'blocked' and 'blocked + pointwise' alternate call by call
// (the order rotates each round), so load from other jobs hits the three alike. 2 threads.
//
//   npx tsx bench/bn-adapt-blocked.ts [--models cnn28,resnet18_64,resnet18_224,mobilenet_v2_224] [--rounds 15]
//        [--out bench/results/bn-adapt-blocked]
//
// Prints and writes per model: median ms of each form, blocked/standard, each over inference,
// CPU ms medians, and the max relative difference of the logits (blocked vs standard).
import { writeFileSync, readFileSync } from 'node:fs';
import { loadModel } from '../src/model.ts';
import { BNAdapt, bnAdaptForm } from '../src/tta/bn-adapt.ts';
import { pointwiseStats } from '../src/onnx/nchwc-batchstats.ts';
import { f32 } from '../src/onnx/tensor.ts';
import { Rng } from '../src/util/rng.ts';
import { quantile, relDiff } from './stats.ts';

const args = process.argv.slice(2);
const argOf = (k: string) => (args.includes(k) ? args[args.indexOf(k) + 1] : undefined);
const MODELS: Record<string, { chw: number[]; batch: number }> = {
  cnn28: { chw: [1, 28, 28], batch: 64 }, resnet18_64: { chw: [3, 64, 64], batch: 64 },
  resnet18_224: { chw: [3, 224, 224], batch: 16 }, mobilenet_v2_224: { chw: [3, 224, 224], batch: 16 },
};
const models = (argOf('--models') ?? 'cnn28,resnet18_64,resnet18_224,mobilenet_v2_224').split(',');
const ROUNDS = Number(argOf('--rounds') ?? 15);
const out = argOf('--out') ?? 'bench/results/bn-adapt-blocked';
const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

const rows: Record<string, unknown>[] = [];
const md = [
  '# BN-adapt in the blocked layout',
  '',
  `\`npx tsx bench/bn-adapt-blocked.ts ${args.join(' ')}\` (${new Date().toISOString().slice(0, 16)} UTC). One process per model; inference, ` +
    `BN-adapt 'standard' (the portable lowering), 'blocked' (src/onnx/nchwc-batchstats.ts, every BN from its conv's output) and 'blocked + pointwise' (1×1 expansion convs take their BN statistics from the input's moments and fold the BN) alternate call by call, ${ROUNDS} rounds after 2 warm-up calls each, ` +
    '2 onnxruntime threads. The machine (2 cores) was shared with another job: compare the ratios. diff: max |blocked − standard| / max |standard| over the logits.',
  '',
  '| model (batch) | infer ms | standard ms | blocked ms | blocked + pointwise ms | blocked / standard | blocked + pointwise / standard | standard / infer | blocked / infer | blocked + pointwise / infer | CPU vs standard (blocked / + pointwise) | logits diff (blocked / + pointwise) | load start → end |',
  '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
];
for (const name of models) {
  const m = MODELS[name]!;
  const l0 = load();
  const model = await loadModel(`tmp/foreign-models/${name}.onnx`, { threads: 2 });
  const rng = new Rng(1);
  const x = f32([m.batch, ...m.chw], rng.fill(new Float32Array(m.batch * m.chw.reduce((a, b) => a * b, 1)), 1));
  const adapters: Record<string, BNAdapt> = {};
  const logits: Record<string, Float32Array> = {};
  for (const [form, pw] of [['standard', false], ['blocked', false], ['pointwise', true]] as const) {
    bnAdaptForm.current = form === 'standard' ? 'standard' : 'blocked';
    pointwiseStats.current = pw;
    adapters[form] = new BNAdapt(model);
    logits[form] = (await adapters[form]!.predict(x)).logits.data as Float32Array;
  }
  bnAdaptForm.current = 'blocked';
  pointwiseStats.current = true;
  const calls: Record<string, () => Promise<unknown>> = {
    infer: () => model.run({ x }, { outputs: ['logits'] }),
    standard: () => adapters.standard!.predict(x),
    blocked: () => adapters.blocked!.predict(x),
    pointwise: () => adapters.pointwise!.predict(x),
  };
  const names = Object.keys(calls);
  const wall: Record<string, number[]> = {}, cpu: Record<string, number[]> = {};
  for (const k of names) { wall[k] = []; cpu[k] = []; await calls[k]!(); await calls[k]!(); }
  for (let r = 0; r < ROUNDS; r++) {
    for (let j = 0; j < names.length; j++) {
      const k = names[(j + r) % names.length]!;
      const t = performance.now(), u = process.cpuUsage();
      await calls[k]!();
      const du = process.cpuUsage(u);
      wall[k]!.push(performance.now() - t); cpu[k]!.push((du.user + du.system) / 1000);
    }
  }
  const med = (k: string) => quantile(wall[k]!, 0.5), cmed = (k: string) => quantile(cpu[k]!, 0.5);
  const diff = relDiff(logits.blocked!, logits.standard!), diffPw = relDiff(logits.pointwise!, logits.standard!);
  const l1 = load();
  rows.push({ model: name, batch: m.batch, wall, cpu, diff, diffPw, loadStart: l0, loadEnd: l1 });
  const f = (v: number) => v.toFixed(1), q = (a: number, b: number) => (a / b).toFixed(2);
  const line = `| ${name} (${m.batch}) | ${f(med('infer'))} | ${f(med('standard'))} | ${f(med('blocked'))} | ${f(med('pointwise'))} | **${q(med('blocked'), med('standard'))}** | **${q(med('pointwise'), med('standard'))}** | ${q(med('standard'), med('infer'))} | ${q(med('blocked'), med('infer'))} | **${q(med('pointwise'), med('infer'))}** | ${q(cmed('blocked'), cmed('standard'))} / ${q(cmed('pointwise'), cmed('standard'))} | ${diff.toExponential(1)} / ${diffPw.toExponential(1)} | ${l0} → ${l1} |`;
  md.push(line);
  console.log(line);
  for (const a of Object.values(adapters)) await a.release();
  await model.release();
}
writeFileSync(`${out}.json`, JSON.stringify({ date: new Date().toISOString(), rounds: ROUNDS, rows }, null, 1) + '\n');
writeFileSync(`${out}.md`, md.join('\n') + '\n');
