// Cloud consolidation (src/fleet/consolidate.ts): distilling a teacher into a device's
// norm-affine adapter on its uploads (+ replay) brings the student closer to the teacher and
// lowers its error on held-out samples of the same shift, run as the device runs it (BN-adapt).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel, type RefitModel } from '../../src/model.ts';
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';
import { singleDomainStream } from '../../src/data/streams.ts';
import { argmaxRows } from '../../src/data/evaluate.ts';
import { batchStatModel } from '../../src/tta/bn-adapt.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { consolidate } from '../../src/fleet/consolidate.ts';
import { modelTeacher, ensembleTeacher } from '../../src/fleet/teacher.ts';
import { createConsolidator, makeTeacher } from '../../src/fleet/consolidator.ts';
import { FleetError } from '../../src/fleet/types.ts';
import { withAdapterFiles, adapterFiles, withAdapter, lora, normAffine } from '../../src/peft/index.ts';
import { parseSafetensors } from '../../src/io/safetensors.ts';
import { smallCnn, smallVit, images, perturb } from '../peft/helpers.ts';

async function deviceError(m: RefitModel, x: Float32Array, y: Uint8Array, batch = 64): Promise<number> {
  let wrong = 0;
  for (let s = 0; s < y.length; s += batch) {
    const k = Math.min(batch, y.length - s);
    const t = f32([k, 1, 28, 28], x.slice(s * 784, (s + k) * 784));
    const v = await batchStatModel(m, { x: t });
    const p = argmaxRows((await v.run({ x: t }, { outputs: ['logits'] })).logits!.data as Float32Array, 10);
    for (let i = 0; i < k; i++) if (p[i] !== y[s + i]) wrong++;
    await v.release();
  }
  return wrong / y.length;
}

test('consolidation on shifted uploads lowers the student–teacher KL and the held-out error of the device model', async (t) => {
  const cnn = await loadModel('models/fmnist-cnn.onnx', { threads: 1 });
  const N = 128, H = 128;
  const batches = [...singleDomainStream(loadFashionMnist('test'), { domain: 'snow', samplesPerDomain: N + H, batchSize: 64, seed: 3 })];
  const X = new Float32Array((N + H) * 784), Y = new Uint8Array(N + H);
  batches.forEach((b, i) => { X.set(b.x, i * 64 * 784); Y.set(b.y, i * 64); });
  const uploads = X.slice(0, N * 784), heldX = X.slice(N * 784), heldY = Y.slice(N);
  const r = await consolidate({
    base: cnn, uploads: [{ dims: [N, 1, 28, 28], data: uploads }], teacher: modelTeacher(cnn),
    options: { epochs: 8, lr: 0.01, temperature: 0.5, seed: 1 },
  });
  assert.equal(r.metrics.uploads, N);
  assert.equal(r.metrics.steps, 16);
  assert.ok(r.metrics.klAfter < 0.5 * r.metrics.klBefore, `KL ${r.metrics.klBefore} → ${r.metrics.klAfter}`);
  const before = await deviceError(cnn, heldX, heldY);
  const after = await deviceError(withAdapterFiles(cnn, 'device', r.files), heldX, heldY);
  t.diagnostic(`KL ${r.metrics.klBefore.toFixed(3)} → ${r.metrics.klAfter.toFixed(3)}; held-out error ${before} → ${after}`);
  assert.ok(after < before, `held-out error ${before} → ${after}`);
  // HF PEFT layout: the BatchNorm scales and shifts only
  assert.equal(JSON.parse(r.files.config).peft_type, 'NORM_AFFINE');
  const keys = [...parseSafetensors(r.files.weights).tensors.keys()];
  assert.ok(keys.length > 0 && keys.every((k) => k.startsWith('base_model.model.')), keys.join());
  // the base model is never written: the device model alone still gives the same error
  assert.equal(await deviceError(cnn, heldX, heldY), before);
});

test('starting from the device adapter, with replay; the Consolidator wires teacher, consolidation and aggregation', async () => {
  const base = smallCnn();
  const p = withAdapter(base, 'device', normAffine());
  perturb(p, 'device', 0.05, 2);
  const current = adapterFiles(p, 'device');
  const c = await createConsolidator({ base, teacher: ensembleTeacher([modelTeacher(base), modelTeacher(smallCnn(2))]), consolidate: { epochs: 1, batch: 8, replay: 4 } });
  const x = images(8, 5);
  const r = await c.consolidate({ adapter: current, uploads: [{ dims: x.dims, data: x.data as Float32Array }], replay: [{ dims: [6, 1, 28, 28], data: images(6, 6).data as Float32Array }], seed: 7 });
  assert.equal(r.metrics.replay, 4);
  assert.equal(r.metrics.steps, 1); // 12 samples, batch 8: one full batch per epoch
  // same job, same bytes (a retried job publishes the same adapter)
  const again = await c.consolidate({ adapter: current, uploads: [{ dims: x.dims, data: x.data as Float32Array }], replay: [{ dims: [6, 1, 28, 28], data: images(6, 6).data as Float32Array }], seed: 7 });
  assert.deepEqual(again.files.weights, r.files.weights);
  const fleet = c.aggregate([{ files: r.files, samples: 8 }, { files: current, samples: 8 }]);
  const t = (f: typeof current, k: string) => parseSafetensors(f.weights).tensors.get(k)!.data as Float32Array;
  const k = [...parseSafetensors(fleet.weights).tensors.keys()][0]!;
  assert.ok(Math.abs(t(fleet, k)[0]! - Math.fround((t(r.files, k)[0]! + t(current, k)[0]!) / 2)) <= 1e-7);
  await c.release();
});

test("targets 'mix' and 'agree' keep the student's own predictions in the targets", async () => {
  const base = smallCnn();
  const teacher = modelTeacher(smallCnn(2));
  const x = images(16, 9);
  const run = (targets: 'teacher' | 'mix' | 'agree') => consolidate({ base, teacher, uploads: [{ dims: x.dims, data: x.data as Float32Array }], options: { epochs: 1, batch: 8, temperature: 1, targets } });
  const plain = await run('teacher'), mix = await run('mix'), agree = await run('agree');
  assert.ok(plain.metrics.agreeBefore < 1 && plain.metrics.klBefore > 0, `a different teacher disagrees somewhere (agree ${plain.metrics.agreeBefore})`);
  // KL is convex in its first argument: KL((t + p)/2 ‖ p) ≤ KL(t ‖ p)/2
  assert.ok(mix.metrics.klBefore <= plain.metrics.klBefore / 2 + 1e-6, `mix KL ${mix.metrics.klBefore} vs ${plain.metrics.klBefore}`);
  // where the teacher disagrees the target is the student's own prediction
  assert.equal(agree.metrics.agreeBefore, 1);
  assert.ok(agree.metrics.klBefore < plain.metrics.klBefore, `agree KL ${agree.metrics.klBefore} vs ${plain.metrics.klBefore}`);
  await assert.rejects(run('both' as never), (e) => e instanceof FleetError && /option 'targets' must be 'teacher', 'mix' or 'agree', got 'both'/.test(e.message));
});

test('bad uploads and adapters: FleetErrors that say what is wrong', async () => {
  const base = smallCnn();
  const teacher = modelTeacher(base);
  const run = (o: Partial<Parameters<typeof consolidate>[0]>) => consolidate({ base, teacher, uploads: [], ...o });
  const x = images(4).data as Float32Array;
  await assert.rejects(run({}), (e) => e instanceof FleetError && /no uploaded samples/.test(e.message));
  await assert.rejects(run({ teacher: undefined as unknown as typeof teacher }), /needs a teacher/);
  await assert.rejects(run({ uploads: [{ dims: [4, 1, 32, 32], data: new Float32Array(4 * 1024) }] }), /uploads\[0\] has shape \[4, 1, 32, 32\], expected \[n, 1, 28, 28\]/);
  await assert.rejects(run({ uploads: [{ dims: [4, 1, 28, 28], data: x.slice(0, 100) }] }), /uploads\[0\] has 100 values, its shape \[4, 1, 28, 28\] needs 3136/);
  const nan = x.slice(); nan[5] = NaN;
  await assert.rejects(run({ uploads: [{ dims: [4, 1, 28, 28], data: nan }] }), /uploads\[0\] has a non-finite value \(NaN\) at 5/);
  await assert.rejects(run({ uploads: [{ dims: [4, 1, 28, 28], data: x }], replay: [{ dims: [1, 1, 28, 27], data: new Float32Array(28 * 27) }] }), /replay\[0\] has shape/);
  await assert.rejects(run({ uploads: [{ dims: [4, 1, 28, 28], data: x }], options: { lr: -1 } }), /'lr' must be positive/);
  const foreign = adapterFiles(withAdapter(smallVit(), 'v', lora({ targets: /attn\.q$/, rank: 2 })), 'v');
  await assert.rejects(run({ uploads: [{ dims: [4, 1, 28, 28], data: x }], adapter: foreign }), (e) => e instanceof FleetError && /adapter does not fit the base model/.test(e.message));
  await assert.rejects(run({ uploads: [{ dims: [4, 1, 28, 28], data: x }], adapter: { weights: new Uint8Array(3), config: '{}' } }), /adapter does not fit/);
});

test("teachers 'model' and 'model+cnn' load the user's larger cloud model, and say when it is missing", async () => {
  const base = smallCnn();
  const x = images(8, 3);
  await assert.rejects(makeTeacher('model', base), /teacher 'model' needs teacherModel: the path of a classifier/);
  const own = await loadModel('models/fmnist-cnn.onnx', { threads: 1 });
  const plain = await modelTeacher(own).probs(x), device = await modelTeacher(base).probs(x);
  const model = await makeTeacher('model', base, { teacherModel: 'models/fmnist-cnn.onnx' });
  assert.deepEqual(await model.probs(x), plain);
  const both = await makeTeacher('model+cnn', base, { teacherModel: 'models/fmnist-cnn.onnx' });
  const p = await both.probs(x);
  for (let i = 0; i < p.length; i++) assert.ok(Math.abs(p[i]! - (plain[i]! + device[i]!) / 2) < 1e-6, `probability ${i}`);
  await model.release(); await both.release(); await own.release();
  // teacherModel alone picks 'model'
  const c = await createConsolidator({ base, teacherModel: 'models/fmnist-cnn.onnx', consolidate: { epochs: 1, batch: 8 } });
  const r = await c.consolidate({ adapter: null, uploads: [{ dims: x.dims, data: x.data as Float32Array }] });
  assert.equal(r.metrics.teacher, 'models/fmnist-cnn.onnx');
  await c.release();
});
