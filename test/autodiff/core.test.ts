import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkOp } from './helpers.ts';
import { i64 } from '../../src/onnx/tensor.ts';

test('Add broadcasts and unbroadcasts', async () => {
  await checkOp('Add', [{ name: 'a', shape: [2, 3, 4] }, { name: 'b', shape: [3, 1] }]);
});
test('Sub, Mul, Div with broadcasting', async () => {
  await checkOp('Sub', [{ name: 'a', shape: [4] }, { name: 'b', shape: [2, 1, 4] }]);
  await checkOp('Mul', [{ name: 'a', shape: [2, 3] }, { name: 'b', shape: [] }]);
  await checkOp('Div', [{ name: 'a', shape: [2, 3] }, { name: 'b', shape: [1, 3], offset: 2, scale: 0.5, dist: 'uniform' }]);
});
test('MatMul: batched, broadcast and 1-D operands', async () => {
  await checkOp('MatMul', [{ name: 'a', shape: [2, 3, 4] }, { name: 'b', shape: [4, 5] }]);
  await checkOp('MatMul', [{ name: 'a', shape: [2, 3, 4] }, { name: 'b', shape: [1, 4, 2] }]);
  await checkOp('MatMul', [{ name: 'a', shape: [4] }, { name: 'b', shape: [2, 4, 3] }]);
  await checkOp('MatMul', [{ name: 'a', shape: [3, 4] }, { name: 'b', shape: [4] }]);
});
for (const [tA, tB] of [[0, 0], [0, 1], [1, 0], [1, 1]] as const) {
  test(`Gemm transA=${tA} transB=${tB} alpha/beta`, async () => {
    await checkOp('Gemm', [{ name: 'a', shape: tA ? [4, 3] : [3, 4] }, { name: 'b', shape: tB ? [5, 4] : [4, 5] }, { name: 'c', shape: [5] }], { transA: tA, transB: tB, alpha: 0.7, beta: 1.3 });
  });
}
test('Relu away from the kink', async () => {
  await checkOp('Relu', [{ name: 'x', shape: [3, 5] }], {}, { eps: 1e-4 });
});
test('ReduceSum and ReduceMean (axes input and attribute forms)', async () => {
  await checkOp('ReduceSum', [{ name: 'x', shape: [2, 3, 4] }, { name: 'axes', shape: [1], value: i64([1], [1]) }], { keepdims: 0 });
  await checkOp('ReduceMean', [{ name: 'x', shape: [2, 3, 4] }], { axes: [0, 2], keepdims: 1 });
  await checkOp('ReduceMean', [{ name: 'x', shape: [2, 3, 4] }, { name: 'axes', shape: [1], value: i64([1], [-1]) }], { keepdims: 0 }, { opset: 18 });
});
test('a broken rule is caught: the check is not vacuous', async () => {
  await assert.rejects(checkOp('Mul', [{ name: 'a', shape: [2, 3] }, { name: 'b', shape: [2, 3] }], {}, { tol: 1e-9, eps: 1e-1 }));
});
