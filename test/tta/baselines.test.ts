// The baselines of issue 11 (RDumb, ROID, RoTTA), the `optimizer` option and the SAR-style
// `recovery` option of every gradient method. PyTorch parity fixtures come from
// test/fixtures/tta/make_baseline_fixtures.py (Debian's torch 1.13); the rest runs on the tiny
// models of ./helpers.ts.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createAdapter, METHODS } from '../../src/tta/index.ts';
import type { ParamAdapter } from '../../src/tta/common.ts';
import type { RDumb } from '../../src/tta/rdumb.ts';
import type { ROID } from '../../src/tta/roid.ts';
import type { RoTTA } from '../../src/tta/rotta.ts';
import { CSTU, timelinessWeight } from '../../src/tta/memory-bank.ts';
import { Rng } from '../../src/data/random.ts';
import type { Adapter } from '../../src/tta/types.ts';
import { loadFixture, get, assertClose, diff, measured, relErr, smallCnn, smallVit, images, paramsOf } from './helpers.ts';

after(() => {
  const rows = [...measured].map(([k, v]) => `${k}: ${v.toExponential(2)}`);
  console.log(`# baselines parity: largest relative errors: ${rows.join(', ')}`);
});

const scalar = (t: { data: unknown }) => (t.data as Float32Array)[0]!;
/** The fixtures' deterministic "augmentation": flip the last axis, ·0.9 + 0.05. */
function fixedAug(x: Float32Array, dims: readonly number[]): Float32Array {
  const W = dims[dims.length - 1]!;
  return Float32Array.from(x, (_, i) => {
    const col = i % W;
    return Math.fround(Math.fround(x[i - col + (W - 1 - col)]! * Math.fround(0.9)) + Math.fround(0.05));
  });
}
const maskOf = (idx: Int32Array | undefined, n: number) => { const m = new Float32Array(n); for (const i of idx ?? []) m[i] = 1; return m; };
const params = (ad: { model: { param(p: string): { data: unknown } } }, p: string) => ad.model.param(p).data as Float32Array;

// ------------------------------------------------------------------ PyTorch parity

test('optimizer option: Tent with { name: adam } matches torch.optim.Adam over two steps', async () => {
  const { model, tensors, meta } = await loadFixture('tent_cnn_adam');
  const ad = createAdapter(model, 'tent', { optimizer: { name: 'adam', lr: meta.lr } }) as unknown as ParamAdapter<never>;
  assert.deepEqual(ad.trainable, meta.params);
  for (let s = 0; s < meta.steps; s++) {
    const r = await ad.predict(get(tensors, `input.x${s}`));
    assertClose(`tent_adam.logits step ${s}`, r.logits.data as Float32Array, get(tensors, `step${s}.logits`).data as Float32Array);
    assertClose(`tent_adam.loss step ${s}`, [r.info.loss!], [scalar(get(tensors, `step${s}.loss`))]);
    for (const p of ad.trainable) {
      const before = get(tensors, `param_before.${p}`).data as Float32Array;
      assertClose(`tent_adam.update step ${s} ${p}`, diff(params(ad, p), before), diff(get(tensors, `step${s}.param.${p}`).data as Float32Array, before));
    }
  }
  // The same option through SGD is not Adam: the updates differ (the option is really used).
  const sgd = createAdapter(model, 'tent', { optimizer: { name: 'sgd', lr: meta.lr } }) as unknown as ParamAdapter<never>;
  await sgd.predict(get(tensors, 'input.x0'));
  const p0 = ad.trainable[0]!;
  const before = get(tensors, `param_before.${p0}`).data as Float32Array;
  const want = diff(get(tensors, `step0.param.${p0}`).data as Float32Array, before);
  const got = diff(params(sgd, p0), before);
  assert.ok(got.some((v, i) => Math.abs(v - want[i]!) > 1e-4 * Math.max(1e-3, Math.abs(want[i]!))), 'SGD update equals the Adam reference');
  await ad.release(); await sgd.release();
});

test('RDumb: three ETA steps with a reset before step 2 (resetEvery 2) match the CCC code', async () => {
  const { model, tensors, meta } = await loadFixture('rdumb_cnn');
  const ad = createAdapter(model, 'rdumb', { lr: meta.lr, resetEvery: meta.resetEvery }) as unknown as RDumb;
  assert.deepEqual(ad.trainable, meta.params);
  for (let s = 0; s < meta.steps; s++) {
    const r = await ad.predict(get(tensors, `input.x${s}`));
    assert.equal(r.info.extra!.periodicReset, s > 0 && s % meta.resetEvery === 0 ? 1 : 0, `step ${s}: periodic reset`);
    assert.equal(r.info.used, meta[`step${s}_kept`], `step ${s}: kept samples`);
    assertClose(`rdumb.logits step ${s}`, r.logits.data as Float32Array, get(tensors, `step${s}.logits`).data as Float32Array);
    assertClose(`rdumb.loss step ${s}`, [r.info.loss!], [scalar(get(tensors, `step${s}.loss`))]);
    assertClose(`rdumb.pbar step ${s}`, ad.eta.movingProbs!, get(tensors, `step${s}.pbar`).data as Float32Array);
    for (const p of ad.trainable) {
      const before = get(tensors, `param_before.${p}`).data as Float32Array;
      assertClose(`rdumb.update step ${s} ${p}`, diff(params(ad, p), before), diff(get(tensors, `step${s}.param.${p}`).data as Float32Array, before));
    }
  }
  await ad.release();
});

test('ROID: two steps match the reference code (weights, mask, SLR + consistency, Adam, weight ensembling, prior correction)', async () => {
  const { model, tensors, meta } = await loadFixture('roid_cnn');
  const ad = createAdapter(model, 'roid', { lr: meta.lr, augment: fixedAug }) as unknown as ROID;
  assert.deepEqual(ad.trainable, meta.params);
  for (let s = 0; s < meta.steps; s++) {
    const x = get(tensors, `input.x${s}`);
    const r = await ad.predict(x);
    assert.deepEqual(maskOf(r.info.usedIndices, x.dims[0]!), get(tensors, `step${s}.mask`).data, `step ${s}: unmasked samples`);
    assertClose(`roid.logits step ${s}`, r.logits.data as Float32Array, get(tensors, `step${s}.logits`).data as Float32Array);
    assertClose(`roid.loss step ${s}`, [r.info.loss!], [scalar(get(tensors, `step${s}.loss`))]);
    assertClose(`roid.pbar step ${s}`, ad.movingProbs!, get(tensors, `step${s}.pbar`).data as Float32Array);
    for (const p of ad.trainable) {
      const before = get(tensors, `param_before.${p}`).data as Float32Array;
      assertClose(`roid.update step ${s} ${p}`, diff(params(ad, p), before), diff(get(tensors, `step${s}.param.${p}`).data as Float32Array, before));
    }
  }
  await ad.release();
});

test('RoTTA: three batches match the reference code (teacher prediction, memory bank, RBN statistics, student and teacher)', async () => {
  const { model, tensors, meta } = await loadFixture('rotta_cnn');
  const ad = createAdapter(model, 'rotta', { lr: meta.lr, capacity: meta.capacity, updateEvery: meta.updateEvery, nu: meta.nu, alpha: meta.alpha, augment: fixedAug }) as unknown as RoTTA;
  assert.deepEqual(ad.trainable, meta.params);
  for (let s = 0; s < meta.steps; s++) {
    const r = await ad.predict(get(tensors, `input.x${s}`));
    assertClose(`rotta.logits step ${s}`, r.logits.data as Float32Array, get(tensors, `step${s}.logits`).data as Float32Array);
    assert.deepEqual(ad.bank!.perClassCounts(), meta[`step${s}_memory`], `step ${s}: memory per class`);
    const losses = meta[`step${s}_losses`] as number[];
    if (losses.length) assertClose(`rotta.loss step ${s}`, [r.info.loss!], [losses[losses.length - 1]!]);
    for (const p of ad.trainable) {
      const before = get(tensors, `param_before.${p}`).data as Float32Array;
      assertClose(`rotta.update step ${s} ${p}`, diff(params(ad, p), before), diff(get(tensors, `step${s}.param.${p}`).data as Float32Array, before));
      assertClose(`rotta.teacher step ${s} ${p}`, diff(ad.teacherValues.get(p)!, before), diff(get(tensors, `step${s}.teacher.${p}`).data as Float32Array, before));
    }
    ad.studentStats.forEach((st, k) => {
      assertClose(`rotta.stats step ${s} student mean ${k}`, st.mean, get(tensors, `step${s}.student.mean.${k}`).data as Float32Array);
      assertClose(`rotta.stats step ${s} student var ${k}`, st.variance, get(tensors, `step${s}.student.var.${k}`).data as Float32Array);
    });
    ad.teacherStats.forEach((st, k) => {
      assertClose(`rotta.stats step ${s} teacher mean ${k}`, st.mean, get(tensors, `step${s}.teacher.mean.${k}`).data as Float32Array);
      assertClose(`rotta.stats step ${s} teacher var ${k}`, st.variance, get(tensors, `step${s}.teacher.var.${k}`).data as Float32Array);
    });
  }
  await ad.release();
});

// ------------------------------------------------------------------ method behaviour

test('RDumb resets to the source exactly every resetEvery batches (default 1000), as a fresh adapter', async () => {
  const m = smallCnn();
  assert.equal((createAdapter(m, 'rdumb') as unknown as RDumb).resetEvery, 1000);
  const ad = createAdapter(m, 'rdumb', { resetEvery: 3, marginFactor: 2, dMargin: 2 }) as unknown as RDumb;
  const x = (b: number) => images(8, b * 8, (v) => v * 0.7);
  const src = paramsOf(m, ad.trainable);
  const resets: number[] = [];
  let atReset: Float32Array | null = null;
  for (let b = 0; b < 7; b++) {
    const r = await ad.predict(x(b));
    if (r.info.extra!.periodicReset) resets.push(b);
    if (b === 3) atReset = r.logits.data as Float32Array;
    if (b === 2) assert.ok(ad.trainable.some((p) => params(ad, p).some((v, i) => v !== src.get(p)![i])), 'adapted before the reset');
  }
  assert.deepEqual(resets, [3, 6]);
  assert.equal(ad.periodicResets, 2);
  // Batch 3 after the reset predicts as a fresh adapter on its first batch.
  const fresh = createAdapter(m, 'rdumb', { resetEvery: 3, marginFactor: 2, dMargin: 2 });
  const f = await fresh.predict(x(3));
  assert.deepEqual(f.logits.data, atReset);
  await ad.release(); await fresh.release();
});

test('RoTTA memory bank (CSTU): class balance and capacity hold on a skewed stream; timeliness weights', () => {
  const rng = Rng.xoshiro(7);
  const bank = new CSTU(12, 4);
  const x = new Float32Array(1);
  for (let i = 0; i < 500; i++) {
    // 70% of the stream is class 0.
    const c = rng.next() < 0.7 ? 0 : 1 + Math.floor(rng.next() * 3);
    bank.add(x, c, rng.next() * Math.log(4));
    assert.ok(bank.occupancy() <= 12, `occupancy ${bank.occupancy()} > capacity`);
    for (const n of bank.perClassCounts()) assert.ok(n <= Math.ceil(12 / 4), `a class holds ${n} > capacity/C`);
  }
  assert.deepEqual(bank.perClassCounts(), [3, 3, 3, 3]);
  // Class 0 alone never takes more than its share, even with free room.
  const solo = new CSTU(12, 4);
  for (let i = 0; i < 50; i++) solo.add(x, 0, 0.5);
  assert.deepEqual(solo.perClassCounts(), [3, 0, 0, 0]);
  // A full class keeps the lower-scoring (younger, more certain) samples: a certain new sample replaces the oldest.
  const b2 = new CSTU(4, 2);
  b2.add(Float32Array.of(1), 0, 0.1); b2.add(Float32Array.of(2), 0, 0.1); b2.add(Float32Array.of(3), 0, 0.1);
  assert.deepEqual(b2.data[0]!.map((it) => it.data[0]), [2, 3]);
  // An uncertain new sample does not replace a certain young one.
  const b3 = new CSTU(2, 2);
  b3.add(Float32Array.of(1), 0, 0); b3.add(Float32Array.of(2), 0, Math.log(2));
  assert.deepEqual(b3.data[0]!.map((it) => it.data[0]), [1]);
  assert.equal(timelinessWeight(0), 0.5);
  assert.ok(Math.abs(timelinessWeight(1) - Math.exp(-1) / (1 + Math.exp(-1))) < 1e-15);
});

test('ROID weight ensembling: after one step θ = 0.99·θ_step + 0.01·θ_source (float32)', async () => {
  const m = smallCnn();
  const x = images(16, 0, (v) => v * 0.6);
  const plain = createAdapter(m, 'roid', { momentumSrc: 1, priorCorrection: false }) as unknown as ROID;
  const ens = createAdapter(m, 'roid', { priorCorrection: false }) as unknown as ROID;
  await plain.predict(x);
  await ens.predict(x);
  const src = paramsOf(m, ens.trainable);
  let moved = 0;
  for (const p of ens.trainable) {
    const step = params(plain, p), s = src.get(p)!;
    const want = Float32Array.from(step, (v, i) => Math.fround(Math.fround(0.99) * v) + Math.fround(Math.fround(1 - 0.99) * s[i]!));
    assert.deepEqual(params(ens, p), want, p);
    moved += step.filter((v, i) => v !== s[i]).length;
  }
  assert.ok(moved > 0, 'the step moved no parameter');
  await plain.release(); await ens.release();
});

// ------------------------------------------------------------------ options

test('optimizer option: names, defaults and clear errors', async () => {
  const m = smallCnn();
  assert.throws(() => createAdapter(m, 'tent', { optimizer: 'rmsprop' }), /tent: option 'optimizer': unknown optimizer 'rmsprop'; known optimizers: sgd, adam, adamw/);
  assert.throws(() => createAdapter(m, 'roid', { optimizer: { name: 'adam', momentum: 0.9 } }), /roid: option 'optimizer': optimizer 'adam' has no momentum/);
  assert.throws(() => createAdapter(m, 'eata', { optimizer: { name: 'sgd', lrr: 1 } }), /unknown optimizer field 'lrr'/);
  assert.throws(() => createAdapter(m, 'sar', { optimizer: 3 }), /option 'optimizer': expected an optimizer name/);
  assert.throws(() => createAdapter(m, 'tent', { recovery: { emaThresold: 0.2 } }), /tent: option 'recovery': unknown field 'emaThresold'/);
  // Every gradient method accepts both options.
  for (const method of ['tent', 'eata', 'sar', 'cotta', 'rmt', 'rdumb', 'roid', 'rotta']) {
    const ad = createAdapter(m, method, { optimizer: { name: 'adamw', lr: 1e-3, weightDecay: 0 }, recovery: { emaThreshold: 0.1 } });
    await ad.release();
  }
  // Adam without a learning rate: 1e-3 (Tent's CIFAR setting), not the SGD rule.
  const t = createAdapter(m, 'tent', { optimizer: 'adam' });
  await t.predict(images(8, 0));
  assert.equal((await t.save!()).meta.lr, 1e-3);
  const st = await t.save!();
  assert.equal(st.optimizer!.kind, 'adam');
  // optimizer.lr overrides a method's lr default (CoTTA: 1e-3), and SGD takes the method's momentum.
  const c = createAdapter(m, 'cotta', { optimizer: { name: 'sgd', lr: 0.02 }, threshold: 0 });
  await c.predict(images(8, 0));
  const cs = await c.save!();
  assert.equal(cs.meta.lr, 0.02);
  assert.equal(cs.optimizer!.kind, 'sgd');
  await c.release();
  // An Adam state does not load into a Tent that uses its default SGD.
  const t2 = createAdapter(m, 'tent');
  await assert.rejects(t2.load!(st), /state is for optimizer kind 'adam', this optimizer is 'sgd'/);
  await t.release(); await t2.release();
});

test('recovery option: SAR-style reset when the entropy EMA falls below the threshold, for any gradient method', async () => {
  const m = smallCnn();
  const x = images(16, 0, (v) => v * 0.6);
  // Threshold above any entropy (ln 10 = 2.3): every batch ends in a recovery, parameters back at the source.
  for (const method of ['tent', 'cotta']) {
    const ad = createAdapter(m, method, { recovery: { emaThreshold: 10 } }) as unknown as ParamAdapter<never>;
    const r1 = await ad.predict(x);
    assert.equal(r1.info.extra!.recovered, 1, method);
    assert.equal(r1.info.resets, 1);
    for (const p of ad.trainable) assert.deepEqual(params(ad, p), m.param(p).data, `${method}: ${p} not restored`);
    const r2 = await ad.predict(x);
    assert.equal(r2.info.resets, 2);
    // The EMA follows 0.9·ema + 0.1·entropy and survives the recovery.
    assert.ok(Math.abs(ad.recoveryEma! - (0.9 * r1.info.extra!.recoveryEma! + 0.1 * meanEnt(r2.logits.data as Float32Array, 10))) < 1e-9);
    await ad.release();
  }
  // Threshold 0: never.
  const ad = createAdapter(m, 'tent', { recovery: { emaThreshold: 0, signal: 'loss' } });
  const r = await ad.predict(x);
  assert.equal(r.info.extra!.recovered, 0);
  assert.ok(Math.abs(r.info.extra!.recoveryEma! - r.info.loss!) < 1e-12, 'signal loss: the EMA starts at the loss');
  await ad.release();
});

function meanEnt(l: Float32Array, C: number): number {
  let s = 0;
  for (let i = 0; i < l.length / C; i++) {
    let mx = -Infinity; for (let c = 0; c < C; c++) mx = Math.max(mx, l[i * C + c]!);
    let z = 0; for (let c = 0; c < C; c++) z += Math.exp(l[i * C + c]! - mx);
    for (let c = 0; c < C; c++) { const p = Math.exp(l[i * C + c]! - mx) / z; if (p > 0) s -= p * Math.log(p); }
  }
  return s / (l.length / C);
}

// ------------------------------------------------------------------ state and streams

const NEW_OPTS: Record<string, Record<string, unknown>> = {
  rdumb: { resetEvery: 2, marginFactor: 2, dMargin: 2 },
  roid: {},
  rotta: { capacity: 10, updateEvery: 8 },
  tent: { optimizer: 'adam', recovery: { emaThreshold: 2.2 } },
};
for (const [method, opts] of Object.entries(NEW_OPTS)) {
  test(`${method}: save → load continues identically`, async () => {
    const m = smallCnn();
    const x = (b: number) => images(12, b * 12, (v) => v * 0.6);
    const a = createAdapter(m, method, opts);
    for (let b = 0; b < 3; b++) await a.predict(x(b));
    const st = await a.save!();
    const ra = [await a.predict(x(3)), await a.predict(x(4))];
    const b2 = createAdapter(m, method, opts);
    await b2.load!(st);
    const rb = [await b2.predict(x(3)), await b2.predict(x(4))];
    for (let i = 0; i < 2; i++) {
      assert.deepEqual(rb[i]!.logits.data, ra[i]!.logits.data, `batch ${3 + i} logits`);
      assert.deepEqual(rb[i]!.info.extra, ra[i]!.info.extra);
    }
    const sa = await a.save!(), sb = await b2.save!();
    assert.deepEqual(sb.tensors, sa.tensors);
    // A state of another method is refused.
    const other = createAdapter(m, method === 'roid' ? 'tent' : 'roid');
    await assert.rejects(other.load!(st), /was saved by/);
    await a.release(); await b2.release(); await other.release();
  });
}

test('a short stream: every gradient method, on the CNN and the ViT, runs without NaN and reports info', async () => {
  assert.ok(['rdumb', 'roid', 'rotta'].every((m) => METHODS.includes(m)));
  for (const [label, mk] of [['cnn', smallCnn], ['vit', smallVit]] as const) {
    for (const method of ['rdumb', 'roid', 'rotta']) {
      const ad: Adapter = createAdapter(mk(), method, method === 'rotta' ? { updateEvery: 8, capacity: 10 } : {});
      for (let b = 0; b < 3; b++) {
        const r = await ad.predict(images(8, b * 8, (v) => 1 - v));
        assert.ok((r.logits.data as Float32Array).every(Number.isFinite), `${label} ${method} batch ${b}: non-finite logits`);
        assert.ok(r.info.ms >= 0 && r.info.skipped === 0 && r.info.extra, `${label} ${method}: info`);
      }
      await ad.release();
    }
  }
});

test('the parity checks can fail: ROID with T = 0.5 and RoTTA with α = 0.06 miss the PyTorch references', async () => {
  const worst = async (fixture: string, method: string, opts: (meta: Record<string, number>) => Record<string, unknown>) => {
    const { model, tensors, meta } = await loadFixture(fixture);
    const ad = createAdapter(model, method, opts(meta)) as unknown as ParamAdapter<never>;
    let e = 0;
    for (let s = 0; s < meta.steps; s++) {
      const r = await ad.predict(get(tensors, `input.x${s}`));
      e = Math.max(e, relErr(r.logits.data as Float32Array, get(tensors, `step${s}.logits`).data as Float32Array));
      for (const p of ad.trainable) {
        const before = get(tensors, `param_before.${p}`).data as Float32Array;
        e = Math.max(e, relErr(diff(params(ad, p), before), diff(get(tensors, `step${s}.param.${p}`).data as Float32Array, before)));
      }
    }
    await ad.release();
    return e;
  };
  const roid = await worst('roid_cnn', 'roid', (m) => ({ lr: m.lr, augment: fixedAug, temperature: 0.5 }));
  const rotta = await worst('rotta_cnn', 'rotta', (m) => ({ lr: m.lr, capacity: m.capacity, updateEvery: m.updateEvery, nu: m.nu, alpha: 0.06, augment: fixedAug }));
  assert.ok(roid > 1e-2, `ROID with the wrong temperature: ${roid}`);
  assert.ok(rotta > 1e-2, `RoTTA with the wrong α: ${rotta}`);
});
