// Input alignment: each batch standardised per channel to the source's input moments. Its math,
// its refusals, the `inputAlign` option of createAdapter and of the continual controller, and the
// reason it exists: an affine intensity shift (brightness, contrast) is undone exactly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { alignInput, alignInputDetailed, inputStats, createAdapter, loadSourceSet } from '../../src/tta/index.ts';
import { loadModel } from '../../src/model.ts';
import { ContinualController } from '../../src/continual/controller.ts';
import { argmaxRows } from '../../src/data/evaluate.ts';
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';
import { corrupt } from '../../src/data/corruptions/index.ts';
import { f32, type Tensor } from '../../src/onnx/tensor.ts';
import { smallCnn, images } from './helpers.ts';

const rand = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed * 78.233) * 0.5 + 0.5);
/** Per channel: the batch mean of the samples' means and the pooled within-sample std, in float64. */
const channelMoments = (t: Tensor) => {
  const [n, C] = t.dims as [number, number];
  const inner = t.data.length / (n * C), d = t.data as Float32Array;
  return Array.from({ length: C }, (_, c) => {
    let mean = 0, within = 0;
    for (let b = 0; b < n; b++) {
      let s = 0, q = 0;
      for (let i = 0; i < inner; i++) s += d[(b * C + c) * inner + i]!;
      const m = s / inner;
      for (let i = 0; i < inner; i++) q += (d[(b * C + c) * inner + i]! - m) ** 2;
      mean += m / n; within += q / inner / n;
    }
    return { mean, sampleStd: Math.sqrt(within) };
  });
};
/** The samples of class k in x (labels y), the first `limit` of them, as one batch. */
const ofClass = (x: Tensor, y: Uint8Array, k: number, limit = Infinity): Tensor => {
  const idx = [...y.keys()].filter((j) => y[j] === k).slice(0, limit);
  const d = new Float32Array(idx.length * 784);
  idx.forEach((j, r) => d.set((x.data as Float32Array).subarray(j * 784, (j + 1) * 784), r * 784));
  return f32([idx.length, 1, 28, 28], d);
};
const maxDiff = (a: Tensor, b: Tensor) => (a.data as Float32Array).reduce((w, v, i) => Math.max(w, Math.abs(v - (b.data[i] as number))), 0);

test('alignInput gives every channel the source mean and within-sample spread, keeps x, and undoes brightness and per-sample contrast exactly', () => {
  const x = f32([4, 2, 3, 3], rand(72, 1));
  const before = Float32Array.from(x.data as Float32Array);
  const src = { mean: [0.3, -1], sampleStd: [0.35, 2] };
  const y = alignInput(x, src);
  assert.deepEqual(x.data, before, 'x is not changed');
  channelMoments(y).forEach((m, c) => {
    assert.ok(Math.abs(m.mean - src.mean[c]!) < 1e-5, `channel ${c} mean ${m.mean}`);
    assert.ok(Math.abs(m.sampleStd - src.sampleStd[c]!) < 1e-5, `channel ${c} within-sample std ${m.sampleStd}`);
  });
  // Brightness (+0.4 on channel 0) and ImageNet-C contrast ((x − m_i)·0.25 + m_i, each sample
  // around its own mean, on channel 1): the aligned batch is the same.
  const d = x.data as Float32Array, shifted = new Float32Array(d.length);
  for (let b = 0; b < 4; b++) {
    const o0 = b * 18, o1 = b * 18 + 9;
    let m1 = 0; for (let i = 0; i < 9; i++) m1 += d[o1 + i]! / 9;
    for (let i = 0; i < 9; i++) { shifted[o0 + i] = d[o0 + i]! + 0.4; shifted[o1 + i] = (d[o1 + i]! - m1) * 0.25 + m1; }
  }
  const worst = maxDiff(alignInput(f32([4, 2, 3, 3], shifted), src), y);
  assert.ok(worst < 1e-5, `aligned shifted batch differs by ${worst}`);
});

test('inputStats: per-channel mean and pooled within-sample std; a constant batch is shifted, not scaled', () => {
  const x = f32([3, 2, 2, 2], rand(24, 2));
  const s = inputStats(x);
  channelMoments(x).forEach((m, c) => {
    assert.ok(Math.abs(s.mean[c]! - m.mean) < 1e-6 && Math.abs(s.sampleStd[c]! - m.sampleStd) < 1e-6);
  });
  const flat = f32([2, 1, 2, 2], new Float32Array(8).fill(0.7));
  assert.deepEqual(Array.from(alignInput(flat, { mean: [0.2], sampleStd: [0.3] }).data as Float32Array).map((v) => +v.toFixed(6)), new Array(8).fill(0.2));
});

test('bad input is refused with the reason: non-finite values, channel mismatch, bad statistics, wrong dtype', () => {
  const x = f32([2, 1, 2, 2], rand(8, 3));
  (x.data as Float32Array)[5] = NaN;
  assert.throws(() => alignInput(x, { mean: [0], sampleStd: [1] }), /input value NaN at flat index 5 \(sample 1, channel 0\)/);
  assert.throws(() => alignInput(f32([2, 3, 2, 2], rand(24, 4)), { mean: [0], sampleStd: [1] }), /1 channels, the input has 3/);
  assert.throws(() => alignInput(f32([2, 1, 2, 2], rand(8, 5)), { mean: [0], sampleStd: [0] }), /positive finite sampleStd/);
  assert.throws(() => alignInput({ dtype: 'int32', dims: [1, 1], data: new Int32Array(1) }, { mean: [0], sampleStd: [1] }), /must be float32, got int32/);
  assert.throws(() => inputStats(f32([0, 1, 2, 2], new Float32Array(0))), /no samples/);
});

test('inputStats with labels: each class\'s statistics, as inputStats of its samples alone; bad labels refused', () => {
  const x = images(60, 500), y = images.labels(60, 500);
  const s = inputStats(x, y);
  assert.deepEqual([s.mean, s.sampleStd], [inputStats(x).mean, inputStats(x).sampleStd], 'the overall statistics are unchanged');
  const present = [...new Set(y)].sort((a, b) => a - b);
  assert.equal(s.classes!.length, present.length, 'one entry per class present');
  present.forEach((k, i) => {
    const own = inputStats(ofClass(x, y, k));
    assert.ok(Math.abs(s.classes![i]!.mean[0]! - own.mean[0]!) < 1e-9 && Math.abs(s.classes![i]!.sampleStd[0]! - own.sampleStd[0]!) < 1e-9, `class ${k}`);
  });
  assert.throws(() => inputStats(x, y.slice(1)), /60 samples but 59 labels/);
  assert.throws(() => inputStats(x, Array.from(y, (v, i) => (i === 3 ? 1.5 : v))), /label 1\.5 of sample 3 is not a class index/);
  assert.throws(() => alignInput(x, { ...s, classes: [{ mean: [0.1, 0.2], sampleStd: [0.3, 0.3] }] }), /classes\[0\] must hold .* each of the 1 channels/);
  assert.throws(() => alignInput(x, s, { margin: -1 }), /margin must be a finite number ≥ 0, got -1/);
});

test('the class-mix gate: a batch of one source class is left as it came, a brightened or washed-out batch is aligned as without it', () => {
  const src = images(600, 1000), labels = images.labels(600, 1000);
  const gated = inputStats(src, labels), plain = inputStats(src);
  // 32 sandals (class 5: small, dark) from elsewhere in the test set.
  const sandals = ofClass(images(2000, 3000), images.labels(2000, 3000), 5, 32);
  const one = alignInputDetailed(sandals, gated);
  assert.deepEqual([one.aligned, one.x.data], [[false], sandals.data], 'one class: unchanged');
  assert.ok(maxDiff(alignInput(sandals, plain), sandals) > 0.05, 'without class statistics the same batch is moved');
  for (const shift of [(v: number) => Math.min(1, v + 0.3), (v: number) => 0.3 * v + 0.5]) {
    const x = images(64, 5000, shift);
    const r = alignInputDetailed(x, gated);
    assert.deepEqual(r.aligned, [true]);
    assert.deepEqual(r.x.data, alignInput(x, plain).data, 'aligned exactly as without the gate');
  }
});

test("createAdapter's inputAlign: the method sees the aligned batch (same logits and state as feeding it aligned); bad statistics refused", async () => {
  const x = images(16, 0, (v) => 0.3 * v + 0.5);
  const stats = inputStats(images(64, 100));
  const model = smallCnn(3);
  const wrapped = createAdapter(model, 'tent', { inputAlign: stats });
  const plain = createAdapter(model, 'tent');
  for (let step = 0; step < 2; step++) {
    const a = await wrapped.predict(x), b = await plain.predict(alignInput(x, stats));
    assert.deepEqual(a.logits.data, b.logits.data, `step ${step}`);
  }
  const state = await wrapped.save!();
  const again = createAdapter(model, 'tent', { inputAlign: stats });
  await again.load!(state);
  assert.deepEqual((await again.predict(x)).logits.data, (await plain.predict(alignInput(x, stats))).logits.data, 'a loaded state continues as the original');
  assert.throws(() => createAdapter(model, 'source', { inputAlign: { mean: [0.2], sampleStd: [-1] } }), /source: inputAlign: source statistics of channel 0/);
  for (const a of [wrapped, plain, again]) await a.release();
});

test('on the shipped ViT, contrast and brightness (severity 5) lose most of their error once aligned', async () => {
  const vitPath = new URL('../../models/fmnist-vit.onnx', import.meta.url).pathname;
  const model = await loadModel(vitPath, { threads: 1 });
  const ds = loadFashionMnist('test', { limit: 256 });
  const stats = inputStats(loadSourceSet({ limit: 512 }).images);
  const errorOf = async (x: Tensor, align: boolean) => {
    const ad = createAdapter(model, 'source', align ? { inputAlign: stats } : {});
    const pred = argmaxRows((await ad.predict(x)).logits.data as Float32Array, 10);
    await ad.release();
    return pred.reduce((w, p, i) => w + (p !== ds.labels[i] ? 1 : 0), 0) / ds.n;
  };
  const clean = await errorOf(f32([256, 1, 28, 28], ds.images), false);
  for (const name of ['contrast', 'brightness'] as const) {
    const shifted = f32([256, 1, 28, 28], corrupt(ds.images, 256, 28, 28, name, 5, 0));
    const off = await errorOf(shifted, false), on = await errorOf(shifted, true);
    assert.ok(off > clean + 0.4, `${name} hurts: ${off} against clean ${clean}`);
    assert.ok(on < clean + 0.1, `${name} aligned: ${on} against clean ${clean} (unaligned ${off})`);
  }
  assert.ok(Math.abs((await errorOf(f32([256, 1, 28, 28], ds.images), true)) - clean) < 0.03, 'clean batches stay about as they were');
  await model.release();
});

test('the continual controller with inputAlign behaves as one fed the aligned batches (calibration included)', async () => {
  const cnnPath = new URL('../../models/fmnist-cnn.onnx', import.meta.url).pathname;
  const model = await loadModel(cnnPath, { threads: 1 }), model2 = await loadModel(cnnPath, { threads: 1 });
  const stats = inputStats(images(128, 200));
  const opts = { logits: 'logits', embedding: 'features', patience: 1, stableBatches: 50, warmupBatches: 2, lr: 0.001 };
  const a = new ContinualController(model, { ...opts, inputAlign: stats });
  const b = new ContinualController(model2, opts);
  const calib = [images(32, 300), images(32, 332)];
  assert.equal(await a.calibrate(calib), await b.calibrate(calib.map((t) => alignInput(t, stats))));
  const levels: number[] = [];
  for (let i = 0; i < 8; i++) {
    const x = images(32, 400 + 32 * i, i < 2 ? undefined : (v) => 1 - v);
    const ra = await a.predict(x), rb = await b.predict(alignInput(x, stats));
    assert.deepEqual(ra.probs, rb.probs, `batch ${i}`);
    assert.equal(ra.signals.aligned, true, 'without class statistics every batch is aligned');
    levels.push(ra.level);
  }
  assert.ok(levels.some((l) => l >= 1), `the inverted batches make it climb: levels ${levels.join('')}`);
  await a.release(); await b.release(); await model.release(); await model2.release();
});

test('the controller with class statistics: a one-class batch is predicted as it came (signals.aligned false), a washed-out one aligned', async () => {
  const cnnPath = new URL('../../models/fmnist-cnn.onnx', import.meta.url).pathname;
  const model = await loadModel(cnnPath, { threads: 1 }), model2 = await loadModel(cnnPath, { threads: 1 });
  const gated = inputStats(images(600, 1000), images.labels(600, 1000));
  const opts = { logits: 'logits', embedding: 'features', warmupBatches: 2, lr: 0.001 };
  const a = new ContinualController(model, { ...opts, inputAlign: gated });
  const b = new ContinualController(model2, opts);
  // 32 trousers (class 1) from elsewhere in the test set, then a washed-out mixed batch.
  const trousers = ofClass(images(2000, 3000), images.labels(2000, 3000), 1, 32);
  const ra = await a.predict(trousers), rb = await b.predict(trousers);
  assert.equal(ra.signals.aligned, false);
  assert.deepEqual(ra.probs, rb.probs, 'predicted exactly as the batch came');
  const washed = images(32, 5000, (v) => 0.3 * v + 0.5);
  const wa = await a.predict(washed), wb = await b.predict(alignInput(washed, gated));
  assert.equal(wa.signals.aligned, true);
  assert.deepEqual(wa.probs, wb.probs, 'predicted as the aligned batch');
  await a.release(); await b.release(); await model.release(); await model2.release();
});
