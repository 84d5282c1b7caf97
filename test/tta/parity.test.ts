// refit's Tent, EATA, SAR, CoTTA and RMT steps against PyTorch reference steps that follow the papers'
// code (fixtures made by test/fixtures/tta/make_tta_fixtures.py with Debian's torch 1.13).
// Each fixture holds two consecutive steps, so momentum and EATA's p̄ are exercised too.
// Parameters are compared by their *change* since the source, to ≤ 1e-4 relative.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createAdapter } from '../../src/tta/index.ts';
import type { ParamAdapter } from '../../src/tta/common.ts';
import type { EATA } from '../../src/tta/eata.ts';
import type { SAR } from '../../src/tta/sar.ts';
import type { CoTTA } from '../../src/tta/cotta.ts';
import { PROJECTOR, type RMT } from '../../src/tta/rmt.ts';
import { loadFixture, get, assertClose, diff, measured } from './helpers.ts';

after(() => {
  const rows = [...measured].map(([k, v]) => `${k}: ${v.toExponential(2)}`);
  console.log(`# parity: largest relative errors: ${rows.join(', ')}`);
});

async function runFixture(name: string, opts: Record<string, unknown>, check: (s: number, r: Awaited<ReturnType<ParamAdapter<never>['predict']>>, ad: ParamAdapter<never>) => void, prepare?: (ad: ParamAdapter<never>) => Promise<void>) {
  const { model, tensors, meta } = await loadFixture(name);
  const ad = createAdapter(model, meta.method, { lr: meta.lr, ...(meta.momentum !== undefined ? { momentum: meta.momentum } : {}), ...opts }) as unknown as ParamAdapter<never>;
  await prepare?.(ad);
  assert.deepEqual(ad.trainable, meta.params, `${name}: default parameter selection`);
  const before = new Map(ad.trainable.map((p) => [p, get(tensors, `param_before.${p}`).data as Float32Array]));
  for (const p of ad.trainable) assert.deepEqual(ad.model.param(p).data, before.get(p), `${name}: source value of ${p}`);
  for (let s = 0; s < meta.steps; s++) {
    const r = await ad.predict(get(tensors, `input.x${s}`));
    assertClose(`${name}.logits step ${s}`, r.logits.data as Float32Array, get(tensors, `step${s}.logits`).data as Float32Array);
    check(s, r, ad);
    for (const p of ad.trainable) {
      const want = diff(get(tensors, `step${s}.param.${p}`).data as Float32Array, before.get(p)!);
      const got = diff(ad.model.param(p).data as Float32Array, before.get(p)!);
      assertClose(`${name}.update step ${s} ${p}`, got, want);
    }
  }
  // The source model was never written.
  for (const p of ad.trainable) assert.deepEqual(model.param(p).data, before.get(p), `${name}: source parameter ${p} changed`);
  await ad.release();
  return { tensors, meta };
}

const scalar = (t: { data: unknown }) => (t.data as Float32Array)[0]!;
const maskOf = (idx: Int32Array | undefined, n: number) => { const m = new Float32Array(n); for (const i of idx ?? []) m[i] = 1; return m; };

test('Tent: two steps on a BatchNorm CNN match PyTorch (logits, loss, parameter updates)', async () => {
  const { tensors } = await loadFixture('tent_cnn');
  await runFixture('tent_cnn', {}, (s, r) => {
    assertClose(`tent_cnn.loss step ${s}`, [r.info.loss!], [scalar(get(tensors, `step${s}.loss`))]);
  });
});

test('EATA: Fisher, two steps with entropy + redundancy filters, reweighting and Fisher penalty match PyTorch', async () => {
  const { tensors, meta } = await loadFixture('eata_cnn');
  await runFixture('eata_cnn', { fisherData: get(tensors, 'input.fisher'), fisherBatchSize: meta.fisher_batch, fisherSize: meta.fisher_size, fisherAlpha: meta.fisher_alpha, dMargin: meta.d_margin }, (s, r, ad) => {
    const eata = ad as unknown as EATA;
    if (s === 0) for (const [p, f] of eata.fisher!) assertClose(`eata_cnn.fisher ${p}`, f, get(tensors, `fisher.${p}`).data as Float32Array);
    const want = get(tensors, `step${s}.mask`).data as Float32Array;
    assert.deepEqual(maskOf(r.info.usedIndices, want.length), want, `eata step ${s}: selected samples`);
    assert.equal(r.info.used, meta[`step${s}_kept`]);
    assertClose(`eata_cnn.loss step ${s}`, [r.info.loss!], [scalar(get(tensors, `step${s}.loss`))]);
    assertClose(`eata_cnn.pbar step ${s}`, eata.movingProbs!, get(tensors, `step${s}.pbar`).data as Float32Array);
  });
});

const SAR_CASES: Record<string, string> = { sar_cnn: 'BatchNorm CNN', sar_ln: 'LayerNorm model, final norm excluded', sar_cnn_recovery: 'BatchNorm CNN, model recovery after each step' };
for (const name of Object.keys(SAR_CASES)) {
  test(`SAR (${SAR_CASES[name]}): two steps with both SAM passes match PyTorch`, async () => {
    const { tensors, meta } = await loadFixture(name);
    await runFixture(name, { rho: meta.rho }, (s, r, ad) => {
      const sar = ad as unknown as SAR;
      const want = get(tensors, `step${s}.mask`).data as Float32Array;
      assert.deepEqual(maskOf(r.info.usedIndices, want.length), want, `${name} step ${s}: samples of the second pass`);
      assert.equal(r.info.extra!.reliable1, meta[`step${s}_kept1`]);
      assertClose(`${name}.loss step ${s}`, [r.info.loss!], [scalar(get(tensors, `step${s}.loss`))]);
      assertClose(`${name}.loss2 step ${s}`, [r.info.extra!.loss2!], [scalar(get(tensors, `step${s}.loss2`))]);
      assertClose(`${name}.ema step ${s}`, [sar.ema!], [scalar(get(tensors, `step${s}.ema`))]);
      assert.equal(r.info.extra!.recovered === 1, meta[`step${s}_recovered`], `${name} step ${s}: model recovery`);
    });
  });
}

// Without augmentation a teacher equal to the student gives the consistency loss a zero gradient
// (softmax(s) − softmax(t)), so those fixtures start the teacher from a perturbed copy, loaded into
// refit's state; cotta_cnn_aug starts from the source and averages fixed additive "augmentations".
const COTTA_CASES: Record<string, string> = {
  cotta_cnn: 'BatchNorm CNN, no augmentation (threshold 0)',
  cotta_ln: 'LayerNorm model, no augmentation',
  cotta_cnn_restore: 'BatchNorm CNN, every element restored after each step',
  cotta_cnn_aug: 'BatchNorm CNN, augmentation-averaged teacher (threshold 1.1, 3 fixed perturbations)',
};
for (const name of Object.keys(COTTA_CASES)) {
  test(`CoTTA (${COTTA_CASES[name]}): two steps match PyTorch: teacher prediction, loss, anchor confidence, student and teacher updates`, async () => {
    const { tensors, meta } = await loadFixture(name);
    const N = meta.augmentations as number;
    let batch = 0;
    const augment = (x: Float32Array, _d: readonly number[], _r: unknown, k: number) => {
      const delta = get(tensors, `input.aug${batch}_${k}`).data as Float32Array;
      if (k === N - 1) batch++;
      return Float32Array.from(x, (v, i) => v + delta[i]!);
    };
    const opts = { betas: meta.betas, emaMomentum: meta.ema_momentum, restore: meta.restore, threshold: meta.threshold, ...(N > 0 ? { augmentations: N, augment } : {}) };
    const prepare = async (ad: ParamAdapter<never>) => {
      const st = await ad.save();
      for (const p of ad.trainable) st.tensors[`teacher.${p}`] = get(tensors, `teacher_before.${p}`).data as Float32Array;
      await ad.load(st);
    };
    await runFixture(name, opts, (s, r, ad) => {
      const cotta = ad as unknown as CoTTA;
      assert.equal(r.info.extra!.augmented, N);
      assertClose(`${name}.loss step ${s}`, [r.info.loss!], [scalar(get(tensors, `step${s}.loss`))]);
      assertClose(`${name}.anchor step ${s}`, [r.info.extra!.anchorConfidence!], [scalar(get(tensors, `step${s}.anchor_conf`))]);
      for (const p of cotta.trainable) {
        const before = get(tensors, `teacher_before.${p}`).data as Float32Array;
        assertClose(`${name}.teacher step ${s} ${p}`, diff(cotta.teacher.values.get(p)!, before), diff(get(tensors, `step${s}.teacher.${p}`).data as Float32Array, before));
      }
      if (meta.restore === 1) assert.equal(r.info.extra!.restored, cotta.trainable.reduce((a, p) => a + cotta.model.param(p).data.length, 0));
    }, prepare);
  });
}

test('RMT: prototypes, mean-teacher warm-up and two steps (SCE on two views, contrastive term through the projector, source replay) match PyTorch', async () => {
  const { model, tensors, meta } = await loadFixture('rmt_cnn');
  let batch = 0;
  const augment = (x: Float32Array) => {
    const delta = get(tensors, `input.aug${batch++}`).data as Float32Array;
    return Float32Array.from(x, (v, i) => v + delta[i]!);
  };
  const ad = createAdapter(model, 'rmt', {
    lr: meta.lr, betas: meta.betas, emaMomentum: meta.ema_momentum, projectionDim: meta.projection_dim, temperature: meta.temperature,
    warmupSamples: meta.warmup_samples, sourceBatchSize: meta.source_batch, augment,
    sourceData: get(tensors, 'input.source'), sourceLabels: Array.from(get(tensors, 'input.source_labels').data as Float32Array),
  }) as unknown as RMT;
  assert.deepEqual(ad.modelParams, meta.params);
  assert.deepEqual(ad.trainable, [...meta.params, ...PROJECTOR]);
  // PyTorch's projector initialisation, loaded into refit's state.
  const st = await ad.save();
  for (const p of PROJECTOR) st.tensors[`param.${p}`] = get(tensors, `projector_before.${p}`).data as Float32Array;
  await ad.load(st);
  const before = (p: string, prefix = 'param_before') => get(tensors, `${prefix}.${p}`).data as Float32Array;
  for (let s = 0; s < meta.steps; s++) {
    const r = await ad.predict(get(tensors, `input.x${s}`));
    if (s === 0) {
      assert.equal(ad.warmupSteps, meta.warmup_steps);
      const saved = await ad.save();
      for (const p of ad.modelParams) {
        assertClose(`rmt_cnn.warmup ${p}`, diff(saved.tensors[`warm.param.${p}`]!, before(p)), diff(before(p, 'warm.param'), before(p)));
        assertClose(`rmt_cnn.warmup teacher ${p}`, diff(saved.tensors[`warm.teacher.${p}`]!, before(p)), diff(before(p, 'warm.teacher'), before(p)));
      }
    }
    assertClose(`rmt_cnn.logits step ${s}`, r.logits.data as Float32Array, get(tensors, `step${s}.logits`).data as Float32Array);
    assertClose(`rmt_cnn.loss step ${s}`, [r.info.loss!], [scalar(get(tensors, `step${s}.loss`))]);
    for (const p of ad.modelParams) {
      assertClose(`rmt_cnn.update step ${s} ${p}`, diff(ad.model.param(p).data as Float32Array, before(p)), diff(get(tensors, `step${s}.param.${p}`).data as Float32Array, before(p)));
      assertClose(`rmt_cnn.teacher step ${s} ${p}`, diff(ad.teacher.values.get(p)!, before(p)), diff(get(tensors, `step${s}.teacher.${p}`).data as Float32Array, before(p)));
    }
    for (const p of PROJECTOR) {
      const b = before(p, 'projector_before');
      assertClose(`rmt_cnn.projector step ${s} ${p}`, diff(ad.model.param(p).data as Float32Array, b), diff(get(tensors, `step${s}.projector.${p}`).data as Float32Array, b));
    }
  }
  await ad.release();
});
