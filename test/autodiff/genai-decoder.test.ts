// A decoder laid out as onnxruntime-genai's model builder writes Llama/Qwen/Phi in int4, built
// here by hand (the builder is not on this machine): a 4-bit embedding table (GatherBlockQuantized),
// SimplifiedLayerNormalization and SkipSimplifiedLayerNormalization, 4-bit projections
// (MatMulNBits), RotaryEmbedding on q and k, GroupQueryAttention with a KV cache whose
// seqlens_k / total_sequence_length come from the attention mask, a SwiGLU MLP, a 4-bit lm_head.
// Each op is checked against onnxruntime's kernel on its own (contrib-ops.test.ts, nbits.test.ts);
// this checks them together, as a user meets them: the cache-free form computes what the file
// computes on an empty past, LoRA on the 4-bit layers trains (finite differences through
// onnxruntime's own kernels), and 'all' trains the norms and nothing quantized.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import type { AttrInput, Model } from '../../src/onnx/ir.ts';
import { RefitModel } from '../../src/model.ts';
import { withoutKvCache } from '../../src/onnx/kv-cache.ts';
import { quantizeNBits } from '../../src/peft/quantize-nbits.ts';
import * as peft from '../../src/peft/index.ts';
import { gradCheck } from '../../src/autodiff/gradcheck.ts';
import { tokenCrossEntropy } from '../../src/train/losses.ts';
import { f32, tensor, tensorOf, type Tensor } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';

const V = 40, d = 32, H = 2, KVH = 1, D = 16, FFN = 64, B = 2, S = 5;

function genaiDecoder(): Model {
  const rng = new Rng(3);
  const w = (dims: number[], s = 0.3) => f32(dims, Array.from({ length: dims.reduce((a, b) => a * b) }, () => (rng.next() * 2 - 1) * s));
  const b = new ModelBuilder({ opset: 17 });
  b.model.opsets.push({ domain: 'com.microsoft', version: 1 });
  const ms = (op: string, inputs: string[], outputs: string[], attrs: Record<string, AttrInput> = {}) => {
    b.node(op, inputs, outputs, attrs);
    b.model.graph.nodes.at(-1)!.domain = 'com.microsoft';
  };
  b.input('input_ids', 'int64', ['batch', 'seq']);
  b.input('attention_mask', 'int64', ['batch', 'total']);
  b.input('position_ids', 'int64', ['batch', 'seq']);
  b.input('past_key_values.0.key', 'float32', ['batch', KVH, 'past', D]);
  b.input('past_key_values.0.value', 'float32', ['batch', KVH, 'past', D]);
  // 4-bit embedding table: two values a byte, low nibble first, one scale per block of 16
  b.initializer('embed.q', tensor('uint8', [V, d / 2], Array.from({ length: V * d / 2 }, () => Math.floor(rng.next() * 256))));
  b.initializer('embed.scales', f32([V, d / 16], Array.from({ length: V * d / 16 }, () => 0.02 + 0.03 * rng.next())));
  ms('GatherBlockQuantized', ['embed.q', 'input_ids', 'embed.scales'], ['x0'], { bits: 4, block_size: 16, gather_axis: 0, quantize_axis: 1 });
  // seqlens_k = Σ mask − 1 and total_sequence_length = mask's width, as int32
  b.initializer('one', tensor('int64', [], [1]));
  b.initializer('axis1', tensor('int64', [1], [1]));
  b.node('ReduceSum', ['attention_mask', 'axis1'], ['mask_sum'], { keepdims: 0 });
  b.node('Sub', ['mask_sum', 'one'], ['seqlens64']);
  b.node('Cast', ['seqlens64'], ['seqlens_k'], { to: 6 });
  b.node('Shape', ['attention_mask'], ['mask_shape']);
  b.node('Gather', ['mask_shape', 'one'], ['total64'], { axis: 0 });
  b.node('Cast', ['total64'], ['total_seq'], { to: 6 });
  for (const n of ['ln1', 'ln2', 'lnf']) b.initializer(`${n}.weight`, f32([d], Array.from({ length: d }, () => 1 + 0.2 * (rng.next() - 0.5))));
  b.node('SimplifiedLayerNormalization', ['x0', 'ln1.weight'], ['h1'], { epsilon: 1e-6, axis: -1 });
  for (const [n, out] of [['q_proj', H * D], ['k_proj', KVH * D], ['v_proj', KVH * D]] as const) {
    b.initializer(`${n}.weight`, w([d, out]));
    b.node('MatMul', ['h1', `${n}.weight`], [n]);
  }
  const cache = (f: (i: number) => number) => f32([16, D / 2], Array.from({ length: 16 * D / 2 }, (_, i) => f(Math.floor(i / (D / 2)) / 10 ** ((i % (D / 2)) / (D / 2)))));
  b.initializer('cos_cache', cache(Math.cos));
  b.initializer('sin_cache', cache(Math.sin));
  ms('RotaryEmbedding', ['q_proj', 'position_ids', 'cos_cache', 'sin_cache'], ['q_rot'], { num_heads: H });
  ms('RotaryEmbedding', ['k_proj', 'position_ids', 'cos_cache', 'sin_cache'], ['k_rot'], { num_heads: KVH });
  ms('GroupQueryAttention', ['q_rot', 'k_rot', 'v_proj', 'past_key_values.0.key', 'past_key_values.0.value', 'seqlens_k', 'total_seq'],
    ['attn', 'present.0.key', 'present.0.value'], { num_heads: H, kv_num_heads: KVH });
  b.initializer('o_proj.weight', w([H * D, d]));
  b.node('MatMul', ['attn', 'o_proj.weight'], ['o']);
  ms('SkipSimplifiedLayerNormalization', ['o', 'x0', 'ln2.weight'], ['h2', '', '', 'x1'], { epsilon: 1e-6 });
  for (const [n, dims] of [['gate_proj', [d, FFN]], ['up_proj', [d, FFN]], ['down_proj', [FFN, d]]] as const) b.initializer(`${n}.weight`, w([...dims]));
  b.node('MatMul', ['h2', 'gate_proj.weight'], ['gate']);
  b.node('Sigmoid', ['gate'], ['gate_s']);
  b.node('Mul', ['gate', 'gate_s'], ['silu']);
  b.node('MatMul', ['h2', 'up_proj.weight'], ['up']);
  b.node('Mul', ['silu', 'up'], ['act']);
  b.node('MatMul', ['act', 'down_proj.weight'], ['mlp']);
  b.node('Add', ['x1', 'mlp'], ['x2']);
  b.node('SimplifiedLayerNormalization', ['x2', 'lnf.weight'], ['hf'], { epsilon: 1e-6, axis: -1 });
  b.initializer('lm_head.weight', w([d, V]));
  b.node('MatMul', ['hf', 'lm_head.weight'], ['logits']);
  b.output('logits', 'float32', ['batch', 'seq', V]);
  b.output('present.0.key', 'float32', ['batch', KVH, 'total', D]);
  b.output('present.0.value', 'float32', ['batch', KVH, 'total', D]);
  return quantizeNBits(b.build(), { blockSize: 16 }); // every projection and the lm_head as MatMulNBits
}

const ids = tensorOf('int64', [B, S], (i) => (7 * i + 3) % V);
const labels = tensorOf('int64', [B, S], (i) => (i % S === S - 1 ? -100 : (7 * (i + 1) + 3) % V));
const cacheFree = { input_ids: ids, attention_mask: tensorOf('int64', [B, S], () => 1), position_ids: tensorOf('int64', [B, S], (i) => i % S) };
const emptyPast = (): Record<string, Tensor> => ({ 'past_key_values.0.key': tensor('float32', [B, KVH, 0, D], []), 'past_key_values.0.value': tensor('float32', [B, KVH, 0, D], []) });

test('genai-style int4 decoder: the cache-free form computes what the file computes on an empty past', async () => {
  const m = new RefitModel(genaiDecoder(), { threads: 1 });
  assert.ok(['GatherBlockQuantized', 'MatMulNBits', 'RotaryEmbedding', 'GroupQueryAttention', 'SkipSimplifiedLayerNormalization'].every((op) => m.ir.graph.nodes.some((n) => n.opType === op)));
  const free = withoutKvCache(m);
  const a = (await free.run(cacheFree))['logits']!;
  const c = (await m.run({ ...cacheFree, ...emptyPast() }))['logits']!;
  let diff = 0;
  for (let i = 0; i < a.data.length; i++) diff = Math.max(diff, Math.abs((a.data[i] as number) - (c.data[i] as number)));
  assert.equal(diff, 0);
  await Promise.all([m.release(), free.release()]);
});

test('genai-style int4 decoder: LoRA on its 4-bit layers trains, and its gradients match finite differences through onnxruntime\'s kernels', async () => {
  const free = withoutKvCache(new RefitModel(genaiDecoder(), { threads: 1 }));
  const p = peft.withAdapter(free, 'ad', peft.lora({ targets: () => true, rank: 2, alpha: 4 }));
  const names = p.trainableNames('ad');
  assert.equal(names.length, 2 * 8, 'q, k, v, o, gate, up, down and the lm_head each get A and B');
  // the model's size counts its quantized weights: 96 norm values, 10,496 in the 4-bit layers, 40 × 32 in the table
  assert.equal(peft.accounting(p, 'ad').baseParams, 96 + (2 * 32 * 32 + 2 * 32 * 16 + 3 * 32 * 64 + 32 * V) + V * d);
  const loss = tokenCrossEntropy({ logits: 'logits', labels: 'labels' });
  const step = p.compileTrainStep({ trainable: names, loss });
  const r = await step.run({ ...cacheFree, labels });
  assert.ok(Number.isFinite(r.loss) && r.loss > 0);
  assert.ok(names.filter((n) => n.includes('lora_B')).every((n) => r.grads.get(n)!.some((g) => g !== 0)), 'every B gets a gradient');
  await step.release();
  // B starts at zero (PEFT's init), so A's gradient is zero: check B's, and A's after B moves
  const vals = p.adapterValues('ad');
  for (const n of names.filter((k) => k.includes('lora_B'))) (vals.get(n)!.data as Float32Array).forEach((_, i, a) => { a[i] = 0.05 * Math.sin(i + n.length); });
  p.touch(names);
  const reports = await gradCheck(p.ir, cacheFree, { params: ['ad.lora_B.q_proj', 'ad.lora_A.k_proj', 'ad.lora_B.down_proj', 'ad.lora_A.lm_head'].filter((n) => names.includes(n)), outputs: ['logits'], maxElements: 12 });
  assert.equal(reports.length, 4);
  for (const rep of reports) {
    assert.ok(rep.relError <= 1e-2, `${rep.param}: relative error ${rep.relError.toExponential(2)}`);
    assert.ok(rep.analyticNorm > 0, `${rep.param}: zero gradient`);
  }
  await free.release();
});

test('genai-style int4 decoder: refit inspect counts its quantized weights apart from its float parameters', async () => {
  const { inspectModel, formatInspect } = await import('../../src/cli/inspect.ts');
  const { mkdtempSync, rmSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(join(tmpdir(), 'refit-genai-'));
  try {
    await new RefitModel(genaiDecoder()).save(join(dir, 'model.onnx'));
    const r = await inspectModel(join(dir, 'model.onnx'));
    assert.deepEqual(r.parameters, { tensors: 3, values: 96, quantized: (2 * 32 * 32 + 2 * 32 * 16 + 3 * 32 * 64 + 32 * V) + V * d });
    assert.match(formatInspect(r), /parameters: 96 values in 3 tensors, and 11,776 weight values stored quantized/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('genai-style int4 decoder: \'all\' trains the norm weights, nothing quantized and no rotary table', async () => {
  const free = withoutKvCache(new RefitModel(genaiDecoder(), { threads: 1 }));
  assert.deepEqual(free.parameterNames().sort(), ['ln1.weight', 'ln2.weight', 'lnf.weight'], 'not the 4-bit weights, their scales, or the rotary tables');
  assert.throws(() => free.compileTrainStep({ trainable: ['cos_cache'], loss: tokenCrossEntropy({ logits: 'logits', labels: 'labels' }) }), /'cos_cache' is a rotary position table \(input 2 of RotaryEmbedding node/);
  const step = free.compileTrainStep({ trainable: 'all', loss: tokenCrossEntropy({ logits: 'logits', labels: 'labels' }) });
  const r = await step.run({ ...cacheFree, labels });
  for (const n of ['ln1.weight', 'ln2.weight', 'lnf.weight']) assert.ok(r.grads.get(n)!.some((g) => g !== 0), n);
  await step.release();
  await free.release();
});
