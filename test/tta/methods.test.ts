// Behaviour of the gradient-based methods on a BatchNorm CNN and a LayerNorm ViT: adaptation
// happens, the source is never written, reset/episodic/save/load, NaN handling, bad input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createAdapter, CLASSIFIER_METHODS } from '../../src/tta/index.ts';
import type { ParamAdapter } from '../../src/tta/common.ts';
import { RefitModel } from '../../src/model.ts';
import { NetBuilder } from '../../src/nn/index.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { smallCnn, smallVit, images, paramsOf } from './helpers.ts';

// Untrained test models are unsure of everything: a wide entropy margin lets EATA and SAR keep samples.
const OPTS: Record<string, Record<string, unknown>> = {
  tent: { lr: 0.01 },
  eata: { lr: 0.01, marginFactor: 1.0, dMargin: 1.01, fisherData: images(32, 100), fisherBatchSize: 16 },
  sar: { lr: 0.01, marginFactor: 1.0 },
  // Untrained models are never confident: CoTTA always averages (2 augmentations keep the test fast).
  cotta: { lr: 0.01, augmentations: 2, restore: 0.05 },
  rmt: { lr: 0.01, sourceData: images(32, 100), sourceLabels: images.labels(32, 100), warmupSamples: 32, sourceBatchSize: 16 },
};
const MODELS = { cnn: smallCnn, vit: smallVit };
const xA = images(16, 0, (v) => 1 - v); // inverted images: a shifted domain
const xB = images(16, 16, (v) => 1 - v);

type PA = ParamAdapter<never>;
const same = (a: Map<string, Float32Array>, b: Map<string, Float32Array>) => [...a].every(([k, v]) => v.every((x, i) => x === b.get(k)![i]));

for (const method of ['tent', 'eata', 'sar', 'cotta', 'rmt']) {
  for (const [label, make] of Object.entries(MODELS)) {
    test(`${method} on the ${label}: adapts the norm affine parameters of a copy; reset, episodic, save/load`, async () => {
      const source = make();
      const ad = createAdapter(source, method, OPTS[method]) as unknown as PA;
      // RMT also trains its contrastive projector (not a model parameter).
      const modelParams = ad.trainable.filter((p) => !p.startsWith('rmt.projector.'));
      assert.ok(modelParams.length > 0 && modelParams.every((p) => /norm|bn/.test(p)), `trainable: ${ad.trainable}`);
      const src0 = paramsOf(source, modelParams);
      const r1 = await ad.predict(xA);
      assert.deepEqual(r1.logits.dims, [16, 10]);
      assert.ok(r1.info.used > 0, `${method} used no sample`);
      assert.equal(r1.info.usedIndices?.length ?? r1.info.used, r1.info.used);
      assert.ok(Number.isFinite(r1.info.loss!) && r1.info.ms > 0);
      assert.ok(!same(paramsOf(ad.model, modelParams), src0), 'parameters did not change');
      assert.ok(same(paramsOf(source, modelParams), src0), 'the source model was written');

      // save → continue → load → continue again: identical.
      const saved = await ad.save();
      const rB = await ad.predict(xB);
      const after = paramsOf(ad.model, ad.trainable);
      await ad.load(saved);
      const rB2 = await ad.predict(xB);
      assert.deepEqual(rB2.logits.data, rB.logits.data);
      assert.ok(same(paramsOf(ad.model, ad.trainable), after));

      // reset: back to the source values (RMT: to the state after its warm-up on source data).
      ad.reset();
      if (method !== 'rmt') assert.ok(same(paramsOf(ad.model, ad.trainable), src0));
      const r1again = await ad.predict(xA);
      assert.deepEqual(r1again.logits.data, r1.logits.data, 'after reset the first batch gives the same prediction');
      assert.ok(r1again.info.resets >= 1);
      await ad.release();

      // episodic: every batch starts from the source.
      const ep = createAdapter(source, method, { ...OPTS[method], mode: 'episodic' }) as unknown as PA;
      const e1 = await ep.predict(xA);
      await ep.predict(xB);
      const e3 = await ep.predict(xA);
      assert.deepEqual(e3.logits.data, e1.logits.data);
      assert.equal(e3.info.resets, 2);
      await ep.release();
    });
  }
}

test('eata: after a batch that kept nothing, the next runs forward-only, and still steps when that forward keeps a sample', async () => {
  for (const make of [smallCnn, smallVit]) {
    // Untrained models give near-uniform probabilities: once p̄ exists, ε = 0.05 filters everything.
    const ad = createAdapter(make(), 'eata', { lr: 0.01, marginFactor: 1.0, dMargin: 0.05 }) as unknown as PA;
    const s0 = await ad.save();
    const r1 = await ad.predict(xA);
    assert.ok(r1.info.extra!.kept! > 0 && r1.info.extra!.forwardOnly === 0);
    const r2 = await ad.predict(xB);
    assert.ok(r2.info.extra!.kept === 0 && r2.info.extra!.forwardOnly === 0);
    const s2 = await ad.save();
    const p2 = paramsOf(ad.model, ad.trainable);
    const r3 = await ad.predict(xA);
    assert.equal(r3.info.extra!.forwardOnly, 1);
    assert.equal(r3.info.used, 0);
    assert.ok(same(paramsOf(ad.model, ad.trainable), p2));
    // The forward-only logits are the training step's forward on the same parameters.
    const twin = createAdapter(make(), 'eata', { lr: 0.01, marginFactor: 1.0, dMargin: 0.05 }) as unknown as PA;
    await twin.load(s2);
    const t3 = await twin.predict(xA);
    assert.equal(t3.info.extra!.forwardOnly, 0);
    const a = r3.logits.data as Float32Array, b = t3.logits.data as Float32Array;
    assert.ok(a.every((v, i) => Math.abs(v - b[i]!) <= 1e-5), 'forward-only logits differ from the step\'s');
    // Back to the start (no p̄): the forward keeps samples, so the step runs after all.
    await ad.load(s0);
    const r4 = await ad.predict(xA);
    assert.ok(r4.info.extra!.forwardOnly === 0 && r4.info.used > 0);
    assert.deepEqual(r4.logits.data, r1.logits.data);
    await ad.release();
    await twin.release();
  }
});

test('a non-finite loss never updates parameters: the step is skipped and counted', async () => {
  // CNN: finite but huge inputs overflow the convolutions (inf − inf in BatchNorm); ViT (LayerNorm
  // absorbs any scale): a NaN planted in a baked-in, non-adapted parameter of the private copy.
  const overflow = f32([4, 1, 28, 28], Float32Array.from({ length: 4 * 784 }, (_, i) => (i % 2 ? 3e38 : -3e38) * (i % 3 ? 1 : 0.5)));
  for (const [make, poison] of [[smallCnn, null], [smallVit, 'head.bias']] as const) {
    const ad = createAdapter(make(), 'tent', { lr: 0.01 }) as unknown as PA;
    if (poison) { (ad.model.param(poison).data as Float32Array)[0] = NaN; ad.model.touch([poison]); }
    const before = paramsOf(ad.model, ad.trainable);
    const r = await ad.predict(poison ? xA : overflow);
    assert.equal(r.info.skipped, 1);
    assert.equal(r.info.used, 0);
    assert.ok(same(paramsOf(ad.model, ad.trainable), before));
    if (!poison) {
      const ok = await ad.predict(xA);
      assert.equal(ok.info.skipped, 1);
      assert.ok(ok.info.used > 0);
    }
    await ad.release();
  }
  // EATA and SAR never select a sample whose entropy is NaN; CoTTA's and RMT's loss is NaN there.
  for (const m of ['eata', 'sar', 'cotta', 'rmt']) {
    const ad = createAdapter(smallCnn(), m, { ...OPTS[m], ...(m === 'rmt' ? { warmupSamples: 0 } : {}) }) as unknown as PA;
    const before = paramsOf(ad.model, ad.trainable);
    const r = await ad.predict(overflow);
    assert.equal(r.info.used, 0);
    assert.ok(same(paramsOf(ad.model, ad.trainable), before));
    await ad.release();
  }
});

test('bad input: unknown method or option, empty batch, NaN input, wrong shape, model without normalization', async () => {
  const cnn = smallCnn();
  assert.throws(() => createAdapter(cnn, 'tnet'), /unknown adaptation method 'tnet'; known methods: .*tent/);
  assert.throws(() => createAdapter(cnn, 'tent', { lr: 0.01, mommentum: 0.9 }), /tent: unknown option 'mommentum' \(known options: .*momentum/);
  assert.throws(() => createAdapter(cnn, 'eata', { dMargin: -1 }), /eata: option 'dMargin'/);
  assert.throws(() => createAdapter(cnn, 'sar', { mode: 'sometimes' }), /sar: option 'mode'/);
  assert.throws(() => createAdapter(cnn, 'bn-adapt', { prior: 'big' }), /bn-adapt: option 'prior'/);
  assert.throws(() => createAdapter(cnn, 'source', { foo: 1 }), /source: unknown option 'foo'/);
  for (const m of CLASSIFIER_METHODS) {
    const ad = createAdapter(cnn, m, m === 'actmad' ? { sourceData: images(64, 3) } : {}); // ActMAD needs its clean set
    await assert.rejects(ad.predict(f32([0, 1, 28, 28], new Float32Array(0))), /batch of size 0/, m);
    const nan = images(2, 0);
    (nan.data as Float32Array)[900] = NaN;
    await assert.rejects(ad.predict(nan), /non-finite value \(NaN\) at element 900 \(sample 1\)/, m);
    await assert.rejects(ad.predict(f32([2, 1, 14, 14], new Float32Array(2 * 196))), /shape \[2, 1, 14, 14\]/, m);
    await ad.release();
  }
  const net = new NetBuilder({ name: 'linear', seed: 0 });
  const x = net.input('x', ['N', 1, 28, 28]);
  net.output(net.linear(net.flatten(x), { name: 'fc', out: 10 }), 'logits');
  const plain = new RefitModel(net.build());
  for (const m of ['tent', 'eata', 'sar', 'cotta', 'rmt']) {
    assert.throws(() => createAdapter(plain, m), new RegExp(`${m} adapts normalization layers .* this model has none`));
  }
  assert.throws(() => createAdapter(plain, 'bn-adapt'), /BatchNormalization/);
  // With explicit parameters a model without normalization can still adapt.
  const ad = createAdapter(plain, 'tent', { params: ['fc.bias'], lr: 0.01 });
  assert.equal((await ad.predict(xA)).info.used, 16);
  await ad.release();
  // A state saved by one method does not load into another.
  const t = createAdapter(cnn, 'tent');
  const s = createAdapter(cnn, 'sar');
  await assert.rejects(s.load!(await t.save!()), /saved by 'tent', not 'sar'/);
});
