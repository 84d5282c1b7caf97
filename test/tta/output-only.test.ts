// LAME and T3A: PyTorch parity (fixtures from test/fixtures/tta/make_tta_fixtures.py, following
// the papers' code) and behaviour on refit's BatchNorm CNN and LayerNorm ViT.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createAdapter } from '../../src/tta/index.ts';
import type { T3A } from '../../src/tta/t3a.ts';
import { RefitModel } from '../../src/model.ts';
import { NetBuilder } from '../../src/nn/index.ts';
import { loadFixture, get, assertClose, measured, smallCnn, smallVit, images, paramsOf } from './helpers.ts';

after(() => console.log(`# output-only parity: largest relative errors: ${[...measured].map(([k, v]) => `${k}: ${v.toExponential(2)}`).join(', ')}`));

const softmax = (l: Float32Array, C: number) => {
  const out = new Float32Array(l.length);
  for (let i = 0; i < l.length / C; i++) {
    let m = -Infinity, s = 0;
    for (let c = 0; c < C; c++) m = Math.max(m, l[i * C + c]!);
    for (let c = 0; c < C; c++) s += out[i * C + c] = Math.exp(l[i * C + c]! - m);
    for (let c = 0; c < C; c++) out[i * C + c]! /= s;
  }
  return out;
};

for (const name of ['lame_cnn', 'lame_ln']) {
  test(`LAME (${name}): the Laplacian-adjusted assignment on a fixed batch matches PyTorch`, async () => {
    const { model, tensors, meta } = await loadFixture(name);
    const ad = createAdapter(model, 'lame');
    const r = await ad.predict(get(tensors, 'input.x'));
    assertClose(`${name}.Y`, softmax(r.logits.data as Float32Array, 5), get(tensors, 'lame.Y').data as Float32Array);
    // PyTorch evaluates the stopping energy in float32, refit in float64: the count may differ slightly.
    assert.ok(Math.abs(r.info.extra!.iterations! - meta.iterations) <= 5, `iterations ${r.info.extra!.iterations} vs ${meta.iterations}`);
  });
}

test('T3A: two batches with entropy-filtered supports (filter K = 3) match PyTorch', async () => {
  const { model, tensors } = await loadFixture('t3a_cnn');
  const ad = createAdapter(model, 't3a', { filterK: 3 }) as T3A;
  for (let s = 0; s < 2; s++) {
    const r = await ad.predict(get(tensors, `input.x${s}`));
    assertClose(`t3a_cnn.logits step ${s}`, r.logits.data as Float32Array, get(tensors, `step${s}.logits`).data as Float32Array);
    const st = await ad.save();
    assertClose(`t3a_cnn.supports step ${s}`, st.tensors.supports!, get(tensors, `step${s}.supports`).data as Float32Array);
  }
});

for (const [label, make] of [['cnn', smallCnn], ['vit', smallVit]] as const) {
  test(`LAME and T3A on the ${label}: no parameter changes, state, reset, save/load`, async () => {
    const source = make();
    const names = source.parameterNames();
    const before = paramsOf(source, names);
    const x = images(32, 0, (v) => 1 - v), y = images(32, 32, (v) => 1 - v);
    const lame = createAdapter(source, 'lame');
    const a = await lame.predict(x);
    assert.deepEqual(a.logits.dims, [32, 10]);
    assert.deepEqual((await lame.predict(x)).logits.data, a.logits.data, 'LAME is stateless');

    const t3a = createAdapter(source, 't3a', { filterK: 5 }) as T3A;
    assert.equal(t3a.supportCount, 10);
    await t3a.predict(x);
    assert.ok(t3a.supportCount > 10 && t3a.supportCount <= 50);
    const saved = await t3a.save!();
    const r1 = await t3a.predict(y);
    await t3a.load!(saved);
    assert.deepEqual((await t3a.predict(y)).logits.data, r1.logits.data);
    t3a.reset();
    assert.equal(t3a.supportCount, 10);
    const ep = createAdapter(source, 't3a', { mode: 'episodic' });
    const e1 = await ep.predict(x);
    await ep.predict(y);
    assert.deepEqual((await ep.predict(x)).logits.data, e1.logits.data);
    for (const [k, v] of paramsOf(source, names)) assert.deepEqual(v, before.get(k));
    await source.release();
  });
}

test('LAME and T3A need a features output and (T3A) a linear head', () => {
  const net = new NetBuilder({ name: 'nofeat', seed: 0 });
  const x = net.input('x', ['N', 1, 28, 28]);
  net.output(net.linear(net.flatten(x), { name: 'fc', out: 10 }), 'logits');
  const m = new RefitModel(net.build());
  assert.throws(() => createAdapter(m, 'lame'), /lame reads the penultimate features, and the model has no output 'features'/);
  assert.throws(() => createAdapter(m, 't3a'), /t3a reads the penultimate features/);
  assert.throws(() => createAdapter(smallCnn(), 'lame', { knn: 0 }), /lame: option 'knn'/);
  assert.throws(() => createAdapter(smallCnn(), 't3a', { filterK: 0 }), /t3a: option 'filterK'/);
});

test('BN-adapt and Source on the CNN: batch statistics change the prediction, the source does not', async () => {
  const m = smallCnn();
  const x = images(16, 0, (v) => 1 - v);
  const src = await createAdapter(m, 'source').predict(x);
  const bn = await createAdapter(m, 'bn-adapt').predict(x);
  assert.deepEqual(bn.logits.dims, [16, 10]);
  assert.notDeepEqual(bn.logits.data, src.logits.data);
  assert.throws(() => createAdapter(smallVit(), 'bn-adapt'), /BatchNormalization/);
});
