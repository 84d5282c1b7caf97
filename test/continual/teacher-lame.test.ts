// The controller's additions for the continual benchmark: the fast learner's 'teacher' objective
// (symmetric cross-entropy to the slow learner's predictions), LAME 'auto' on label-concentrated
// batches only, and the long stream's per-round reshuffle (src/data/streams.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/model.ts';
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';
import { corrupt } from '../../src/data/corruptions/index.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { FastSlowLearner } from '../../src/continual/fast-slow.ts';
import { ContinualController, sizeCorrectedSpread } from '../../src/continual/controller.ts';
import { recurringStream } from '../../src/data/streams.ts';

const modelPath = new URL('../../models/fmnist-cnn.onnx', import.meta.url).pathname;
const ds = loadFashionMnist('test', { limit: 512 });
const noisy = corrupt(ds.images, 512, 28, 28, 'gaussian_noise', 5, 0);
const rows = (idx: number[], from = noisy) => {
  const x = new Float32Array(idx.length * 784);
  idx.forEach((k, j) => x.set(from.subarray(k * 784, (k + 1) * 784), j * 784));
  return f32([idx.length, 1, 28, 28], x);
};

test("teacher objective: the fast learner steps toward the slow learner's predictions; a bad objective is refused", async () => {
  const model = await loadModel(modelPath, { threads: 1 });
  assert.throws(() => new FastSlowLearner(model, { objective: 'nope' as 'entropy' }), /objective must be 'entropy' or 'teacher', got 'nope'/);
  const fs = new FastSlowLearner(model, { logits: 'logits', lr: 0.01, decay: 0.9, objective: 'teacher' });
  const x = rows(Array.from({ length: 32 }, (_, i) => i));
  const p = fs.params[0]!;
  const src = (model.param(p).data as Float32Array).slice();
  const first = await fs.process(x, { update: true });
  assert.ok(first.updated && first.loss! > 0, `loss ${first.loss}`);
  assert.ok((fs.fast.param(p).data as Float32Array).some((v, i) => v !== src[i]), 'the fast learner moved');
  // Against a fixed teacher (no consolidation), repeated steps lower the symmetric cross-entropy.
  let last = first;
  for (let k = 0; k < 4; k++) last = await fs.process(x, { update: true });
  assert.ok(last.loss! < first.loss!, `loss ${first.loss} → ${last.loss}`);
  await fs.release();
  await model.release();
});

test("LAME 'auto' corrects batches whose predicted labels are concentrated, and leaves mixed ones alone", async () => {
  const model = await loadModel(modelPath, { threads: 1 });
  const c = new ContinualController(model, { logits: 'logits', embedding: 'features', lame: 'auto', lameThreshold: 0.7, maxLevel: 0 });
  const mixed = await c.predict(rows(Array.from({ length: 32 }, (_, i) => i)));
  assert.ok(mixed.signals.spread! > 0.7 && !mixed.signals.lame, `spread ${mixed.signals.spread}`);
  const oneClass = Array.from({ length: 512 }, (_, i) => i).filter((i) => ds.labels[i] === 1).slice(0, 32);
  const conc = await c.predict(rows(oneClass, ds.images)); // clean trousers: one predicted class
  assert.ok(conc.signals.spread! < 0.7 && conc.signals.lame === true, `spread ${conc.signals.spread}`);
  for (let i = 0; i < 32; i++) {
    let z = 0;
    for (let k = 0; k < 10; k++) z += conc.probs[i * 10 + k]!;
    assert.ok(Math.abs(z - 1) < 1e-4, 'LAME rows are distributions');
  }
  await c.release();
  await model.release();
});

test('recurring stream: shuffleRounds reorders the domains after round 1, the same samples per (round, domain)', () => {
  const data = { ...ds, images: ds.images, n: 512 };
  const domains = ['gaussian_noise', 'fog', 'contrast', 'snow'] as const;
  const plain = recurringStream(data, { domains, rounds: 3, samplesPerDomain: 8, batchSize: 8 });
  const shuf = recurringStream(data, { domains, rounds: 3, samplesPerDomain: 8, batchSize: 8, shuffleRounds: true });
  assert.deepEqual(shuf.segments.slice(0, 4).map((s) => s.domain), [...domains]);
  const order = (s: typeof plain) => s.segments.map((g) => g.domain).join();
  assert.notEqual(order(shuf), order(plain));
  for (let r = 0; r < 3; r++) assert.deepEqual(shuf.segments.filter((s) => s.round === r).map((s) => s.domain).sort(), [...domains].sort());
  const ids = (s: typeof plain) => new Map([...s].map((b) => [`${b.round}|${b.domain}`, b.ids.join()]));
  assert.deepEqual(ids(shuf), ids(plain));
});

test("LAME 'auto' compares the batch-size-corrected spread: Miller–Madow's (C − 1)/(2n) in units of log C", () => {
  assert.ok(Math.abs(sizeCorrectedSpread(0.9, 64, 10) - (0.9 + 9 / (128 * Math.log(10)))) < 1e-12);
  // The same raw spread counts as more concentrated in a big batch than in a small one.
  assert.ok(sizeCorrectedSpread(0.85, 16, 10) > 0.93 && sizeCorrectedSpread(0.85, 64, 10) < 0.93);
  assert.ok(Math.abs(sizeCorrectedSpread(0.5, 1e9, 10) - 0.5) < 1e-8, 'no correction for a very large batch');
});

test("LAME 'auto' leaves a batch alone whose raw spread is under the threshold but whose size-corrected spread is not", async () => {
  const model = await loadModel(modelPath, { threads: 1 });
  const x = rows(Array.from({ length: 32 }, (_, i) => i));
  const probe = new ContinualController(model, { logits: 'logits', embedding: 'features', maxLevel: 0 });
  const raw = (await probe.predict(x)).signals.spread!;
  await probe.release();
  const halfway = raw + (sizeCorrectedSpread(raw, 32, 10) - raw) / 2;
  const c = new ContinualController(model, { logits: 'logits', embedding: 'features', lame: 'auto', lameThreshold: halfway, maxLevel: 0 });
  const r = await c.predict(x);
  assert.equal(r.signals.spread, raw);
  assert.ok(!r.signals.lame, `raw spread ${raw} < threshold ${halfway}, corrected ${sizeCorrectedSpread(raw, 32, 10)} is not: no LAME`);
  const below = new ContinualController(model, { logits: 'logits', embedding: 'features', lame: 'auto', lameThreshold: sizeCorrectedSpread(raw, 32, 10) + 1e-6, maxLevel: 0 });
  assert.equal((await below.predict(x)).signals.lame, true, 'and LAME acts once the corrected spread is under the threshold');
  await Promise.all([c.release(), below.release()]);
  await model.release();
});
