// Input alignment: each batch standardised per channel to the source's input moments. Its math,
// its refusals, the `inputAlign` option of createAdapter and of the continual controller, and the
// reason it exists: an affine intensity shift (brightness, contrast) is undone exactly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { alignInput, inputStats, createAdapter, loadSourceSet } from '../../src/tta/index.ts';
import { loadModel } from '../../src/model.ts';
import { ContinualController } from '../../src/continual/controller.ts';
import { argmaxRows } from '../../src/data/evaluate.ts';
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';
import { f32, type Tensor } from '../../src/onnx/tensor.ts';
import { smallCnn, images } from './helpers.ts';

const rand = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed * 78.233) * 0.5 + 0.5);
const channelMoments = (t: Tensor) => {
  const [n, C] = t.dims as [number, number];
  const inner = t.data.length / (n * C), d = t.data as Float32Array;
  return Array.from({ length: C }, (_, c) => {
    let s = 0, q = 0;
    for (let b = 0; b < n; b++) for (let i = 0; i < inner; i++) { const v = d[(b * C + c) * inner + i]!; s += v; q += v * v; }
    const m = s / (n * inner);
    return { mean: m, std: Math.sqrt(q / (n * inner) - m * m) };
  });
};

test('alignInput gives every channel the source mean and std, leaves x alone, and undoes an affine intensity shift', () => {
  const x = f32([4, 2, 3, 3], rand(72, 1));
  const before = Float32Array.from(x.data as Float32Array);
  const src = { mean: [0.3, -1], std: [0.35, 2] };
  const y = alignInput(x, src);
  assert.deepEqual(x.data, before, 'x is not changed');
  channelMoments(y).forEach((m, c) => {
    assert.ok(Math.abs(m.mean - src.mean[c]!) < 1e-5, `channel ${c} mean ${m.mean}`);
    assert.ok(Math.abs(m.std - src.std[c]!) < 1e-5, `channel ${c} std ${m.std}`);
  });
  // Contrast and brightness on channel 0, a gain on channel 1: the aligned result is the same.
  const shifted = f32([4, 2, 3, 3], Float32Array.from(x.data as Float32Array, (v, i) => (Math.floor(i / 9) % 2 === 0 ? 0.25 * v + 0.4 : 3 * v)));
  const z = alignInput(shifted, src);
  let worst = 0;
  for (let i = 0; i < y.data.length; i++) worst = Math.max(worst, Math.abs((z.data[i] as number) - (y.data[i] as number)));
  assert.ok(worst < 1e-5, `aligned shifted batch differs by ${worst}`);
});

test('inputStats: per-channel moments over batch and space; a constant channel is shifted, not scaled', () => {
  const x = f32([3, 2, 2, 2], rand(24, 2));
  const s = inputStats(x);
  channelMoments(x).forEach((m, c) => {
    assert.ok(Math.abs(s.mean[c]! - m.mean) < 1e-6 && Math.abs(s.std[c]! - m.std) < 1e-6);
  });
  const flat = f32([2, 1, 2, 2], new Float32Array(8).fill(0.7));
  assert.deepEqual(Array.from(alignInput(flat, { mean: [0.2], std: [0.3] }).data as Float32Array).map((v) => +v.toFixed(6)), new Array(8).fill(0.2));
});

test('bad input is refused with the reason: non-finite values, channel mismatch, bad statistics, wrong dtype', () => {
  const x = f32([2, 1, 2, 2], rand(8, 3));
  (x.data as Float32Array)[5] = NaN;
  assert.throws(() => alignInput(x, { mean: [0], std: [1] }), /input value NaN at flat index 5 \(sample 1, channel 0\)/);
  assert.throws(() => alignInput(f32([2, 3, 2, 2], rand(24, 4)), { mean: [0], std: [1] }), /1 channels, the input has 3/);
  assert.throws(() => alignInput(f32([2, 1, 2, 2], rand(8, 5)), { mean: [0], std: [0] }), /positive finite std/);
  assert.throws(() => alignInput({ dtype: 'int32', dims: [1, 1], data: new Int32Array(1) }, { mean: [0], std: [1] }), /must be float32, got int32/);
  assert.throws(() => inputStats(f32([0, 1, 2, 2], new Float32Array(0))), /no samples/);
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
  assert.throws(() => createAdapter(model, 'source', { inputAlign: { mean: [0.2], std: [-1] } }), /source: inputAlign: source statistics of channel 0/);
  for (const a of [wrapped, plain, again]) await a.release();
});

test('on the shipped ViT, contrast and brightness shifts lose most of their error once aligned', async () => {
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
  const washed = f32([256, 1, 28, 28], Float32Array.from(ds.images, (v) => 0.3 * v + 0.45));
  const off = await errorOf(washed, false), on = await errorOf(washed, true);
  assert.ok(off > clean + 0.2, `the shift hurts: ${off} against clean ${clean}`);
  assert.ok(on < clean + 0.05, `aligned: ${on} against clean ${clean} (unaligned ${off})`);
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
    levels.push(ra.level);
  }
  assert.ok(levels.some((l) => l >= 1), `the inverted batches make it climb: levels ${levels.join('')}`);
  await a.release(); await b.release(); await model.release(); await model2.release();
});
