// refit's loss and gradients against PyTorch on three real exported models (fixtures made by
// test/fixtures/torch/make_fixtures.py with Debian's torch 1.13).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { loadModel } from '../src/model.ts';
import { parseSafetensors } from '../src/io/safetensors.ts';
import * as losses from '../src/train/losses.ts';
import type { Tensor } from '../src/onnx/tensor.ts';

const dir = new URL('./fixtures/torch/', import.meta.url);

async function load(name: string) {
  const model = await loadModel(new URL(`${name}/model.onnx`, dir).pathname, { threads: 1 });
  const { tensors } = parseSafetensors(readFileSync(new URL(`${name}/tensors.safetensors`, dir)));
  const meta = JSON.parse(readFileSync(new URL(`${name}/meta.json`, dir), 'utf8'));
  return { model, tensors, meta };
}

/** ‖a − b‖ / ‖b‖ ≤ 1e-4, or an absolute floor for tensors PyTorch computes as (numerically) zero. */
function assertClose(name: string, actual: Float32Array, expected: Tensor, rel = 1e-4, absFloor = 1e-6) {
  const e = expected.data as Float32Array;
  assert.equal(actual.length, e.length, `${name}: length`);
  let d2 = 0, e2 = 0;
  for (let i = 0; i < e.length; i++) { d2 += (actual[i]! - e[i]!) ** 2; e2 += e[i]! ** 2; }
  const err = Math.sqrt(d2), norm = Math.sqrt(e2);
  assert.ok(err <= rel * norm || err <= absFloor * Math.sqrt(e.length), `${name}: ‖diff‖ ${err.toExponential(2)} vs ‖ref‖ ${norm.toExponential(2)}`);
}

function batchOf(tensors: Map<string, Tensor>, withLabels: boolean): Record<string, Tensor> {
  const b: Record<string, Tensor> = {};
  for (const [k, t] of tensors) if (k.startsWith('input.')) b[k.slice(6)] = t;
  if (withLabels) b.y = tensors.get('label.y')!;
  return b;
}

async function checkGrads(name: string, opts: { batchNorm?: 'train' | 'eval'; gradPrefix?: string; lossKey?: string; entropy?: boolean }) {
  const { model, tensors } = await load(name);
  const loss = opts.entropy ? losses.softmaxEntropy({ logits: 'logits' }) : losses.crossEntropy({ logits: 'logits', labels: 'y' });
  const step = model.compileTrainStep({ trainable: 'all', loss, batchNorm: opts.batchNorm ?? 'eval', outputs: ['logits'] });
  const r = await step.run(batchOf(tensors, !opts.entropy));
  const refLoss = (tensors.get(opts.lossKey ?? 'loss')!.data as Float32Array)[0]!;
  assert.ok(Math.abs(r.loss - refLoss) <= 1e-4 * Math.abs(refLoss) + 1e-6, `${name} loss ${r.loss} vs ${refLoss}`);
  const prefix = opts.gradPrefix ?? 'grad.';
  let n = 0;
  for (const [k, t] of tensors) {
    if (!k.startsWith(prefix)) continue;
    const p = k.slice(prefix.length);
    const g = r.grads.get(p);
    assert.ok(g, `${name}: refit computed no gradient for '${p}'`);
    assertClose(`${name} grad ${p}`, g, t);
    n++;
  }
  assert.ok(n > 0);
  await step.release();
  return { r, tensors, model };
}

test('MLP (Gemm, ReLU, erf GELU): loss and every gradient match PyTorch', async () => {
  await checkGrads('mlp', {});
});

test('Transformer (Gather embedding, LayerNorm, attention, GELU, mean pool): loss and gradients match PyTorch', async () => {
  await checkGrads('transformer', {});
});

test('ResNet-style CNN, BatchNorm in training mode: gradients and updated running statistics match PyTorch', async () => {
  const { r, tensors } = await checkGrads('cnn', { batchNorm: 'train' });
  let n = 0;
  for (const [k, t] of tensors) {
    const m = /^running_(mean|var)\.(.*)$/.exec(k);
    if (!m) continue;
    const got = r.runningStats.get(m[2]!);
    assert.ok(got, `no updated running statistic for ${m[2]}`);
    assertClose(k, got, t);
    n++;
  }
  assert.equal(n, 12);
});

test('ResNet-style CNN, BatchNorm in inference mode: gradients match PyTorch', async () => {
  await checkGrads('cnn', { batchNorm: 'eval', gradPrefix: 'grad_eval.', lossKey: 'loss_eval' });
});

test('softmax-entropy loss on the CNN matches PyTorch', async () => {
  await checkGrads('cnn_softent', { entropy: true });
});
