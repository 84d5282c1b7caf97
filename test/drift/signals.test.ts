// Shift signals: exact values on hand-checkable inputs, and on the shipped CNN every signal
// rises from a clean to a corrupted Fashion-MNIST batch.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { predictionStats, channelStats, gaussianSymmetricKl, mmd2 } from '../../src/drift/signals.ts';
import { Reservoir } from '../../src/drift/reservoir.ts';
import { ShiftMonitor } from '../../src/drift/shift-monitor.ts';
import { loadModel } from '../../src/model.ts';
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';
import { corrupt } from '../../src/data/corruptions/index.ts';
import { f32 } from '../../src/onnx/tensor.ts';

const near = (a: number, b: number, tol = 1e-9) => assert.ok(Math.abs(a - b) <= tol, `${a} vs ${b}`);

test('predictionStats: uniform and one-hot logits', () => {
  const s = predictionStats(f32([2, 4], [0, 0, 0, 0, 100, 0, 0, 0]));
  near(s.entropy, Math.log(4) / 2, 1e-6);
  near(s.confidence, (0.25 + 1) / 2, 1e-6);
  assert.throws(() => predictionStats(f32([4], [0, 0, 0, 0])), /must be \[N, C\]/);
});

test('Gaussian symmetric KL: zero for equal statistics, the closed form otherwise', () => {
  const p = channelStats(f32([2, 1, 2], [1, 3, 1, 3])); // mean 2, variance 1
  near(p.mean[0]!, 2);
  near(p.variance[0]!, 1);
  near(gaussianSymmetricKl(p, { mean: [2], variance: [1] }, 0), 0);
  // N(2,1) vs N(0,4): ¼[(1/4 + 4 − 2) + 4·(1 + 1/4)] = ¼[2.25 + 5] = 1.8125
  near(gaussianSymmetricKl(p, { mean: [0], variance: [4] }, 0), 1.8125);
});

test('MMD² is zero for identical sets and grows with a shift', () => {
  const a = new Float32Array([0, 0, 1, 0, 0, 1, 1, 1]);
  near(mmd2(a, 4, a, 4, 2, 1), 0, 1e-12);
  const b = a.map((v) => v + 0.5), c = a.map((v) => v + 2);
  assert.ok(mmd2(a, 4, c, 4, 2, 1) > mmd2(a, 4, b, 4, 2, 1));
});

test('Reservoir: keeps a uniform sample in bounded memory, seeded', () => {
  const r1 = new Reservoir(10, 1, 3), r2 = new Reservoir(10, 1, 3);
  const xs = Float32Array.from({ length: 1000 }, (_, i) => i);
  r1.offer(xs, 1000);
  r2.offer(xs, 1000);
  assert.equal(r1.size, 10);
  assert.equal(r1.seen, 1000);
  assert.deepEqual([...r1.sample()], [...r2.sample()]);
  assert.ok(r1.sample().some((v) => v >= 500), 'late rows get in');
});

test('ShiftMonitor on the shipped CNN: entropy, BatchNorm KL and MMD rise under corruption', async () => {
  const model = await loadModel(new URL('../../models/fmnist-cnn.onnx', import.meta.url).pathname, { threads: 1 });
  const ds = loadFashionMnist('test', { limit: 192 });
  const batch = (imgs: Float32Array, from: number) => f32([64, 1, 28, 28], imgs.subarray(from * 784, (from + 64) * 784));
  const mon = new ShiftMonitor(model, { logits: 'logits', embedding: 'features', referenceSize: 128 });
  await mon.observeSource(batch(ds.images, 0));
  await mon.observeSource(batch(ds.images, 64));
  mon.freeze();
  const clean = await mon.measure(batch(ds.images, 128));
  const noisy = corrupt(ds.images.subarray(128 * 784, 192 * 784), 64, 28, 28, 'gaussian_noise', 5, 0);
  const shifted = await mon.measure(f32([64, 1, 28, 28], noisy));
  assert.ok(mon.layers.length > 0);
  assert.ok(shifted.entropy > clean.entropy, `entropy ${shifted.entropy} vs ${clean.entropy}`);
  assert.ok(shifted.bnKl! > 2 * clean.bnKl!, `BN KL ${shifted.bnKl} vs ${clean.bnKl}`);
  assert.ok(shifted.mmd! > 2 * clean.mmd!, `MMD ${shifted.mmd} vs ${clean.mmd}`);
  await model.release();
});
