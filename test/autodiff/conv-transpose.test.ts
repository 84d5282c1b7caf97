// ConvTranspose gradients (src/autodiff/rules/conv-transpose.ts): finite differences over the
// geometries exports use, and a broken rule shown to fail the same check.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkOp } from './helpers.ts';
import { ruleFor, registerRules } from '../../src/autodiff/rule.ts';
import type { AttrInput } from '../../src/onnx/ir.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { Emitter } from '../../src/onnx/emitter.ts';
import { encodeModel } from '../../src/onnx/proto.ts';
import { createSession } from '../../src/onnx/runtime.ts';
import { probeShapes } from '../../src/onnx/shapes.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { type DwForm, convDw, dwApplies, pickDw } from '../../src/autodiff/rules/conv.ts';
import { convTransposeGeom } from '../../src/autodiff/rules/conv-transpose.ts';

const X = (shape: number[]) => ({ name: 'x', shape });
const W = (shape: number[]) => ({ name: 'w', shape, scale: 0.5 });
const B = (o: number) => ({ name: 'b', shape: [o] });

const CASES: [string, { x: number[]; w: number[]; b?: number; attrs: Record<string, AttrInput> }][] = [
  ['2-D stride 2, k 4, pad 1, bias (the decoder layer)', { x: [2, 3, 4, 4], w: [3, 2, 4, 4], b: 2, attrs: { strides: [2, 2], pads: [1, 1, 1, 1] } }],
  ['2-D stride 2, k 3, pad 1, output_padding 1', { x: [2, 3, 3, 4], w: [3, 2, 3, 3], b: 2, attrs: { strides: [2, 2], pads: [1, 1, 1, 1], output_padding: [1, 1] } }],
  ['2-D stride 1, asymmetric pads', { x: [1, 2, 4, 5], w: [2, 3, 3, 2], attrs: { pads: [0, 1, 1, 0] } }],
  ['2-D stride (3, 2), dilation (1, 2), output_padding (2, 1)', { x: [1, 2, 3, 4], w: [2, 2, 2, 3], attrs: { strides: [3, 2], dilations: [1, 2], output_padding: [2, 1] } }],
  ['2-D groups 2', { x: [2, 4, 3, 3], w: [4, 3, 3, 3], b: 6, attrs: { group: 2, strides: [2, 2], pads: [1, 0, 0, 1] } }],
  ['2-D depthwise', { x: [2, 3, 3, 3], w: [3, 1, 3, 3], attrs: { group: 3, strides: [2, 2], pads: [1, 1, 1, 1], output_padding: [1, 0] } }],
  ['2-D output_padding with dilation 3 and pads', { x: [1, 2, 3, 3], w: [2, 2, 2, 2], attrs: { strides: [3, 2], dilations: [3, 3], pads: [2, 1, 0, 2], output_padding: [2, 1] } }],
  ['2-D output_shape (pads computed)', { x: [1, 2, 3, 3], w: [2, 2, 3, 3], attrs: { strides: [2, 2], output_shape: [6, 5] } }],
  ['2-D output_shape larger than the full output (zero rows)', { x: [1, 2, 3, 3], w: [2, 2, 3, 3], attrs: { strides: [2, 2], output_shape: [8, 7] } }],
  ['2-D output_shape with SAME_UPPER', { x: [1, 2, 3, 3], w: [2, 2, 3, 3], attrs: { strides: [2, 2], output_shape: [6, 5], auto_pad: 'SAME_UPPER' } }],
  ['2-D auto_pad SAME_UPPER', { x: [1, 2, 3, 4], w: [2, 2, 4, 3], attrs: { strides: [2, 2], auto_pad: 'SAME_UPPER' } }],
  ['2-D auto_pad SAME_LOWER', { x: [1, 2, 3, 4], w: [2, 2, 4, 3], attrs: { strides: [2, 2], auto_pad: 'SAME_LOWER' } }],
  ['2-D auto_pad VALID', { x: [1, 2, 3, 3], w: [2, 2, 3, 2], attrs: { strides: [2, 3], auto_pad: 'VALID' } }],
  ['1-D stride 2, output_padding, bias', { x: [2, 3, 5], w: [3, 2, 3], b: 2, attrs: { strides: [2], pads: [1, 0], output_padding: [1] } }],
  ['1-D dilation 2, groups 3', { x: [2, 3, 5], w: [3, 2, 3], attrs: { group: 3, dilations: [2], pads: [1, 2] } }],
  ['3-D stride 2', { x: [1, 2, 2, 3, 2], w: [2, 2, 2, 3, 2], b: 2, attrs: { strides: [2, 2, 1], pads: [0, 1, 0, 0, 1, 1], output_padding: [1, 0, 0] } }],
];
for (const [name, c] of CASES) {
  test(`ConvTranspose ${name}`, async () => {
    await checkOp('ConvTranspose', [X(c.x), W(c.w), ...(c.b ? [B(c.b)] : [])], c.attrs);
  });
}

test('a broken ConvTranspose rule (begin pads ignored) fails the same check', async () => {
  const real = ruleFor('ConvTranspose')!;
  registerRules({
    ConvTranspose(ctx, node, dOut, needs) {
      // Drop the pads: the gradient is then taken at the wrong offset.
      const attrs = Object.fromEntries(Object.entries(node.attrs).filter(([k]) => k !== 'pads'));
      return real(ctx, { ...node, attrs }, dOut, needs);
    },
  });
  try {
    await assert.rejects(checkOp('ConvTranspose', [X([2, 3, 4, 4]), W([3, 2, 4, 4])], { strides: [2, 2], pads: [1, 1, 1, 1] }), /relative error/);
  } finally {
    registerRules({ ConvTranspose: real });
  }
});

// Every dW formulation of conv.ts gives the same result on the adjoint geometry, so a later
// per-geometry choice (bench/conv-transpose-grad.ts found conv-xt faster on a k=4 s=2 layer)
// can swap forms safely; the finite-difference tests above check the one the rule picks.
const DW_FORMS: DwForm[] = [
  'onehot-gemm', 'onehot-matmul', 'slices-gemm', 'slices-matmul', 'onehot-mulsum', 'slices-mulsum', 'conv-xt', 'conv-nc', 'gather-matmul', 'gather-mulsum',
];
for (const [name, c] of CASES.filter(([n]) => /decoder layer|output_padding 1|groups 2|depthwise|output_shape \(|1-D stride|3-D/.test(n))) {
  test(`ConvTranspose dW forms agree: ${name}`, async () => {
    const b = new ModelBuilder({ opset: 17 });
    const rng = new Rng(21);
    const rand = (d: number[]) => f32(d, rng.fill(new Float32Array(d.reduce((a, q) => a * q, 1))));
    b.initializer('x', rand(c.x)).initializer('w', rand(c.w));
    b.node('ConvTranspose', ['x', 'w'], ['y'], c.attrs);
    b.output('y');
    const m = b.build();
    const yShape = (await probeShapes(m, {})).get('y')!.dims;
    const { conv: g, crop } = convTransposeGeom(m.graph.nodes[0]!, c.x, c.w, yShape);
    const sp = crop.map((_, i) => i + 2);
    b.initializer('dy', rand(yShape));
    const em = new Emitter(m.graph, 17);
    const dyc = em.op('Slice', ['dy', em.ints(sp.map(() => 0)), em.ints(crop), em.ints(sp)]);
    const outs = DW_FORMS.filter((f) => dwApplies(g, f)).map((f) => [f, convDw(em, g, dyc, 'x', f)] as const);
    for (const [, o] of outs) b.output(o);
    const s = await createSession(encodeModel(m), { threads: 1 });
    const res = await s.run({});
    await s.release();
    const ref = res[outs.find(([f]) => f === pickDw(g))![1]]!.data as Float32Array;
    assert.deepEqual(res[outs[0]![1]]!.dims, c.w);
    for (const [f, o] of outs) {
      const v = res[o]!.data as Float32Array;
      const scale = Math.max(...Array.from(ref, Math.abs));
      const err = Math.max(...Array.from(v, (a, i) => Math.abs(a - ref[i]!)));
      assert.ok(err <= 1e-5 * scale, `dW ${f} differs from ${pickDw(g)} by ${err} (scale ${scale})`);
    }
  });
}
