// The Clip (ReLU6) and Relu gradients in their measured forms (a 0/1 mask cast to float and
// multiplied, read off the forward output; bench/activation-forms.ts), pinned against the old
// forms (Where over a mask of the input) and against PyTorch's semantics at the exact bounds
// (hardtanh_backward and threshold_backward give 0 there), plus finite-difference checks; and
// MaxPool's gradient on tied windows: the whole gradient to the first maximum, as PyTorch.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkOp } from './helpers.ts';
import { withRule } from './broken.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { floatAttr, type AttrInput } from '../../src/onnx/ir.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import type { GradRule } from '../../src/autodiff/rule.ts';
import type { LossSpec } from '../../src/train/loss-spec.ts';
import { buildStepGraph } from '../../src/train/step-graph.ts';
import { encodeModel } from '../../src/onnx/proto.ts';
import { createSession, toOrt } from '../../src/onnx/runtime.ts';
import { clipDx } from '../../src/autodiff/rules/activations-extra.ts';
import { reluDx } from '../../src/autodiff/rules/activations.ts';

/** Loss Σ y·C for a fixed C (so dY = C exactly). */
const dotLoss = (c: Float32Array): LossSpec => ({
  describe: 'dot(y, C)',
  reads: ['y'],
  inputs: [],
  build(ctx) {
    const dims = ctx.shape('y');
    return ctx.em.reduce('ReduceSum', ctx.em.mul('y', ctx.em.constant(f32(dims, c), 'C')), dims.map((_, i) => i), false);
  },
});

interface OneOp { op: string; inputs: string[]; attrs?: Record<string, AttrInput>; consts?: Record<string, number>; opset?: number }

/** dL/dx for y = op(x, consts...) and L = Σ y·C, through the step graph refit compiles; also its op types. */
async function gradOf(o: OneOp, shape: number[], x: number[], c: Float32Array): Promise<{ grad: Float32Array; ops: string[] }> {
  const b = new ModelBuilder({ opset: o.opset ?? 13 });
  b.initializer('x', f32(shape, x));
  for (const [n, v] of Object.entries(o.consts ?? {})) b.initializer(n, f32([], [v]));
  b.input('dummy', 'float32', [1]);
  b.node(o.op, o.inputs, ['y'], o.attrs ?? {});
  b.node('Identity', ['dummy'], ['dummy_out']);
  b.output('y');
  const sg = await buildStepGraph(b.build(), { dummy: { dtype: 'float32', dims: [1] } }, { trainable: ['x'], loss: dotLoss(c) });
  const session = await createSession(encodeModel(sg.model), { threads: 1 });
  const r = await session.run({ dummy: toOrt(f32([1], [0])), x: toOrt(f32(shape, x)) });
  await session.release();
  return { grad: r[sg.gradOutputs.get('x')!]!.data as Float32Array, ops: sg.model.graph.nodes.map((n) => n.opType) };
}

/** The old Clip rule's input gradient: Where over a mask of the input x. */
const oldClip = (lo?: number, hi?: number): GradRule => (ctx, node, [dY]) => {
  const [x, l, h] = node.inputs;
  const bound = (name: string | undefined, attr: number | undefined) => (ctx.opset < 11 ? (attr === undefined ? undefined : ctx.em.scalar(attr)) : name || undefined);
  return [clipDx(ctx.em, x!, bound(l, lo), bound(h, hi), dY!, 'where'), null, null];
};
const oldRelu: GradRule = (ctx, node, [dY]) => [reluDx(ctx.em, node.inputs[0]!, dY!, 'where')];

// Values exactly at the bounds (0 and 6; −1.5 and 2.5; −0), just inside and outside them, tiny
// and subnormal values, and ordinary ones.
const X = [-7, -1.5, -0, 0, 1e-30, 1e-40, 0.5, 2.5, 3, 2.4999998, 5.9999995, 6, 6.0000005, 9, -1.4999999, -1.5000001];
const SHAPE = [2, 8];
const C = Float32Array.from(X, (_, i) => (i % 3) - 0.75 + i / 7);
const fx = Float32Array.from(X); // the float32 values the graph sees

function sameValues(a: Float32Array, b: Float32Array, what: string) {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) assert.ok(a[i] === b[i], `${what}: element ${i} (x = ${fx[i]}): ${a[i]} vs ${b[i]}`);
}

function expectMasked(got: Float32Array, inside: (v: number) => boolean, what: string) {
  for (let i = 0; i < fx.length; i++) {
    const want = inside(fx[i]!) ? C[i]! : 0;
    // === so that −0 (dY·0 for a negative dY) counts as the 0 it adds as.
    assert.ok(got[i] === want, `${what}: x = ${fx[i]}: gradient ${got[i]}, PyTorch's rule gives ${want}`);
  }
}

const CLIP_CASES: { name: string; op: OneOp; lo?: number; hi?: number }[] = [
  { name: 'ReLU6 Clip(x, 0, 6)', op: { op: 'Clip', inputs: ['x', 'lo', 'hi'], consts: { lo: 0, hi: 6 } }, lo: 0, hi: 6 },
  { name: 'Clip(x, −1.5, 2.5)', op: { op: 'Clip', inputs: ['x', 'lo', 'hi'], consts: { lo: -1.5, hi: 2.5 } }, lo: -1.5, hi: 2.5 },
  { name: 'Clip(x, 0) min only', op: { op: 'Clip', inputs: ['x', 'lo'], consts: { lo: 0 } }, lo: 0 },
  { name: 'Clip(x, , 6) max only', op: { op: 'Clip', inputs: ['x', '', 'hi'], consts: { hi: 6 } }, hi: 6 },
  { name: 'Clip opset 10 (attributes 0, 6)', op: { op: 'Clip', inputs: ['x'], attrs: { min: floatAttr(0), max: floatAttr(6) }, opset: 10 }, lo: 0, hi: 6 },
];

for (const c of CLIP_CASES) {
  test(`${c.name}: the mask form equals the old Where form and PyTorch's hardtanh_backward at the exact bounds`, async () => {
    const inside = (v: number) => (c.lo === undefined || v > c.lo) && (c.hi === undefined || v < c.hi);
    const now = await gradOf(c.op, SHAPE, X, C);
    expectMasked(now.grad, inside, `${c.name} (new form)`);
    // The chosen form: Cast + Mul, no Where, reading the output y rather than the input x.
    assert.ok(now.ops.includes('Cast') && !now.ops.includes('Where'), `${c.name}: expected the Cast+Mul form, got ops ${now.ops.join(' ')}`);
    const old = await withRule('Clip', oldClip(c.lo, c.hi), () => gradOf(c.op, SHAPE, X, C));
    assert.ok(old.ops.includes('Where'));
    expectMasked(old.grad, inside, `${c.name} (old form)`);
    sameValues(now.grad, old.grad, `${c.name}: new vs old form`);
  });
}

test('Relu: the mask read off the output equals the old input mask and threshold_backward (0 at x = 0 and −0)', async () => {
  const op: OneOp = { op: 'Relu', inputs: ['x'] };
  const now = await gradOf(op, SHAPE, X, C);
  expectMasked(now.grad, (v) => v > 0, 'Relu (new form)');
  const old = await withRule('Relu', oldRelu, () => gradOf(op, SHAPE, X, C));
  assert.ok(old.ops.includes('Where') && !now.ops.includes('Where'));
  sameValues(now.grad, old.grad, 'Relu: new vs old form');
});

test('Clip and Relu mask forms: finite differences away from the kinks', async () => {
  const x = { name: 'x', shape: [4, 6], scale: 5, offset: 3, dist: 'uniform' as const };
  await checkOp('Clip', [x, { name: 'lo', shape: [], value: f32([], [0]) }, { name: 'hi', shape: [], value: f32([], [6]) }], {}, { opset: 13 });
  await checkOp('Clip', [x, { name: 'lo', shape: [], value: f32([], [1]) }], {}, { opset: 13 });
  await checkOp('Clip', [x, { name: '', shape: [] }, { name: 'hi', shape: [], value: f32([], [4]) }], {}, { opset: 13 });
  await checkOp('Relu', [{ name: 'x', shape: [4, 6], scale: 2, dist: 'uniform' }], {}, { opset: 13 });
});

test('Clip with a trainable bound: the bound still gets Σ dY where it is active', async () => {
  await checkOp('Clip', [{ name: 'x', shape: [4, 6], scale: 3, dist: 'uniform' }, { name: 'lo', shape: [], offset: -1, scale: 0.1 }, { name: 'hi', shape: [], offset: 1.5, scale: 0.1 }], {}, { opset: 13 });
});

test('MaxPool 3x3 stride 2 pad 1 on tied windows: each window sends its whole gradient to its first maximum, as PyTorch', async () => {
  // x and C as in this PyTorch 1.13 run (max_pool2d(x, 3, 2, 1) then backward(C)):
  //   x = [[1,1,0,2],[1,1,2,2],[0,0,0,0],[3,0,3,3]]  (ties inside and across windows)
  //   C = [[1,10],[100,1000]]  →  x.grad = [[1,0,0,10],[0,0,0,0],[0,0,0,0],[100,0,1000,0]]
  const x = [1, 1, 0, 2, 1, 1, 2, 2, 0, 0, 0, 0, 3, 0, 3, 3];
  const torchGrad = [1, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 100, 0, 1000, 0];
  const op: OneOp = { op: 'MaxPool', inputs: ['x'], attrs: { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] } };
  for (const opset of [13, 17]) {
    const { grad } = await gradOf({ ...op, opset }, [1, 1, 4, 4], x, Float32Array.from([1, 10, 100, 1000]));
    assert.deepEqual(Array.from(grad), torchGrad, `opset ${opset}`);
  }
});
