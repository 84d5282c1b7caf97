// CoTTA and RMT beyond the parity fixtures: the augmentations, the anchor gate, stochastic
// restore, RMT's source-free variant, warm-up and reset, the multi-branch graph, the bundled
// in-distribution set, and their option errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createAdapter, loadSourceSet, sourceDataOptions } from '../../src/tta/index.ts';
import type { CoTTA } from '../../src/tta/cotta.ts';
import type { RMT } from '../../src/tta/rmt.ts';
import { augmentBatch, drawAugment } from '../../src/tta/augment.ts';
import { multiBranch } from '../../src/tta/branches.ts';
import { Rng } from '../../src/data/random.ts';
import { RefitModel } from '../../src/model.ts';
import { NetBuilder } from '../../src/nn/index.ts';
import { smallCnn, smallVit, images, paramsOf } from './helpers.ts';

const xA = images(16, 0, (v) => 1 - v);

test('CoTTA augmentations: seeded, shape kept, values in [0, 1], one transform per batch', () => {
  const x = images(4, 0);
  const a = augmentBatch(x.data as Float32Array, x.dims, Rng.xoshiro(3));
  const b = augmentBatch(x.data as Float32Array, x.dims, Rng.xoshiro(3));
  const c = augmentBatch(x.data as Float32Array, x.dims, Rng.xoshiro(4));
  assert.equal(a.length, x.data.length);
  assert.deepEqual(a, b, 'same seed, same augmentation');
  assert.notDeepEqual(a, c);
  assert.ok(a.every((v) => v >= 0 && v <= 1));
  // Not the identity, but close to the image (mean absolute change well below the pixel range).
  let d = 0;
  for (let i = 0; i < a.length; i++) d += Math.abs(a[i]! - (x.data as Float32Array)[i]!) / a.length;
  assert.ok(d > 0.005 && d < 0.3, `mean change ${d}`);
  const draw = drawAugment(Rng.xoshiro(1), 28, 28);
  assert.ok(Math.abs(draw.angle) <= 15 && draw.scale >= 0.9 && draw.scale <= 1.1 && Math.abs(draw.tx) <= 4 && draw.sigma <= 0.5);
  assert.deepEqual([...draw.order].sort(), ['brightness', 'contrast', 'gamma']);
  assert.throws(() => augmentBatch(new Float32Array(4), [4], Rng.xoshiro(0)), /NCHW/);
});

test('CoTTA: the anchor gate picks the plain or augmentation-averaged teacher; the prediction is the teacher\'s', async () => {
  // threshold 0: never augmented; the prediction is the teacher's (= source model with batch statistics) on x.
  const plain = createAdapter(smallCnn(), 'cotta', { threshold: 0 }) as CoTTA;
  const r = await plain.predict(xA);
  assert.equal(r.info.extra!.augmented, 0);
  assert.ok(r.info.extra!.anchorConfidence! > 0 && r.info.extra!.anchorConfidence! <= 1);
  const bnAdapt = createAdapter(smallCnn(), 'bn-adapt');
  assert.deepEqual(r.logits.data, (await bnAdapt.predict(xA)).logits.data);
  // threshold above 1: always augmented, N passes averaged; a different seed gives different augmentations.
  const aug = createAdapter(smallCnn(), 'cotta', { threshold: 1.01, augmentations: 3 });
  const r2 = await aug.predict(xA);
  assert.equal(r2.info.extra!.augmented, 3);
  assert.notDeepEqual(r2.logits.data, r.logits.data);
  const seeded = createAdapter(smallCnn(), 'cotta', { threshold: 1.01, augmentations: 3, seed: 9 });
  assert.notDeepEqual((await seeded.predict(xA)).logits.data, r2.logits.data);
  const again = createAdapter(smallCnn(), 'cotta', { threshold: 1.01, augmentations: 3 });
  assert.deepEqual((await again.predict(xA)).logits.data, r2.logits.data, 'same seed, same run');
  for (const a of [plain, bnAdapt, aug, seeded, again]) await a.release();
});

test('CoTTA: with thresholdData the threshold is the paper\'s p_th, the 5% quantile of the source model\'s confidence on them minus 0.05', async () => {
  const src = smallCnn();
  const data = images(40, 200);
  const ad = createAdapter(src, 'cotta', { thresholdData: data, augmentations: 2 }) as CoTTA;
  const r = await ad.predict(xA);
  const l = (await src.run({ x: data }, { outputs: ['logits'] })).logits!.data as Float32Array;
  const confs = Array.from({ length: 40 }, (_, i) => {
    const row = Array.from(l.subarray(i * 10, i * 10 + 10));
    const m = Math.max(...row);
    return 1 / row.reduce((a, v) => a + Math.exp(v - m), 0);
  }).sort((a, b) => a - b);
  assert.ok(Math.abs(r.info.extra!.threshold! - (confs[2]! - 0.05)) < 1e-6, `threshold ${r.info.extra!.threshold} vs ${confs[2]! - 0.05}`);
  assert.equal(r.info.extra!.augmented, r.info.extra!.anchorConfidence! < r.info.extra!.threshold! ? 2 : 0);
  // An explicit threshold wins; without either, the code's CIFAR-10-C value 0.92.
  const explicit = createAdapter(src, 'cotta', { thresholdData: data, threshold: 0.5, augmentations: 2 });
  assert.equal((await explicit.predict(xA)).info.extra!.threshold, 0.5);
  const plain = createAdapter(src, 'cotta', { augmentations: 2 });
  assert.equal((await plain.predict(xA)).info.extra!.threshold, 0.92);
  for (const a of [ad, explicit, plain]) await a.release();
});

test('CoTTA: stochastic restore puts about a fraction p of the adapted elements back to source; the teacher follows by EMA', async () => {
  const ad = createAdapter(smallCnn(), 'cotta', { threshold: 0, restore: 0.3, lr: 0.05 }) as CoTTA;
  const total = ad.trainable.reduce((a, p) => a + ad.model.param(p).data.length, 0);
  const src = paramsOf(ad.source, ad.trainable);
  const r = await ad.predict(xA);
  const restored = r.info.extra!.restored!;
  assert.ok(Math.abs(restored / total - 0.3) < 0.1, `${restored} of ${total} restored`);
  let atSource = 0;
  for (const p of ad.trainable) (ad.model.param(p).data as Float32Array).forEach((v, i) => { if (v === src.get(p)![i]) atSource++; });
  assert.ok(atSource >= restored);
  // The teacher moved 0.1% of the way (EMA 0.999) toward the updated student: close to the source, not equal.
  let moved = 0;
  for (const p of ad.trainable) ad.teacher.values.get(p)!.forEach((v, i) => { if (v !== src.get(p)![i]) moved++; });
  assert.ok(moved > 0);
  await ad.release();
  // p = 0: nothing restored.
  const none = createAdapter(smallCnn(), 'cotta', { threshold: 0, restore: 0 });
  assert.equal((await none.predict(xA)).info.extra!.restored, 0);
  await none.release();
});

test('CoTTA option errors and a custom augmentation that returns the wrong size', async () => {
  const cnn = smallCnn();
  assert.throws(() => createAdapter(cnn, 'cotta', { restore: 2 }), /cotta: option 'restore'/);
  assert.throws(() => createAdapter(cnn, 'cotta', { augmentations: 0 }), /cotta: option 'augmentations'/);
  assert.throws(() => createAdapter(cnn, 'cotta', { ap: 0.9 }), /cotta: unknown option 'ap' \(known options: .*threshold/);
  assert.throws(() => createAdapter(cnn, 'cotta', { augment: 3 }), /cotta: option 'augment'/);
  const bad = createAdapter(cnn, 'cotta', { threshold: 2, augment: () => new Float32Array(3) });
  await assert.rejects(bad.predict(xA), /augment function must return a Float32Array of 12544 values, got 3 values/);
});

test('RMT without source data is its source-free variant: SCE self-training only, no warm-up', async () => {
  for (const make of [smallCnn, smallVit]) {
    const ad = createAdapter(make(), 'rmt') as RMT;
    assert.ok(ad.trainable.every((p) => !p.startsWith('rmt.projector')));
    const r = await ad.predict(xA);
    assert.deepEqual(r.info.extra, { contrastive: 0, replay: 0, warmupSteps: 0 });
    assert.equal(r.info.used, 16);
    await ad.release();
  }
});

test('RMT: warm-up on source batches, prediction = student + teacher logits, reset returns to the warmed-up state', async () => {
  const src = loadSourceSet({ limit: 48 });
  const progress: [number, number][] = [];
  const ad = createAdapter(smallCnn(), 'rmt', { sourceData: src.images, sourceLabels: src.labels, warmupSamples: 48, sourceBatchSize: 16, lr: 0.01, onWarmup: (d: number, t: number) => progress.push([d, t]) }) as RMT;
  const r1 = await ad.predict(xA);
  assert.equal(ad.warmupSteps, 3);
  assert.deepEqual(progress, [[16, 48], [32, 48], [48, 48]], 'onWarmup after each warm-up step');
  assert.deepEqual(r1.info.extra, { contrastive: 1, replay: 16, warmupSteps: 3 });
  const warmState = await ad.save();
  const r2 = await ad.predict(xA);
  assert.notDeepEqual(r2.logits.data, r1.logits.data);
  ad.reset();
  for (const p of ad.trainable) assert.deepEqual(ad.model.param(p).data, warmState.tensors[`warm.param.${p}`], `${p} after reset`);
  const r1again = await ad.predict(xA);
  assert.deepEqual(r1again.logits.data, r1.logits.data, 'after reset the first batch is predicted as right after the warm-up');
  assert.equal(ad.warmupSteps, 3, 'no second warm-up');
  // A state saved after the warm-up loads into a fresh adapter, which then skips the warm-up.
  const fresh = createAdapter(smallCnn(), 'rmt', { sourceData: src.images, sourceLabels: src.labels, warmupSamples: 48, sourceBatchSize: 16, lr: 0.01 }) as RMT;
  await fresh.load!(warmState);
  const f2 = await fresh.predict(xA);
  assert.equal(fresh.warmupSteps, 3);
  assert.deepEqual(f2.logits.data, r2.logits.data);
  await ad.release();
  await fresh.release();
});

test('RMT option errors: labels, shapes, a model without features', () => {
  const cnn = smallCnn();
  const src = loadSourceSet({ limit: 8 });
  assert.throws(() => createAdapter(cnn, 'rmt', { sourceData: src.images }), /sourceData needs sourceLabels/);
  assert.throws(() => createAdapter(cnn, 'rmt', { sourceData: src.images, sourceLabels: src.labels.slice(0, 3) }), /3 sourceLabels for 8 sourceData images/);
  assert.throws(() => createAdapter(cnn, 'rmt', { sourceLabels: src.labels }), /sourceLabels given without sourceData/);
  assert.throws(() => createAdapter(cnn, 'rmt', { sourceData: images(2, 0, undefined), sourceLabels: [0, 1], temperature: 0 }), /rmt: option 'temperature'/);
  const net = new NetBuilder({ name: 'nofeat', seed: 0 });
  const x = net.input('x', ['N', 1, 28, 28]);
  net.output(net.linear(net.flatten(net.batchNorm(x, { name: 'bn' })), { name: 'fc', out: 10 }), 'logits');
  const plain = new RefitModel(net.build());
  assert.throws(() => createAdapter(plain, 'rmt', { sourceData: src.images, sourceLabels: src.labels }), /no output 'features'.*lambdaCont: 0/);
  assert.ok(createAdapter(plain, 'rmt', { sourceData: src.images, sourceLabels: src.labels, lambdaCont: 0 }));
});

test('multiBranch: each copy computes what the model computes, on its own input and batch size', async () => {
  const m = smallCnn();
  const b = multiBranch(m, ['', '__b']);
  assert.deepEqual(b.inputs.map((i) => i.name), ['x', 'x__b']);
  const x1 = images(4, 0), x2 = images(6, 10);
  const out = await b.run({ x: x1, x__b: x2 }, { outputs: ['logits', 'logits__b'] });
  assert.deepEqual(out.logits!.data, (await m.run({ x: x1 }, { outputs: ['logits'] })).logits!.data);
  assert.deepEqual(out.logits__b!.data, (await m.run({ x: x2 }, { outputs: ['logits'] })).logits!.data);
  assert.throws(() => multiBranch(m, ['a', 'a']), /distinct/);
});

test('the bundled in-distribution set: 2000 Fashion-MNIST training images with labels; options per method', () => {
  const s = loadSourceSet();
  assert.equal(s.n, 2000);
  assert.deepEqual(s.images.dims, [2000, 1, 28, 28]);
  assert.equal(s.labels.length, 2000);
  assert.deepEqual(new Set(s.labels), new Set([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]));
  assert.ok((s.images.data as Float32Array).every((v) => v >= 0 && v <= 1));
  assert.deepEqual(Object.keys(sourceDataOptions('eata', s)), ['fisherData']);
  assert.deepEqual(Object.keys(sourceDataOptions('cotta', s)), ['thresholdData']);
  assert.deepEqual(Object.keys(sourceDataOptions('rmt', s)), ['sourceData', 'sourceLabels']);
  assert.deepEqual(sourceDataOptions('tent', s), {});
  assert.throws(() => loadSourceSet({ dir: '/nonexistent' }), /in-distribution set not found/);
});
