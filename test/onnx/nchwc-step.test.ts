// Constant-weight training steps in the blocked NCHWc layout (src/onnx/nchwc-step.ts), pinned
// against the standard session graph on a MobileNet-style net (1×1 expansion with a bias → BN →
// Clip(0, 6) → depthwise 3×3 stride 2 → BN → Relu → 1×1 projection to 24 channels (not whole
// blocks) → BN → residual Add through a 1×1 shortcut, then a squeeze-excitation gate): loss, every
// BN affine gradient and the running statistics within 1e-5; and the pass itself: every conv
// blocked, no train-mode BatchNormalization left, its moments still graph tensors, the swapped
// weights of the input-gradient convs element for element, the 1×1 expansion's BN moments taken
// from its input. The strided depthwise conv's input gradient is written by phase (its size limit
// lowered here) with 40 channels (8 pad lanes), and its phases are interleaved in the blocked
// layout: the same numbers as interleaved in NCHW; per-channel operands expanded over a sample's
// map give the same numbers as broadcast, one shared 5-D view per blocked tensor the same as a
// view per use, the pool's gradient broadcast by the Add that reads it the same as expanded, and
// the squeeze-excitation gate's products as depthwise convs over the batch the same as Muls (and
// the pool's gradient as the backward one's bias the same as added).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { RefitModel } from '../../src/model.ts';
import { randomProjectionLoss } from '../../src/autodiff/gradcheck.ts';
import { NCHWC_DOMAIN, blockedWeight, nchwcBlockSize } from '../../src/onnx/nchwc.ts';
import { blockedStep, blockStepActivations, swappedWeight } from '../../src/onnx/nchwc-step.ts';
import { phaseStridedDx, stridedDxPhases } from '../../src/train/strided-dx-phases.ts';
import { signatureOf } from '../../src/onnx/shapes.ts';
import { cloneModel, type Model, type Node } from '../../src/onnx/ir.ts';
import '../../src/autodiff/rules/index.ts';
import { f32, type Tensor } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { relErr } from '../helpers/close.ts';
import { randomInitializers } from '../helpers/random-init.ts';

const N = 4, C = 16, E = 40, P = 24, S = 8;
const block = await nchwcBlockSize();
const skip = block === null ? 'onnxruntime has no NCHWc kernels on this CPU: the pass is off' : false;

function net(): Model {
  const b = new ModelBuilder({ opset: 13 });
  const init = randomInitializers(b, new Rng(5));
  init('we', [E, C, 1, 1], 0.4); init('be', [E], 0.2);
  init('wd', [E, 1, 3, 3], 0.4);
  init('wp', [P, E, 1, 1], 0.3);
  init('wsk', [P, C, 1, 1], 0.3);
  init('wse', [P, P, 1, 1], 0.4); init('bse', [P], 0.1);
  for (const [k, c] of [[0, E], [1, E], [2, P], [3, P]] as const) { init(`g${k}`, [c], 0.2, 1); init(`b${k}`, [c], 0.2); init(`m${k}`, [c], 0.1); init(`v${k}`, [c], 0.1, 1); }
  b.initializer('lo', f32([], new Float32Array([0]))).initializer('hi', f32([], new Float32Array([6])));
  b.input('x', 'float32', [N, C, S, S]);
  const bn = (i: number, x: string, y: string) => b.node('BatchNormalization', [x, `g${i}`, `b${i}`, `m${i}`, `v${i}`], [y], { epsilon: 1e-5, momentum: 0.9 });
  b.node('Conv', ['x', 'we', 'be'], ['e'], { kernel_shape: [1, 1] }, 'expand');
  bn(0, 'e', 'en'); b.node('Clip', ['en', 'lo', 'hi'], ['er']);
  b.node('Conv', ['er', 'wd'], ['d'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1], strides: [2, 2], group: E }, 'depthwise');
  bn(1, 'd', 'dn'); b.node('Relu', ['dn'], ['dr']);
  b.node('Conv', ['dr', 'wp'], ['p'], { kernel_shape: [1, 1] }, 'project');
  bn(2, 'p', 'pn');
  b.node('Conv', ['x', 'wsk'], ['sk'], { kernel_shape: [1, 1], strides: [2, 2] }, 'shortcut');
  bn(3, 'sk', 'skn');
  b.node('Add', ['pn', 'skn'], ['r']);
  b.node('GlobalAveragePool', ['r'], ['pool']);
  b.node('Conv', ['pool', 'wse', 'bse'], ['sc'], { kernel_shape: [1, 1] }, 'se');
  b.node('Sigmoid', ['sc'], ['gate']);
  b.node('Mul', ['r', 'gate'], ['y']);
  b.output('y');
  return b.build();
}

const batch = (): Record<string, Tensor> => ({ x: f32([N, C, S, S], new Rng(6).fill(new Float32Array(N * C * S * S), 1)) });
const NORM = [0, 1, 2, 3].flatMap((k) => [`g${k}`, `b${k}`]);

async function step(on: boolean, forms: Partial<typeof blockedStep> = {}) {
  const saved = { ...blockedStep }, minElements = stridedDxPhases.minElements;
  Object.assign(blockedStep, { current: on, ...forms });
  stridedDxPhases.minElements = 0;
  const s = new RefitModel(net(), { threads: 1 }).compileTrainStep({ trainable: NORM, loss: randomProjectionLoss(['y'], 7), batchNorm: 'train' });
  try {
    const b = batch();
    const { graph } = await s.compile(signatureOf(b));
    return { r: await s.run(b), graph };
  } finally {
    Object.assign(blockedStep, saved);
    stridedDxPhases.minElements = minElements;
    await s.release();
  }
}

/**
 * One step of `model` (BN affines `trainable`) with the blocked pass's switches `forms`, and a copy
 * of its portable graph through the pass (where the pass is on), to read the forms it wrote.
 */
async function stepAndPass(model: Model, trainable: string[], forms: Partial<typeof blockedStep>) {
  const saved = { ...blockedStep };
  Object.assign(blockedStep, forms);
  const s = new RefitModel(model, { threads: 1 }).compileTrainStep({ trainable, loss: randomProjectionLoss(['y'], 7), batchNorm: 'train' });
  try {
    const x = batch();
    const { graph } = await s.compile(signatureOf(x));
    const m = cloneModel(graph.model);
    if (blockedStep.current) blockStepActivations(m, graph.shapes, block!);
    return { r: await s.run(x), m };
  } finally { Object.assign(blockedStep, saved); await s.release(); }
}

test('a constant-weight step in the blocked layout gives the standard step\'s loss, BN gradients and running statistics', { skip }, async () => {
  const [std, blk] = [await step(false), await step(true)];
  assert.ok(Math.abs(std.r.loss - blk.r.loss) <= 1e-5 * Math.abs(std.r.loss), `loss ${blk.r.loss} vs ${std.r.loss}`);
  for (const p of NORM) {
    const a = std.r.grads.get(p)!, g = blk.r.grads.get(p)!;
    assert.ok(relErr(g, a) <= 1e-5, `grad ${p}: relative error ${relErr(g, a)}`);
  }
  assert.ok(std.r.runningStats.size > 0);
  for (const [k, v] of std.r.runningStats) assert.ok(relErr(blk.r.runningStats.get(k)!, v) <= 1e-5, `running statistic ${k}`);
});

test('the blocked step\'s forms give the same numbers as the forms they replaced: phases interleaved in NCHW, per-channel operands broadcast, a view per use, the pool\'s gradient expanded, the gate a Mul', { skip }, async () => {
  const blk = await step(true);
  for (const old of [{ interleave: false }, { expandChannels: false }, { shareViews: false }, { broadcastExpand: false }, { gateConv: false }, { gateBias: false }]) {
    const r = (await step(true, old)).r;
    assert.equal(blk.r.loss, r.loss, JSON.stringify(old));
    for (const p of NORM) assert.deepEqual(blk.r.grads.get(p), r.grads.get(p), `grad ${p} against ${JSON.stringify(old)}`);
  }
});

test('the pass: every conv blocked, no train-mode BatchNormalization left, its moments kept as graph tensors', { skip }, async () => {
  const { graph } = await step(true); // its portable graph: the pass runs on the session's copy
  const m = cloneModel(graph.model);
  const minElements = stridedDxPhases.minElements;
  stridedDxPhases.minElements = 0;
  try { assert.equal(phaseStridedDx(m), 1, 'the depthwise conv\'s input gradient by phase, as train-step.ts writes the session\'s copy'); } finally { stridedDxPhases.minElements = minElements; }
  const convs = (model: Model, domain: string) => model.graph.nodes.filter((n) => n.opType === 'Conv' && n.domain === domain).length;
  const before = convs(m, '');
  const expands = (model: Model) => model.graph.nodes.filter((n) => n.opType === 'Expand').length;
  const expandsBefore = expands(m);
  const moved = blockStepActivations(m, graph.shapes, block!);
  assert.ok(expands(m) > expandsBefore, 'per-channel operands expanded over a sample\'s map (batch 4)');
  // The pool's input gradient (an Expand of [N, C, 1, 1] in the portable graph) is not expanded: the
  // Add that reads it broadcasts it from its blocked [N, C/b, 1, 1, b] view.
  const written = new Set(m.graph.nodes.flatMap((n) => n.outputs));
  const gone = graph.model.graph.nodes.filter((n) => n.opType === 'Expand' && !written.has(n.outputs[0]!));
  assert.equal(gone.length, 1, 'the squeeze-excitation pool\'s gradient alone');
  // The gate's products (forward, and the gradient to r) as depthwise 1×1 convs over [1, N·Cp, H, W].
  const gates = m.graph.nodes.filter((n) => n.domain === NCHWC_DOMAIN && n.opType === 'Conv' && n.attrs.group?.value === N * 32);
  assert.equal(gates.length, 2, 'r·gate and dY·gate');
  assert.equal(gates.filter((n) => n.inputs[2]).length, 1, 'the pool\'s gradient as dY·gate\'s bias');
  // Left: the squeeze-excitation conv and its input gradient, on one position (nothing to block).
  const left = m.graph.nodes.filter((n) => n.opType === 'Conv' && n.domain === '');
  assert.ok(left.every((n) => n.inputs[1] === 'wse' || n.meta?.flippedWeightOf === 'wse'), `left as standard Convs: ${left.map((n) => n.name)}`);
  assert.equal(moved, before - left.length);
  assert.ok(convs(m, NCHWC_DOMAIN) > moved, 'the BN normalisations are blocked convs too');
  assert.deepEqual(m.graph.nodes.filter((n) => n.opType === 'BatchNormalization' && n.outputs.length > 1).map((n) => n.name), []);
  const produced = new Set(m.graph.nodes.flatMap((n) => n.outputs));
  for (const n of graph.model.graph.nodes.filter((k) => k.opType === 'BatchNormalization' && k.outputs.length > 1)) {
    for (const o of n.outputs.slice(1, 3)) assert.ok(produced.has(o), `moment '${o}' is no longer computed`);
  }
  // The depthwise conv's input gradient by phase, interleaved by Concats of blocked phases (6-D
  // views of nchwc Conv outputs), none reordered out.
  const producer = new Map(m.graph.nodes.flatMap((n) => n.outputs.map((o) => [o, n] as const)));
  const origin = (t: string): Node | undefined => { const p = producer.get(t); return p?.opType === 'Reshape' ? origin(p.inputs[0]!) : p; };
  const concats = m.graph.nodes.filter((n) => n.opType === 'Concat');
  assert.equal(concats.length, 3, 'two rows of two phases, then the rows');
  for (const k of concats) for (const i of k.inputs) assert.ok(origin(i)?.domain === NCHWC_DOMAIN || origin(i)?.opType === 'Concat', `${k.name} reads ${origin(i)?.opType}`);
  // One 5-D view per blocked tensor, however many element-wise ops read it (x·Sigmoid(x) must read
  // one name twice for onnxruntime to fuse it into QuickGelu).
  const shapeKey = (n: Node) => { const t = m.graph.initializers.get(n.inputs[1]!); return t ? `${n.inputs[0]}|${Array.from(t.data as BigInt64Array).join()}` : undefined; };
  const views5 = m.graph.nodes.filter((n) => n.opType === 'Reshape' && m.graph.initializers.get(n.inputs[1]!)?.data.length === 5).map(shapeKey);
  assert.ok(views5.length > 0);
  assert.equal(new Set(views5).size, views5.length, 'a blocked tensor viewed twice');
  // The 1×1 expansion's BN moments from its input (16 channels, 256 positions: the Gram product
  // pays): its Gram, W·mean and W·Σ MatMuls, none with the switch off.
  const matmuls = (model: Model) => model.graph.nodes.filter((n) => n.opType === 'MatMul').length;
  const direct = cloneModel(graph.model);
  phaseStridedDx(direct);
  blockedStep.pointwiseMoments = false;
  try { blockStepActivations(direct, graph.shapes, block!); } finally { blockedStep.pointwiseMoments = true; }
  assert.equal(matmuls(m) - matmuls(direct), 3, 'the expansion BN\'s moments from its input');
  const off = cloneModel(graph.model);
  blockedStep.current = false;
  try { assert.equal(blockStepActivations(off, graph.shapes, block!), 0, 'the switch turns it off'); } finally { blockedStep.current = true; }
});

test('the input-gradient weights: every tap swapped per group, and the blocked layouts', () => {
  // W [O=4, C/G=2, 3, 3], G=2: element [g·2 + c, o, j] = W[g·2 + o, c, taps[j]].
  const w = f32([4, 2, 3, 3], Array.from({ length: 72 }, (_, i) => i));
  const flipped = swappedWeight(w, 2, [8, 7, 6, 5, 4, 3, 2, 1, 0], [3, 3]);
  assert.deepEqual(flipped.dims, [4, 2, 3, 3]);
  const at = (t: Tensor, a: number, b: number, j: number) => (t.data as Float32Array)[(a * t.dims[1]! + b) * 9 + j];
  for (let g = 0; g < 2; g++) for (let c = 0; c < 2; c++) for (let o = 0; o < 2; o++) for (let j = 0; j < 9; j++) assert.equal(at(flipped, g * 2 + c, o, j), at(w, g * 2 + o, c, 8 - j));
  const phase = swappedWeight(w, 1, [4, 0], [2, 1]);
  assert.deepEqual(phase.dims, [2, 4, 2, 1]);
  assert.equal((phase.data as Float32Array)[(1 * 4 + 3) * 2 + 1], at(w, 3, 1, 0));
  // OIHWBiBo with b = 2, padded from [3, 3] to [4, 4]: [O/b][I/b][kh][kw][b_in][b_out].
  const small = f32([3, 3, 1, 1], Array.from({ length: 9 }, (_, i) => i + 1));
  const bl = blockedWeight(small, 4, 4, 'OIHWBiBo', 2).data as Float32Array;
  const idx = (o: number, i: number) => ((Math.floor(o / 2) * 2 + Math.floor(i / 2)) * 2 + (i % 2)) * 2 + (o % 2);
  for (let o = 0; o < 4; o++) for (let i = 0; i < 4; i++) assert.equal(bl[idx(o, i)], o < 3 && i < 3 ? o * 3 + i + 1 : 0);
});

// Activations whose mean is far above their spread: the blocked step takes a train-mode BN's
// moments from one-pass sums about a shift K (the mean of the conv's outputs on a grid over the
// batch, nchwc-shift.ts), so E[d²] − E[d]² keeps its digits. Taken about 0 instead (the form before
// session 38, blockedStep.shiftMoments off) a gradient is 15× off: the check fails.
test('the blocked step keeps a BN\'s gradients when activations have mean 1000 and spread ~1', { skip }, async () => {
  const big = (): Record<string, Tensor> => { const rng = new Rng(6); return { x: f32([N, C, S, S], Float32Array.from({ length: N * C * S * S }, () => 1000 + rng.normal())) }; };
  const run = async (on: boolean, shiftMoments = true, checkpoint: number | false = false) => {
    const saved = { ...blockedStep };
    Object.assign(blockedStep, { current: on, shiftMoments });
    const s = new RefitModel(net(), { threads: 1 }).compileTrainStep({ trainable: NORM, loss: randomProjectionLoss(['y'], 7), batchNorm: 'train', checkpoint });
    try { return await s.run(big()); } finally { Object.assign(blockedStep, saved); await s.release(); }
  };
  const [std, blk, unshifted] = [await run(false), await run(true), await run(true, false)];
  const worst = (r: typeof blk) => Math.max(...NORM.map((p) => relErr(r.grads.get(p)!, std.grads.get(p)!)));
  assert.ok(worst(blk) <= 1e-3, `blocked step's BN gradients off the standard step's by ${worst(blk)}`);
  assert.ok(worst(unshifted) > 1e-2, `without the shift: ${worst(unshifted)} (the check would not see the defect)`);
  // Activation checkpointing gives the gradient copies of x: a BN whose gradient reads one must not
  // be shifted (its copies of x are not), and the others still are.
  for (const segments of [2, 3, 4]) {
    const ck = await run(true, true, segments);
    assert.ok(worst(ck) <= 1e-3, `checkpointed (${segments} segments): ${worst(ck)}`);
  }
  console.log(`# mean 1000: BN gradients off the standard step's by ${worst(blk).toExponential(1)} (shifted), ${worst(unshifted).toExponential(1)} (unshifted)`);
});

// SiLU's recomputed input gradient (silu.ts: seven ops) written on blocked tensors in five, with
// onnxruntime's QuickGelu(x, α = −1) and a Sigmoid of the 4-D blocked tensor (blockedStep.quickGeluSilu):
// the standard step's gradients, and the forward's x·Sigmoid(x) still fused (no Sigmoid kept for it).
test('SiLU\'s gradient in the blocked step: five ops with QuickGelu give the standard step\'s BN gradients', { skip }, async () => {
  const b = new ModelBuilder({ opset: 13 });
  const init = randomInitializers(b, new Rng(8));
  init('w1', [E, C, 1, 1], 0.4); init('w2', [E, 1, 3, 3], 0.4);
  for (const [k, c] of [[0, E], [1, E]] as const) { init(`g${k}`, [c], 0.2, 1); init(`b${k}`, [c], 0.2); init(`m${k}`, [c], 0.1); init(`v${k}`, [c], 0.1, 1); }
  b.input('x', 'float32', [N, C, S, S]);
  const bn = (i: number, x: string, y: string) => b.node('BatchNormalization', [x, `g${i}`, `b${i}`, `m${i}`, `v${i}`], [y], { epsilon: 1e-5, momentum: 0.9 });
  b.node('Conv', ['x', 'w1'], ['e'], { kernel_shape: [1, 1] });
  bn(0, 'e', 'en'); b.node('Sigmoid', ['en'], ['es']); b.node('Mul', ['en', 'es'], ['ea']);
  b.node('Conv', ['ea', 'w2'], ['d'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1], group: E });
  bn(1, 'd', 'y');
  b.output('y');
  const model = b.build(), trainable = [0, 1].flatMap((k) => [`g${k}`, `b${k}`]);
  const run = (on: boolean, quickGeluSilu = true) => stepAndPass(model, trainable, { current: on, quickGeluSilu });
  const [std, five, seven] = [await run(false), await run(true), await run(true, false)];
  for (const p of trainable) {
    assert.ok(relErr(five.r.grads.get(p)!, std.r.grads.get(p)!) <= 1e-5, `grad ${p}: ${relErr(five.r.grads.get(p)!, std.r.grads.get(p)!)}`);
    assert.ok(relErr(seven.r.grads.get(p)!, std.r.grads.get(p)!) <= 1e-5, `grad ${p} (seven ops): ${relErr(seven.r.grads.get(p)!, std.r.grads.get(p)!)}`);
  }
  const quick = five.m.graph.nodes.filter((n) => n.opType === 'QuickGelu');
  assert.equal(quick.length, 1, 'one QuickGelu, the gradient\'s');
  assert.deepEqual([quick[0]!.domain, quick[0]!.attrs.alpha], ['com.microsoft', { kind: 'float', value: -1 }]);
  const negs = new Set(five.m.graph.nodes.filter((n) => n.opType === 'Neg').map((n) => n.outputs[0]));
  assert.ok(!five.m.graph.nodes.some((n) => n.opType === 'Sigmoid' && negs.has(n.inputs[0]!)), 'the seven-op form (Sigmoid(−x)) is gone');
  assert.equal(seven.m.graph.nodes.filter((n) => n.opType === 'QuickGelu').length, 0);
});

// A 1×1 expansion whose BN takes its moments from the conv's input, inside the net (a stem conv
// and BN before it, a residual Add around it): its input gradient Wᵀ(a·g + b·d + c) is taken as
// Conv(g; Wᵀ·diag(a)) + Conv(x − mean x; Wᵀ·diag(b)·W) + Wᵀc (blockedStep.pointwiseDx), not through
// the wide d. The same gradients as the standard step and as the form it replaced, also where the
// expansion's input has mean 300 (the stem BN's shift), where x is centred before the narrow conv.
function expansionNet(stemShift: number): Model {
  const b = new ModelBuilder({ opset: 13 });
  const init = randomInitializers(b, new Rng(9));
  init('ws', [C, C, 3, 3], 0.2); init('we', [E, C, 1, 1], 0.4); init('be', [E], 0.2);
  init('wd', [E, 1, 3, 3], 0.4); init('wp', [C, E, 1, 1], 0.3);
  for (const [k, c] of [[0, C], [1, E], [2, E], [3, C]] as const) { init(`g${k}`, [c], 0.2, 1); init(`b${k}`, [c], 0.2, k === 0 ? stemShift : 0); init(`m${k}`, [c], 0.1); init(`v${k}`, [c], 0.1, 1); }
  b.initializer('lo', f32([], new Float32Array([0]))).initializer('hi', f32([], new Float32Array([6])));
  b.input('x', 'float32', [N, C, S, S]);
  const bn = (i: number, x: string, y: string) => b.node('BatchNormalization', [x, `g${i}`, `b${i}`, `m${i}`, `v${i}`], [y], { epsilon: 1e-5, momentum: 0.9 });
  b.node('Conv', ['x', 'ws'], ['s'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] });
  bn(0, 's', 'sn');
  b.node('Conv', ['sn', 'we', 'be'], ['e'], { kernel_shape: [1, 1] });
  bn(1, 'e', 'en'); b.node('Clip', ['en', 'lo', 'hi'], ['er']);
  b.node('Conv', ['er', 'wd'], ['d'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1], group: E });
  bn(2, 'd', 'dn'); b.node('Relu', ['dn'], ['dr']);
  b.node('Conv', ['dr', 'wp'], ['p'], { kernel_shape: [1, 1] });
  bn(3, 'p', 'pn');
  b.node('Add', ['pn', 'sn'], ['y']);
  b.output('y');
  return b.build();
}

test('a 1×1 expansion\'s input gradient from its input in the blocked step gives the standard step\'s BN gradients', { skip }, async () => {
  const trainable = [0, 1, 2, 3].flatMap((k) => [`g${k}`, `b${k}`]);
  const run = (shift: number, on: boolean, pointwiseDx = true) => stepAndPass(expansionNet(shift), trainable, { current: on, pointwiseDx });
  const worst = (r: { grads: Map<string, Float32Array> }, ref: { grads: Map<string, Float32Array> }) => Math.max(...trainable.map((p) => relErr(r.grads.get(p)!, ref.grads.get(p)!)));
  for (const [shift, tol] of [[0, 1e-5], [300, 1e-3]] as const) {
    const [std, folded, before] = [await run(shift, false), await run(shift, true), await run(shift, true, false)];
    assert.ok(worst(folded.r, std.r) <= tol, `shift ${shift}: folded form off the standard step's by ${worst(folded.r, std.r)}`);
    assert.ok(worst(before.r, std.r) <= tol, `shift ${shift}: the form before off the standard step's by ${worst(before.r, std.r)}`);
    // The fold took place: two blocked convs write the expansion's input gradient (one over x − mean x,
    // the skip's gradient its Sum input), and the affine conv over the wide d of its gradient is gone.
    const convs = (m: Model) => m.graph.nodes.filter((n) => n.opType === 'Conv' && n.domain === NCHWC_DOMAIN);
    const narrow = convs(folded.m).filter((n) => n.outputs[0]!.includes('_pointwise_dx'));
    assert.equal(narrow.length, 1);
    assert.equal(narrow[0]!.inputs.length, 4, 'the skip\'s gradient accumulates into it');
    assert.equal(convs(folded.m).length, convs(before.m).length, 'one conv for another: the narrow one in, the affine one out');
    if (shift) console.log(`# expansion input mean ${shift}: BN gradients off the standard step's by ${worst(folded.r, std.r).toExponential(1)} (from its input), ${worst(before.r, std.r).toExponential(1)} (through d)`);
  }
});
