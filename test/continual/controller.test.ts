// The escalation controller on the shipped CNN: it stays put on a clean stream, climbs under a
// shift, takes delayed labels (counting bad ones), refuses non-finite inputs without changing
// state, and a checkpoint file continues the run exactly; bad checkpoint files are refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/model.ts';
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';
import { corrupt } from '../../src/data/corruptions/index.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { ContinualController } from '../../src/continual/controller.ts';
import { encodeCheckpoint, decodeCheckpoint } from '../../src/continual/checkpoint.ts';
import { smoothedBatchPrior } from '../../src/tta/batch-prior.ts';
import { deep } from './deep-fixture.ts';

const modelPath = new URL('../../models/fmnist-cnn.onnx', import.meta.url).pathname;
const N = 32, B = 14;
const ds = loadFashionMnist('test', { limit: N * B });
const noisy = corrupt(ds.images, N * B, 28, 28, 'gaussian_noise', 5, 0);
const clean = (i: number) => f32([N, 1, 28, 28], ds.images.slice(i * N * 784, (i + 1) * N * 784));
const shifted = (i: number) => f32([N, 1, 28, 28], noisy.slice(i * N * 784, (i + 1) * N * 784));
const opts = { logits: 'logits', embedding: 'features', patience: 2, stableBatches: 50, warmupBatches: 3, lr: 0.001 };

test('clean stream: no escalation; shifted stream: the controller climbs with reasons', async () => {
  const model = await loadModel(modelPath, { threads: 1 });
  const calm = new ContinualController(model, opts);
  for (let i = 0; i < 8; i++) await calm.predict(clean(i));
  assert.equal(calm.currentLevel, 0);
  assert.equal(calm.events.filter((e) => e.kind === 'escalate').length, 0);
  const c = new ContinualController(model, opts);
  for (let i = 0; i < 3; i++) await c.predict(clean(i));
  const levels: number[] = [];
  for (let i = 3; i < B; i++) levels.push((await c.predict(shifted(i))).level);
  const up = c.events.filter((e) => e.kind === 'escalate');
  assert.ok(up.length >= 2, `escalations: ${JSON.stringify(c.events.map((e) => e.kind))}`);
  assert.match(up[0]!.reason, /level 0 did not restore health in 1 batch \(.*entropy above tolerance/);
  assert.ok(typeof up[0]!.signals.entropy === 'number' && typeof up[0]!.signals.reference === 'number');
  assert.ok(Math.max(...levels) >= 2, `levels ${levels}`);
  await Promise.all([calm.release(), c.release()]);
  await model.release();
});

test('feedback: labels train and fill the error memory; unknown and invalid labels are counted', async () => {
  const model = await loadModel(modelPath, { threads: 1 });
  const c = new ContinualController(model, { ...opts, feedback: { minBatch: 16 }, errorMemory: true });
  const r = await c.predict(shifted(0));
  const wrong = [...r.predictions.keys()].filter((i) => r.predictions[i] !== ds.labels[i]);
  assert.ok(wrong.length > 0, 'the shifted batch has mistakes to learn from');
  const report = await c.feedback([...r.ids.slice(0, 20), 'nope'], [...Array.from(ds.labels.subarray(0, 19)), 42, 1]);
  assert.deepEqual([report.accepted, report.invalid, report.unknown], [19, 1, 1]);
  assert.ok(c.events.some((e) => e.kind === 'feedback' && /1 unknown, 0 expired, 1 invalid/.test(e.reason)));
  assert.ok(c.learner.steps >= 1, 'a labelled step ran');
  const st = c.state();
  assert.ok(st.errorMemory && st.errorMemory.keys.length > 0);
  await c.release();
  await model.release();
});

test('non-finite inputs are refused and change nothing', async () => {
  const model = await loadModel(modelPath, { threads: 1 });
  const c = new ContinualController(model, opts);
  await c.predict(clean(0));
  const before = JSON.stringify(encodeCheckpoint(model, c.state()).length);
  const bad = clean(1);
  (bad.data as Float32Array)[100] = NaN;
  await assert.rejects(c.predict(bad), /input value 100 is NaN; refusing to predict or adapt/);
  assert.equal(JSON.stringify(encodeCheckpoint(model, c.state()).length), before);
  assert.equal(c.state().batch, 1);
  await c.release();
  await model.release();
});

test('checkpoint: a restored controller continues exactly; truncated or foreign files are refused', async () => {
  const model = await loadModel(modelPath, { threads: 1 });
  const a = new ContinualController(model, opts);
  for (let i = 0; i < 3; i++) await a.predict(clean(i));
  for (let i = 3; i < 8; i++) await a.predict(shifted(i));
  await a.feedback(a.state().feedback.pending.slice(0, 10).map((p) => p.id), Array.from(ds.labels.subarray(0, 10)));
  const bytes = encodeCheckpoint(model, a.state());
  const b = new ContinualController(model, opts);
  b.load(decodeCheckpoint(model, bytes));
  for (let i = 8; i < 11; i++) {
    const ra = await a.predict(shifted(i)), rb = await b.predict(shifted(i));
    assert.deepEqual([...rb.probs], [...ra.probs]);
    assert.equal(rb.level, ra.level);
  }
  assert.throws(() => decodeCheckpoint(model, bytes.subarray(0, bytes.length - 100)), /truncated|bytes/);
  const other = await loadModel(new URL('../fixtures/tta/tent_cnn/model.onnx', import.meta.url).pathname);
  assert.throws(() => decodeCheckpoint(other, bytes), /belongs to another model/);
  assert.throws(() => decodeCheckpoint(model, new Uint8Array(16)), /checkpoint/);
  await Promise.all([a.release(), b.release(), other.release()]);
  await model.release();
});

test("priorCorrection 'batch' and 'auto': ROID's smoothed batch prior reweights the returned probabilities, and nothing else", async () => {
  // Two controllers in the same state see the same batches; the second's probabilities are the
  // first's times the smoothed prior of the first's, renormalised. A batch of one class (sorted
  // by label, as under correlated labels) is pulled further towards it.
  const model = await loadModel(modelPath, { threads: 1 });
  const plain = new ContinualController(model, opts);
  const prior = new ContinualController(model, { ...opts, priorCorrection: 'batch' });
  const order = Array.from({ length: N * B }, (_, i) => i).sort((a, b) => ds.labels[a]! - ds.labels[b]!);
  const x = f32([N, 1, 28, 28], Float32Array.from({ length: N * 784 }, (_, k) => ds.images[order[Math.floor(k / 784)]! * 784 + (k % 784)]!));
  const C = 10;
  for (let round = 0; round < 3; round++) {
    const a = await plain.predict(x), b = await prior.predict(x);
    assert.equal(a.level, b.level);
    const sp = smoothedBatchPrior(a.probs, N, C);
    for (let i = 0; i < N; i++) {
      let z = 0;
      for (let c = 0; c < C; c++) z += a.probs[i * C + c]! * sp[c]!;
      for (let c = 0; c < C; c++) assert.ok(Math.abs(b.probs[i * C + c]! - (a.probs[i * C + c]! * sp[c]!) / z) < 1e-6);
    }
    // Every sample is class 0 here: the correction raises class 0's mean probability.
    const mean0 = (p: Float32Array) => Array.from({ length: N }, (_, i) => p[i * C]!).reduce((s, v) => s + v, 0) / N;
    assert.ok(mean0(b.probs) > mean0(a.probs), `class 0: ${mean0(b.probs)} vs ${mean0(a.probs)}`);
  }
  // Predictions spread evenly over the classes leave the prior near uniform: almost no change.
  const even = smoothedBatchPrior(new Float32Array(20 * C).fill(1 / C), 20, C);
  for (const v of even) assert.ok(Math.abs(v - 1 / C) < 1e-7);
  // 'auto' corrects the one-class batch, not a batch of clean test images in their own order.
  const auto = new ContinualController(model, { ...opts, priorCorrection: 'auto', priorThreshold: 0.7 });
  const r1 = await auto.predict(x), r2 = await auto.predict(clean(0));
  assert.equal(r1.signals.prior, true);
  assert.ok(r2.signals.spread! > 0.7 && r2.signals.prior === undefined, `spread ${r2.signals.spread}`);
  await Promise.all([plain.release(), prior.release(), auto.release()]);
  await model.release();
});

test('parameter budget: a deep learner over it is left out (an event says so) and level 3 consolidates instead', async () => {
  const model = await loadModel(modelPath, { threads: 1 });
  const probe = new ContinualController(model, opts);
  const fast = probe.learner.params.reduce((a, p) => a + model.param(p).data.length, 0);
  await probe.release();
  const all = model.parameterNames('all').reduce((a, p) => a + model.param(p).data.length, 0);
  const c = new ContinualController(model, { ...opts, patience: 1, deep, budgets: { maxTrainableParams: fast } });
  const e = c.events.find((x) => x.kind === 'budget');
  assert.match(e?.reason ?? '', new RegExp(`the deep learner's ${all} parameters exceed the budget of ${fast}: level 3 consolidates`));
  for (let i = 0; i < 3; i++) await c.predict(clean(i));
  let top = 0;
  for (let i = 3; i < B; i++) top = Math.max(top, (await c.predict(shifted(i))).level);
  assert.equal(top, 3);
  assert.equal(c.state().deep, null, 'no deep learner was created');
  // Within the budget it is there.
  const d = new ContinualController(model, { ...opts, patience: 1, deep, budgets: { maxTrainableParams: all } });
  assert.equal(d.events.filter((x) => x.kind === 'budget').length, 0);
  await Promise.all([c.release(), d.release()]);
  await model.release();
});

test('holdBelowSpread: no adaptation step on the batch after a label-concentrated one; the spread travels in the state', async () => {
  const model = await loadModel(modelPath, { threads: 1 });
  // The same shifted stream three times: no hold, a hold that never triggers (0), one that always does (1.01).
  const runs = [undefined, 0, 1.01].map((h) => new ContinualController(model, { ...opts, ...(h === undefined ? {} : { holdBelowSpread: h }) }));
  const probs: Float32Array[][] = runs.map(() => []);
  for (let i = 0; i < 3; i++) for (const c of runs) await c.predict(clean(i));
  for (let i = 3; i < B; i++) for (const [k, c] of runs.entries()) probs[k]!.push((await c.predict(shifted(i))).probs);
  const [free, never, always] = runs as [ContinualController, ContinualController, ContinualController];
  assert.ok(free.learner.steps > 0, 'the shifted stream takes steps');
  assert.equal(never.learner.steps, free.learner.steps);
  assert.deepEqual(probs[1], probs[0], 'a hold that never triggers changes nothing');
  assert.equal(always.learner.steps, 0, 'every batch follows one whose spread is below 1.01');
  assert.ok(always.currentLevel >= 2, 'it still climbs: holding stops steps, not levels');
  assert.ok(free.state().lastSpread! > 0 && free.state().lastSpread! <= 1);
  await Promise.all(runs.map((c) => c.release()));
  await model.release();
});

test('debias: towards uniform only when the batch mean prediction persists; checkpointed', async () => {
  const model = await loadModel(modelPath, { threads: 1 });
  const byLabel = (c: number) => {
    const idx = Array.from({ length: N * B }, (_, i) => i).filter((i) => ds.labels[i] === c).slice(0, 16);
    return f32([idx.length, 1, 28, 28], Float32Array.from({ length: idx.length * 784 }, (_, k) => ds.images[idx[Math.floor(k / 784)]! * 784 + (k % 784)]!));
  };
  const b = byLabel(7);
  const plain = new ContinualController(model, opts);
  const deb = new ContinualController(model, { ...opts, debias: { similarity: 0.9 } });
  // A new class every batch (labels that move, as under correlation): never adjusted.
  for (const x of [byLabel(0), byLabel(3), byLabel(9), b]) {
    const [p, q] = [await plain.predict(x), await deb.predict(x)];
    assert.ok(!q.signals.debiased);
    assert.deepEqual(q.probs, p.probs);
  }
  // The same class again and again (a persistent bias): adjusted, exactly p·(1/C / m), renormalised.
  const C = 10;
  const seen: boolean[] = [];
  for (let r = 0; r < 12; r++) {
    const [p, q] = [await plain.predict(b), await deb.predict(b)];
    seen.push(!!q.signals.debiased);
    if (!q.signals.debiased) { assert.deepEqual(q.probs, p.probs); continue; } // the moving average still remembers the other classes
    const n = b.dims[0]!, m = new Float64Array(C);
    for (let i = 0; i < n; i++) for (let c = 0; c < C; c++) m[c]! += p.probs[i * C + c]! / n;
    for (let i = 0; i < n; i++) {
      let z = 0;
      for (let c = 0; c < C; c++) z += p.probs[i * C + c]! / C / m[c]!;
      for (let c = 0; c < C; c++) assert.ok(Math.abs(q.probs[i * C + c]! - p.probs[i * C + c]! / C / m[c]! / z) < 1e-5);
    }
  }
  assert.deepEqual(seen.slice(-3), [true, true, true], `debiased: ${seen}`);
  // The moving average travels in the state: a restored controller adjusts the next batch alike.
  const restored = new ContinualController(model, { ...opts, debias: { similarity: 0.9 } });
  restored.load(decodeCheckpoint(model, encodeCheckpoint(model, deb.state())));
  const [u, v] = [await deb.predict(b), await restored.predict(b)];
  assert.deepEqual(v.probs, u.probs);
  await Promise.all([plain.release(), deb.release(), restored.release()]);
  await model.release();
});
