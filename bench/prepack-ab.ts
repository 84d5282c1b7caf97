// Training steps with onnxruntime's weight pre-packing on and off (SessionOptions.prepack), on
// models refit did not build: the same compiled step in two sessions, alternating call by call in
// ONE process for time (median of per-round off/on ratios) and how far apart the losses and
// gradients are; then one child process per side for peak RSS.
//
//   npx tsx bench/prepack-ab.ts [--cases smollm-lora,llama-lora,gpt-lora,bert-lora,vit-lora,resnet18_64-tent]
//        [--rounds 8] [--out bench/results/prepack-ab]
//
// Transformers: bench/transformers.ts's models and batches (tmp/transformer-models, made by
// bench/transformers_torch.py --export), LoRA rank 8 on every Linear. vit-lora: the shipped ViT,
// batch 64. CNNs: bench/foreign_torch.py --export's models (tmp/foreign-models), the Tent step
// (BatchNorm affine, entropy, batch statistics), batch 64.
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel, type RefitModel } from '../src/model.ts';
import * as losses from '../src/train/losses.ts';
import * as peft from '../src/peft/index.ts';
import { withoutKvCache } from '../src/onnx/kv-cache.ts';
import { f32, i64, type Tensor } from '../src/onnx/tensor.ts';
import type { TrainStep } from '../src/train/train-step.ts';
import type { LossSpec } from '../src/train/loss-spec.ts';
import { TRANSFORMERS, transformerBatch, type TransformerName } from './transformer-batches.ts';
import { median } from './stats.ts';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
const arg = (k: string, d: string) => { const i = process.argv.indexOf(`--${k}`); return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : d; };
const THREADS = 2;
const loraAll = () => peft.lora({ targets: (s) => (s.group ?? 1) === 1 && Math.min(s.dIn, s.dOut) >= 8, rank: 8, alpha: 8 });

interface Case { model: RefitModel; trainable: string[]; loss: LossSpec; batchNorm?: 'train'; feeds: Record<string, Tensor> }

async function makeCase(name: string): Promise<Case> {
  const [model] = name.split('-') as [string, string];
  if (model in TRANSFORMERS) {
    const base = withoutKvCache(await loadModel(join(root, 'tmp', 'transformer-models', `${model}.onnx`), { threads: THREADS }));
    const { feeds, loss } = await transformerBatch(model as TransformerName);
    const p = peft.withAdapter(base, 'lora', loraAll());
    return { model: p, trainable: p.trainableNames('lora'), loss, feeds };
  }
  const x = (n: number, chw: number[]) => f32([n, ...chw], Float32Array.from({ length: n * chw.reduce((a, b) => a * b) }, (_, i) => Math.sin(i * 0.37) * 0.8));
  if (model === 'vit') {
    const base = await loadModel(join(root, 'models', 'fmnist-vit.onnx'), { threads: THREADS });
    const p = peft.withAdapter(base, 'lora', loraAll());
    const input = base.inputs[0]!.name;
    return { model: p, trainable: p.trainableNames('lora'), loss: losses.crossEntropy({ logits: base.outputs[0]!.name, labels: 'y' }), feeds: { [input]: x(64, [1, 28, 28]), y: i64([64], Array.from({ length: 64 }, (_, i) => i % 10)) } };
  }
  const chw = model === 'cnn28' ? [1, 28, 28] : [3, 64, 64];
  const base = await loadModel(join(root, 'tmp', 'foreign-models', `${model}.onnx`), { threads: THREADS });
  const bn = base.ir.graph.nodes.filter((n) => n.opType === 'BatchNormalization').flatMap((n) => [n.inputs[1]!, n.inputs[2]!]);
  return { model: base, trainable: bn, batchNorm: 'train', loss: losses.softmaxEntropy({ logits: base.outputs[0]!.name }), feeds: { [base.inputs[0]!.name]: x(64, chw) } };
}

const compile = (c: Case, prepack: boolean): TrainStep => c.model.compileTrainStep({ trainable: c.trainable, loss: c.loss, batchNorm: c.batchNorm, session: { threads: THREADS, prepack } });

function relDiff(a: Float32Array, b: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) { num += (a[i]! - b[i]!) ** 2; den += b[i]! ** 2; }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

if (process.argv[2] === '--child') {
  // One side alone, for its peak RSS: compile, warm up, time `reps` steps.
  const [name, prepack, reps] = process.argv.slice(3) as [string, string, string];
  const c = await makeCase(name);
  const step = compile(c, prepack === 'on');
  const times: number[] = [];
  for (let i = 0; i < Number(reps) + 1; i++) { const t = performance.now(); await step.run(c.feeds); if (i) times.push(performance.now() - t); }
  // VmHWM, not resourceUsage().maxRSS: Linux carries the parent's high-water mark across fork and
  // exec into ru_maxrss, and this parent has already run the larger cases.
  const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))![1]) / 1024;
  console.log(JSON.stringify({ ms: median(times), peak_rss_mb: hwm }));
  process.exit(0);
}

const cases = arg('cases', 'smollm-lora,llama-lora,gpt-lora,bert-lora,vit-lora,resnet18_64-tent').split(',');
const rounds = Number(arg('rounds', '8'));
const out = arg('out', join(root, 'bench/results/prepack-ab'));
const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
const rows: Record<string, unknown>[] = [];
for (const name of cases) {
  const l0 = load();
  const c = await makeCase(name);
  const on = compile(c, true), off = compile(c, false);
  const a = await on.run(c.feeds), b = await off.run(c.feeds); // compile both, and compare the numbers
  let worst = 0;
  for (const [k, g] of a.grads) worst = Math.max(worst, relDiff(b.grads.get(k)!, g));
  const ratios: number[] = [], tOn: number[] = [], tOff: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 ? [off, on] : [on, off];
    const t: number[] = [];
    for (const s of order) { const t0 = performance.now(); await s.run(c.feeds); t.push(performance.now() - t0); }
    const [ton, toff] = r % 2 ? [t[1]!, t[0]!] : [t[0]!, t[1]!];
    tOn.push(ton); tOff.push(toff); ratios.push(toff / ton);
  }
  await on.release(); await off.release();
  const rss: Record<string, number> = {};
  for (const side of ['on', 'off']) {
    const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', name, side, '3'], { cwd: root, encoding: 'utf8', maxBuffer: 1 << 24 });
    rss[side] = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}').peak_rss_mb;
  }
  const row = { case: name, onMs: median(tOn), offMs: median(tOff), ratio: median(ratios), lossOn: a.loss, lossOff: b.loss, worstGradRel: worst, rssOn: rss.on, rssOff: rss.off, load: `${l0} → ${load()}` };
  rows.push(row);
  console.log(JSON.stringify(row));
}
const lines = [`# Pre-packing on and off (${new Date().toISOString()})`, '', `\`npx tsx bench/prepack-ab.ts ${process.argv.slice(2).join(' ')}\`; ${THREADS} threads; ${rounds} alternating rounds per case (time: medians, ratio: median of per-round off / on); peak RSS: one child process per side (3 steps after the first).`, '',
  '| case | on ms | off ms | off / on | loss on / off | worst gradient rel. diff | peak RSS on / off MB | load |', '|---|---:|---:|---:|---|---:|---|---|'];
for (const r of rows as { case: string; onMs: number; offMs: number; ratio: number; lossOn: number; lossOff: number; worstGradRel: number; rssOn: number; rssOff: number; load: string }[]) {
  lines.push(`| ${r.case} | ${r.onMs.toFixed(1)} | ${r.offMs.toFixed(1)} | ${r.ratio.toFixed(3)} | ${r.lossOn.toFixed(6)} / ${r.lossOff.toFixed(6)} | ${r.worstGradRel.toExponential(1)} | ${r.rssOn?.toFixed(0)} / ${r.rssOff?.toFixed(0)} | ${r.load} |`);
}
writeFileSync(`${out}.json`, JSON.stringify({ date: new Date().toISOString(), rounds, rows }, null, 1));
writeFileSync(`${out}.md`, lines.join('\n') + '\n');
console.log(`wrote ${out}.json and .md`);
