// Dynamic evaluation (src/tta/dynamic-eval.ts) on the zoo's GPT-2-structured decoder as optimum
// merges it (a KV cache; withTokenInputs runs it without one): each batch is scored before the
// update, then one SGD step on the batch's own next-token loss, with the decay toward the source.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel, type RefitModel } from '../../src/model.ts';
import { withTokenInputs } from '../../src/onnx/token-companions.ts';
import { createAdapter, DynamicEval } from '../../src/tta/index.ts';
import { tensorOf, type Tensor } from '../../src/onnx/tensor.ts';
import * as losses from '../../src/train/losses.ts';

const path = new URL('../fixtures/zoo/gpt2_merged/model.onnx', import.meta.url).pathname;
const B = 2, T = 6, V = 40;
const ids = (seed: number) => tensorOf('int64', [B, T], (i) => (seed * 7 + i * 5 + Math.floor(i / T)) % 29);

async function lm(): Promise<RefitModel> {
  return withTokenInputs(await loadModel(path, { threads: 1 }));
}

/** Mean next-token negative log-likelihood of `x` under `logits` [B, T, V], leaving out positions whose next token is `pad`. */
function nll(logits: Tensor, x: Tensor, pad?: number): number {
  const z = logits.data as Float32Array;
  let sum = 0, n = 0;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T - 1; t++) {
      const y = Number(x.data[b * T + t + 1]);
      if (y === pad) continue;
      const row = z.subarray((b * T + t) * V, (b * T + t + 1) * V);
      const m = Math.max(...row);
      const lse = m + Math.log(row.reduce((a, v) => a + Math.exp(v - m), 0));
      sum += lse - row[y]!;
      n++;
    }
  }
  return sum / n;
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => { let m = 0; for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!)); return m; };

test('dynamic-eval scores a batch before adapting, then takes θ − η∇L + λ(θ₀ − θ) on its next-token loss', async () => {
  const model = await lm();
  const x = ids(1);
  const src = (await model.run({ input_ids: x }))['logits']!;
  // The gradient the update must use: the next-token loss of x, computed by a plain step.
  const labels = tensorOf('int64', [B, T], (i) => (i % T === T - 1 ? -100 : Number(x.data[i + 1])));
  const plain = model.compileTrainStep({ trainable: 'all', loss: losses.tokenCrossEntropy({ logits: 'logits', labels: 'y' }), outputs: ['logits'] });
  const ref = await plain.run({ input_ids: x, y: labels });
  await plain.release();
  const lr = 0.05, decay = 0.25;
  const a = new DynamicEval(model, { lr, decay });
  const r = await a.predict(x);
  assert.ok(maxDiff(r.logits.data as Float32Array, src.data as Float32Array) < 1e-5, 'the prediction comes before the update');
  assert.ok(Math.abs(r.info.loss! - nll(src, x)) < 1e-5, `loss ${r.info.loss} against ${nll(src, x)}`);
  assert.equal(r.info.used, B);
  for (const p of ['transformer.h.0.attn.c_attn.weight', 'transformer.ln_f.weight']) {
    const before = model.param(p).data as Float32Array;
    const after = a.model.param(p).data as Float32Array;
    const g = ref.grads.get(p)!;
    const want = Float32Array.from(before, (v, i) => { const s = v - lr * g[i]!; return s + decay * (v - s); });
    assert.ok(maxDiff(after, want) < 1e-6, `${p}: ${maxDiff(after, want)}`);
  }
  // The same text again: more likely now.
  const r2 = await a.predict(x);
  assert.ok(r2.info.loss! < r.info.loss!, `${r2.info.loss} after adapting, ${r.info.loss} before`);
  // reset: back to the source
  a.reset();
  const r3 = await a.predict(x);
  assert.ok(Math.abs(r3.info.loss! - r.info.loss!) < 1e-5);
  await a.release();
  await model.release();
});

test('dynamic-eval: padding gets no label, decay 1 returns to the source after every step, save/load continues exactly', async () => {
  const model = await lm();
  const x = tensorOf('int64', [B, T], (i) => (i % T >= T - 2 && i >= T ? 0 : 1 + ((i * 5) % 28))); // row 1 ends in two pads (token 0)
  const a = createAdapter(model, 'dynamic-eval', { padToken: 0, decay: 1, lr: 0.05 });
  const src = (await model.run({ input_ids: x }))['logits']!;
  const r = await a.predict(x);
  assert.ok(Math.abs(r.info.loss! - nll(src, x, 0)) < 1e-5, `loss ${r.info.loss} against ${nll(src, x, 0)} without the pads`);
  const r2 = await a.predict(x);
  assert.ok(maxDiff(r2.logits.data as Float32Array, src.data as Float32Array) < 1e-5, 'decay 1: the parameters are the source again');
  await a.release();

  const b = new DynamicEval(model, { lr: 0.05 });
  const c = new DynamicEval(model, { lr: 0.05 });
  await b.predict(ids(2));
  await c.load(await b.save());
  const nb = await b.predict(ids(3)), nc = await c.predict(ids(3));
  assert.equal(nb.info.loss, nc.info.loss);
  await Promise.all([b.release(), c.release(), model.release()]);
});

test('dynamic-eval refuses a classifier; the classifier methods refuse a language model', async () => {
  const cls = await loadModel(new URL('../fixtures/zoo/bert/model.onnx', import.meta.url).pathname, { threads: 1 });
  assert.throws(() => createAdapter(withTokenInputs(cls), 'dynamic-eval'), /dynamic-eval adapts language models: output 'logits' must be \[batch, sequence, vocabulary\] logits, and it has 2 dims/);
  const model = await lm();
  assert.throws(() => createAdapter(model, 'tent'), /tent: output 'logits' has 3 dims/);
  await Promise.all([cls.release(), model.release()]);
});

test('dynamic-eval\'s guard: a loss that jumps past resetAbove × its average sends the parameters back to the source', async () => {
  const model = await lm();
  const src = nll((await model.run({ input_ids: ids(1) }))['logits']!, ids(1));
  const losses = async (resetAbove: number) => {
    const a = new DynamicEval(model, { lr: 50, resetAbove });
    const out: { loss: number; resets: number; diverged?: number }[] = [];
    for (let k = 0; k < 6; k++) {
      const r = await a.predict(ids(1 + (k % 2)));
      out.push({ loss: r.info.loss!, resets: r.info.resets, ...(r.info.extra?.diverged ? { diverged: 1 } : {}) });
    }
    await a.release();
    return out;
  };
  const off = await losses(0);
  assert.ok(off.slice(1).some((r) => !(r.loss < 3 * src)), `without the guard lr 50 blows up: ${off.map((r) => r.loss.toFixed(2))} (source ${src.toFixed(2)})`);
  const on = await losses(2);
  const hit = on.findIndex((r) => r.diverged);
  assert.ok(hit > 0, `the guard fired: ${JSON.stringify(on)}`);
  assert.equal(on[hit]!.resets, 1);
  assert.ok(Math.abs(on[hit + 1]!.loss - nll((await model.run({ input_ids: ids(1 + ((hit + 1) % 2)) }))['logits']!, ids(1 + ((hit + 1) % 2)))) < 1e-4, 'the batch after the reset is scored by the source');
  await assert.rejects(async () => new DynamicEval(model, { resetAbove: 0.5 }), /resetAbove/);
  await model.release();
});
