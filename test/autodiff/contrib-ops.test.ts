// onnxruntime's com.microsoft fused ops unfused into standard ops (src/autodiff/lower/contrib.ts):
// the unfused forward equals onnxruntime's fused kernel, and gradients through it pass finite differences.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tensor } from '../../src/onnx/tensor.ts';
import { gradCheck } from '../../src/autodiff/gradcheck.ts';
import { RefitModel } from '../../src/model.ts';
import { buildStepGraph } from '../../src/train/step-graph.ts';
import { randomProjectionLoss } from '../../src/autodiff/gradcheck.ts';
import { signatureOf } from '../../src/onnx/shapes.ts';
import { forwardGap, oneOp, lowered, runModel, maxAbsDiff, type OneOp } from './lower-helpers.ts';

const MS = 'com.microsoft';
const B = 2, S = 5, D = 8;
const padMask = tensor('int32', [B, S], [1, 1, 1, 0, 0, 1, 1, 1, 1, 1]);
const mask3 = tensor('int32', [B, S, S], Array.from({ length: B * S * S }, (_, i) => ((i * 7) % 3 ? 1 : 0)));
const attn = (extra: [string, number[] | ReturnType<typeof tensor>][], attrs: Record<string, number | number[]>, w = 3 * D): OneOp =>
  ({ op: 'Attention', domain: MS, inputs: [['x', [B, S, D]], ['w', [D, w]], ['b', [w]], ...extra], outputs: ['y'], attrs: attrs as never });

const CASES: [string, OneOp][] = [
  ['Gelu', { op: 'Gelu', domain: MS, inputs: [['x', [B, S, D]]], outputs: ['y'], feed: '' }],
  ['FastGelu with bias', { op: 'FastGelu', domain: MS, inputs: [['x', [B, S, D]], ['b', [D]]], outputs: ['y'] }],
  ['FastGelu', { op: 'FastGelu', domain: MS, inputs: [['x', [B, S, D]]], outputs: ['y'], feed: '' }],
  ['BiasGelu', { op: 'BiasGelu', domain: MS, inputs: [['x', [B, S, D]], ['b', [D]]], outputs: ['y'] }],
  ['QuickGelu', { op: 'QuickGelu', domain: MS, inputs: [['x', [B, S, D]]], outputs: ['y'], feed: '' }],
  ['QuickGelu alpha 1.5', { op: 'QuickGelu', domain: MS, inputs: [['x', [B, S, D]]], outputs: ['y'], attrs: { alpha: 1.5 }, feed: '' }],
  ['SkipLayerNormalization (beta, bias, sum output)', { op: 'SkipLayerNormalization', domain: MS, inputs: [['x', [B, S, D]], ['s', [B, S, D]], ['g', [D]], ['be', [D]], ['bias', [D]]], outputs: ['y', '', '', 'sum'], attrs: { epsilon: 1e-5 } }],
  ['SkipLayerNormalization (gamma only, opset 13: primitives)', { op: 'SkipLayerNormalization', domain: MS, inputs: [['x', [B, S, D]], ['s', [B, S, D]], ['g', [D]]], outputs: ['y'], opset: 13 }],
  ['SkipSimplifiedLayerNormalization', { op: 'SkipSimplifiedLayerNormalization', domain: MS, inputs: [['x', [B, S, D]], ['s', [B, S, D]], ['g', [D]], ['bias', [D]]], outputs: ['y', '', '', 'sum'], attrs: { epsilon: 1e-6 } }],
  ['SimplifiedLayerNormalization (RMSNorm)', { op: 'SimplifiedLayerNormalization', inputs: [['x', [B, S, D]], ['g', [D]]], outputs: ['y'], attrs: { epsilon: 1e-6, axis: -1 } }],
  ['Attention', attn([], { num_heads: 2 })],
  ['Attention unidirectional', attn([], { num_heads: 2, unidirectional: 1 })],
  ['Attention raw 2-D mask', attn([['m', padMask]], { num_heads: 2 })],
  ['Attention raw 2-D mask, unidirectional', attn([['m', padMask]], { num_heads: 2, unidirectional: 1 })],
  ['Attention right-padding lengths', attn([['m', tensor('int32', [B], [3, 5])]], { num_heads: 4 })],
  ['Attention raw 3-D mask', attn([['m', mask3]], { num_heads: 2 })],
  ['Attention qkv_hidden_sizes, scale', attn([], { num_heads: 2, qkv_hidden_sizes: [D, D, 4], scale: 0.3 }, 2 * D + 4)],
];

test('each unfused com.microsoft op equals onnxruntime\'s fused kernel (≤1e-5)', async () => {
  for (const [label, spec] of CASES) {
    const { gap, count } = await forwardGap(spec);
    assert.equal(count, 1, `${label}: not lowered`);
    assert.ok(gap <= 1e-5, `${label}: max |diff| ${gap}`);
  }
});

test('the masks matter: the masked Attention output differs from the unmasked one (the check above is not vacuous)', async () => {
  const plain = oneOp(attn([], { num_heads: 2 }));
  const masked = oneOp(attn([['m', padMask]], { num_heads: 2 }));
  const a = (await runModel(plain.model, plain.feeds)).get('y')!, b = (await runModel(masked.model, masked.feeds)).get('y')!;
  assert.ok(maxAbsDiff(a, b) > 1e-3);
});

test('the forward check catches a wrong unfusing: Attention unfused without the causal mask misses onnxruntime\'s unidirectional kernel', async () => {
  const ref = oneOp(attn([], { num_heads: 2, unidirectional: 1 }));
  const want = (await runModel(ref.model, ref.feeds)).get('y')!;
  const wrong = oneOp(attn([], { num_heads: 2 }));
  const { model } = await lowered(wrong.model, wrong.feeds, wrong.params);
  const got = (await runModel(model, wrong.feeds)).get('y')!;
  assert.ok(maxAbsDiff(got, want) > 1e-3);
});

test('finite differences through the unfused ops w.r.t. every float input', async () => {
  for (const [label, spec] of CASES.filter(([l]) => /^(FastGelu with|BiasGelu|QuickGelu$|SkipLayerNormalization \(beta|SkipSimplified|SimplifiedLayer|Attention raw 2-D mask, uni)/.test(l))) {
    const { model, feeds, params } = oneOp({ ...spec, feed: '' });
    const reports = await gradCheck(model, feeds, { params, outputs: spec.outputs.filter(Boolean), maxElements: 24 });
    for (const r of reports) {
      assert.ok(r.relError <= 1e-2, `${label} d/d${r.param}: relative error ${r.relError.toExponential(2)}`);
      assert.ok(r.analyticNorm > 0, `${label} d/d${r.param}: zero gradient`);
    }
  }
});

test('fused ops off the gradient path stay fused; unsupported forms are refused by name', async () => {
  const spec = { ...attn([], { num_heads: 2 }), feed: '' };
  const { model, feeds } = oneOp(spec);
  const kept = await buildStepGraph(model, signatureOf(feeds), { trainable: [], loss: randomProjectionLoss(['y'], 1) });
  assert.equal(kept.model.graph.nodes.filter((n) => n.opType === 'Attention').length, 1);
  const unfused = await buildStepGraph(model, signatureOf(feeds), { trainable: ['w'], loss: randomProjectionLoss(['y'], 1) });
  assert.equal(unfused.model.graph.nodes.filter((n) => n.opType === 'Attention').length, 0);
  const withPresent = oneOp({ ...attn([], { num_heads: 2 }), outputs: ['y', 'present'] });
  const m = new RefitModel(withPresent.model, { threads: 1 });
  const step = m.compileTrainStep({ trainable: ['w'], loss: randomProjectionLoss(['y'], 1) });
  await assert.rejects(step.run(withPresent.feeds), /Attention node 'node_under_test': output present/);
});
