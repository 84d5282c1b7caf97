// The escalation controller on a token model: the zoo's Hugging Face BertForSequenceClassification
// export with its attention_mask & co. made from the ids (withTokenInputs). It predicts as the
// model, adapts the LayerNorms at level 2, learns from delayed labels whose sequences have
// different lengths (padded with the pad token), checkpoints its token rows and continues exactly,
// and refuses what it cannot take, changing nothing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel, type RefitModel } from '../../src/model.ts';
import { withTokenInputs } from '../../src/onnx/token-companions.ts';
import { tensor, f32, type Tensor } from '../../src/onnx/tensor.ts';
import { ContinualController, type ControllerOptions } from '../../src/continual/controller.ts';
import { encodeCheckpoint, decodeCheckpoint } from '../../src/continual/checkpoint.ts';
import { stackRows } from '../../src/continual/input-rows.ts';
import { softmaxRows } from '../../src/tta/common.ts';
import { Rng } from '../../src/util/rng.ts';

const path = new URL('../fixtures/zoo/bert/model.onnx', import.meta.url).pathname;
const PAD = 0, VOCAB = 32, N = 8;
let bert: RefitModel;
let ids: RefitModel;
before(async () => {
  bert = await loadModel(path, { threads: 1 });
  ids = withTokenInputs(bert, { padToken: PAD });
});
after(async () => { await ids.release(); await bert.release(); });

/** A batch of n sequences of `length` ids in 1..31, seeded; the last row padded from `length` − 2 on. */
function batch(seed: number, length: number, n = N): Tensor {
  const r = new Rng(seed);
  const v = Array.from({ length: n * length }, () => BigInt(1 + r.int(VOCAB - 1)));
  for (let p = length - 2; p < length; p++) v[(n - 1) * length + p] = BigInt(PAD);
  return tensor('int64', [n, length], BigInt64Array.from(v));
}
// Levels climb when entropy stays above the reference × 1.5: a reference near 0 makes every batch unhealthy.
const opts: ControllerOptions = { patience: 1, stableBatches: 50, lr: 0.05, padToken: PAD, feedback: { minBatch: 8, minNew: 8 } };

test('token ids in: predictions are the model\'s, levels climb, the LayerNorms adapt and labelled rows of different lengths train', async () => {
  const c = new ContinualController(ids, opts);
  const x = batch(1, 6);
  const first = await c.predict(x);
  const plain = softmaxRows((await ids.run({ input_ids: x })).logits!.data as Float32Array, 2);
  for (let i = 0; i < plain.length; i++) assert.ok(Math.abs(first.probs[i]! - plain[i]!) < 1e-5, `probability ${i}: ${first.probs[i]} against ${plain[i]}`);
  assert.equal(first.level, 0);
  c.useReference(1e-3);
  const levels: number[] = [];
  for (let b = 2; b < 8; b++) levels.push((await c.predict(batch(b, 4 + (b % 3)))).level);
  assert.ok(Math.max(...levels) >= 2, `levels ${levels}`);
  const stepsBefore = c.learner.steps;
  const changed = c.learner.params.some((p) => {
    const now = c.learner.fast.param(p).data as Float32Array, src = ids.param(p).data as Float32Array;
    return now.some((v, k) => v !== src[k]);
  });
  assert.ok(stepsBefore > 0 && changed, `entropy steps on the LayerNorms: ${stepsBefore} steps, ${c.learner.params.length} parameters`);
  // Labels for the last three batches: 24 rows of 4, 5 and 6 ids, padded into one batch.
  const pending = c.state().feedback.pending.slice(-24);
  assert.deepEqual([...new Set(pending.map((p) => p.input.length))].sort(), [4, 5, 6]);
  const report = await c.feedback(pending.map((p) => p.id), pending.map((_, i) => i % 2));
  assert.equal(report.accepted, 24);
  assert.ok(c.learner.steps > stepsBefore, 'a labelled step ran');
  await c.release();
});

test('stackRows pads token rows with the pad token, and refuses mixed lengths without one', () => {
  const rows = [BigInt64Array.from([5n, 6n, 7n]), BigInt64Array.from([8n])];
  const t = stackRows(rows, [], 1);
  assert.deepEqual(t.dims, [2, 3]);
  assert.deepEqual([...(t.data as BigInt64Array)], [5n, 6n, 7n, 8n, 1n, 1n]);
  assert.throws(() => stackRows(rows, []), /token rows of 3 and 1 ids cannot be stacked without a pad token/);
  assert.deepEqual(stackRows([Int32Array.from([3, 4])], []).dims, [1, 2]);
  assert.throws(() => stackRows([Float32Array.from([1, 2])], [3]), /row 0 has 2 values, expected 3 float values/);
});

test('checkpoint: token rows waiting for labels are kept, and a restored controller continues exactly', async () => {
  const a = new ContinualController(ids, opts);
  await a.predict(batch(1, 6));
  a.useReference(1e-3);
  for (let b = 2; b < 6; b++) await a.predict(batch(b, 5 + (b % 2)));
  const bytes = encodeCheckpoint(ids, a.state());
  const b = new ContinualController(ids, opts);
  b.load(decodeCheckpoint(ids, bytes));
  assert.ok(b.state().feedback.pending.every((p) => p.input instanceof BigInt64Array));
  for (let k = 6; k < 9; k++) {
    const ra = await a.predict(batch(k, 6)), rb = await b.predict(batch(k, 6));
    assert.deepEqual([...rb.probs], [...ra.probs]);
    assert.equal(rb.level, ra.level);
  }
  const late = a.state().feedback.pending.slice(0, 8).map((p) => p.id);
  const [fa, fb] = [await a.feedback(late, late.map(() => 1)), await b.feedback(late, late.map(() => 1))];
  assert.equal(fa.accepted, 8);
  assert.equal(fb.accepted, 8);
  const [na, nb] = [await a.predict(batch(9, 6)), await b.predict(batch(9, 6))];
  assert.deepEqual([...nb.probs], [...na.probs]);
  await Promise.all([a.release(), b.release()]);
});

test('refused with a reason, nothing changed: ids outside the vocabulary, floats, another length without a pad token; image-only options', async () => {
  const noPad = { ...opts, padToken: undefined };
  const c = new ContinualController(ids, noPad);
  await c.predict(batch(1, 6));
  const before = encodeCheckpoint(ids, c.state());
  const bad = batch(2, 6);
  (bad.data as BigInt64Array)[7] = BigInt(VOCAB);
  await assert.rejects(c.predict(bad), /continual\.predict: token id 7 is 32, outside the model's vocabulary of 32; refusing to predict or adapt on it \(nothing changed\)/);
  await assert.rejects(c.predict(f32([N, 6], new Float32Array(N * 6))), /input 'input_ids' takes int64 token ids, got float32/);
  await assert.rejects(c.predict(tensor('int64', [N], new BigInt64Array(N))), /takes token ids \[batch, length\], got \[8\]/);
  await assert.rejects(c.predict(batch(3, 5)), /sequences of 5 ids after sequences of 6: without padToken/);
  assert.deepEqual(encodeCheckpoint(ids, c.state()), before);
  await c.release();
  assert.throws(() => new ContinualController(ids, { inputAlign: { mean: [0], sampleStd: [1] } }), /inputAlign moves image channels .* 'input_ids' is int64 token ids/);
  const deep = { sourceData: f32([2, 6], new Float32Array(12)), sourceLabels: [0, 1] };
  assert.throws(() => new ContinualController(ids, { deep }), /the deep learner \(level 3, RMT\) augments its input images, and this model's input 'input_ids' is int64 token ids; leave out `deep`/);
  assert.throws(() => new ContinualController(bert), /takes 3 inputs \(input_ids, token_type_ids, attention_mask\) .* withTokenInputs/);
  assert.throws(() => new ContinualController(ids, { padToken: -1 }), /padToken/);
  const img = await loadModel(new URL('../../models/fmnist-cnn.onnx', import.meta.url).pathname);
  assert.throws(() => new ContinualController(img, { padToken: 0 }), /padToken is for token models; this model's input 'x' is float32/);
  await img.release();
});
