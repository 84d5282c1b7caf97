// onnxruntime's com.microsoft fused ops unfused into standard ops (src/autodiff/lower/contrib.ts):
// the unfused forward equals onnxruntime's fused kernel, and gradients through it pass finite differences.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tensor, type Tensor } from '../../src/onnx/tensor.ts';
import { ort } from '../../src/onnx/runtime.ts';
import { loadModel } from '../../src/model.ts';
import { parseSafetensors } from '../../src/io/safetensors.ts';
import * as losses from '../../src/train/losses.ts';
import { gradCheck } from '../../src/autodiff/gradcheck.ts';
import { RefitModel } from '../../src/model.ts';
import { buildStepGraph } from '../../src/train/step-graph.ts';
import { randomProjectionLoss } from '../../src/autodiff/gradcheck.ts';
import { signatureOf } from '../../src/onnx/shapes.ts';
import { oneOp, lowered, runModel, maxAbsDiff, type OneOp, assertLowersLikeOrt } from './lower-helpers.ts';

const MS = 'com.microsoft';
const B = 2, S = 5, D = 8;
const padMask = tensor('int32', [B, S], [1, 1, 1, 0, 0, 1, 1, 1, 1, 1]);
const mask3 = tensor('int32', [B, S, S], Array.from({ length: B * S * S }, (_, i) => ((i * 7) % 3 ? 1 : 0)));
const attn = (extra: [string, number[] | ReturnType<typeof tensor>][], attrs: Record<string, number | number[]>, w = 3 * D): OneOp =>
  ({ op: 'Attention', domain: MS, inputs: [['x', [B, S, D]], ['w', [D, w]], ['b', [w]], ...extra], outputs: ['y'], attrs: attrs as never });

/** GroupQueryAttention with 4 query and 2 key/value heads of size Hd (onnxruntime wants a multiple of 16) on a first prompt (an empty past); `half` = rotary channels / 2 (a multiple of 8). */
const gqa = (packed: boolean, seqlens: number[], attrs: Record<string, number> = {}, half = 0, Hd = 16): OneOp => {
  const cache = half ? [['cos', tensor('float32', [8, half], Array.from({ length: 8 * half }, (_, i) => Math.cos(i * 0.37)))], ['sin', tensor('float32', [8, half], Array.from({ length: 8 * half }, (_, i) => Math.sin(i * 0.37)))]] as [string, ReturnType<typeof tensor>][] : [];
  return {
    op: 'GroupQueryAttention', domain: MS, outputs: ['y'], feed: '', attrs: { num_heads: 4, kv_num_heads: 2, ...attrs } as never,
    inputs: [
      ...(packed ? [['q', [B, S, 8 * Hd]], ['', []], ['', []]] : [['q', [B, S, 4 * Hd]], ['k', [B, S, 2 * Hd]], ['v', [B, S, 2 * Hd]]]) as [string, number[]][],
      ['pk', tensor('float32', [B, 2, 0, Hd], [])], ['pv', tensor('float32', [B, 2, 0, Hd], [])],
      ['seqlens', tensor('int32', [B], seqlens)], ['total', tensor('int32', [], [S])], ...cache,
    ],
  };
};

/** RotaryEmbedding on `input` (a shape) with a cos/sin cache of 8 positions × `half` and the given position ids. */
const rope = (input: number[], half: number, positions: ReturnType<typeof tensor>, attrs: Record<string, number> = {}): OneOp => ({
  op: 'RotaryEmbedding', domain: MS, outputs: ['y'], feed: '', attrs: attrs as never,
  inputs: [['x', input], ['pos', positions],
    ['cos', tensor('float32', [8, half], Array.from({ length: 8 * half }, (_, i) => Math.cos(i * 0.37)))],
    ['sin', tensor('float32', [8, half], Array.from({ length: 8 * half }, (_, i) => Math.sin(i * 0.37)))]],
});
const positions = tensor('int64', [B, S], [0, 1, 2, 3, 4, 2, 3, 4, 5, 6]);

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
  ['RMSNormalization (opset 23)', { op: 'RMSNormalization', inputs: [['x', [B, S, D]], ['g', [D]]], outputs: ['y'], attrs: { epsilon: { kind: 'float', value: 1e-6 } } as never, opset: 23 }],
  ['RMSNormalization (opset 23) over the last two axes', { op: 'RMSNormalization', inputs: [['x', [B, S, D]], ['g', [S, D]]], outputs: ['y'], attrs: { axis: -2 }, opset: 23 }],
  ['Attention', attn([], { num_heads: 2 })],
  ['Attention unidirectional', attn([], { num_heads: 2, unidirectional: 1 })],
  ['Attention raw 2-D mask', attn([['m', padMask]], { num_heads: 2 })],
  ['Attention raw 2-D mask, unidirectional', attn([['m', padMask]], { num_heads: 2, unidirectional: 1 })],
  ['Attention right-padding lengths', attn([['m', tensor('int32', [B], [3, 5])]], { num_heads: 4 })],
  ['Attention raw 3-D mask', attn([['m', mask3]], { num_heads: 2 })],
  ['Attention qkv_hidden_sizes, scale', attn([], { num_heads: 2, qkv_hidden_sizes: [D, D, 4], scale: 0.3 }, 2 * D + 4)],
  ['FusedMatMul transB alpha', { op: 'FusedMatMul', domain: MS, inputs: [['x', [B, S, D]], ['w', [6, D]]], outputs: ['y'], attrs: { transB: 1, alpha: { kind: 'float', value: 0.5 } } }],
  ['FusedMatMul transA batched', { op: 'FusedMatMul', domain: MS, inputs: [['x', [B, D, S]], ['w', [B, D, 3]]], outputs: ['y'], attrs: { transA: 1 } }],
  // transBatch*: axis 0 holds the rows (or K), the batch axes follow (nn.MultiheadAttention's [L, N·H, E] fused by
  // onnxruntime); its kernel wants both inputs of one rank ≥ 3 then
  ['FusedMatMul transBatchA', { op: 'FusedMatMul', domain: MS, inputs: [['x', [S, 3, D]], ['w', [3, D, 4]]], outputs: ['y'], attrs: { transBatchA: 1 } }],
  ['FusedMatMul transBatchB transB alpha', { op: 'FusedMatMul', domain: MS, inputs: [['x', [3, S, D]], ['w', [6, 3, D]]], outputs: ['y'], attrs: { transBatchB: 1, transB: 1, alpha: { kind: 'float', value: 0.5 } } }],
  ['FusedMatMul transBatchA transA, transBatchB, rank 4', { op: 'FusedMatMul', domain: MS, inputs: [['x', [D, B, 3, S]], ['w', [D, B, 3, 4]]], outputs: ['y'], attrs: { transBatchA: 1, transA: 1, transBatchB: 1 } }],
  ['FusedGemm Relu', { op: 'FusedGemm', domain: MS, inputs: [['x', [B, D]], ['w', [6, D]], ['c', [6]]], outputs: ['y'], attrs: { transB: 1, activation: 'Relu' } }],
  ['FusedGemm LeakyRelu', { op: 'FusedGemm', domain: MS, inputs: [['x', [B, D]], ['w', [D, 6]], ['c', [6]]], outputs: ['y'], attrs: { activation: 'LeakyRelu', activation_alpha: { kind: 'float', value: 0.1 }, alpha: { kind: 'float', value: 0.7 } } }],
  ['FusedConv Relu', { op: 'FusedConv', domain: MS, inputs: [['x', [B, 3, 6, 6]], ['w', [4, 3, 3, 3]], ['c', [4]]], outputs: ['y'], attrs: { activation: 'Relu', pads: [1, 1, 1, 1] } }],
  ['FusedConv Clip, stride 2, no bias', { op: 'FusedConv', domain: MS, inputs: [['x', [B, 3, 6, 6]], ['w', [4, 3, 3, 3]]], outputs: ['y'], attrs: { activation: 'Clip', activation_params: { kind: 'floats', value: [-0.2, 0.3] }, strides: [2, 2] } }],
  ['FusedConv HardSigmoid', { op: 'FusedConv', domain: MS, inputs: [['x', [B, 3, 6, 6]], ['w', [4, 3, 3, 3]], ['c', [4]]], outputs: ['y'], attrs: { activation: 'HardSigmoid', activation_params: { kind: 'floats', value: [0.3, 0.4] } } }],
  ['FusedConv LeakyRelu with residual Z', { op: 'FusedConv', domain: MS, inputs: [['x', [B, 3, 6, 6]], ['w', [4, 3, 3, 3]], ['c', [4]], ['z', [B, 4, 4, 4]]], outputs: ['y'], attrs: { activation: 'LeakyRelu', activation_params: { kind: 'floats', value: [0.2] } } }],
  ['GroupQueryAttention 4/2 heads, first prompt', gqa(false, [S - 1, S - 1])],
  ['GroupQueryAttention packed QKV, rotary over the whole head', gqa(true, [S - 1, S - 1], { do_rotary: 1 }, 8)],
  ['GroupQueryAttention rotary over half the head, scale', gqa(false, [S - 1, S - 1], { do_rotary: 1, scale: 0.3 }, 8, 32)],
  ['GroupQueryAttention right-padded row (seqlens_k 2 of 4)', gqa(false, [S - 1, S - 3], { do_rotary: 1 }, 8)],
  ['GroupQueryAttention interleaved rotary over half the head', gqa(false, [S - 1, S - 1], { do_rotary: 1, rotary_interleaved: 1 }, 8, 32)],
  ['RotaryEmbedding [B, S, N·H], 2 heads, whole head, position ids', rope([B, S, 32], 8, positions, { num_heads: 2 })],
  ['RotaryEmbedding interleaved, rotary over half the head', rope([B, S, 32], 4, positions, { num_heads: 2, interleaved: 1, rotary_embedding_dim: 8 })],
  ['RotaryEmbedding [B, N, S, H], position offset', rope([B, 2, S, 16], 8, tensor('int64', [1], [2]))],
  ['RotaryEmbedding num_heads 0 (head size from the cache), interleaved', rope([B, S, 32], 8, positions, { interleaved: 1 })],
  ['MultiHeadAttention self, packed bias, key_padding_mask', { op: 'MultiHeadAttention', domain: MS, feed: '', outputs: ['y'], attrs: { num_heads: 2 },
    inputs: [['q', [B, S, D]], ['k', [B, S, D]], ['v', [B, S, D]], ['b', [3 * D]], ['m', padMask]] }],
  ['MultiHeadAttention cross (7 keys), attention_bias, scale', { op: 'MultiHeadAttention', domain: MS, feed: '', outputs: ['y'], attrs: { num_heads: 2, scale: { kind: 'float', value: 0.4 } } as never,
    inputs: [['q', [B, S, D]], ['k', [B, 7, D]], ['v', [B, 7, D]], ['', []], ['', []], ['ab', [1, 2, S, 7]]] }],
  ['MultiHeadAttention unidirectional, present key and value', { op: 'MultiHeadAttention', domain: MS, feed: '', outputs: ['y', 'pk', 'pv'], attrs: { num_heads: 2, unidirectional: 1 },
    inputs: [['q', [B, S, D]], ['k', [B, S, D]], ['v', [B, S, D]]] }],
  ['EmbedLayerNormalization (segments, mask, mask_index)', { op: 'EmbedLayerNormalization', domain: MS, feed: '', outputs: ['y', 'mask_index'], attrs: { epsilon: { kind: 'float', value: 1e-5 } }, inputs: [
    ['ids', tensor('int32', [B, S], [1, 4, 2, 0, 3, 5, 5, 1, 2, 0])], ['seg', tensor('int32', [B, S], [0, 0, 1, 1, 1, 0, 1, 0, 1, 0])],
    ['word', [6, D]], ['pos', [S, D]], ['segemb', [2, D]], ['g', [D]], ['be', [D]], ['m', tensor('int32', [B, S], [1, 1, 1, 0, 0, 1, 1, 1, 1, 1])]] }],
  ['EmbedLayerNormalization (no segments, position ids)', { op: 'EmbedLayerNormalization', domain: MS, feed: '', outputs: ['y', 'mask_index'], inputs: [
    ['ids', tensor('int32', [B, S], [1, 4, 2, 0, 3, 5, 5, 1, 2, 0])], ['', []], ['word', [6, D]], ['pos', [7, D]], ['', []], ['g', [D]], ['be', [D]], ['', []],
    ['pids', tensor('int32', [B, S], [2, 3, 4, 5, 6, 0, 1, 2, 3, 4])]] }],
];

test('each unfused com.microsoft op equals onnxruntime\'s fused kernel (≤1e-5)', async () => {
  await assertLowersLikeOrt(CASES);
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
  for (const [label, spec] of CASES.filter(([l]) => /^(FastGelu with|BiasGelu|QuickGelu$|SkipLayerNormalization \(beta|SkipSimplified|SimplifiedLayer|RMSNormalization|Attention raw 2-D mask, uni|FusedMatMul transB|FusedMatMul transBatch|FusedGemm Leaky|FusedConv LeakyRelu|EmbedLayerNormalization \(seg|GroupQueryAttention (4\/2|packed|right)|RotaryEmbedding|MultiHeadAttention (self|cross))/.test(l))) {
    const { model, feeds, params } = oneOp({ ...spec, feed: '' });
    const reports = await gradCheck(model, feeds, { params, outputs: spec.outputs.filter((o) => o && o !== 'mask_index'), maxElements: 24 });
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
  // GroupQueryAttention with a non-empty past (a KV cache): refused, pointing to withoutKvCache
  const cached = gqa(false, [S + 2, S + 2]);
  cached.inputs = cached.inputs.map(([n, t]) => (n === 'pk' || n === 'pv' ? [n, [B, 2, 3, 16]] : n === 'total' ? [n, tensor('int32', [], [S + 3])] : [n, t]));
  const withPast = oneOp({ ...cached, feed: 'q' });
  const mg = new RefitModel(withPast.model, { threads: 1 });
  const sg = mg.compileTrainStep({ trainable: ['k'], loss: randomProjectionLoss(['y'], 1) });
  await assert.rejects(sg.run(withPast.feeds), /GroupQueryAttention node 'node_under_test': a non-empty past \(a KV cache\) is not supported: refit trains whole sequences \(withoutKvCache\)/);
  // MultiHeadAttention with keys already split into heads ([B, N, L, H], as a cross-attention cache feeds them)
  const mha = oneOp({ op: 'MultiHeadAttention', domain: MS, outputs: ['y'], attrs: { num_heads: 2 }, inputs: [['q', [B, S, D]], ['k', [B, 2, 7, 4]], ['v', [B, 2, 7, 4]]] });
  const ms = new RefitModel(mha.model, { threads: 1 }).compileTrainStep({ trainable: ['k'], loss: randomProjectionLoss(['y'], 1) });
  await assert.rejects(ms.run(mha.feeds), /MultiHeadAttention node 'node_under_test': only separate \[batch, sequence, hidden\] query, key and value are supported \(got ranks 3, 4, 4/);
  // RotaryEmbedding forms onnxruntime's kernel has and the lowering does not
  for (const [attrs, why] of [[{ num_heads: 2, scale: 0.5 }, /a scale other than 1 is not supported/], [{ num_heads: 2, is_packed_batching: 1 }, /is_packed_batching is not supported/]] as const) {
    const r = oneOp(rope([B, S, 32], 8, positions, attrs));
    const step = new RefitModel(r.model, { threads: 1 }).compileTrainStep({ trainable: ['x'], loss: randomProjectionLoss(['y'], 1) });
    await assert.rejects(step.run(r.feeds), why);
  }
});

/** Transpose a row-major 2-D array. */
function transpose2(a: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(a.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j]!;
  return t;
}

const relErr = (a: Float32Array, b: Float32Array) => {
  let d = 0, n = 0;
  for (let i = 0; i < b.length; i++) { d += (a[i]! - b[i]!) ** 2; n += b[i]! ** 2; }
  return Math.sqrt(d) / Math.sqrt(n);
};

test('models saved by onnxruntime\'s optimizer (FusedGemm, Gelu, FusedMatMul, BiasGelu) train like the PyTorch originals (≤1e-4)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'refit-ort-optimized-'));
  try {
    for (const [name, fused] of [['mlp', ['FusedGemm', 'Gelu']], ['transformer', ['FusedMatMul', 'BiasGelu']]] as const) {
      const src = new URL(`../fixtures/torch/${name}/`, import.meta.url);
      const out = join(dir, `${name}.onnx`);
      const s = await ort.InferenceSession.create(readFileSync(new URL('model.onnx', src)), { graphOptimizationLevel: 'extended', optimizedModelFilePath: out, executionProviders: ['cpu'] });
      await s.release();
      const model = await loadModel(out, { threads: 1 });
      const msOps = new Set(model.ir.graph.nodes.filter((n) => n.domain === MS).map((n) => n.opType));
      for (const op of fused) assert.ok(msOps.has(op), `${name}: onnxruntime wrote no ${op} (found ${[...msOps]})`);
      const { tensors } = parseSafetensors(readFileSync(new URL('tensors.safetensors', src)));
      const meta = JSON.parse(readFileSync(new URL('meta.json', src), 'utf8'));
      const zero = new Set<string>(meta.numerically_zero_grads ?? []);
      const feeds: Record<string, Tensor> = { y: tensors.get('label.y')! };
      for (const [k, t] of tensors) if (k.startsWith('input.')) feeds[k.slice(6)] = t;
      const step = model.compileTrainStep({ trainable: 'all', loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }) });
      const r = await step.run(feeds);
      const refLoss = (tensors.get('loss')!.data as Float32Array)[0]!;
      assert.ok(Math.abs(r.loss - refLoss) <= 1e-4 * refLoss, `${name} loss ${r.loss} vs ${refLoss}`);
      let compared = 0;
      for (const p of step.trainable) {
        const g = r.grads.get(p)!;
        let ref = tensors.get(`grad.${p}`)?.data as Float32Array | undefined;
        let source = p;
        if (!ref) {
          // onnxruntime folded Transpose(W) into a new initializer: find W by value, compare Wᵀ's gradient.
          const v = model.param(p);
          const [r0, c0] = v.dims as [number, number];
          for (const [k, t] of tensors) {
            if (!k.startsWith('param.') || t.dims.join() !== `${c0},${r0}`) continue;
            if (relErr(transpose2(t.data as Float32Array, c0, r0), v.data as Float32Array) === 0) {
              source = k.slice(6);
              ref = transpose2(tensors.get(`grad.${source}`)!.data as Float32Array, c0, r0);
              break;
            }
          }
        }
        assert.ok(ref, `${name}: no PyTorch parameter behind '${p}'`);
        if (zero.has(`grad.${source}`)) continue; // ~1e-10 rounding noise in PyTorch (softmax shift invariance)
        assert.ok(relErr(g, ref) <= 1e-4, `${name} ${p} (${source}): relative error ${relErr(g, ref).toExponential(2)}`);
        compared++;
      }
      assert.equal(compared, name === 'mlp' ? 6 : 36);
      await step.release();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
