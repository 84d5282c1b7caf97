// Comparing refit's numbers with reference numbers (PyTorch fixtures), shared by the test files.
import assert from 'node:assert/strict';
import type { Tensor } from '../../src/onnx/tensor.ts';

/** ‖a − e‖ / ‖e‖ (with a floor for an all-zero reference). */
export function relErr(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let d2 = 0, e2 = 0;
  for (let i = 0; i < expected.length; i++) { d2 += (actual[i]! - expected[i]!) ** 2; e2 += expected[i]! ** 2; }
  return Math.sqrt(d2) / Math.max(Math.sqrt(e2), 1e-12);
}

/** ‖a − b‖ ≤ rel·‖b‖, or an absolute floor for tensors PyTorch computes as (numerically) zero. */
export function assertCloseToTorch(name: string, actual: Float32Array, expected: Tensor, rel = 1e-4, absFloor = 1e-6): void {
  const e = expected.data as Float32Array;
  assert.equal(actual.length, e.length, `${name}: ${actual.length} elements, PyTorch has ${e.length}`);
  let d2 = 0, e2 = 0;
  for (let i = 0; i < e.length; i++) { d2 += (actual[i]! - e[i]!) ** 2; e2 += e[i]! ** 2; }
  const err = Math.sqrt(d2), norm = Math.sqrt(e2);
  assert.ok(err <= rel * norm || err <= absFloor * Math.sqrt(e.length), `${name}: ‖diff‖ ${err.toExponential(2)} vs ‖ref‖ ${norm.toExponential(2)}`);
}
