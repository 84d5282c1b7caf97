// GatherND (batch_dims 0 and > 0, repeated and negative index tuples, before and from opset 16)
// and ScatterND (reduction none, add, mul), plus ScatterElements and TopK, with deliberately wrong
// rules shown to fail.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkOp } from './helpers.ts';
import { assertBrokenFails, withRule } from './broken.ts';
import { f32, i64, tensor } from '../../src/onnx/tensor.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { gradCheck } from '../../src/autodiff/gradcheck.ts';
import { Rng } from '../../src/util/rng.ts';
import type { GradRule } from '../../src/autodiff/rule.ts';

const idx = (dims: number[], v: number[]) => ({ name: 'idx', shape: dims, value: i64(dims, v) });

for (const opset of [13, 16]) {
  test(`GatherND batch_dims 0: full tuples with a repeat and a negative index (opset ${opset})`, async () => {
    await checkOp('GatherND', [{ name: 'x', shape: [3, 4] }, idx([4, 2], [0, 1, 2, 3, 0, 1, -1, -4])], {}, { opset });
  });
  test(`GatherND batch_dims 0: partial tuples select slices (opset ${opset})`, async () => {
    await checkOp('GatherND', [{ name: 'x', shape: [3, 4, 2] }, idx([2, 2, 1], [2, 0, 2, -2])], {}, { opset });
  });
  test(`GatherND batch_dims 1 and 2 (opset ${opset})`, async () => {
    await checkOp('GatherND', [{ name: 'x', shape: [2, 3, 4] }, idx([2, 3, 1], [0, 2, 2, 1, 1, -1])], { batch_dims: 1 }, { opset });
    await checkOp('GatherND', [{ name: 'x', shape: [2, 3, 4] }, idx([2, 3, 1], [0, 3, 3, 1, 2, 0])], { batch_dims: 2 }, { opset });
    await checkOp('GatherND', [{ name: 'x', shape: [2, 3, 4, 2] }, idx([2, 2, 2], [0, 1, 2, 3, 1, 1, 1, 1])], { batch_dims: 1 }, { opset });
  });
}

for (const reduction of ['none', 'add']) {
  test(`ScatterND reduction ${reduction}: data and updates, full tuples and slices`, async () => {
    const attrs: Record<string, string> = reduction === 'none' ? {} : { reduction };
    const opset = reduction === 'none' ? 13 : 16;
    await checkOp('ScatterND', [{ name: 'x', shape: [3, 4] }, idx([2, 2], [0, 1, 2, -1]), { name: 'u', shape: [2] }], attrs, { opset });
    await checkOp('ScatterND', [{ name: 'x', shape: [4, 3, 2] }, idx([2, 1], [3, 1]), { name: 'u', shape: [2, 3, 2] }], attrs, { opset });
  });
}
test('ScatterND reduction add with a repeated index tuple', async () => {
  await checkOp('ScatterND', [{ name: 'x', shape: [4, 2] }, idx([3, 1], [1, 3, 1]), { name: 'u', shape: [3, 2] }], { reduction: 'add' }, { opset: 16 });
});
test('ScatterND reduction mul with unique constant tuples; repeated tuples and max are refused by name', async () => {
  await checkOp('ScatterND', [{ name: 'x', shape: [3, 4] }, idx([2, 2], [0, 1, 2, -1]), { name: 'u', shape: [2] }], { reduction: 'mul' }, { opset: 16 });
  await checkOp('ScatterND', [{ name: 'x', shape: [4, 2] }, idx([2, 1], [3, 0]), { name: 'u', shape: [2, 2] }], { reduction: 'mul' }, { opset: 16 });
  await assert.rejects(checkOp('ScatterND', [{ name: 'x', shape: [4, 2] }, idx([2, 1], [1, -3]), { name: 'u', shape: [2, 2] }], { reduction: 'mul' }, { opset: 16 }), /repeated index tuple \[1\]/);
  await assert.rejects(checkOp('ScatterND', [{ name: 'x', shape: [4, 2] }, idx([1, 1], [1]), { name: 'u', shape: [1, 2] }], { reduction: 'max' }, { opset: 18 }), /reduction 'max' has no gradient rule/);
});

test('wrong GatherND and ScatterND rules fail the check', async () => {
  // GatherND batch_dims 1: every row scattered into batch 0 (batch coordinates left at 0).
  const noBatch: GradRule = (ctx, node, [dY]) => {
    const em = ctx.em;
    const [x, i] = node.inputs as [string, string];
    const z = em.op('ConstantOfShape', [em.ints(ctx.shape(x))], { value: tensor('float32', [1], [0]) });
    const b0 = em.op('ConstantOfShape', [em.ints([...ctx.shape(i).slice(0, -1), 1])], { value: i64([1], [0]) });
    return [em.op('ScatterND', [z, em.op('Concat', [b0, i], { axis: -1 }), dY!], { reduction: 'add' }), null];
  };
  await assertBrokenFails('GatherND', noBatch, () => checkOp('GatherND', [{ name: 'x', shape: [2, 3, 4] }, idx([2, 3, 1], [0, 1, 1, 1, 0, 1])], { batch_dims: 1 }, { opset: 16 }));
  // ScatterND none: data's gradient passed through without zeroing the overwritten positions.
  const noZeroing: GradRule = (ctx, node, [dY], needs) => [dY!, null, needs[2] ? ctx.em.op('GatherND', [dY!, node.inputs[1]!]) : null];
  await assertBrokenFails('ScatterND', noZeroing, () => checkOp('ScatterND', [{ name: 'x', shape: [3, 4] }, idx([2, 2], [0, 1, 2, 3]), { name: 'u', shape: [2] }], {}, { opset: 13 }));
  // ScatterND mul treated as add: data's gradient without the factors.
  await assertBrokenFails('ScatterND', noZeroing, () => checkOp('ScatterND', [{ name: 'x', shape: [3, 4] }, idx([2, 2], [0, 1, 2, 3]), { name: 'u', shape: [2] }], { reduction: 'mul' }, { opset: 16 }));
});

for (const reduction of ['none', 'add']) {
  test(`ScatterElements reduction ${reduction} on a negative axis, a negative index`, async () => {
    const attrs: Record<string, string | number> = reduction === 'none' ? { axis: -1 } : { axis: -1, reduction };
    await checkOp('ScatterElements', [{ name: 'x', shape: [3, 4] }, idx([2, 2], [0, 3, -1, 1]), { name: 'u', shape: [2, 2] }], attrs, { opset: 16 });
  });
}
/** TopK's values checked against central differences (checkOp types every output float; indices are int64). */
async function topk(shape: number[], k: number, attrs: Record<string, number> = {}): Promise<void> {
  const b = new ModelBuilder({ opset: 13 });
  // Uniform draws: distinct values, so the selection is stable under the ±eps perturbation.
  b.initializer('x', f32(shape, new Rng(6).fill(new Float32Array(shape.reduce((a, c) => a * c, 1)), 1, 'uniform')));
  b.initializer('k', i64([1], [k]));
  b.input('dummy', 'float32', [1]);
  b.node('TopK', ['x', 'k'], ['values', 'indices'], attrs);
  b.node('Identity', ['dummy'], ['dummy_out']);
  b.output('values');
  b.output('indices', 'int64');
  const [r] = await gradCheck(b.build(), { dummy: tensor('float32', [1], [0]) }, { params: ['x'], outputs: ['values'] });
  assert.ok(r!.relError < 1e-2 && r!.analyticNorm > 0, `TopK ${JSON.stringify(attrs)}: relative error ${r!.relError}, |g| ${r!.analyticNorm}`);
}
test('TopK values: largest and smallest, on axis 0 and −1, K as an input', async () => {
  await topk([3, 5], 2);
  await topk([4, 3], 3, { axis: 0, largest: 0 });
});
test('wrong ScatterElements and TopK rules fail the check', async () => {
  // ScatterElements none: data's gradient not zeroed where updates overwrote it.
  const passData: GradRule = (ctx, node, [dY], needs) => [dY!, null, needs[2] ? ctx.em.op('GatherElements', [dY!, node.inputs[1]!], { axis: 1 }) : null];
  await assertBrokenFails('ScatterElements', passData, () => checkOp('ScatterElements', [{ name: 'x', shape: [3, 4] }, idx([2, 2], [0, 3, 2, 1]), { name: 'u', shape: [2, 2] }], { axis: 1 }, { opset: 16 }));
  // TopK: the gradient put at the first K positions instead of the selected ones.
  const firstK: GradRule = (ctx, node, [dV]) => {
    const em = ctx.em;
    const xd = ctx.shape(node.inputs[0]!), vd = ctx.shape(node.outputs[0]!);
    return [em.op('Pad', [dV!, em.ints([0, 0, 0, xd[1]! - vd[1]!])]), null];
  };
  await withRule('TopK', firstK, () => assert.rejects(topk([3, 5], 2), /TopK \{\}: relative error/));
});
