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

// Token cross-entropy: [N, T, C] logits of a per-position linear map, labels [N, T] with ignored positions.
const T = 3;
const XT = new Rng(13).fill(new Float32Array(N * T * D));
const tokenLabels = [0, 2, -100, 1, 1, 0, -100, -100, 2, 2, 0, 1];
function sequenceLinear() {
  const b = new ModelBuilder({ opset: 17 });
  b.input('x', 'float32', ['N', T, D]);
  b.initializer('w', f32([D, C], W.slice()));
  b.node('MatMul', ['x', 'w'], ['logits']);
  b.output('logits');
  return b.build();
}
/** The mean over labelled positions of −log softmax(z)[y], in float64. */
function tokenCe(lab: number[], ignore = -100): number {
  let s = 0, n = 0;
  for (let p = 0; p < N * T; p++) {
    if (lab[p] === ignore) continue;
    const z = Array.from({ length: C }, (_, c) => { let v = 0; for (let d = 0; d < D; d++) v += XT[p * D + d]! * W[d * C + c]!; return v; });
    const m = Math.max(...z), lse = m + Math.log(z.reduce((a, v) => a + Math.exp(v - m), 0));
    s += lse - z[lab[p]!]!;
    n++;
  }
  return n ? s / n : 0;
}
async function checkToken(name: string, loss: LossSpec, lab: number[], expected: number, gradient = true) {
  const feeds = { x: f32([N, T, D], XT), y: i64([N, T], lab) };
  const r = await new RefitModel(sequenceLinear()).compileTrainStep({ trainable: ['w'], loss }).run(feeds);
  assert.ok(Math.abs(r.loss - expected) <= 1e-5 * Math.max(1, Math.abs(expected)), `${name}: ${r.loss} vs ${expected}`);
  if (!gradient) return r;
  const [g] = await gradCheck(sequenceLinear(), feeds, { params: ['w'], loss });
  assert.ok(g!.relError < 1e-2, `${name} gradient: ${g!.relError}`);
  assert.ok(g!.analyticNorm > 0);
  return r;
}

test('token cross-entropy: [N, T, C] logits, the mean over labelled positions (ignoreIndex -100 as PyTorch)', async () => {
  await checkToken('token ce', losses.tokenCrossEntropy({ logits: 'logits' }), tokenLabels, tokenCe(tokenLabels));
  // Another pad label; -100 is then an error of the caller, so the labels use 0 as the pad.
  const padded = tokenLabels.map((v) => (v === -100 ? 0 : v + 1 > C - 1 ? C - 1 : v + 1));
  await checkToken('token ce, ignoreIndex 0', losses.tokenCrossEntropy({ logits: 'logits', ignoreIndex: 0 }), padded, tokenCe(padded, 0));
});

test('token cross-entropy: a batch with no labelled position has loss 0 and zero, finite gradients', async () => {
  const r = await checkToken('all ignored', losses.tokenCrossEntropy({ logits: 'logits' }), tokenLabels.map(() => -100), 0, false);
  const g = r.grads.get('w')!;
  assert.equal(g.length, D * C);
  assert.ok(g.every((v) => v === 0), 'every gradient is exactly 0');
});

test('token cross-entropy on [N, C] logits equals cross-entropy', async () => {
  const a = await valueOf(losses.tokenCrossEntropy({ logits: 'logits' }));
  assert.ok(Math.abs(a - (await valueOf(losses.crossEntropy({ logits: 'logits' })))) < 1e-6);
  assert.throws(() => losses.tokenCrossEntropy({ logits: 'logits', ignoreIndex: 0.5 }), /ignoreIndex must be an integer/);
});

test('binaryCrossEntropy matches PyTorch\'s F.binary_cross_entropy_with_logits (mean), with and without pos_weight, including a logit of −40', async () => {
  // z = x · w; reference values from PyTorch 1.13 in float64 (w.grad after backward).
  const b = new ModelBuilder({ opset: 17 });
  b.input('x', 'float32', [2, 3]).initializer('w', f32([3], [1, 0.5, -1])).node('Mul', ['x', 'w'], ['z']).output('z');
  const feeds = { x: f32([2, 3], [0.5, -2, 3, -40, 1.5, 0.25]), target: f32([2, 3], [1, 0, 0.3, 1, 0, 1]) };
  const cases: [number | undefined, number, number[]][] = [
    [undefined, 7.283122741544303, [6.635204944266821, 0.0801475343371832, -0.14971108428145818]],
    [2.5, 17.83677089392707, [16.588012360667054, 0.0801475343371832, -0.39917629412186806]],
  ];
  for (const [posWeight, loss, grad] of cases) {
    const r = await new RefitModel(b.build()).compileTrainStep({ trainable: ['w'], loss: losses.binaryCrossEntropy({ logits: 'z', ...(posWeight ? { posWeight } : {}) }) }).run(feeds);
    assert.ok(Math.abs(r.loss - loss) < 1e-5 * loss, `pos_weight ${posWeight}: loss ${r.loss} vs ${loss}`);
    const g = r.grads.get('w')!;
    grad.forEach((v, i) => assert.ok(Math.abs(g[i]! - v) < 1e-5 * Math.max(1, Math.abs(v)), `pos_weight ${posWeight}: grad ${i} ${g[i]} vs ${v}`));
  }
  assert.throws(() => losses.binaryCrossEntropy({ logits: 'z', posWeight: 0 }), /posWeight must be positive/);
});

test('binaryCrossEntropy on probabilities matches PyTorch\'s F.binary_cross_entropy; exact 0 and 1 read log −100 with finite gradients', async () => {
  // q = Sigmoid(x · w); reference values from PyTorch 1.13 in float64 (the logits form gives the same).
  const b = new ModelBuilder({ opset: 17 });
  b.input('x', 'float32', [2, 3]).initializer('w', f32([3], [1, 0.5, -1])).node('Mul', ['x', 'w'], ['z']).node('Sigmoid', ['z'], ['q']).output('q');
  const feeds = { x: f32([2, 3], [0.5, -2, 3, -4, 1.5, 0.25]), target: f32([2, 3], [1, 0, 0.3, 1, 0, 1]) };
  const r = await new RefitModel(b.build()).compileTrainStep({ trainable: ['w'], loss: losses.binaryCrossEntropy({ probabilities: 'q' }) }).run(feeds);
  assert.ok(Math.abs(r.loss - 1.2861477295306039) < 1e-5, `loss ${r.loss}`);
  [0.6232141376254269, 0.0801475343371832, -0.14971108428145818].forEach((v, i) => assert.ok(Math.abs(r.grads.get('w')![i]! - v) < 1e-5, `grad ${i} ${r.grads.get('w')![i]} vs ${v}`));
  // Probabilities of exactly 0 and 1 (q = x · w): PyTorch clamps each log at −100, loss 67.01324025694664.
  const e = new ModelBuilder({ opset: 17 });
  e.input('x', 'float32', [2, 3]).initializer('w', f32([3], [1, 1, 1])).node('Mul', ['x', 'w'], ['q']).output('q');
  const edge = await new RefitModel(e.build()).compileTrainStep({ trainable: ['w'], loss: losses.binaryCrossEntropy({ probabilities: 'q' }) })
    .run({ x: f32([2, 3], [0, 1, 0.5, 1, 0, 0.25]), target: f32([2, 3], [1, 0, 0.3, 0, 1, 1]) });
  assert.ok(Math.abs(edge.loss - 67.01324025694664) < 1e-4, `loss ${edge.loss}`);
  assert.ok(edge.grads.get('w')!.every(Number.isFinite), `finite gradients: ${edge.grads.get('w')}`);
  assert.throws(() => losses.binaryCrossEntropy({ probabilities: 'q', posWeight: 2 }), /posWeight needs logits/);
  assert.throws(() => losses.binaryCrossEntropy({ target: 'y' }), /exactly one of logits and probabilities/);
  assert.throws(() => losses.binaryCrossEntropy({ logits: 'z', probabilities: 'q' }), /exactly one of logits and probabilities/);
});

test('l1, smoothL1 and huber match PyTorch\'s F.l1_loss, F.smooth_l1_loss and F.huber_loss (mean), values and gradients; a zero difference has gradient 0', async () => {
  // z = x · w; reference values from PyTorch 1.13 in float64 (w.grad after backward).
  const b = new ModelBuilder({ opset: 17 });
  b.input('x', 'float32', [2, 3]).initializer('w', f32([3], [1, 0.5, -1])).node('Mul', ['x', 'w'], ['z']).output('z');
  const feeds = { x: f32([2, 3], [0.5, -2, 3, -4, 1.5, 0.25]), target: f32([2, 3], [1, 0, 0.3, 0, 1, 1]) };
  const cases: [string, ReturnType<typeof losses.l1>, number, number[]][] = [
    ['l1', losses.l1({ output: 'z' }), 1.7166666666666668, [0.5833333333333333, 0.08333333333333331, -0.5416666666666666]],
    ['smoothL1', losses.smoothL1({ output: 'z' }), 1.284375, [0.625, 0.2708333333333333, -0.5416666666666666]],
    ['smoothL1 β 0.5', losses.smoothL1({ output: 'z', beta: 0.5 }), 1.4770833333333335, [0.5833333333333333, 0.20833333333333331, -0.5416666666666666]],
    ['smoothL1 β 0 (l1)', losses.smoothL1({ output: 'z', beta: 0 }), 1.7166666666666668, [0.5833333333333333, 0.08333333333333331, -0.5416666666666666]],
    ['huber δ 2', losses.huber({ output: 'z', delta: 2 }), 2.00625, [1.2916666666666665, 0.2708333333333333, -1.0520833333333333]],
  ];
  for (const [name, loss, want, grad] of cases) {
    const r = await new RefitModel(b.build()).compileTrainStep({ trainable: ['w'], loss }).run(feeds);
    assert.ok(Math.abs(r.loss - want) < 1e-5 * want, `${name}: loss ${r.loss} vs ${want}`);
    grad.forEach((v, i) => assert.ok(Math.abs(r.grads.get('w')![i]! - v) < 1e-5 * Math.max(1, Math.abs(v)), `${name}: grad ${i} ${r.grads.get('w')![i]} vs ${v}`));
  }
  const zero = await new RefitModel(b.build()).compileTrainStep({ trainable: ['w'], loss: losses.l1({ output: 'z' }) })
    .run({ x: f32([2, 3], [1, 0, 0.3, 1, 0, 0.3]), target: f32([2, 3], [1, 0, -0.3, 1, 0, -0.3]) });
  assert.deepEqual([...zero.grads.get('w')!], [0, 0, 0], 'PyTorch: 0 where z = y');
  assert.throws(() => losses.smoothL1({ output: 'z', beta: -1 }), /beta must be ≥ 0/);
  assert.throws(() => losses.huber({ output: 'z', delta: 0 }), /delta must be positive/);
});
