// Each loss: its value against a direct TypeScript computation, and its gradient against
// finite differences, with per-sample weights and masks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { RefitModel } from '../../src/model.ts';
import { gradCheck } from '../../src/autodiff/gradcheck.ts';
import * as losses from '../../src/train/losses.ts';
import type { LossSpec } from '../../src/train/loss-spec.ts';
import { f32, i64, type Tensor } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';

const N = 4, C = 3, D = 5;
const rng = new Rng(11);
const W = rng.fill(new Float32Array(D * C));
const X = rng.fill(new Float32Array(N * D));
const labels = [0, 2, 1, 2];
const soft = (() => { const t = new Rng(5).fill(new Float32Array(N * C), 1, 'uniform').map(Math.abs); for (let i = 0; i < N; i++) { let s = 0; for (let c = 0; c < C; c++) s += t[i * C + c]!; for (let c = 0; c < C; c++) t[i * C + c]! /= s; } return t; })();
const weights = [1, 0.5, 0, 2];

function linear() {
  const b = new ModelBuilder({ opset: 17 });
  b.input('x', 'float32', ['N', D]);
  b.initializer('w', f32([D, C], W.slice()));
  b.node('MatMul', ['x', 'w'], ['logits']);
  b.output('logits');
  return b.build();
}

const logits = (() => {
  const l = new Float64Array(N * C);
  for (let i = 0; i < N; i++) for (let c = 0; c < C; c++) for (let d = 0; d < D; d++) l[i * C + c]! += X[i * D + d]! * W[d * C + c]!;
  return l;
})();
const logSoftmax = (i: number) => {
  const row = Array.from({ length: C }, (_, c) => logits[i * C + c]!);
  const m = Math.max(...row), lse = m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0));
  return row.map((v) => v - lse);
};
const mean = (f: (i: number) => number, w?: number[], red: 'mean' | 'weighted' | 'sum' = 'mean') => {
  let s = 0, ws = 0;
  for (let i = 0; i < N; i++) { s += (w?.[i] ?? 1) * f(i); ws += w?.[i] ?? 1; }
  return red === 'sum' ? s : red === 'weighted' ? s / ws : s / N;
};

const feeds: Record<string, Tensor> = {
  x: f32([N, D], X), y: i64([N], labels), soft: f32([N, C], soft), w: f32([N], weights), target: f32([N, C], soft),
};

async function valueOf(loss: LossSpec): Promise<number> {
  const m = new RefitModel(linear());
  const step = m.compileTrainStep({ trainable: ['w'], loss });
  return (await step.run(feeds)).loss;
}

async function check(name: string, loss: LossSpec, expected: number) {
  const got = await valueOf(loss);
  assert.ok(Math.abs(got - expected) <= 1e-5 * Math.max(1, Math.abs(expected)), `${name}: ${got} vs ${expected}`);
  const [r] = await gradCheck(linear(), feeds, { params: ['w'], loss });
  assert.ok(r!.relError < 1e-2, `${name} gradient: ${r!.relError}`);
  assert.ok(r!.analyticNorm > 0);
}

test('cross-entropy with integer labels', () => check('ce', losses.crossEntropy({ logits: 'logits', labels: 'y' }), mean((i) => -logSoftmax(i)[labels[i]!]!)));
test('cross-entropy with soft targets and label smoothing', async () => {
  await check('ce soft', losses.crossEntropy({ logits: 'logits', labels: 'soft', soft: true }), mean((i) => -logSoftmax(i).reduce((s, l, c) => s + soft[i * C + c]! * l, 0)));
  await check('ce smooth', losses.crossEntropy({ logits: 'logits', labels: 'y', labelSmoothing: 0.1 }), mean((i) => -logSoftmax(i).reduce((s, l, c) => s + ((c === labels[i] ? 0.9 : 0) + 0.1 / C) * l, 0)));
});
test('per-sample weights: mean, weighted and sum reductions; a 0 weight masks a sample', async () => {
  const ce = (i: number) => -logSoftmax(i)[labels[i]!]!;
  for (const red of ['mean', 'weighted', 'sum'] as const) await check(`ce ${red}`, losses.crossEntropy({ logits: 'logits', labels: 'y', weights: 'w', reduction: red }), mean(ce, weights, red));
});
test('softmax entropy (weighted)', () => check('entropy', losses.softmaxEntropy({ logits: 'logits', weights: 'w' }), mean((i) => -logSoftmax(i).reduce((s, l) => s + Math.exp(l) * l, 0), weights)));
test('symmetric cross-entropy against teacher probabilities', () => check('sce', losses.symmetricCrossEntropy({ logits: 'logits', teacher: 'soft' }),
  mean((i) => { const lp = logSoftmax(i); return 0.5 * -lp.reduce((s, l, c) => s + soft[i * C + c]! * l, 0) + 0.5 * -lp.reduce((s, l, c) => s + Math.exp(l) * Math.log(soft[i * C + c]!), 0); })));
test('KL divergence', () => check('kl', losses.klDivergence({ logits: 'logits', target: 'soft' }), mean((i) => logSoftmax(i).reduce((s, l, c) => s + soft[i * C + c]! * (Math.log(soft[i * C + c]!) - l), 0))));
test('MSE', () => check('mse', losses.mse({ output: 'logits', target: 'target' }), mean((i) => Array.from({ length: C }, (_, c) => (logits[i * C + c]! - soft[i * C + c]!) ** 2).reduce((a, b) => a + b, 0) / C)));
test('anchor (L2) and Fisher-weighted penalties combine with a task loss', async () => {
  const anchor = W.map((v) => v + 0.1);
  const fisher = new Float32Array(W.length).map((_, i) => (i % 3) + 1);
  const ce = mean((i) => -logSoftmax(i)[labels[i]!]!);
  const l2 = W.reduce((s, v, i) => s + (v - anchor[i]!) ** 2, 0);
  const fw = W.reduce((s, v, i) => s + fisher[i]! * (v - anchor[i]!) ** 2, 0);
  await check('l2', losses.combine([{ loss: losses.crossEntropy({ logits: 'logits' }) }, { loss: losses.anchorPenalty({ anchors: new Map([['w', anchor]]), strength: 0.5 }) }]), ce + 0.5 * l2);
  await check('fisher', losses.combine([{ loss: losses.crossEntropy({ logits: 'logits' }) }, { loss: losses.anchorPenalty({ anchors: new Map([['w', anchor]]), importance: new Map([['w', fisher]]), strength: 2 }), weight: 0.5 }]), ce + fw);
});
