// Fast and slow learners on the shipped CNN: the momentum accumulation formula, LAE's ensemble,
// labelled steps, stochastic restore, and an exact continuation after a state round trip.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/model.ts';
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';
import { corrupt } from '../../src/data/corruptions/index.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { FastSlowLearner } from '../../src/continual/fast-slow.ts';
import { softmaxRows } from '../../src/tta/common.ts';

const modelPath = new URL('../../models/fmnist-cnn.onnx', import.meta.url).pathname;
const ds = loadFashionMnist('test', { limit: 128 });
const noisy = corrupt(ds.images, 128, 28, 28, 'gaussian_noise', 4, 0);
const batch = (i: number) => f32([32, 1, 28, 28], noisy.subarray(i * 32 * 784, (i + 1) * 32 * 784));

test('fast learns, slow accumulates by momentum, the ensemble is the element-wise max', async () => {
  const model = await loadModel(modelPath, { threads: 1 });
  const fs = new FastSlowLearner(model, { logits: 'logits', embedding: 'features', lr: 0.01, decay: 0.9 });
  const p = fs.params[0]!;
  const src = (model.param(p).data as Float32Array).slice();
  const out = await fs.process(batch(0), { update: true, consolidate: true });
  assert.ok(out.updated && out.loss! > 0);
  const fast = fs.fast.param(p).data as Float32Array, slow = fs.slow.param(p).data as Float32Array;
  assert.ok(fast.some((v, i) => v !== src[i]), 'the fast learner moved');
  for (let i = 0; i < src.length; i++) assert.ok(Math.abs(slow[i]! - (0.9 * src[i]! + 0.1 * fast[i]!)) < 1e-6);
  assert.deepEqual([...(model.param(p).data as Float32Array)], [...src], 'the source model is never written');
  const pf = softmaxRows(out.fastLogits.data as Float32Array, 10), ps = softmaxRows(out.slowLogits.data as Float32Array, 10);
  for (let i = 0; i < out.probs.length; i++) assert.ok(Math.abs(out.probs[i]! - Math.max(pf[i]!, ps[i]!)) < 1e-6);
  assert.equal(out.embedding!.dims.join(), '32,128');
  await fs.release();
  await model.release();
});

test('labelled steps lower the cross-entropy; reset brings the source back', async () => {
  const model = await loadModel(modelPath, { threads: 1 });
  const fs = new FastSlowLearner(model, { logits: 'logits', lr: 0.05 });
  const labels = ds.labels.subarray(0, 32);
  const first = await fs.learn(batch(0), labels);
  let last = first;
  for (let k = 0; k < 4; k++) last = await fs.learn(batch(0), labels);
  assert.ok(last.loss < first.loss, `loss ${first.loss} → ${last.loss}`);
  await assert.rejects(fs.learn(batch(0), labels.subarray(0, 3)), /32 inputs but 3 labels/);
  fs.reset('both');
  const p = fs.params[1]!;
  assert.deepEqual([...(fs.fast.param(p).data as Float32Array)], [...(model.param(p).data as Float32Array)]);
  await fs.release();
  await model.release();
});

test('stochastic restore with probability 1 keeps the fast learner at the source', async () => {
  const model = await loadModel(modelPath, { threads: 1 });
  const fs = new FastSlowLearner(model, { logits: 'logits', lr: 0.05, restore: { probability: 1, seed: 1 } });
  await fs.process(batch(0), { update: true });
  for (const p of fs.params) assert.deepEqual([...(fs.fast.param(p).data as Float32Array)], [...(model.param(p).data as Float32Array)]);
  await fs.release();
  await model.release();
});

test('a restored learner continues exactly as the uninterrupted one', async () => {
  const model = await loadModel(modelPath, { threads: 1 });
  const opts = { logits: 'logits', lr: 0.01, decay: 0.8, restore: { probability: 0.05, seed: 3 } };
  const a = new FastSlowLearner(model, opts);
  await a.process(batch(0), { update: true, consolidate: true });
  await a.process(batch(1), { update: true, consolidate: true });
  const saved = a.state();
  const b = new FastSlowLearner(model, opts);
  b.load(saved);
  for (const i of [2, 3]) {
    const oa = await a.process(batch(i), { update: true, consolidate: true });
    const ob = await b.process(batch(i), { update: true, consolidate: true });
    assert.deepEqual([...ob.probs], [...oa.probs]);
  }
  assert.deepEqual(b.state(), a.state());
  assert.throws(() => b.load({ ...saved, fast: {} }), /fast parameter '.*' is missing or has the wrong size/);
  await Promise.all([a.release(), b.release()]);
  await model.release();
});
