// Shared helpers for the PEFT tests: small seeded models, inputs and comparisons.
import assert from 'node:assert/strict';
import { RefitModel } from '../../src/model.ts';
import { vit, resnetCnn } from '../../src/nn/models.ts';
import { type Tensor, f32 } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import type { PeftModel } from '../../src/peft/index.ts';

export const smallVit = (seed = 1) => new RefitModel(vit({ patch: 7, depth: 1, dim: 32, heads: 2, seed }), { threads: 1 });
export const smallCnn = (seed = 1) => new RefitModel(resnetCnn({ width: 8, seed }), { threads: 1 });
export const images = (n: number, seed = 3) => f32([n, 1, 28, 28], new Rng(seed).fill(new Float32Array(n * 784)));

export function maxDiff(a: Tensor | Float32Array, b: Tensor | Float32Array): number {
  const x = ('data' in a ? a.data : a) as Float32Array, y = ('data' in b ? b.data : b) as Float32Array;
  assert.equal(x.length, y.length);
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!));
  return m;
}

/** Give every trainable adapter tensor seeded non-trivial values (so the adapter changes outputs). */
export function perturb(p: PeftModel, name: string, scale = 0.1, seed = 11): void {
  const rng = new Rng(seed);
  const trainable = new Set(p.adapter(name).trainable);
  for (const [k, t] of p.adapterValues(name)) {
    if (!trainable.has(k)) continue;
    const d = t.data as Float32Array;
    for (let i = 0; i < d.length; i++) d[i] = d[i]! + rng.normal() * scale;
  }
  p.touch(trainable);
}
