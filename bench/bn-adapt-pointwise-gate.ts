// Which 1×1 convs should take their BN statistics from their input's moments (the Gram route of
// src/onnx/nchwc-batchstats.ts pointwiseBatchNorm)? BN-adapt in the blocked form with
// `pointwiseStats.maxCost` at several values (0: no conv takes it; Infinity: every widening conv,
// the rule before session 37), against plain inference, in ONE process, alternating call by call
// with the order rotating each round. 2 threads; foreign models from tmp/foreign-models.
//
//   npx tsx bench/bn-adapt-pointwise-gate.ts [--models mobilenet_v2_224,regnet_y_400mf_224] [--costs 0,4,16,64,Infinity] [--rounds 10] [--out F]
import { writeFileSync } from 'node:fs';
import { loadModel } from '../src/model.ts';
import { batchStatModel, bnAdaptForm } from '../src/tta/bn-adapt.ts';
import { pointwiseStats } from '../src/onnx/nchwc-batchstats.ts';
import { f32 } from '../src/onnx/tensor.ts';
import { Rng } from '../src/util/rng.ts';
import { quantile, relDiff } from './stats.ts';

const args = process.argv.slice(2);
const argOf = (k: string) => (args.includes(k) ? args[args.indexOf(k) + 1] : undefined);
const SHAPES: Record<string, { chw: number[]; batch: number }> = { cnn28: { chw: [1, 28, 28], batch: 64 }, resnet18_64: { chw: [3, 64, 64], batch: 64 } };
const shapeOf = (name: string) => SHAPES[name] ?? { chw: [3, 224, 224], batch: 16 };
const models = (argOf('--models') ?? 'mobilenet_v2_224,mobilenet_v3_large_224,efficientnet_b0_224,regnet_y_400mf_224,resnet50_224,resnet18_224').split(',');
const costs = (argOf('--costs') ?? '0,4,16,64,Infinity').split(',').map(Number);
const ROUNDS = Number(argOf('--rounds') ?? 10);
const out = argOf('--out');

const md = [
  '# BN-adapt: which 1×1 convs take their statistics from the input (pointwiseStats.maxCost)', '',
  `\`npx tsx bench/bn-adapt-pointwise-gate.ts ${args.join(' ')}\` (${new Date().toISOString().slice(0, 16)} UTC). Blocked BN-adapt with each maxCost and plain inference alternate call by call in one process per model, ${ROUNDS} rounds after 2 warm-up calls; median ms; ratio to inference in brackets; diff: max |logits − maxCost 0's| / max |maxCost 0's|.`, '',
  `| model (batch) | infer ms | ${costs.map((c) => `maxCost ${c}`).join(' | ')} | 1×1 convs on the Gram route | max diff |`,
  `|---|---:|${costs.map(() => '---:').join('|')}|---|---:|`,
];
const json: Record<string, unknown>[] = [];
bnAdaptForm.current = 'blocked';
const saved = pointwiseStats.maxCost;
for (const name of models) {
  const { chw, batch } = shapeOf(name);
  const model = await loadModel(`tmp/foreign-models/${name}.onnx`, { threads: 2 });
  const x = f32([batch, ...chw], new Rng(1).fill(new Float32Array(batch * chw.reduce((a, b) => a * b, 1)), 1));
  const calls: Record<string, () => Promise<unknown>> = { infer: () => model.run({ x }, { outputs: ['logits'] }) };
  const logits: Record<string, Float32Array> = {}, routed: number[] = [];
  for (const c of costs) {
    pointwiseStats.maxCost = c;
    const v = await batchStatModel(model, { x });
    logits[c] = (await v.run({ x }, { outputs: ['logits'] })).logits!.data as Float32Array;
    // pointwiseBatchNorm writes three MatMuls per conv (Gram, W·mean, W·Σ); nothing else in the graph does.
    routed.push(v.ir.graph.nodes.filter((n) => n.opType === 'MatMul').length / 3);
    calls[`c${c}`] = () => v.run({ x }, { outputs: ['logits'] });
  }
  pointwiseStats.maxCost = saved;
  const names = Object.keys(calls), wall: Record<string, number[]> = {};
  for (const k of names) { wall[k] = []; await calls[k]!(); await calls[k]!(); }
  for (let r = 0; r < ROUNDS; r++) {
    for (let j = 0; j < names.length; j++) {
      const k = names[(j + r) % names.length]!, t = performance.now();
      await calls[k]!();
      wall[k]!.push(performance.now() - t);
    }
  }
  const med = (k: string) => quantile(wall[k]!, 0.5);
  const diff = Math.max(...costs.map((c) => relDiff(logits[c]!, logits[costs[0]!]!)));
  const line = `| ${name} (${batch}) | ${med('infer').toFixed(1)} | ${costs.map((c) => `${med(`c${c}`).toFixed(1)} (${(med(`c${c}`) / med('infer')).toFixed(2)})`).join(' | ')} | ${routed.join(' / ')} | ${diff.toExponential(1)} |`;
  console.log(line);
  md.push(line);
  json.push({ model: name, batch, costs, wall, routed, diff });
}
if (out) { writeFileSync(`${out}.md`, md.join('\n') + '\n'); writeFileSync(`${out}.json`, JSON.stringify(json)); }

