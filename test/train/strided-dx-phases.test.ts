// The Node-only pass that writes a strided conv's input gradient phase by phase in the session's
// copy of a step (src/train/strided-dx-phases.ts), pinned against the ConvTranspose the portable
// graph keeps: loss and gradients ≤ 1e-5, on BN affine parameters behind frozen strided convs
// (3×3 stride 2 on an even and an odd size, 5×4 stride 3 with uneven pads, a 1×1 stride-6
// shortcut it leaves alone), and on every parameter of a net whose fed weights' phase convs
// src/onnx/nchwc.ts puts on the blocked kernels (both of its filter layouts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { RefitModel } from '../../src/model.ts';
import { randomProjectionLoss } from '../../src/autodiff/gradcheck.ts';
import { stridedDxPhases, phaseStridedDx } from '../../src/train/strided-dx-phases.ts';
import { blockFedConvs, nchwcBlockSize } from '../../src/onnx/nchwc.ts';
import { signatureOf } from '../../src/onnx/shapes.ts';
import { cloneModel, type Model } from '../../src/onnx/ir.ts';
import '../../src/autodiff/rules/index.ts';
import { f32, type Tensor } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { relErr } from '../helpers/close.ts';
import { randomInitializers } from '../helpers/random-init.ts';

const N = 3, C = 4;

/** A builder and a seeded initializer writer for it: uniform values times `scale`, plus `offset`. */
function builder(seed: number): { b: ModelBuilder; init: (name: string, dims: number[], scale: number, offset?: number) => void } {
  const b = new ModelBuilder({ opset: 13 });
  const rng = new Rng(seed);
  const init = randomInitializers(b, rng);
  return { b, init };
}

/** x [N, C, H, H] → BN → Conv 3×3/2 → BN → Relu → Conv 5×4/3 (uneven pads) → BN → Relu → y, and the first BN's output → Conv 1×1/6 → p. */
function net(H: number): Model {
  const { b, init } = builder(5);
  init('w0', [6, C, 3, 3], 0.3); init('w1', [5, 6, 5, 4], 0.2); init('wp', [5, C, 1, 1], 0.3);
  for (const [k, c] of [[1, 6], [2, 5], [3, C]] as const) { init(`g${k}`, [c], 0.2, 1); init(`be${k}`, [c], 0.2); init(`rm${k}`, [c], 0.1); init(`rv${k}`, [c], 0.1, 1); }
  const bn = (x: string, k: number, y: string) => b.node('BatchNormalization', [x, `g${k}`, `be${k}`, `rm${k}`, `rv${k}`], [y], { epsilon: 1e-5, momentum: 0.9 });
  b.input('x', 'float32', [N, C, H, H]);
  bn('x', 3, 'n3');
  b.node('Conv', ['n3', 'w0'], ['c0'], { pads: [1, 1, 1, 1], kernel_shape: [3, 3], strides: [2, 2] });
  bn('c0', 1, 'n0');
  b.node('Relu', ['n0'], ['r0']);
  b.node('Conv', ['r0', 'w1'], ['c1'], { pads: [2, 0, 1, 2], kernel_shape: [5, 4], strides: [3, 3] });
  bn('c1', 2, 'n1');
  b.node('Relu', ['n1'], ['r1']);
  b.node('Conv', ['n3', 'wp'], ['p'], { kernel_shape: [1, 1], strides: [6, 6] });
  b.node('Identity', ['r1'], ['y']);
  b.output('y');
  b.output('p');
  return b.build();
}

async function step(ir: Model, phases: boolean, trainable: string[] = ['g1', 'be1', 'g2', 'be2', 'g3', 'be3']) {
  const model = new RefitModel(ir, { threads: 1 });
  const saved = { ...stridedDxPhases };
  // these nets are small (the pass leaves gradients under 2^17 elements to ConvTranspose) and
  // test a stride of 3 (it takes stride 2 only): widen its limits
  Object.assign(stridedDxPhases, { current: phases, minElements: 0, maxStride: 3 });
  const s = model.compileTrainStep({ trainable, loss: randomProjectionLoss(ir.graph.outputs.map((o) => o.name), 7), batchNorm: 'train' });
  try {
    const H = ir.graph.inputs[0]!.shape![2] as number;
    const c = ir.graph.inputs[0]!.shape![1] as number;
    const b: Record<string, Tensor> = { x: f32([N, c, H, H], new Rng(2).fill(new Float32Array(N * c * H * H), 1)) };
    const { graph } = await s.compile(signatureOf(b));
    return { r: await s.run(b), portable: graph.model, params: graph.paramInputs };
  } finally {
    Object.assign(stridedDxPhases, saved);
    await s.release();
  }
}

/** The two steps give the same loss and gradients (≤ 1e-5 relative), none of them all zero. */
function same(a: Awaited<ReturnType<typeof step>>, b: Awaited<ReturnType<typeof step>>): void {
  assert.ok(Math.abs(b.r.loss - a.r.loss) <= 1e-5 * Math.abs(a.r.loss), `loss ${b.r.loss} vs ${a.r.loss}`);
  for (const [k, g] of a.r.grads) {
    assert.ok(g.some((v) => v !== 0), `d/d${k} not all zero`);
    const e = relErr(b.r.grads.get(k)!, g);
    assert.ok(e <= 1e-5, `d/d${k} differs by ${e.toExponential(2)}`);
  }
}
const transposes = (m: Model) => m.graph.nodes.filter((n) => n.opType === 'ConvTranspose').length;
/** phaseStridedDx with the limits these small nets need. */
function phasedCount(m: Model): number {
  const saved = { ...stridedDxPhases };
  Object.assign(stridedDxPhases, { minElements: 0, maxStride: 3 });
  try { return phaseStridedDx(m); } finally { Object.assign(stridedDxPhases, saved); }
}

for (const H of [24, 25]) {
  test(`frozen strided convs' input gradients by phase (input ${H}×${H}): the same loss and gradients as ConvTranspose (≤ 1e-5)`, async () => {
    const ir = net(H);
    const old = await step(ir, false), phased = await step(ir, true);
    same(old, phased);
    // The portable graph keeps its ConvTransposes; the pass rewrites the two with k ≥ stride, not the 1×1 one.
    assert.equal(transposes(phased.portable), 3);
    const copy = cloneModel(phased.portable);
    assert.equal(phasedCount(copy), 2);
    assert.equal(transposes(copy), 1);
    // With its own limits the pass leaves these small gradients (and the stride 3) to ConvTranspose.
    assert.equal(phaseStridedDx(cloneModel(phased.portable)), 0);
  });
}

/** x [N, 16, 24, 24] → Conv 3×3/2 to 32 → BN → Relu → r0; r0 → Conv 5×4/3 to 16 → y; r0 → Conv 3×3/2 to 8 → Relu → q: every weight trained. */
function wide(): Model {
  const { b, init } = builder(8);
  init('w0', [32, 16, 3, 3], 0.1); init('w1', [16, 32, 5, 4], 0.05); init('wq', [8, 32, 3, 3], 0.1);
  init('g', [32], 0.2, 1); init('be', [32], 0.2); init('rm', [32], 0.1); init('rv', [32], 0.1, 1);
  b.input('x', 'float32', [N, 16, 24, 24]);
  b.node('Conv', ['x', 'w0'], ['c0'], { pads: [1, 1, 1, 1], kernel_shape: [3, 3], strides: [2, 2] });
  b.node('BatchNormalization', ['c0', 'g', 'be', 'rm', 'rv'], ['n0'], { epsilon: 1e-5, momentum: 0.9 });
  b.node('Relu', ['n0'], ['r0']);
  b.node('Conv', ['r0', 'w1'], ['y'], { pads: [2, 0, 1, 2], kernel_shape: [5, 4], strides: [3, 3] });
  b.node('Conv', ['r0', 'wq'], ['c2'], { pads: [1, 1, 1, 1], kernel_shape: [3, 3], strides: [2, 2] });
  b.node('Relu', ['c2'], ['q']);
  b.output('y');
  b.output('q');
  return b.build();
}

test('fed strided convs\' input gradients by phase on the blocked kernels: the same loss and every gradient as ConvTranspose (≤ 1e-5)', async () => {
  const ir = wide();
  const all = ['w0', 'w1', 'wq', 'g', 'be'];
  const old = await step(ir, false, all), phased = await step(ir, true, all);
  same(old, phased);
  // r0's gradient comes through w1's and wq's strided convs (x needs none): in the session's copy
  // every phase conv of them goes to the blocked kernels, w1's 9 (32 out, 16 in: OIHWBiBo) and
  // wq's 4 (32 out, 8 in: OIHWBo), on a CPU with them.
  assert.equal(transposes(phased.portable), 2);
  const copy = cloneModel(phased.portable);
  assert.equal(phasedCount(copy), 2);
  const block = await nchwcBlockSize();
  if (block) {
    const plain = blockFedConvs(cloneModel(phased.portable), new Set(phased.params), block);
    assert.equal(blockFedConvs(copy, new Set(phased.params), block), plain + 13);
  }
});

/** x [N, 8, 24, 24] → BN → depthwise 3×3/2 → BN → Clip(0, 6) → depthwise 5×5/2, two per channel → BN → Relu → y (MobileNet's strided blocks). */
function depthwise(): Model {
  const { b, init } = builder(12);
  init('wd0', [8, 1, 3, 3], 0.3); init('wd1', [16, 1, 5, 5], 0.2);
  for (const [k, c] of [[0, 8], [1, 8], [2, 16]] as const) { init(`g${k}`, [c], 0.2, 1); init(`be${k}`, [c], 0.2); init(`rm${k}`, [c], 0.1); init(`rv${k}`, [c], 0.1, 1); }
  const bn = (x: string, k: number, y: string) => b.node('BatchNormalization', [x, `g${k}`, `be${k}`, `rm${k}`, `rv${k}`], [y], { epsilon: 1e-5, momentum: 0.9 });
  b.initializer('lo', f32([], [0])).initializer('hi', f32([], [6]));
  b.input('x', 'float32', [N, 8, 24, 24]);
  bn('x', 0, 'n0');
  b.node('Conv', ['n0', 'wd0'], ['c0'], { group: 8, pads: [1, 1, 1, 1], kernel_shape: [3, 3], strides: [2, 2] });
  bn('c0', 1, 'n1');
  b.node('Clip', ['n1', 'lo', 'hi'], ['r1']);
  b.node('Conv', ['r1', 'wd1'], ['c1'], { group: 8, pads: [2, 2, 2, 2], kernel_shape: [5, 5], strides: [2, 2] });
  bn('c1', 2, 'n2');
  b.node('Relu', ['n2'], ['y']);
  b.output('y');
  return b.build();
}

test('depthwise strided convs\' input gradients by phase, frozen and fed: the same loss and every gradient as ConvTranspose (≤ 1e-5)', async () => {
  const ir = depthwise();
  const norms = ['g0', 'be0', 'g1', 'be1', 'g2', 'be2'];
  for (const trainable of [norms, [...norms, 'wd0', 'wd1']]) {
    const old = await step(ir, false, trainable), phased = await step(ir, true, trainable);
    same(old, phased);
    assert.equal(transposes(phased.portable), 2, 'the portable graph keeps both ConvTransposes');
    assert.equal(phasedCount(cloneModel(phased.portable)), 2, 'the session\'s copy writes both by phase');
  }
  // Grouped convs by phase can be switched off alone.
  const saved = stridedDxPhases.grouped;
  stridedDxPhases.grouped = false;
  try { assert.equal(phasedCount(cloneModel((await step(ir, false, norms)).portable)), 0); } finally { stridedDxPhases.grouped = saved; }
});
