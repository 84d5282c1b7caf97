// Level 3's deep learner (RMT over every parameter, stepping on every k-th batch) inside the
// controller: it takes over at level 3, steps only on every k-th batch, leaves the source model
// alone, and a checkpoint continues the run exactly; a state with a deep learner is refused by a
// controller without one. Also RMT's `updateEvery` on its own.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/model.ts';
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';
import { corrupt } from '../../src/data/corruptions/index.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { ContinualController } from '../../src/continual/controller.ts';
import { encodeCheckpoint, decodeCheckpoint } from '../../src/continual/checkpoint.ts';
import { RMT } from '../../src/tta/rmt.ts';
import { deep } from './deep-fixture.ts';

const modelPath = new URL('../../models/fmnist-cnn.onnx', import.meta.url).pathname;
const N = 16, B = 10;
const ds = loadFashionMnist('test', { limit: N * B });
const noisy = corrupt(ds.images, N * B, 28, 28, 'gaussian_noise', 5, 0);
const shifted = (i: number) => f32([N, 1, 28, 28], noisy.slice(i * N * 784, (i + 1) * N * 784));
// Climbs one level per unhealthy batch up to 3 (the reference from a clean calibration batch).
const opts = { logits: 'logits', embedding: 'features', patience: 1, stableBatches: 50, lr: 0.001, deep };
const calibration = [f32([N, 1, 28, 28], ds.images.slice(0, N * 784))];

test('RMT updateEvery: steps on every k-th batch only; the batches between change nothing', async () => {
  const model = await loadModel(modelPath, { threads: 1 });
  const rmt = new RMT(model, { sourceData: deep.sourceData, sourceLabels: deep.sourceLabels, warmupSamples: 16, updateEvery: 3 });
  const used: number[] = [];
  let before = (await rmt.save()).tensors;
  const changed: boolean[] = [];
  for (let i = 0; i < 6; i++) {
    used.push((await rmt.predict(shifted(i))).info.used);
    const now = (await rmt.save()).tensors;
    changed.push(Object.keys(now).some((k) => k.startsWith('param.') && now[k]!.some((v, j) => v !== before[k]![j])));
    before = now;
  }
  assert.deepEqual(used, [N, 0, 0, N, 0, 0]);
  assert.deepEqual(changed.slice(1), [false, false, true, false, false]);
  const s0 = await rmt.save();
  await rmt.infer(shifted(7));
  assert.deepEqual(await rmt.save(), s0, 'infer changes no state, not even the updateEvery count');
  await assert.rejects(async () => new RMT(model, { updateEvery: 0 }), /updateEvery/);
  assert.throws(() => rmt.addLabelled(new Float32Array(10), 1), /a sample has 784 values, got 10/);
  assert.throws(() => rmt.addLabelled(new Float32Array(784).fill(NaN), 1), /not finite/);
  assert.throws(() => new RMT(model).addLabelled(new Float32Array(784), 1), /no sourceData/);
  await rmt.release();
  await model.release();
});

test('deep learner: takes over at level 3, the source stays, and a checkpoint continues exactly', async () => {
  const model = await loadModel(modelPath, { threads: 1 });
  const sourceWeight = (model.param('stem.conv.weight').data as Float32Array).slice();
  const a = new ContinualController(model, opts);
  await a.calibrate(calibration);
  const levels: number[] = [];
  for (let i = 0; i < 6; i++) levels.push((await a.predict(shifted(i))).level);
  assert.ok(levels.includes(3), `levels ${levels}`);
  const st = a.state();
  assert.ok(st.deep, 'the state holds the deep learner');
  assert.ok(Object.keys(st.deep!.tensors).some((k) => k === 'param.stem.conv.weight'), 'every parameter is adapted, convolutions included');
  assert.notDeepEqual(st.deep!.tensors['param.stem.conv.weight'], sourceWeight, 'the deep learner stepped');
  assert.deepEqual(model.param('stem.conv.weight').data, sourceWeight, 'the source model is never written');
  // Delayed labels join the deep learner's replay (and travel in the checkpoint).
  const fb = await a.feedback(st.feedback.pending.slice(0, 6).map((p) => p.id), Array.from(ds.labels.subarray(0, 6)));
  assert.equal(fb.accepted, 6);
  const withLabels = a.state();
  assert.equal(withLabels.deep!.tensors['labelled.y']?.length, 6);
  assert.equal(withLabels.deep!.tensors['labelled.x']?.length, 6 * 784);
  const bytes = encodeCheckpoint(model, withLabels);
  const b = new ContinualController(model, opts);
  b.load(decodeCheckpoint(model, bytes));
  for (let i = 6; i < 9; i++) {
    const ra = await a.predict(shifted(i)), rb = await b.predict(shifted(i));
    assert.equal(ra.level, 3);
    assert.deepEqual(rb.probs, ra.probs, `batch ${i}: the restored run predicts as the uninterrupted one`);
  }
  const { deep: _, ...plain } = opts;
  const c = new ContinualController(model, plain);
  assert.throws(() => c.load(decodeCheckpoint(model, bytes)), /holds a deep learner .* has no `deep` option/);
  await Promise.all([a.release(), b.release(), c.release()]);
  await model.release();
});
