// A TTA adapter's copy shares the source's frozen tensors (RefitModel.clone's copy-on-write,
// memory pass 2 in docs/speed.md): the same numbers as adapting a deep copy, the source never
// written, and writers on either side (setParams, a Trainer) never reach the other model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createAdapter } from '../../src/tta/index.ts';
import type { ParamAdapter } from '../../src/tta/common.ts';
import { RefitModel } from '../../src/model.ts';
import { Trainer } from '../../src/train/trainer.ts';
import * as losses from '../../src/train/losses.ts';
import * as optim from '../../src/train/optim/index.ts';
import { i64 } from '../../src/onnx/tensor.ts';
import { smallCnn, images } from './helpers.ts';

type PA = ParamAdapter<never>;
const x = images(16, 0, (v) => 1 - v);
const snapshot = (m: RefitModel) => new Map([...m.ir.graph.initializers].map(([k, t]) => [k, t.data.slice()]));
const equal = (a: ArrayLike<number | bigint>, b: ArrayLike<number | bigint>) => a.length === b.length && Array.prototype.every.call(a, (v: number | bigint, i: number) => Object.is(v, b[i]));
const frozenConv = (m: RefitModel) => m.parameterNames().find((p) => m.param(p).dims.length === 4)!;

test('tent shares the frozen tensors, owns its trainables, and computes what a deep copy computes', async () => {
  const source = smallCnn();
  const before = snapshot(source);
  const shared = createAdapter(source, 'tent', { lr: 0.01 }) as unknown as PA;
  const deep = createAdapter(source.clone(), 'tent', { lr: 0.01 }) as unknown as PA; // a private copy of everything
  const w = frozenConv(source);
  assert.equal(shared.model.param(w).data, source.param(w).data, 'a frozen conv weight is shared');
  for (const p of shared.trainable) assert.notEqual(shared.model.param(p).data, source.param(p).data, `${p} is the adapter's own`);
  for (let i = 0; i < 3; i++) {
    const a = await shared.predict(x), b = await deep.predict(x);
    assert.ok(equal(a.logits.data as Float32Array, b.logits.data as Float32Array), `logits of batch ${i}`);
    assert.equal(a.info.loss, b.info.loss);
  }
  for (const p of shared.trainable) assert.ok(equal(shared.model.param(p).data, deep.model.param(p).data), p);
  for (const [k, v] of before) assert.ok(equal(source.param(k).data, v), `source '${k}' unchanged`);
  shared.reset();
  for (const p of shared.trainable) assert.ok(equal(shared.model.param(p).data, before.get(p)!), `${p} reset`);
  await shared.release();
  await deep.release();
});

test('writes on either side stay there: setParams and a Trainer copy a shared tensor first', async () => {
  const source = smallCnn();
  const w = frozenConv(source);
  const w0 = source.param(w).data.slice();
  // A Trainer made before the adapter holds views of the source's arrays: the clone copies them.
  const trainer = new Trainer(source.compileTrainStep({ trainable: [w], loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }) }), optim.sgd({ lr: 0.1 }));
  const ad = createAdapter(source, 'tent', { lr: 0.01 }) as unknown as PA;
  assert.notEqual(ad.model.param(w).data, source.param(w).data, 'a parameter a Trainer writes is copied');
  const other = source.parameterNames().find((p) => p !== w && source.param(p).dims.length === 4)!;
  assert.equal(ad.model.param(other).data, source.param(other).data);
  await trainer.step({ x, y: i64([16], Array.from({ length: 16 }, (_, i) => i % 10)) });
  assert.ok(!equal(source.param(w).data, w0), 'the trainer moved the source');
  assert.ok(equal(ad.model.param(w).data, w0), "the adapter's copy did not move");
  // setParams on the source: the adapter keeps the old values.
  const o0 = source.param(other).data.slice();
  source.setParams({ [other]: new Float32Array(o0.length).fill(0.5) });
  assert.ok(equal(ad.model.param(other).data, o0));
  assert.equal(source.param(other).data[0], 0.5);
  // A Trainer on the adapter's copy after it was made: the source keeps its values.
  const third = source.parameterNames().find((p) => p !== w && p !== other && source.param(p).dims.length === 4)!;
  const t0 = source.param(third).data.slice();
  const t2 = new Trainer(ad.model.compileTrainStep({ trainable: [third], loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }) }), optim.sgd({ lr: 0.1 }));
  await t2.step({ x, y: i64([16], Array.from({ length: 16 }, (_, i) => i % 10)) });
  assert.ok(!equal(ad.model.param(third).data, t0));
  assert.ok(equal(source.param(third).data, t0), 'the source did not move');
  await ad.release();
});
