// Constant-weight TTA steps in the blocked NCHWc layout (src/onnx/nchwc-step.ts) against the
// standard session graph (its 1×1 convs as MatMuls), both compiled in one process and run
// alternating, on torchvision CNNs at 224×224 (batch 16) and the foreign bench's 64×64 / 28×28
// models (batch 64). Prints ms per step of each and their ratio, and the largest difference of the
// first step's outputs (the forward) and of the second's (after one update: the gradients). Models
// missing from tmp/foreign-models are exported first (Debian's torch).
//
// With --compare interleave, both sides are blocked and the first interleaves strided input
// gradients' phases in NCHW (reordered out and back in), as before session 35; with --compare
// sumsq, the first sums squares by ReduceSumSquare, the second by Mul and ReduceSum (nchwc.ts
// sumOfSquares; BN-adapt's blocked pass uses it too: --method bn-adapt); with --compare expand,
// the first broadcasts per-channel operands over the blocked view, the second expands them over a
// sample's map first (blockedStep.expandChannels); --compare silu-recompute: SiLU's gradient keeps
// s or recomputes it (siluGradient.recompute, session 37); --compare views: a fresh 5-D view of a
// blocked tensor per use, or one shared (blockedStep.shareViews, session 37: lets onnxruntime fuse
// x·Sigmoid(x) into QuickGelu); with --method bn-adapt, --compare hardswish fuses x·HardSigmoid(x)
// into the conv or not (fuseHardSwish) and --compare squeeze-excite keeps SiLU and squeeze-
// excitation in the blocked layout or not (squeezeExciteBlocked), both session 37; --compare
// shift: BN moments about 0 or about a grid shift K (blockedStep.shiftMoments, session 38);
// --compare pointwise: a 1×1 conv's BN moments from its output or from its input's Gram product
// where that pays (blockedStep.pointwiseMoments, session 38); --compare silu-quickgelu: SiLU's
// recomputed gradient in seven standard ops or five with QuickGelu (blockedStep.quickGeluSilu);
// --compare pointwise-dx: such a 1×1 conv's input gradient through its BN's over the wide d, or
// from its input by two convs (blockedStep.pointwiseDx, session 39); --compare broadcast-expand: a
// global average pool's gradient expanded in NCHW and reordered in, or broadcast by the Add that
// reads it (blockedStep.broadcastExpand, session 39); --compare hardswish-grad: x·HardSigmoid(x)'s
// gradient by the Mul and HardSigmoid rules or from h in five ops (hardswish.ts, session 39);
// --compare gate-conv: a squeeze-excitation gate's products as broadcast Muls or as depthwise 1×1
// convs over the [1, N·Cp, H, W] view (blockedStep.gateConv; with --method bn-adapt gateAsConv, session 39);
// --compare pointwise-gate: the steps' Gram-route bound 16 or 40 (pointwiseStats.stepMaxCost);
// --compare gate-bias: the pool's gradient added to dY·gate, or that gate conv's bias (blockedStep.gateBias).
//
//   npx tsx bench/blocked-step.ts [--models mobilenet_v2_224,resnet50] [--method tent|bn-adapt|…] [--rounds 10] [--compare standard|interleave|sumsq|expand|silu|silu-recompute|views|shift|pointwise|pointwise-dx|broadcast-expand|hardswish-grad|gate-conv|gate-bias|pointwise-gate|silu-quickgelu|hardswish|squeeze-excite]
import { existsSync, mkdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../src/model.ts';
import { createAdapter } from '../src/tta/index.ts';
import { f32 } from '../src/onnx/tensor.ts';
import { blockedStep } from '../src/onnx/nchwc-step.ts';
import { fuseHardSwish, sumOfSquares } from '../src/onnx/nchwc.ts';
import { gateAsConv, pointwiseStats, squeezeExciteBlocked } from '../src/onnx/nchwc-batchstats.ts';
import { siluGradient } from '../src/autodiff/silu.ts';
import { hardSwishGradient } from '../src/autodiff/hardswish.ts';

const here = dirname(fileURLToPath(import.meta.url));
const dir = join(resolve(here, '..'), 'tmp', 'foreign-models');
const arg = (k: string, d: string) => { const i = process.argv.indexOf(`--${k}`); return i >= 0 ? process.argv[i + 1]! : d; };
const models = arg('models', 'mobilenet_v2_224,mobilenet_v3_large,efficientnet_b0,resnet50,regnet_y_400mf,resnet18_224,resnet18_64,cnn28').split(',');
const method = arg('method', 'tent'), rounds = Number(arg('rounds', '10'));
/** Each --compare: the switch the two sides differ in, and their names (off, on). */
const COMPARISONS: Record<string, { set: (on: boolean) => void; names: [string, string] }> = {
  standard: { set: (on) => { blockedStep.current = on; }, names: ['standard', 'blocked'] },
  interleave: { set: (on) => { blockedStep.interleave = on; }, names: ['NCHW interleave', 'blocked interleave'] },
  sumsq: { set: (on) => { sumOfSquares.current = on ? 'mul' : 'reduce'; }, names: ['ReduceSumSquare', 'Mul+ReduceSum'] },
  expand: { set: (on) => { blockedStep.expandChannels = on; }, names: ['broadcast', 'expanded'] },
  silu: { set: (on) => { siluGradient.current = on; }, names: ['Mul and Sigmoid rules', 'SiLU gradient'] },
  'silu-recompute': { set: (on) => { siluGradient.recompute = on; }, names: ['s kept', 's recomputed'] },
  shift: { set: (on) => { blockedStep.shiftMoments = on; }, names: ['unshifted', 'shifted'] },
  'silu-quickgelu': { set: (on) => { blockedStep.quickGeluSilu = on; }, names: ['SiLU gradient in seven ops', 'in five (QuickGelu)'] },
  pointwise: { set: (on) => { blockedStep.pointwiseMoments = on; }, names: ['1×1 moments from the output', '1×1 moments from the input'] },
  'pointwise-dx': { set: (on) => { blockedStep.pointwiseDx = on; }, names: ['1×1 input gradient through d', 'from the input'] },
  'gate-bias': { set: (on) => { blockedStep.gateBias = on; }, names: ['pool gradient added', 'as the gate conv\'s bias'] },
  'pointwise-gate': { set: (on) => { pointwiseStats.stepMaxCost = on ? 40 : 16; }, names: ['Gram route at cost ≤ 16', 'at cost ≤ 40'] },
  'gate-conv': { set: (on) => { blockedStep.gateConv = on; gateAsConv.current = on; }, names: ['SE gate Mul broadcast', 'SE gate as a depthwise conv'] },
  'hardswish-grad': { set: (on) => { hardSwishGradient.current = on; }, names: ['Mul and HardSigmoid rules', 'HardSwish gradient from h'] },
  'broadcast-expand': { set: (on) => { blockedStep.broadcastExpand = on; }, names: ['NCHW Expand reordered in', 'broadcast Add'] },
  views: { set: (on) => { blockedStep.shareViews = on; }, names: ['a view per use', 'shared views'] },
  hardswish: { set: (on) => { fuseHardSwish.current = on; }, names: ['HardSigmoid and Mul', 'fused HardSwish'] },
  'squeeze-excite': { set: (on) => { squeezeExciteBlocked.current = on; }, names: ['SiLU and SE reordered out', 'SiLU and SE blocked'] },
};
const compare = arg('compare', 'standard');
const comparison = COMPARISONS[compare];
if (!comparison) throw new Error(`--compare ${compare}: expected one of ${Object.keys(COMPARISONS).join(', ')}`);
const flip = comparison.set;
const [offName, onName] = comparison.names;
/** The foreign bench's own models (bench/foreign_torch.py exports them) and their input sizes. */
const FOREIGN: Record<string, [number, number, number]> = { cnn28: [64, 1, 28], resnet18_64: [64, 3, 64], resnet18_224: [16, 3, 224], mobilenet_v2_224: [16, 3, 224] };

/** torchvision's classifiers as exported for issue 12's checks: 10 classes, BatchNorm kept, dynamic batch. */
function exportTorchvision(name: string): void {
  mkdirSync(dir, { recursive: true });
  const py = `import torch, torchvision
torch.manual_seed(0)
m = getattr(torchvision.models, '${name}')(num_classes=10).eval()
torch.onnx.export(m, torch.randn(2, 3, 224, 224), '${join(dir, `${name}.onnx`)}', input_names=['x'], output_names=['logits'], opset_version=13,
  training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False, dynamic_axes={'x': {0: 'n'}, 'logits': {0: 'n'}})`;
  const r = spawnSync('/usr/bin/python3', ['-c', py], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`exporting torchvision ${name} failed (Debian's python3-torch and python3-torchvision needed): ${r.stderr.slice(-500)}`);
}

for (const name of models) {
  const file = join(dir, `${name}.onnx`);
  if (!existsSync(file)) {
    if (FOREIGN[name]) throw new Error(`${file} is missing: run npx tsx bench/foreign.ts once, which exports it`);
    exportTorchvision(name);
  }
  const [batch, ch, hw] = FOREIGN[name] ?? [16, 3, 224];
  const x = new Float32Array(batch * ch * hw * hw);
  for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 0.1) + 0.3 * Math.cos(i * 0.013);
  const X = f32([batch, ch, hw, hw], x);
  const make = async (on: boolean) => {
    flip(on);
    const m = await loadModel(file, { threads: 2 });
    const a = createAdapter(m, method as never, method === 'sar' || method === 'eata' ? { marginFactor: 1.001 } : {});
    // The first call's logits (the forward), and the second's: after one update, so they differ
    // where the two forms' gradients do.
    const logits = async () => ((await a.predict(X)) as { logits: { data: Float32Array } }).logits.data;
    return { a, logits: await logits(), updated: await logits() };
  };
  const off = await make(false), on = await make(true);
  flip(true);
  let diff = 0, scale = 0, diffUpdated = 0;
  for (let i = 0; i < off.logits.length; i++) {
    diff = Math.max(diff, Math.abs(off.logits[i]! - on.logits[i]!));
    diffUpdated = Math.max(diffUpdated, Math.abs(off.updated[i]! - on.updated[i]!));
    scale = Math.max(scale, Math.abs(off.logits[i]!));
  }
  const t = { off: [] as number[], on: [] as number[] };
  for (let r = 0; r < rounds; r++) for (const [k, s] of [['off', off], ['on', on]] as const) { const t0 = performance.now(); await s.a.predict(X); t[k].push(performance.now() - t0); }
  const med = (v: number[]) => [...v].sort((p, q) => p - q)[v.length >> 1]!;
  console.log(`${name} ${method} b${batch}: ${offName} ${med(t.off).toFixed(1)} ms, ${onName} ${med(t.on).toFixed(1)} ms, ${onName}/${offName} ${(med(t.on) / med(t.off)).toFixed(3)}; first outputs differ by ${diff.toExponential(1)}, after one update by ${diffUpdated.toExponential(1)} (largest |logit| ${scale.toFixed(2)})`);
}
