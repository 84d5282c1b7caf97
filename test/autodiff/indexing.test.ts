import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkOp } from './helpers.ts';
import { i64, f32 } from '../../src/onnx/tensor.ts';

const ints = (v: number[]) => ({ shape: [v.length], value: i64([v.length], v) });
const BIG = 2 ** 62;

test('Concat on a negative axis, three inputs', async () => {
  await checkOp('Concat', [{ name: 'a', shape: [2, 3, 2] }, { name: 'b', shape: [2, 1, 2] }, { name: 'c', shape: [2, 4, 2] }], { axis: -2 });
});
test('Concat with one trainable input among constants (Slice path)', async () => {
  await checkOp('Concat', [{ name: 'a', shape: [2, 3], value: f32([2, 3], [1, 2, 3, 4, 5, 6]) }, { name: 'b', shape: [2, 2] }], { axis: 1 });
});

test('Split (opset 13) with a split input, one output unused by the loss', async () => {
  // Only y0 and y2 enter the loss: y1 gets no gradient and its slot is zero-filled.
  await checkOp('Split', [{ name: 'x', shape: [3, 7] }, { name: 'split', ...ints([2, 4, 1]) }], { axis: -1 }, { nOutputs: 3, outputs: ['y0', 'y2'], opset: 13 });
});
test('Split equal parts (no split input)', async () => {
  await checkOp('Split', [{ name: 'x', shape: [6, 2] }], { axis: 0 }, { nOutputs: 3, outputs: ['y1'], opset: 13 });
});
test('Split (opset 18) with num_outputs and an uneven last part', async () => {
  await checkOp('Split', [{ name: 'x', shape: [2, 7] }], { axis: 1, num_outputs: 3 }, { nOutputs: 3, outputs: ['y0', 'y2'], opset: 18 });
});

const sliceCases: [string, number[], number[], number[], number[], number[]?][] = [
  ['step 1, negative start and clamped end', [4, 6], [-3, 1], [BIG, 5], [0, 1]],
  ['axes omitted', [3, 4], [1, 0], [3, 2], []],
  ['step 2 and 3', [5, 8, 2], [1, 0], [5, 8], [0, 1], [2, 3]],
  ['negative step −1 (reverse)', [4, 5], [-1], [-BIG], [1], [-1]],
  ['negative step −2 from a clamped start, and step 2 on a negative axis', [6, 7], [100, 1], [0, -1], [0, -1], [-2, 2]],
  ['step 3 whose tail overruns the end', [7, 3], [2], [7], [0], [3]],
];
for (const [what, shape, starts, ends, axes, steps] of sliceCases) {
  test(`Slice: ${what}`, async () => {
    const inputs = [{ name: 'x', shape }, { name: 'starts', ...ints(starts) }, { name: 'ends', ...ints(ends) }];
    if (axes.length) inputs.push({ name: 'axes', ...ints(axes) });
    else if (steps) throw new Error('test setup');
    if (steps) inputs.push({ name: 'steps', ...ints(steps) });
    await checkOp('Slice', inputs);
  });
}

for (const opset of [13, 17]) {
  test(`Gather axis 0 with repeated and negative indices (embedding, opset ${opset})`, async () => {
    await checkOp('Gather', [{ name: 'emb', shape: [5, 3] }, { name: 'idx', shape: [2, 3], value: i64([2, 3], [1, 4, 1, -1, 0, 1]) }], { axis: 0 }, { opset });
  });
  test(`Gather on a negative axis with 2-D repeated indices (opset ${opset})`, async () => {
    await checkOp('Gather', [{ name: 'x', shape: [2, 4, 3] }, { name: 'idx', shape: [2, 2], value: i64([2, 2], [3, 3, -4, 2]) }], { axis: -2 }, { opset });
  });
  test(`Gather with a scalar index on the last axis (opset ${opset})`, async () => {
    await checkOp('Gather', [{ name: 'x', shape: [3, 4] }, { name: 'idx', shape: [], value: i64([], [-2]) }], { axis: 1 }, { opset });
  });
  test(`GatherElements with repeats, negative indices and a smaller index tensor (opset ${opset})`, async () => {
    await checkOp('GatherElements', [{ name: 'x', shape: [3, 4] }, { name: 'idx', shape: [2, 3], value: i64([2, 3], [0, 3, 3, -1, 1, 0]) }], { axis: 1 }, { opset });
  });
}
// Opset 17: Mod wraps negatives before the scatter; opset 13: a one-hot, whose onnxruntime kernel
// has no int32-index form beside an int64 depth (an optimizer-fused BERT's EmbedLayerNormalization
// takes int32 ids: bench/ort-tools-variants.ts found it).
for (const opset of [13, 17]) {
  for (const op of ['Gather', 'GatherElements'] as const) {
    test(`${op} with int32 indices computed at run time (opset ${opset})`, async () => {
      // Indices come from a Cast node, so the rule cannot fold them at compile time.
      const { ModelBuilder } = await import('../../src/onnx/model-builder.ts');
      const { gradCheck } = await import('../../src/autodiff/gradcheck.ts');
      const { Rng } = await import('../../src/util/rng.ts');
      const b = new ModelBuilder({ opset });
      b.initializer('emb', f32([4, 2], new Rng(2).fill(new Float32Array(8))));
      b.input('ids', 'int64', op === 'Gather' ? [5] : [5, 2]);
      b.node('Cast', ['ids'], ['ids32'], { to: 6 });
      b.node(op, ['emb', 'ids32'], ['y'], { axis: 0 });
      b.output('y');
      const ids = op === 'Gather' ? i64([5], [0, -1, 3, 3, 1]) : i64([5, 2], [0, 1, -1, 3, 3, 3, 1, 0, 2, -2]);
      const [r] = await gradCheck(b.build(), { ids }, { params: ['emb'] });
      assert.ok(r!.relError < 1e-2, `relative error ${r!.relError}`);
    });
  }
}

test('Pad constant mode: grow on two axes, trainable constant value', async () => {
  await checkOp('Pad', [{ name: 'x', shape: [2, 3] }, { name: 'pads', ...ints([1, 0, 2, 2]) }, { name: 'cv', shape: [] }], {});
});
test('Pad with negative (cropping) pads and axes (opset 18)', async () => {
  await checkOp('Pad', [{ name: 'x', shape: [2, 4, 5] }, { name: 'pads', ...ints([-1, 2, 1, -2]) }, { name: '', shape: [] }, { name: 'axes', ...ints([-1, 1]) }], {}, { opset: 18 });
});
test('Pad reflect and edge modes (written as Gathers: test/autodiff/pad-modes.test.ts)', async () => {
  for (const mode of ['reflect', 'edge']) await checkOp('Pad', [{ name: 'x', shape: [3, 3] }, { name: 'pads', ...ints([1, 1, 1, 2]) }], { mode });
});

test('Tile', async () => {
  await checkOp('Tile', [{ name: 'x', shape: [2, 1, 3] }, { name: 'reps', ...ints([2, 3, 1]) }]);
});
