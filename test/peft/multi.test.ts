// Several adapters on one model: per-request blends from one session, combining LoRAs,
// training through the compiled step, and accounting.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as losses from '../../src/train/losses.ts';
import * as optim from '../../src/train/optim/index.ts';
import { Trainer } from '../../src/train/trainer.ts';
import { i64 } from '../../src/onnx/tensor.ts';
import { withAdapter, lora, ia3, bitfit, head, combineAdapters, accounting } from '../../src/peft/index.ts';
import { smallVit, images, maxDiff, perturb } from './helpers.ts';

test('runMix: one session serves any blend; {a: 1} equals adapter a alone, {a: w, b: v} is the weighted sum', async () => {
  const base = smallVit();
  let p = withAdapter(base, 'a', lora({ targets: /attn\.(q|v)$/, rank: 2, seed: 1 }));
  p = p.withAdapter('b', lora({ targets: /attn\.q$|fc1/, rank: 3, seed: 2 }));
  p = p.withAdapter('c', ia3({ targets: /attn\.k$/ }));
  perturb(p, 'a', 0.1, 1); perturb(p, 'b', 0.1, 2); perturb(p, 'c', 0.1, 3);
  const x = images(2);
  const onlyA = (await p.removeAdapter('b').removeAdapter('c').run({ x })).logits;
  const y0 = (await base.run({ x })).logits;
  assert.ok(maxDiff(await p.runMix({ x }, { a: 1 }).then((r) => r.logits), onlyA) <= 1e-5);
  assert.ok(maxDiff(await p.runMix({ x }, {}).then((r) => r.logits), y0) <= 1e-5);
  assert.ok(maxDiff(await p.runMix({ x }, { a: 1, b: 1, c: 1 }).then((r) => r.logits), (await p.run({ x })).logits) <= 1e-5);
  // LoRA deltas add: compare pre-softmax-free outputs at a LoRA-only layer via features
  const f = async (w: Record<string, number>) => (await p.runMix({ x }, w, { outputs: ['blocks.0.attn.q/Add'] }))['blocks.0.attn.q/Add']!;
  const [fa, fb, f0, fab] = await Promise.all([f({ a: 1 }), f({ b: 1 }), f({}), f({ a: 0.3, b: 0.7 })]);
  const lin = (fa.data as Float32Array).map((v, i) => (fb.data as Float32Array)[i]! * 0.7 + v * 0.3);
  assert.ok(maxDiff(fab, lin) <= 1e-5 && maxDiff(fab, f0) > 1e-3);
  // concurrent requests with different blends get their own weights
  const [r1, r2] = await Promise.all([p.runMix({ x }, { a: 1 }), p.runMix({ x }, {})]);
  assert.ok(maxDiff(r1.logits, onlyA) <= 1e-5 && maxDiff(r2.logits, y0) <= 1e-5);
  await assert.rejects(p.runMix({ x }, { zz: 1 }), /no active adapter 'zz'/);
  await p.release();
});

test('combine: linear is exact; SVD at full rank is exact; TIES and DARE are seeded and rank r', async () => {
  const base = smallVit();
  let p = withAdapter(base, 'a', lora({ targets: /attn\.(q|v)$/, rank: 2, alpha: 4, seed: 1 }));
  p = p.withAdapter('b', lora({ targets: /attn\.q$/, rank: 3, alpha: 3, rsLora: true, seed: 2 }));
  perturb(p, 'a', 0.1, 1); perturb(p, 'b', 0.1, 2);
  const x = images(2);
  const target = (await p.runMix({ x }, { a: 0.5, b: 2 })).logits;
  const lin = combineAdapters(p, 'lin', { adapters: { a: 0.5, b: 2 }, method: 'linear' });
  assert.equal(lin.planOf('lin').fileConfig.r, 5);
  assert.ok(maxDiff((await lin.runMix({ x }, { lin: 1 })).logits, target) <= 1e-4);
  const sv = combineAdapters(p, 'svd', { adapters: { a: 0.5, b: 2 }, method: 'svd', rank: 5 });
  assert.ok(maxDiff((await sv.runMix({ x }, { svd: 1 })).logits, target) <= 1e-4);
  const sv2 = combineAdapters(p, 'svd', { adapters: { a: 0.5, b: 2 }, method: 'svd', rank: 2 });
  assert.deepEqual(sv2.param('svd.lora_A.blocks.0.attn.q').dims, [2, 32]);
  for (const method of ['ties', 'dare'] as const) {
    const m1 = combineAdapters(p, 'm', { adapters: { a: 1, b: 1 }, method, density: 0.5, seed: 4 });
    const m2 = combineAdapters(p, 'm', { adapters: { a: 1, b: 1 }, method, density: 0.5, seed: 4 });
    assert.deepEqual(m1.param('m.lora_B.blocks.0.attn.q').data, m2.param('m.lora_B.blocks.0.attn.q').data);
    const y = (await m1.runMix({ x }, { m: 1 })).logits;
    assert.ok(maxDiff(y, (await base.run({ x })).logits) > 1e-4);
  }
  assert.throws(() => combineAdapters(p.withAdapter('i', ia3({ targets: 'k' })), 'z', { adapters: { i: 1 }, method: 'linear' }), /only active LoRA adapters/);
});

test('training LoRA + a new head through the compiled step lowers the loss; the base weights stay put', async () => {
  const base = smallVit();
  const p = withAdapter(base, 'task', lora({ targets: /attn\.(q|v)$/, rank: 4, alpha: 8, loraPlusRatio: 4 })).withAdapter('cls', head({ classes: 3 }));
  const step = p.compileTrainStep({ trainable: p.trainableNames(), loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }) });
  const trainer = new Trainer(step, optim.adamw({ lr: 1e-2, groups: p.paramGroups() }));
  const x = images(8), y = i64([8], [0, 1, 2, 0, 1, 2, 0, 1]);
  const w = base.param('blocks.0.attn.q.weight').data.slice();
  const first = (await trainer.step({ x, y })).loss;
  let last = first;
  for (let i = 0; i < 30; i++) last = (await trainer.step({ x, y })).loss;
  assert.ok(last < first * 0.5, `loss ${first} → ${last}`);
  assert.deepEqual(base.param('blocks.0.attn.q.weight').data, w);
  assert.ok((p.param('task.lora_B.blocks.0.attn.q').data as Float32Array).some((v) => v !== 0));
  await step.release();
});

test('accounting: trainable count and share, optimizer state, file size', () => {
  const p = withAdapter(smallVit(), 'a', lora({ targets: /attn\.(q|v)$/, rank: 4 })).withAdapter('b', bitfit());
  const a = accounting(p, 'a');
  assert.equal(a.trainableParams, 2 * (4 * 32 + 32 * 4));
  assert.equal(a.optimizerStateBytes, a.trainableParams * 8);
  assert.equal(accounting(p, 'a', { optimizer: 'sgd' }).optimizerStateBytes, 0);
  assert.ok(Math.abs(a.trainablePercent - (100 * a.trainableParams) / a.baseParams) < 1e-9);
  assert.ok(a.adapterFileBytes > a.trainableParams * 4);
  const all = accounting(p);
  assert.ok(all.trainableParams > a.trainableParams);
});
