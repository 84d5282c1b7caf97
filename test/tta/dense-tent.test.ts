// Tent on a segmentation model's dense logits [batch, classes, H, W] (the zoo's U-Net): the loss is
// each pixel's entropy over the classes, averaged (the paper's GTA → Cityscapes objective); the
// methods made for [batch, classes] logits refuse such a model by name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/model.ts';
import { createAdapter } from '../../src/tta/index.ts';
import { meanEntropyOf } from '../../src/tta/common.ts';
import { ContinualController } from '../../src/continual/index.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';

const path = new URL('../fixtures/zoo/unet/model.onnx', import.meta.url).pathname;

test('Tent on a U-Net: the loss is the mean per-pixel entropy of its prediction, and it falls', async () => {
  const unet = await loadModel(path, { threads: 1 });
  const r = new Rng(2);
  const x = f32([4, 3, 16, 16], Float32Array.from({ length: 4 * 3 * 256 }, () => r.normal()));
  const tent = createAdapter(unet, 'tent', { lr: 0.05 });
  const first = await tent.predict(x);
  assert.deepEqual(first.logits.dims, [4, 3, 16, 16]);
  // The graph's loss against the entropy computed here from the logits it returned (before its update).
  const js = meanEntropyOf(first.logits);
  assert.ok(Math.abs(first.info.loss! - js) < 1e-5 * Math.max(1, js), `graph ${first.info.loss} against ${js}`);
  // …which is not the entropy over the last axis (what a [batch, classes] reading would give).
  const wrongAxis = meanEntropyOf(f32([4 * 3 * 16, 16], first.logits.data as Float32Array));
  assert.ok(Math.abs(js - wrongAxis) > 1e-3);
  const losses = [first.info.loss!];
  for (let i = 0; i < 5; i++) losses.push((await tent.predict(x)).info.loss!);
  assert.ok(losses.at(-1)! < losses[0]! - 1e-3, `entropy ${losses.map((l) => l.toFixed(4)).join(' → ')}`);
  const recovering = createAdapter(unet, 'tent', { recovery: { emaThreshold: 0.01 } });
  const rr = await recovering.predict(x);
  assert.ok(Math.abs(rr.info.extra!.recoveryEma! - js) < 1e-5, 'the recovery EMA follows the same per-pixel entropy');
  for (const m of ['eata', 'sar', 'cotta', 'rmt', 'roid', 'rotta']) {
    assert.throws(() => createAdapter(unet, m), new RegExp(`^Error: ${m}: output 'logits' has 4 dims, class scores per position \\(segmentation\\); ${m} adapts classifiers`), m);
  }
  assert.throws(() => new ContinualController(unet), /fast-slow: output 'logits' must be \[N, classes\] with a fixed class count, got \[batch, 3, 16, 16\]/);
  // A language model's [batch, sequence, vocabulary] logits are not read as dense class scores.
  const gpt = await loadModel(new URL('../fixtures/zoo/gpt/model.onnx', import.meta.url).pathname);
  assert.throws(() => createAdapter(gpt, 'tent'), /^Error: tent: output 'logits' has 3 dims \(\[batch, sequence, vocabulary\] or \[batch, classes, length\]\); test-time adaptation takes \[batch, classes\] logits or image-shaped/);
  await gpt.release();
  await tent.release();
  await recovering.release();
  await unet.release();
});
