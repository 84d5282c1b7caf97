// Tent with `frames: true` on a speech recogniser's frame logits [batch, frames, classes] (a CTC
// model): the loss is each frame's entropy over the classes, averaged (SUTA's entropy-minimisation
// term), and it falls on a shifted stream; without the option the 3-d logits are refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RefitModel } from '../../src/model.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { createAdapter } from '../../src/tta/index.ts';
import { meanEntropyOf } from '../../src/tta/common.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';

const T = 24, F = 6, C = 5;

/** features [N, 24, 6] → LayerNorm over the features → Linear-ReLU-Linear → [N, 24, 5] frame logits. */
function recogniser(seed: number): RefitModel {
  const r = new Rng(seed), rnd = (n: number, s: number) => Array.from({ length: n }, () => s * (r.next() - 0.5));
  return new RefitModel(new ModelBuilder({ opset: 17 }).input('features', 'float32', ['N', T, F])
    .initializer('ln.weight', f32([F], new Array(F).fill(1))).initializer('ln.bias', f32([F], new Array(F).fill(0)))
    .initializer('w1', f32([F, 16], rnd(F * 16, 1.2))).initializer('b1', f32([16], rnd(16, 0.2)))
    .initializer('w2', f32([16, C], rnd(16 * C, 1.2))).initializer('b2', f32([C], rnd(C, 0.2)))
    .node('LayerNormalization', ['features', 'ln.weight', 'ln.bias'], ['h'], { axis: -1, epsilon: 1e-5 })
    .node('MatMul', ['h', 'w1'], ['a0']).node('Add', ['a0', 'b1'], ['a1']).node('Relu', ['a1'], ['a'])
    .node('MatMul', ['a', 'w2'], ['z0']).node('Add', ['z0', 'b2'], ['logits'])
    .output('logits', 'float32', ['N', T, C]).build(), { threads: 1 });
}

test('Tent on CTC frame logits: the loss is the mean per-frame entropy, and it falls; the 3-d logits need frames: true', async () => {
  const model = recogniser(1);
  const r = new Rng(2);
  const x = f32([8, T, F], Float32Array.from({ length: 8 * T * F }, () => r.normal()));
  assert.throws(() => createAdapter(model, 'tent'), /tent: output 'logits' has 3 dims/);
  const tent = createAdapter(model, 'tent', { frames: true, lr: 0.05 });
  const first = await tent.predict(x);
  assert.deepEqual(first.logits.dims, [8, T, C]);
  const js = meanEntropyOf(first.logits, true);
  assert.ok(Math.abs(first.info.loss! - js) < 1e-5 * Math.max(1, js), `graph ${first.info.loss} against ${js}`);
  // …not the entropy over axis 1 (what dense [batch, classes, positions] logits would give)
  assert.ok(Math.abs(js - meanEntropyOf(first.logits)) > 1e-3);
  const seen = [first.info.loss!];
  for (let i = 0; i < 5; i++) seen.push((await tent.predict(x)).info.loss!);
  assert.ok(seen.at(-1)! < seen[0]! - 1e-3, `entropy ${seen.map((l) => l.toFixed(4)).join(' → ')}`);
  // the LayerNorm's scale and bias are what adapts
  assert.deepEqual([...(tent as unknown as { trainable: string[] }).trainable].sort(), ['ln.bias', 'ln.weight']);
  await tent.release();
});
