import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkOp } from './helpers.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { gradCheck } from '../../src/autodiff/gradcheck.ts';
import { f32, tensor } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { Emitter } from '../../src/onnx/emitter.ts';
import { encodeModel } from '../../src/onnx/proto.ts';
import { createSession } from '../../src/onnx/runtime.ts';
import { probeShapes } from '../../src/onnx/shapes.ts';
import type { AttrInput } from '../../src/onnx/ir.ts';
import { type MaxPoolGradForm, poolGeom, maxPoolDx, maxPoolFormApplies, pickMaxPoolForm } from '../../src/autodiff/rules/pool.ts';

// MaxPool inputs are N(0, 1): ties have probability zero, and eps = 1e-3 moves no argmax
// (a gap below 2e-3 between the two largest of a window is rare at these sizes; the seeds are fixed).
const X = (shape: number[]) => ({ name: 'x', shape });

test('MaxPool 2x2 stride 2 (disjoint windows), opset 17 and opset 13', async () => {
  await checkOp('MaxPool', [X([2, 3, 4, 6])], { kernel_shape: [2, 2], strides: [2, 2] });
  await checkOp('MaxPool', [X([2, 3, 4, 6])], { kernel_shape: [2, 2], strides: [2, 2] }, { opset: 13 }); // plain scatter
});
test('MaxPool 3x3 stride 2 pad 1 (overlap, padding), opset 17 and opset 13', async () => {
  await checkOp('MaxPool', [X([2, 2, 7, 6])], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] });
  await checkOp('MaxPool', [X([2, 2, 7, 6])], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }, { opset: 13 });
});
test('MaxPool asymmetric pads, stride 1, ceil_mode', async () => {
  await checkOp('MaxPool', [X([1, 3, 6, 5])], { kernel_shape: [2, 3], strides: [1, 1], pads: [0, 1, 1, 0] });
  // 8x7 with 3x2 windows at stride 2: ceil mode adds a last window that overhangs the input.
  await checkOp('MaxPool', [X([1, 3, 8, 7])], { kernel_shape: [3, 2], strides: [2, 2], ceil_mode: 1 });
  await checkOp('MaxPool', [X([1, 3, 8, 7])], { kernel_shape: [3, 3], strides: [2, 2], ceil_mode: 1 }, { opset: 13 });
});
test('MaxPool dilations, 1-D, 3-D, auto_pad SAME_UPPER', async () => {
  await checkOp('MaxPool', [X([1, 2, 7, 7])], { kernel_shape: [2, 2], dilations: [2, 2], strides: [1, 1] });
  await checkOp('MaxPool', [X([2, 3, 9])], { kernel_shape: [3], strides: [2], pads: [1, 0] });
  await checkOp('MaxPool', [X([1, 2, 4, 4, 4])], { kernel_shape: [2, 2, 2], strides: [2, 2, 2] });
  await checkOp('MaxPool', [X([1, 2, 5, 5])], { kernel_shape: [3, 3], strides: [2, 2], auto_pad: 'SAME_UPPER' });
});
test('MaxPool storage_order 1 with its Indices already an output of the node', async () => {
  // checkOp declares every output float, so build this one by hand: Indices stay internal.
  const b = new ModelBuilder({ opset: 17 });
  b.initializer('x', f32([2, 2, 5, 4], new Rng(5).fill(new Float32Array(80))));
  b.input('dummy', 'float32', [1]);
  b.node('MaxPool', ['x'], ['y', 'idx'], { kernel_shape: [2, 2], strides: [1, 1], storage_order: 1 });
  b.node('Identity', ['dummy'], ['dummy_out']);
  b.output('y');
  const [r] = await gradCheck(b.build(), { dummy: tensor('float32', [1], [0]) }, { params: ['x'], outputs: ['y'] });
  assert.ok(r!.relError <= 1e-2 && r!.analyticNorm > 0, `relative error ${r!.relError}`);
});
test('AveragePool count_include_pad 0 and 1 with pads and overlap', async () => {
  await checkOp('AveragePool', [X([2, 2, 6, 5])], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] });
  await checkOp('AveragePool', [X([2, 2, 6, 5])], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], count_include_pad: 1 });
  await checkOp('AveragePool', [X([1, 2, 5, 6])], { kernel_shape: [2, 3], strides: [1, 2], pads: [0, 2, 1, 0] });
});
test('AveragePool ceil_mode, 1-D, 3-D, tiling 2x2 (with leftovers)', async () => {
  await checkOp('AveragePool', [X([1, 2, 8, 7])], { kernel_shape: [3, 2], strides: [2, 2], ceil_mode: 1 });
  await checkOp('AveragePool', [X([1, 2, 8, 7])], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], ceil_mode: 1, count_include_pad: 1 });
  await checkOp('AveragePool', [X([1, 2, 8, 7])], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 0, 0, 1], ceil_mode: 1, count_include_pad: 0 });
  await checkOp('AveragePool', [X([2, 3, 9])], { kernel_shape: [3], strides: [2], pads: [1, 1], count_include_pad: 1 });
  await checkOp('AveragePool', [X([1, 2, 4, 4, 4])], { kernel_shape: [2, 2, 2], strides: [2, 2, 2] });
  await checkOp('AveragePool', [X([2, 3, 4, 6])], { kernel_shape: [2, 2], strides: [2, 2] });
  await checkOp('AveragePool', [X([2, 3, 5, 7])], { kernel_shape: [2, 2], strides: [2, 2] }); // leftover row and column
});
test('GlobalAveragePool and GlobalMaxPool (2-D and 1-D)', async () => {
  await checkOp('GlobalAveragePool', [X([2, 3, 4, 5])]);
  await checkOp('GlobalAveragePool', [X([2, 3, 7])]);
  await checkOp('GlobalMaxPool', [X([2, 3, 4, 5])]);
  await checkOp('GlobalMaxPool', [X([2, 3, 7])]);
});

// Every MaxPool formulation (see bench/conv-grad-forms.ts) agrees with the one the rule picks,
// which the finite-difference tests above check.
const MAXPOOL_FORMS: MaxPoolGradForm[] = ['scatter', 'scatter-add', 'onehot-argmax'];
const POOL_GEOMS: { x: number[]; attrs: Record<string, AttrInput> }[] = [
  { x: [2, 3, 6, 8], attrs: { kernel_shape: [2, 2], strides: [2, 2] } },
  { x: [2, 2, 8, 7], attrs: { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 0, 1, 1], ceil_mode: 1 } },
  { x: [1, 2, 7, 7], attrs: { kernel_shape: [2, 2], dilations: [2, 1], strides: [1, 2] } },
  { x: [2, 3, 11], attrs: { kernel_shape: [3], strides: [2], pads: [1, 1] } },
];
for (const [gi, geo] of POOL_GEOMS.entries()) {
  test(`MaxPool gradient forms agree (geometry ${gi})`, async () => {
    const b = new ModelBuilder({ opset: 17 });
    const rng = new Rng(21 + gi);
    const rand = (d: number[]) => f32(d, rng.fill(new Float32Array(d.reduce((a, c) => a * c, 1))));
    b.initializer('x', rand(geo.x));
    b.node('MaxPool', ['x'], ['y', 'idx'], geo.attrs);
    b.output('y');
    const m = b.build();
    const yShape = (await probeShapes(m, {})).get('y')!.dims;
    const g = poolGeom(m.graph.nodes[0]!, geo.x, yShape);
    b.initializer('dy', rand(yShape));
    const em = new Emitter(m.graph, 17);
    const outs: [MaxPoolGradForm, string][] = [];
    for (const f of MAXPOOL_FORMS) if (maxPoolFormApplies(g, f, 17)) outs.push([f, maxPoolDx(em, g, 'x', 'dy', 'idx', f)]);
    for (const [, o] of outs) b.output(o);
    const session = await createSession(encodeModel(m), { threads: 1 });
    const res = await session.run({});
    await session.release();
    const picked = pickMaxPoolForm(g, 17);
    const ref = res[outs.find(([f]) => f === picked)![1]]!.data as Float32Array;
    assert.ok(outs.length >= 2);
    const scale = Math.max(...Array.from(ref, Math.abs));
    for (const [f, o] of outs) {
      // Overlapping windows sum in different orders: equal up to rounding.
      const v = res[o]!.data as Float32Array;
      const err = Math.max(...Array.from(v, (a, i) => Math.abs(a - ref[i]!)));
      assert.ok(v.length === ref.length && err <= 1e-6 * scale, `${f} differs from ${picked} by ${err}`);
    }
  });
}

test('a small CNN: Conv → Relu → MaxPool → Conv stride 2 → AveragePool → GlobalMaxPool', async () => {
  const b = new ModelBuilder({ opset: 17 });
  const rng = new Rng(9);
  const rand = (d: number[], s = 1) => f32(d, rng.fill(new Float32Array(d.reduce((a, c) => a * c, 1)), s));
  b.initializer('w1', rand([4, 2, 3, 3], 0.5)).initializer('b1', rand([4], 0.1)).initializer('w2', rand([3, 4, 3, 3], 0.5));
  b.input('x', 'float32', [2, 2, 9, 9]);
  b.node('Conv', ['x', 'w1', 'b1'], ['c1'], { pads: [1, 1, 1, 1] });
  b.node('Relu', ['c1'], ['r1']);
  b.node('MaxPool', ['r1'], ['p1'], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] });
  b.node('Conv', ['p1', 'w2'], ['c2'], { strides: [2, 2], pads: [1, 1, 1, 1] });
  b.node('AveragePool', ['c2'], ['a2'], { kernel_shape: [2, 2], strides: [1, 1] });
  b.node('GlobalMaxPool', ['a2'], ['y']);
  b.output('y');
  const reports = await gradCheck(b.build(), { x: rand([2, 2, 9, 9]) }, { params: ['w1', 'b1', 'w2'], outputs: ['y'] });
  for (const r of reports) assert.ok(r.relError <= 1e-2 && r.analyticNorm > 0, `d/d${r.param}: relative error ${r.relError}`);
});
