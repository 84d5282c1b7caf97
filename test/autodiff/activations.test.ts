import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkOp } from './helpers.ts';
import { f32, tensor } from '../../src/onnx/tensor.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { gradCheck } from '../../src/autodiff/gradcheck.ts';
import { Rng } from '../../src/util/rng.ts';

// Piecewise ops are checked one smooth piece per call: uniform draws confined to a piece, at
// least 0.1 from every kink, so no central difference (eps 1e-3) straddles one.
const above = (k: number) => ({ offset: k + 0.6, scale: 0.5, dist: 'uniform' as const }); // [k+0.1, k+1.1]
const below = (k: number) => ({ offset: k - 0.6, scale: 0.5, dist: 'uniform' as const }); // [k−1.1, k−0.1]
const between = (lo: number, hi: number) => ({ offset: (lo + hi) / 2, scale: (hi - lo) / 2 - 0.1, dist: 'uniform' as const });

test('Relu on both sides of the kink', async () => {
  await checkOp('Relu', [{ name: 'x', shape: [3, 5], ...above(0) }]);
  await checkOp('Relu', [{ name: 'x', shape: [3, 5], ...below(0) }], {}, { allowZero: true });
});
test('LeakyRelu: default alpha and alpha = 0.2, both sides', async () => {
  for (const side of [above(0), below(0)]) {
    await checkOp('LeakyRelu', [{ name: 'x', shape: [3, 5], ...side }]);
    await checkOp('LeakyRelu', [{ name: 'x', shape: [3, 5], ...side }], { alpha: 0.2 });
  }
});
test('Sigmoid', async () => {
  await checkOp('Sigmoid', [{ name: 'x', shape: [3, 5], scale: 2 }]);
});
test('Tanh', async () => {
  await checkOp('Tanh', [{ name: 'x', shape: [3, 5], scale: 1.5 }]);
});
for (const approximate of ['none', 'tanh']) {
  test(`Gelu-20 approximate=${approximate}`, async () => {
    await checkOp('Gelu', [{ name: 'x', shape: [3, 5], scale: 2 }], { approximate }, { opset: 20 });
    if (approximate === 'none') await checkOp('Gelu', [{ name: 'x', shape: [3, 5], scale: 2 }], {}, { opset: 20 }); // default attribute
  });
}
test('Gelu: each form gets its own exact derivative (tight check)', async () => {
  // The exact and tanh-form derivatives differ by only ~6e-4 relative on N(0, 4) inputs, below
  // the default tol of 1e-2; so check each form with tol 1.5e-4. eps 1e-2 (not 1e-3) keeps the
  // float32 rounding noise of the central difference down: measured error 2.7e-5 for the right
  // rule of each form, 5.9e-4 with the two rules swapped.
  for (const approximate of ['none', 'tanh']) {
    await checkOp('Gelu', [{ name: 'x', shape: [4, 8], scale: 2 }], { approximate }, { opset: 20, eps: 1e-2, tol: 1.5e-4 });
  }
});
for (const op of ['Softmax', 'LogSoftmax']) {
  test(`${op}: axis 1 of a 3-D input, the default axis, a negative axis`, async () => {
    await checkOp(op, [{ name: 'x', shape: [2, 3, 4] }], { axis: 1 });
    await checkOp(op, [{ name: 'x', shape: [2, 3, 4] }]);
    await checkOp(op, [{ name: 'x', shape: [2, 3, 4] }], { axis: -3 });
  });
}
test('HardSigmoid: each piece, default and custom alpha/beta', async () => {
  // Defaults α = 0.2, β = 0.5: kinks at x = ±2.5.
  await checkOp('HardSigmoid', [{ name: 'x', shape: [4, 6], ...between(-2.5, 2.5) }]);
  await checkOp('HardSigmoid', [{ name: 'x', shape: [4, 6], ...above(2.5) }], {}, { allowZero: true });
  await checkOp('HardSigmoid', [{ name: 'x', shape: [4, 6], ...below(-2.5) }], {}, { allowZero: true });
  // α = 0.4, β = 0.3: kinks at x = −0.75 and 1.75.
  await checkOp('HardSigmoid', [{ name: 'x', shape: [4, 6], ...between(-0.75, 1.75) }], { alpha: 0.4, beta: 0.3 });
});
test('HardSwish: each of the three pieces', async () => {
  // Kinks at x = ±3: 0 below, x/3 + ½ between, 1 above.
  await checkOp('HardSwish', [{ name: 'x', shape: [4, 6], ...between(-3, 3) }]);
  await checkOp('HardSwish', [{ name: 'x', shape: [4, 6], ...above(3) }]);
  await checkOp('HardSwish', [{ name: 'x', shape: [4, 6], ...below(-3) }], {}, { allowZero: true });
});
test('Elu and Selu on both sides of 0', async () => {
  for (const side of [above(0), below(0)]) {
    await checkOp('Elu', [{ name: 'x', shape: [4, 5], ...side }]);
    await checkOp('Elu', [{ name: 'x', shape: [4, 5], ...side }], { alpha: 0.7 });
    await checkOp('Selu', [{ name: 'x', shape: [4, 5], ...side }]);
  }
});

// ---- composition: several rules chained, and gradients accumulated over two branches ----

test('rules compose: x → MatMul(W) → Gelu → Softmax, and x → Sigmoid → Log', async () => {
  const rng = new Rng(5);
  const rand = (dims: number[], s = 1) => f32(dims, rng.fill(new Float32Array(dims.reduce((a, b) => a * b, 1)), s, 'normal'));
  const b = new ModelBuilder({ opset: 20 });
  b.input('x', 'float32', [3, 4]);
  b.initializer('W', rand([4, 5], 0.7));
  b.initializer('v', rand([3, 4]));
  b.node('MatMul', ['x', 'W'], ['h']);
  b.node('Gelu', ['h'], ['g']);
  b.node('Softmax', ['g'], ['p'], { axis: 1 });
  // Second chain on a trainable tensor v, sharing x so both chains meet in the loss.
  b.node('Add', ['x', 'v'], ['z']);
  b.node('Sigmoid', ['z'], ['s']);
  b.node('Log', ['s'], ['ls']);
  b.output('p');
  b.output('ls');
  const reports = await gradCheck(b.build(), { x: rand([3, 4]) }, { params: ['W', 'v'] });
  assert.equal(reports.length, 2);
  for (const r of reports) {
    assert.ok(r.relError < 1e-2, `${r.param}: relative error ${r.relError}`);
    assert.ok(r.analyticNorm > 0, `${r.param}: zero gradient`);
  }
});
test('rules compose in one chain with a shared input: Log(Sigmoid(Gelu(x W)))', async () => {
  const rng = new Rng(8);
  const rand = (dims: number[]) => f32(dims, rng.fill(new Float32Array(dims.reduce((a, b) => a * b, 1)), 1, 'normal'));
  const b = new ModelBuilder({ opset: 20 });
  b.input('dummy', 'float32', [1]);
  b.initializer('x', rand([2, 3]));
  b.initializer('W', rand([3, 3]));
  b.node('MatMul', ['x', 'W'], ['h']);
  b.node('Gelu', ['h'], ['g'], { approximate: 'tanh' });
  b.node('Sigmoid', ['g'], ['s']);
  b.node('Log', ['s'], ['ls']);
  b.node('Softmax', ['ls'], ['p']);
  b.node('Identity', ['dummy'], ['dummy_out']);
  b.output('p');
  const reports = await gradCheck(b.build(), { dummy: tensor('float32', [1], [0]) }, { params: ['x', 'W'] });
  for (const r of reports) assert.ok(r.relError < 1e-2 && r.analyticNorm > 0, `${r.param}: relative error ${r.relError}, |g| ${r.analyticNorm}`);
});
