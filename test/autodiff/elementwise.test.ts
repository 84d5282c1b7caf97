import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkOp } from './helpers.ts';
import { f32, i64, tensor } from '../../src/onnx/tensor.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { RefitModel } from '../../src/model.ts';
import type { LossSpec } from '../../src/train/loss-spec.ts';

// Positive inputs in [0.5, 1.5] keep Sqrt/Log/Reciprocal/Pow away from 0 and their domain edge.
const positive = { offset: 1, scale: 0.5, dist: 'uniform' as const };

test('Sqrt on positive inputs', async () => {
  await checkOp('Sqrt', [{ name: 'x', shape: [3, 4], ...positive }]);
});
test('Reciprocal on positive inputs', async () => {
  await checkOp('Reciprocal', [{ name: 'x', shape: [3, 4], ...positive }]);
});
test('Pow: constant scalar exponents, a constant broadcast exponent tensor, a varied exponent', async () => {
  for (const e of [0.5, 1, 2, 3, -1.5]) {
    await checkOp('Pow', [{ name: 'a', shape: [2, 3], ...positive }, { name: 'b', shape: [], value: f32([], [e]) }]);
  }
  const zero = await checkOp('Pow', [{ name: 'a', shape: [2, 3], ...positive }, { name: 'b', shape: [], value: f32([], [0]) }], {}, { allowZero: true });
  assert.equal(zero[0]!.analyticNorm, 0);
  // Integer exponent tensor of a larger shape: a [3] broadcasts to [2, 3].
  await checkOp('Pow', [{ name: 'a', shape: [3], ...positive }, { name: 'b', shape: [2, 3], value: i64([2, 3], [1, 2, 3, -1, 0, 2]) }]);
  // Both varied, with broadcasting both ways: d/db = y·ln(a).
  await checkOp('Pow', [{ name: 'a', shape: [2, 1, 3], ...positive }, { name: 'b', shape: [4, 1], offset: 1.5, scale: 1, dist: 'uniform' }]);
});
test('Exp', async () => {
  await checkOp('Exp', [{ name: 'x', shape: [3, 4] }]);
});
test('Log on positive inputs', async () => {
  await checkOp('Log', [{ name: 'x', shape: [3, 4], ...positive }]);
});
test('Erf', async () => {
  await checkOp('Erf', [{ name: 'x', shape: [3, 4] }]);
});
test('Abs away from 0', async () => {
  // |x| in [0.2, 1], one sign per call: the central difference with eps 1e-3 never straddles the kink.
  await checkOp('Abs', [{ name: 'x', shape: [3, 4], offset: 0.6, scale: 0.4, dist: 'uniform' }]);
  await checkOp('Abs', [{ name: 'x', shape: [3, 4], offset: -0.6, scale: 0.4, dist: 'uniform' }]);
});
test('Sin and Cos', async () => {
  await checkOp('Sin', [{ name: 'x', shape: [3, 4] }]);
  await checkOp('Cos', [{ name: 'x', shape: [3, 4] }]);
});
test('Softplus and Softsign', async () => {
  await checkOp('Softplus', [{ name: 'x', shape: [3, 4], scale: 2 }]);
  await checkOp('Softsign', [{ name: 'x', shape: [3, 4], offset: 0.6, scale: 0.4, dist: 'uniform' }]);
});
test('Clip: both bounds, one bound, bounds as trainable inputs', async () => {
  // x uniform in [−1.5, 1.5]: elements on each side of each bound; with this seed none lies within
  // eps of a bound (the helper's zero-gradient and error checks would catch a straddle).
  const bounds = { min: f32([], [-0.5]), max: f32([], [0.6]) };
  await checkOp('Clip', [{ name: 'x', shape: [4, 6], scale: 1.5, dist: 'uniform' }, { name: 'lo', shape: [], value: bounds.min }, { name: 'hi', shape: [], value: bounds.max }]);
  await checkOp('Clip', [{ name: 'x', shape: [4, 6], scale: 1.5, dist: 'uniform' }, { name: '', shape: [] }, { name: 'hi', shape: [], value: bounds.max }]);
  await checkOp('Clip', [{ name: 'x', shape: [4, 6], scale: 1.5, dist: 'uniform' }, { name: 'lo', shape: [], value: bounds.min }]);
  await checkOp('Clip', [{ name: 'x', shape: [4, 6], scale: 1.5, dist: 'uniform' }, { name: 'lo', shape: [], offset: -0.5, scale: 0.05 }, { name: 'hi', shape: [], offset: 0.6, scale: 0.05 }]);
});
test('Where masks and unbroadcasts X and Y', async () => {
  const cond = tensor('bool', [2, 3, 4], Array.from({ length: 24 }, (_, i) => (i * 7) % 3 === 0 ? 1 : 0));
  await checkOp('Where', [{ name: 'c', shape: [2, 3, 4], value: cond }, { name: 'x', shape: [2, 1, 4] }, { name: 'y', shape: [3, 1] }]);
  // The condition broadcasts too: output [2, 3, 4] from a [3, 1] condition.
  const c2 = tensor('bool', [3, 1], [1, 0, 1]);
  await checkOp('Where', [{ name: 'c', shape: [3, 1], value: c2 }, { name: 'x', shape: [2, 3, 4] }, { name: 'y', shape: [4] }]);
});
for (const op of ['Min', 'Max']) {
  test(`${op}: variadic with broadcasting, one and two inputs`, async () => {
    // Uniform draws of equal spread so that every input is selected somewhere (a normal draw can
    // leave the 4 values of c never selected against 6 others, and the check would prove nothing).
    const u = { dist: 'uniform' as const };
    await checkOp(op, [{ name: 'a', shape: [2, 3, 4], ...u }, { name: 'b', shape: [3, 1], ...u }, { name: 'c', shape: [4], ...u }]);
    await checkOp(op, [{ name: 'a', shape: [3, 4] }, { name: 'b', shape: [3, 4] }]);
    await checkOp(op, [{ name: 'a', shape: [3, 4] }]);
  });
  test(`${op}: only some inputs trainable`, async () => {
    const u = { dist: 'uniform' as const };
    await checkOp(op, [{ name: 'a', shape: [2, 3, 4], value: f32([2, 3, 4], Array.from({ length: 24 }, (_, i) => Math.sin(i))) }, { name: 'b', shape: [3, 1], ...u }, { name: 'c', shape: [4], ...u }]);
    await checkOp(op, [{ name: 'a', shape: [3, 4] }, { name: 'b', shape: [3, 4], value: f32([3, 4], Array.from({ length: 12 }, (_, i) => Math.cos(i))) }]);
  });
  test(`${op}: ties split the gradient evenly (as torch.maximum/minimum), so ${op}(x, x, x) has gradient dY`, async () => {
    const b = new ModelBuilder({ opset: 17 });
    b.initializer('x', f32([2, 3], [0.1, -0.2, 0.3, -0.4, 0.5, -0.6]));
    b.input('dummy', 'float32', [1]);
    b.node(op, ['x', 'x', 'x'], ['y']);
    b.node('Identity', ['dummy'], ['dummy_out']);
    b.output('y');
    const model = new RefitModel(b.build(), { threads: 1 });
    // loss = Σ y, so the gradient is 3 × 1/3 = 1 everywhere (3 under an "every tied input gets dY" rule).
    const sum: LossSpec = { describe: 'sum(y)', reads: ['y'], inputs: [], build: (ctx) => ctx.em.reduce('ReduceSum', 'y', [0, 1], false) };
    const step = model.compileTrainStep({ trainable: ['x'], loss: sum });
    const r = await step.run({ dummy: tensor('float32', [1], [0]) });
    assert.deepEqual(Array.from(r.grads.get('x')!), [1, 1, 1, 1, 1, 1]);
    await step.release();
  });
}

test('Max of two inputs with a tie gives what torch.maximum gives (0.5 each at the tie)', async () => {
  const b = new ModelBuilder({ opset: 17 });
  b.initializer('a', f32([2], [1, 2]));
  b.initializer('b', f32([2], [1, 3]));
  b.input('dummy', 'float32', [1]);
  b.node('Max', ['a', 'b'], ['y']);
  b.node('Identity', ['dummy'], ['dummy_out']);
  b.output('y');
  const model = new RefitModel(b.build(), { threads: 1 });
  const sum: LossSpec = { describe: 'sum(y)', reads: ['y'], inputs: [], build: (ctx) => ctx.em.reduce('ReduceSum', 'y', [0], false) };
  const step = model.compileTrainStep({ trainable: ['a', 'b'], loss: sum });
  const r = await step.run({ dummy: tensor('float32', [1], [0]) });
  // torch: a = [1, 2], b = [1, 3]; torch.maximum(a, b).sum().backward() → a.grad [0.5, 0], b.grad [0.5, 1]
  assert.deepEqual([...r.grads.get('a')!], [0.5, 0]);
  assert.deepEqual([...r.grads.get('b')!], [0.5, 1]);
  await step.release();
});
