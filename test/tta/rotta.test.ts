// RoTTA against its reference code (BIT-DA/RoTTA), the points of docs/tta.md's audit table that the
// PyTorch parity fixture (baselines.test.ts) does not pin by itself: CSTU's eviction order on a
// hand-made stream, the update schedule across batch boundaries, the teacher as the returned
// prediction, and the robust-BN statistics after k updates against a hand computation on the
// memory bank (not the incoming batch).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createAdapter } from '../../src/tta/index.ts';
import type { RoTTA } from '../../src/tta/rotta.ts';
import { CSTU, timelinessWeight } from '../../src/tta/memory-bank.ts';
import { robustBnModel, rbnName, RBN_ALPHA } from '../../src/tta/robust-bn.ts';
import { f32, type Tensor } from '../../src/onnx/tensor.ts';
import { smallCnn, images, relErr } from './helpers.ts';

const ids = (b: CSTU) => b.data.map((l) => l.map((it) => it.data[0]));

test('CSTU: hand-made stream — admission, majority-class eviction, own-class eviction, rejection, ageing', () => {
  // capacity 4, 3 classes: capacity/C = 4/3, so a class takes a sample while it holds fewer than 1.33 (≤ 2 samples).
  const b = new CSTU(4, 3);
  const add = (id: number, c: number, u: number) => b.add(Float32Array.of(id), c, u);
  const score = (age: number, u: number) => 1 / (1 + Math.exp(-age / 4)) + u / Math.log(3);
  assert.ok(add(1, 0, 0.0)); assert.ok(add(2, 0, 0.5)); assert.ok(add(3, 1, 0.2)); assert.ok(add(4, 1, 0.1));
  assert.deepEqual(ids(b), [[1, 2], [3, 4], []]);
  // Every stored sample aged once per insertion attempt, its own included.
  assert.deepEqual(b.data.flat().map((it) => it.age), [4, 3, 2, 1]);
  // Full bank, class 2 under its share: the candidate is the highest score of the majority classes
  // 0 and 1 — sample 2 (age 3, u 0.5: 1.134) — but a new sample of u = 1 scores 1.410: rejected,
  // and everything still ages.
  assert.ok(score(3, 0.5) < score(0, 1.0));
  assert.equal(add(5, 2, 1.0), false);
  assert.deepEqual(ids(b), [[1, 2], [3, 4], []]);
  assert.deepEqual(b.data.flat().map((it) => it.age), [5, 4, 3, 2]);
  // A certain class-2 sample (0.5) evicts sample 2 (1.186), the highest of classes 0 and 1.
  assert.ok(add(6, 2, 0.0));
  assert.deepEqual(ids(b), [[1], [3, 4], [6]]);
  assert.deepEqual(b.memory().ages, [6 / 4, 4 / 4, 3 / 4, 1 / 4]);
  // Class 0 under its share, bank full: the only majority class is 1; its oldest, less certain
  // sample 3 (0.913 > 0.770 of sample 4) goes.
  assert.ok(score(4, 0.2) > score(3, 0.1));
  assert.ok(add(7, 0, 0.0));
  assert.deepEqual(ids(b), [[1, 7], [4], [6]]);
  // A sample of a class at its share competes within its class only: class 0's highest is sample 1
  // (age 7, u 0: 0.852), above a certain newcomer (0.5) — sample 1 goes, not a sample of class 1.
  assert.ok(add(8, 0, 0.0));
  assert.deepEqual(ids(b), [[7, 8], [4], [6]]);
  assert.deepEqual(b.perClassCounts(), [2, 1, 1]);
  // The loss weight of a sample of normalised age a (ages / capacity): exp(−a)/(1 + exp(−a)).
  assert.ok(Math.abs(timelinessWeight(6 / 4) - Math.exp(-1.5) / (1 + Math.exp(-1.5))) < 1e-15);
  assert.ok(Math.abs(timelinessWeight(0.25) - 0.4378234991142019) < 1e-12);
});

/** The first BatchNorm layer's batch mean and biased variance of `x` (its input is conv(x): no RBN before it). */
async function firstLayerMoments(ad: RoTTA, x: Tensor): Promise<{ mean: Float32Array; variance: Float32Array }> {
  const m = await robustBnModel(ad.model, { [ad.model.inputs[0]!.name]: x });
  const feeds: Record<string, Tensor> = { [ad.model.inputs[0]!.name]: x, [RBN_ALPHA]: f32([], [1]) };
  ad.layers.forEach((l, k) => { feeds[rbnName('mean', k)] = f32([l.channels], new Float32Array(l.channels)); feeds[rbnName('var', k)] = f32([l.channels], new Float32Array(l.channels).fill(1)); });
  const out = await m.run(feeds, { outputs: [rbnName('mean_out', 0), rbnName('var_out', 0)] });
  await m.release();
  return { mean: out[rbnName('mean_out', 0)]!.data as Float32Array, variance: out[rbnName('var_out', 0)]!.data as Float32Array };
}

test('RoTTA: robust-BN statistics after 3 updates equal the hand computation on the memory bank (teacher: raw, student: augmented)', async () => {
  const alpha = 0.05;
  const augmented: { x: Float32Array; dims: number[] }[] = [];
  const augment = (x: Float32Array, dims: readonly number[]) => {
    const y = Float32Array.from(x, (v) => 0.8 * v + 0.1);
    augmented.push({ x: y, dims: [...dims] });
    return y;
  };
  const ad = createAdapter(smallCnn(), 'rotta', { capacity: 10, updateEvery: 8, alpha, augment }) as unknown as RoTTA;
  const src = { mean: ad.teacherStats[0]!.mean.slice(), variance: ad.teacherStats[0]!.variance.slice() };
  const teacher = { mean: Float64Array.from(src.mean), variance: Float64Array.from(src.variance) };
  const student = { mean: Float64Array.from(src.mean), variance: Float64Array.from(src.variance) };
  const mix = (s: { mean: Float64Array; variance: Float64Array }, b: { mean: Float32Array; variance: Float32Array }) => {
    s.mean = s.mean.map((g, c) => (1 - alpha) * g + alpha * b.mean[c]!);
    s.variance = s.variance.map((g, c) => (1 - alpha) * g + alpha * b.variance[c]!);
  };
  let incoming = { ...teacher };
  for (let k = 0; k < 3; k++) {
    // Batches of 8 = updateEvery: one update after each batch's last sample, on the bank as it is then.
    const x = images(8, 8 * k, (v) => 0.6 * v + 0.2 * (k % 2));
    await ad.predict(x);
    const { data } = ad.bank!.memory();
    const bank = new Float32Array(data.length * 784);
    data.forEach((d, i) => bank.set(d, i * 784));
    assert.equal(augmented.length, k + 1, 'one augmented memory batch per update');
    assert.deepEqual(augmented[k]!.dims, [data.length, 1, 28, 28]);
    mix(teacher, await firstLayerMoments(ad, f32([data.length, 1, 28, 28], bank)));
    mix(student, await firstLayerMoments(ad, f32(augmented[k]!.dims, augmented[k]!.x)));
    if (k === 0) { incoming = { mean: Float64Array.from(src.mean), variance: Float64Array.from(src.variance) }; mix(incoming, await firstLayerMoments(ad, x)); }
  }
  assert.equal(ad.updates, 3);
  assert.ok(relErr(ad.teacherStats[0]!.mean, teacher.mean) < 1e-5, `teacher mean ${relErr(ad.teacherStats[0]!.mean, teacher.mean)}`);
  assert.ok(relErr(ad.teacherStats[0]!.variance, teacher.variance) < 1e-5, `teacher var ${relErr(ad.teacherStats[0]!.variance, teacher.variance)}`);
  assert.ok(relErr(ad.studentStats[0]!.mean, student.mean) < 1e-5, `student mean ${relErr(ad.studentStats[0]!.mean, student.mean)}`);
  assert.ok(relErr(ad.studentStats[0]!.variance, student.variance) < 1e-5, `student var ${relErr(ad.studentStats[0]!.variance, student.variance)}`);
  // The statistics come from the bank: the incoming batch would have given other numbers.
  const fresh = createAdapter(smallCnn(), 'rotta', { capacity: 10, updateEvery: 8, alpha, augment }) as unknown as RoTTA;
  await fresh.predict(images(8, 0, (v) => 0.6 * v));
  assert.ok(relErr(fresh.teacherStats[0]!.mean, incoming.mean) > 1e-3, 'the first update used the incoming batch, not the bank');
  await ad.release(); await fresh.release();
});

test('RoTTA: updates every updateEvery samples across batches; the prediction is the teacher (ν = 0, α = 0: the source model)', async () => {
  const m = smallCnn();
  const ad = createAdapter(m, 'rotta', { capacity: 10, updateEvery: 8, nu: 0, alpha: 0, lr: 0.05 }) as unknown as RoTTA;
  const p0 = ad.trainable[0]!;
  const before = (ad.model.param(p0).data as Float32Array).slice();
  const plain = smallCnn();
  const counts: number[] = [];
  for (let k = 0; k < 4; k++) {
    const x = images(5, 5 * k, (v) => 0.7 * v + 0.1);
    const r = await ad.predict(x);
    counts.push(r.info.extra!.updates as number);
    if (k === 0) assert.deepEqual(ad.model.param(p0).data, before, 'no step before the 8th sample');
    // ν = 0 keeps the teacher at the source and α = 0 its statistics: its eval prediction is the
    // source model's BatchNorm inference, however far the student has moved.
    const want = (await plain.run({ [plain.inputs[0]!.name]: x }, { outputs: ['logits'] })).logits!.data as Float32Array;
    assert.ok(relErr(r.logits.data as Float32Array, want) < 1e-5, `batch ${k}: the returned logits are not the teacher's`);
  }
  // Samples 5, 10, 15, 20: updates after the 8th and 16th.
  assert.deepEqual(counts, [0, 1, 1, 2]);
  assert.ok((ad.model.param(p0).data as Float32Array).some((v, i) => v !== before[i]), 'the student stepped');
  await ad.release(); await plain.release();
});
