// The standard domain's Attention and RotaryEmbedding (opsets 23 and 24: PyTorch's exporter writes
// Attention for scaled_dot_product_attention) written as ops with gradient rules
// (src/autodiff/lower/onnx-attention.ts): the forward equals onnxruntime's kernel, including
// masks, the causal triangle, grouped-query heads, a past, softcap and a fully masked row, and
// gradients through it pass finite differences.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tensor } from '../../src/onnx/tensor.ts';
import { gradCheck, randomProjectionLoss } from '../../src/autodiff/gradcheck.ts';
import { RefitModel } from '../../src/model.ts';
import { oneOp, lowered, runModel, maxAbsDiff, type OneOp, assertLowersLikeOrt } from './lower-helpers.ts';

const B = 2, S = 4, L = 6, d = 4;
const bool = (dims: number[], f: (i: number) => boolean) => tensor('bool', dims, Array.from({ length: dims.reduce((a, b) => a * b) }, (_, i) => (f(i) ? 1 : 0)));

/** Attention on 4-D Q [B, Hq, S, d], K/V [B, Hkv, L, d] (or 3-D with heads as attributes), opset 23. */
const att = (q: number[], k: number[], v: number[], extra: [string, number[] | ReturnType<typeof tensor>][] = [], attrs: Record<string, unknown> = {}, outputs = ['y']): OneOp =>
  ({ op: 'Attention', opset: 23, feed: '', outputs, attrs: attrs as never, inputs: [['q', q], ['k', k], ['v', v], ...extra] });
const f = (v: number) => ({ kind: 'float', value: v });

const CASES: [string, OneOp][] = [
  ['4-D self-attention', att([B, 2, S, d], [B, 2, S, d], [B, 2, S, d])],
  ['4-D cross-attention, scale', att([B, 2, S, d], [B, 2, L, d], [B, 2, L, 3], [], { scale: f(0.3) })],
  ['causal', att([B, 2, S, d], [B, 2, S, d], [B, 2, S, d], [], { is_causal: 1 })],
  ['grouped-query: 4 query heads, 2 key-value heads, causal', att([B, 4, S, d], [B, 2, S, d], [B, 2, S, d], [], { is_causal: 1 })],
  ['3-D with q_num_heads / kv_num_heads (GQA)', att([B, S, 4 * d], [B, L, 2 * d], [B, L, 2 * 3], [], { q_num_heads: 4, kv_num_heads: 2 })],
  ['bool mask [B, 1, S, L]', att([B, 2, S, d], [B, 2, L, d], [B, 2, L, d], [['m', bool([B, 1, S, L], (i) => i % 5 !== 2)]])],
  ['float additive mask [S, L] with -inf', att([B, 2, S, d], [B, 2, L, d], [B, 2, L, d], [['m', tensor('float32', [S, L], Array.from({ length: S * L }, (_, i) => (i % 7 === 3 ? -Infinity : (i % 3) * 0.25)))]])],
  ['bool mask and causal', att([B, 2, S, d], [B, 2, S, d], [B, 2, S, d], [['m', bool([S, S], (i) => i !== 4)]], { is_causal: 1 })],
  ['a fully masked row gives 0', att([B, 2, S, d], [B, 2, L, d], [B, 2, L, d], [['m', bool([S, L], (i) => Math.floor(i / L) !== 1)]])],
  ['past key and value, causal offset, present outputs', att([B, 2, S, d], [B, 2, S, d], [B, 2, S, d], [['', []], ['pk', [B, 2, 3, d]], ['pv', [B, 2, 3, d]]], { is_causal: 1 }, ['y', 'pk_out', 'pv_out'])],
  ['softcap', att([B, 2, S, d], [B, 2, L, d], [B, 2, L, d], [], { softcap: f(2) })],
];

/** RotaryEmbedding (opset 23): input, cos_cache, sin_cache, position_ids. */
const rope = (input: number[], half: number, withPositions: boolean, attrs: Record<string, number> = {}): OneOp => ({
  op: 'RotaryEmbedding', opset: 23, outputs: ['y'], feed: '', attrs: attrs as never,
  inputs: withPositions
    ? [['x', input], ['cos', tensor('float32', [8, half], Array.from({ length: 8 * half }, (_, i) => Math.cos(i * 0.37)))], ['sin', tensor('float32', [8, half], Array.from({ length: 8 * half }, (_, i) => Math.sin(i * 0.37)))], ['pos', tensor('int64', [B, S], [0, 1, 2, 3, 2, 3, 4, 5])]]
    : [['x', input], ['cos', tensor('float32', [B, S, half], Array.from({ length: B * S * half }, (_, i) => Math.cos(i * 0.21)))], ['sin', tensor('float32', [B, S, half], Array.from({ length: B * S * half }, (_, i) => Math.sin(i * 0.21)))]],
});
const ROPE: [string, OneOp][] = [
  ['RotaryEmbedding [B, N, S, H], position ids', rope([B, 2, S, 8], 4, true)],
  ['RotaryEmbedding [B, S, N·H], num_heads, interleaved, half the head rotated', rope([B, S, 16], 2, true, { num_heads: 2, interleaved: 1, rotary_embedding_dim: 4 })],
  ['RotaryEmbedding without position ids (caches [B, S, R/2])', rope([B, 2, S, 8], 4, false)],
];

test('the standard Attention and RotaryEmbedding, written as standard ops, equal onnxruntime\'s kernels (≤1e-5)', async () => {
  await assertLowersLikeOrt([...CASES, ...ROPE]);
});

test('the check is not vacuous: the masks and the causal offset change the output', async () => {
  const out = async (spec: OneOp) => { const { model, feeds } = oneOp(spec); return (await runModel(model, feeds)).get('y')!; };
  const [plain, masked, causal] = await Promise.all([CASES[1]![1], CASES[5]![1], CASES[9]![1]].map((c) => out(c)));
  assert.ok(maxAbsDiff(plain!, await out(att([B, 2, S, d], [B, 2, L, d], [B, 2, L, 3]))) > 1e-3, 'scale');
  const unmasked = await out(att([B, 2, S, d], [B, 2, L, d], [B, 2, L, d]));
  assert.ok(maxAbsDiff(masked!, unmasked) > 1e-3, 'mask');
  // the lowering without the past's offset (a causal triangle from key 0) misses onnxruntime's
  const noOffset = oneOp({ ...CASES[9]![1], inputs: CASES[9]![1].inputs.slice(0, 3) });
  const { model } = await lowered(noOffset.model, noOffset.feeds, noOffset.params);
  assert.ok(maxAbsDiff((await runModel(model, noOffset.feeds)).get('y')!, causal!) > 1e-3, 'past offset');
});

test('finite differences through the written-out Attention and RotaryEmbedding', async () => {
  for (const [label, spec] of [...CASES, ...ROPE].filter(([l]) => /grouped|3-D|bool mask \[|fully|past|softcap|RotaryEmbedding/.test(l))) {
    const { model, feeds, params } = oneOp(spec);
    const reports = await gradCheck(model, feeds, { params, outputs: spec.outputs, maxElements: 24 });
    for (const r of reports) {
      assert.ok(r.relError <= 1e-2, `${label} d/d${r.param}: relative error ${r.relError.toExponential(2)}`);
      assert.ok(r.analyticNorm > 0, `${label} d/d${r.param}: zero gradient`);
    }
  }
});

test('forms the lowering does not cover are refused by name', async () => {
  const cases: [OneOp, RegExp][] = [
    [att([B, 2, S, d], [B, 2, S, d], [B, 2, S, d], [], {}, ['y', '', '', 'qk']), /output qk_matmul_output is not supported/],
    [{ ...att([B, 2, S, d], [B, 2, S, d], [B, 2, S, d], [['', []], ['', []], ['', []], ['lens', tensor('int64', [B], [3, 4])]]), opset: 24 }, /input nonpad_kv_seqlen \(a static KV cache\) is not supported/],
  ];
  for (const [spec, why] of cases) {
    const { model, feeds, params } = oneOp(spec);
    const step = new RefitModel(model, { threads: 1 }).compileTrainStep({ trainable: params, loss: randomProjectionLoss(['y'], 1) });
    await assert.rejects(step.run(feeds), why);
  }
});
