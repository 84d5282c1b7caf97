// refit's loss and gradients against PyTorch on three real exported models (fixtures made by
// test/fixtures/torch/make_fixtures.py with Debian's torch 1.13).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { loadModel } from '../src/model.ts';
import { parseSafetensors } from '../src/io/safetensors.ts';
import * as losses from '../src/train/losses.ts';
import type { Tensor } from '../src/onnx/tensor.ts';
import { assertCloseToTorch } from './helpers/close.ts';

const dir = new URL('./fixtures/torch/', import.meta.url);

async function load(name: string) {
  const model = await loadModel(new URL(`${name}/model.onnx`, dir).pathname, { threads: 1 });
  const { tensors } = parseSafetensors(readFileSync(new URL(`${name}/tensors.safetensors`, dir)));
  const meta = JSON.parse(readFileSync(new URL(`${name}/meta.json`, dir), 'utf8'));
  return { model, tensors, meta };
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
    assertCloseToTorch(`${name} grad ${p}`, g, t);
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
    assertCloseToTorch(k, got, t);
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
