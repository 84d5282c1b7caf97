// prepareDeepLearner builds the level-3 deep learner (prototypes, warm-up, compiled step) before the
// stream, and useDeepLearnerState hands that warm state to another controller: the predictions are
// the same as building it on the batch that first reaches level 3, and no stream batch warms up.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/model.ts';
import { ContinualController, type ControllerOptions } from '../../src/continual/controller.ts';
import { ContinualAdapter } from '../../src/continual/adapter.ts';
import { runStream } from '../../src/tta/run-stream.ts';
import type { Adapter } from '../../src/tta/types.ts';
import { continualStream } from '../../src/data/streams.ts';
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { encodeCheckpoint, decodeCheckpoint } from '../../src/continual/checkpoint.ts';
import { deep, noisyBatches, cnnPath as modelPath } from './deep-fixture.ts';

const N = 16, B = 5;
const { shifted, calibration, labels: streamLabels } = noisyBatches(B, N);

/** Options whose deep learner counts its warm-up steps in `warmups`. */
function options(warmups: number[]): ControllerOptions {
  return { logits: 'logits', patience: 1, stableBatches: 50, lr: 0.001, deep: { ...deep, rmt: { ...deep.rmt, onWarmup: () => warmups.push(1) } } };
}

test('a prepared deep learner predicts as one built at level 3, and no stream batch waits for its warm-up', async () => {
  const model = await loadModel(modelPath, { threads: 1 });
  const counts = [[], [], []] as number[][];
  const [lazy, prepared, shared] = counts.map((w) => new ContinualController(model, options(w))) as [ContinualController, ContinualController, ContinualController];
  for (const c of [lazy, prepared, shared]) await c.calibrate(calibration);
  await prepared.prepareDeepLearner(calibration[0]!);
  assert.ok(counts[1]!.length > 0, 'prepareDeepLearner ran the warm-up');
  assert.equal(prepared.state().deep, null, 'a deep learner not yet in use is not part of the state');
  shared.useDeepLearnerState(prepared.preparedDeepLearnerState()!);
  const before = counts[1]!.length;
  let reached = false;
  for (let i = 0; i < B; i++) {
    const r = await Promise.all([lazy, prepared, shared].map((c) => c.predict(shifted(i))));
    assert.deepEqual(r[1]!.probs, r[0]!.probs, `batch ${i}: prepared and lazy predict alike`);
    assert.deepEqual(r[2]!.probs, r[0]!.probs, `batch ${i}: the shared warm state predicts alike`);
    reached ||= r[0]!.level === 3;
    // Labels before level 3 join the deep learner's replay once it is in use, once.
    if (i === 0) for (const c of [lazy, prepared, shared]) await c.feedback(r[0]!.ids.slice(0, 8), Array.from(streamLabels.slice(0, 8)));
  }
  assert.ok(reached, 'the stream reached level 3');
  assert.ok(counts[0]!.length > 0, 'the lazy controller warmed up on a stream batch');
  assert.equal(counts[1]!.length, before, 'the prepared controller did not warm up again');
  assert.equal(counts[2]!.length, 0, 'the controller given the warm state never warmed up');
  assert.throws(() => prepared.preparedDeepLearnerState(), /before the deep learner is in use/);
  assert.throws(() => lazy.useDeepLearnerState({ ...prepared.state().deep!, method: 'tent' }), /not a deep learner's state \(method 'tent'\)/);
  const none = new ContinualController(model, { logits: 'logits' });
  assert.throws(() => none.useDeepLearnerState(prepared.state().deep!), /no deep learner/);
  assert.equal(none.preparedDeepLearnerState(), null, 'no deep option: nothing to hand on');
  await none.release();
  for (const c of [lazy, prepared, shared]) await c.release();
  await model.release();
});

test('loading a state without a deep learner keeps a prepared one', async () => {
  const model = await loadModel(modelPath, { threads: 1 });
  const warmups: number[] = [];
  const a = new ContinualController(model, options(warmups));
  await a.calibrate(calibration);
  const saved = encodeCheckpoint(model, a.state());
  await a.prepareDeepLearner(calibration[0]!);
  const n = warmups.length;
  a.load(decodeCheckpoint(model, saved));
  for (let i = 0; i < B; i++) await a.predict(shifted(i));
  assert.equal(a.currentLevel, 3);
  assert.equal(warmups.length, n, 'no second warm-up after load');
  await a.release();
  await model.release();
});

test('the warm state carries the source prototypes: a controller started from it uses them, and bad ones are refused', async () => {
  const model = await loadModel(modelPath, { threads: 1 });
  const prepared = new ContinualController(model, options([]));
  await prepared.calibrate(calibration);
  await prepared.prepareDeepLearner(calibration[0]!);
  const state = prepared.preparedDeepLearnerState()!;
  const prototypes = state.tensors.prototypes!;
  assert.ok(prototypes.length > 0 && prototypes.length % 10 === 0, 'one prototype per class of the source set');
  // Other prototypes in the state: the contrastive term, and so the adapted predictions, change.
  const [same, moved] = [prototypes, prototypes.map((v) => v + 1)].map((p) => {
    const c = new ContinualController(model, options([]));
    c.useDeepLearnerState({ ...state, tensors: { ...state.tensors, prototypes: p } });
    return c;
  }) as [ContinualController, ContinualController];
  let differ = false;
  for (const c of [same, moved]) await c.calibrate(calibration);
  for (let i = 0; i < B; i++) {
    const [a, b] = await Promise.all([same.predict(shifted(i)), moved.predict(shifted(i))]);
    differ ||= a.probs.some((v, k) => v !== b.probs[k]);
  }
  assert.ok(differ, 'the restored prototypes were not used');
  const bad = new ContinualController(model, options([]));
  bad.useDeepLearnerState({ ...state, tensors: { ...state.tensors, prototypes: prototypes.map(() => Number.NaN) } });
  await bad.calibrate(calibration);
  await assert.rejects(bad.prepareDeepLearner(calibration[0]!), /rmt\.load: the source prototypes are empty or not finite/);
  for (const c of [prepared, same, moved, bad]) await c.release();
  await model.release();
});

test('the deep learner built at level 3 is reported as one-time set-up, which stream scores keep out of ms per batch', async () => {
  const model = await loadModel(modelPath, { threads: 1 });
  const adapter = new ContinualAdapter(model, options([]), calibration);
  const infos = [];
  for (let i = 0; i < B; i++) infos.push((await adapter.predict(shifted(i))).info);
  const setups = infos.filter((f) => f.setupMs !== undefined);
  assert.equal(setups.length, 1, 'one batch built the deep learner');
  const first = setups[0]!;
  assert.equal(first.extra!.level, 3, 'on the batch that first reached level 3');
  assert.ok(first.setupMs! > 0 && first.setupMs! < first.ms, `set-up ${first.setupMs} ms inside the batch's ${first.ms} ms`);
  // A prepared controller has nothing left to set up.
  const prepared = new ContinualAdapter(model, options([]), calibration);
  await prepared.current.calibrate(calibration);
  await prepared.current.prepareDeepLearner(calibration[0]!);
  for (let i = 0; i < B; i++) assert.equal((await prepared.predict(shifted(i))).info.setupMs, undefined);
  // runStream: the set-up counts with the first batch, not in ms per batch.
  const fake: Adapter = {
    name: 'fake', reset() {}, async release() {},
    async predict(x) {
      const n = x.dims[0]!, k = calls++;
      return { logits: f32([n, 10], new Float32Array(n * 10)), info: { used: 0, skipped: 0, resets: 0, ms: k === 2 ? 1010 : 10, ...(k === 2 ? { setupMs: 1000 } : {}) } };
    },
  };
  let calls = 0;
  const score = await runStream(fake, continualStream(loadFashionMnist('test', { limit: 64 }), { severity: 1, batchSize: 16, seed: 0, batchesPerDomain: 1, domains: ['brightness', 'contrast', 'fog', 'snow'] }));
  assert.equal(score.firstBatchMs, 1010);
  assert.equal(score.msPerBatch, 10);
  await adapter.release(); await prepared.release();
  await model.release();
});
