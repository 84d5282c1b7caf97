// LoRA specifics: every Gemm transpose form, convolutions, PiSSA, rsLoRA, LoRA+, target and
// rank errors, and the SVD behind PiSSA and combination.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RefitModel } from '../../src/model.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { gradCheck } from '../../src/autodiff/gradcheck.ts';
import { withAdapter, lora, dora, ia3, vera, PeftError, svd } from '../../src/peft/index.ts';
import { mat, matmul, transpose } from '../../src/peft/linalg.ts';
import { smallVit, images, maxDiff, perturb } from './helpers.ts';

function gemmModel(transA: number, transB: number, alpha: number, beta: number): RefitModel {
  const r = new Rng(transA * 2 + transB);
  const w = transB ? [6, 5] : [5, 6];
  return new RefitModel(new ModelBuilder()
    .input('x', 'float32', transA ? [5, 'N'] : ['N', 5])
    .initializer('fc.weight', f32(w, r.fill(new Float32Array(30), 0.4)))
    .initializer('fc.bias', f32([6], r.fill(new Float32Array(6), 0.4)))
    .node('Gemm', ['x', 'fc.weight', 'fc.bias'], ['y'], { transA, transB, alpha: { kind: 'float', value: alpha }, beta: { kind: 'float', value: beta } })
    .node('Tanh', ['y'], ['logits'])
    .output('logits').build(), { threads: 1 });
}

for (const [transA, transB, alpha, beta] of [[0, 0, 1, 1], [0, 1, 1, 1], [1, 0, 0.5, 2], [1, 1, 1.5, 0.5]] as const) {
  test(`LoRA and DoRA on Gemm transA=${transA} transB=${transB} alpha=${alpha} beta=${beta}: gradients and merge`, async () => {
    const base = gemmModel(transA, transB, alpha, beta);
    const x = f32(transA ? [5, 3] : [3, 5], new Rng(9).fill(new Float32Array(15)));
    for (const method of [lora({ targets: 'fc', rank: 2, alpha: 4 }), dora({ targets: 'fc', rank: 2, alpha: 4 })]) {
      const p = withAdapter(base, 'ad', method);
      perturb(p, 'ad', 0.3);
      const y = (await p.run({ x })).logits;
      for (const r of await gradCheck(p.ir, { x }, { params: p.trainableNames(), eps: 1e-2 })) assert.ok(r.relError < 1e-2, `${r.param}: ${r.relError}`);
      assert.ok(maxDiff((await p.merge('ad').run({ x })).logits, y) <= 1e-5);
    }
  });
}

test('LoRA on a strided, padded convolution: exact gradients (a smooth model) and merge', async () => {
  const r = new Rng(1);
  const base = new RefitModel(new ModelBuilder().input('x', 'float32', ['N', 3, 9, 9])
    .initializer('c.weight', f32([4, 3, 3, 3], r.fill(new Float32Array(108), 0.3)))
    .node('Conv', ['x', 'c.weight'], ['logits'], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] })
    .output('logits').build(), { threads: 1 });
  const p = withAdapter(base, 'ad', lora({ targets: 'c', rank: 2 }));
  assert.deepEqual(p.param('ad.lora_A.c').dims, [2, 3, 3, 3]);
  assert.deepEqual(p.param('ad.lora_B.c').dims, [4, 2, 1, 1]);
  perturb(p, 'ad');
  const x = f32([2, 3, 9, 9], r.fill(new Float32Array(2 * 243)));
  for (const g of await gradCheck(p.ir, { x }, { params: p.trainableNames(), maxElements: 16, eps: 1e-2 })) assert.ok(g.relError < 1e-3, `${g.param}: ${g.relError}`);
  assert.ok(maxDiff((await p.merge('ad').run({ x })).logits, (await p.run({ x })).logits) <= 1e-5);
});

test('init: A is Kaiming-uniform U(±1/√in), B is zero; rsLoRA scales by alpha/√r', async () => {
  const p = withAdapter(smallVit(), 'ad', lora({ targets: 'q', rank: 4, alpha: 8, seed: 3 }));
  const a = p.param('ad.lora_A.blocks.0.attn.q').data as Float32Array;
  assert.deepEqual(p.param('ad.lora_A.blocks.0.attn.q').dims, [4, 32]);
  assert.ok(Math.max(...a.map(Math.abs)) <= 1 / Math.sqrt(32) && Math.max(...a.map(Math.abs)) > 0.1);
  assert.ok((p.param('ad.lora_B.blocks.0.attn.q').data as Float32Array).every((v) => v === 0));
  // rsLoRA: with B·A fixed, the output delta scales as alpha/√r instead of alpha/r
  const x = images(1);
  const base = (await smallVit().run({ x })).logits;
  const deltas: number[] = [];
  for (const rsLora of [false, true]) {
    const q = withAdapter(smallVit(), 'ad', lora({ targets: 'q', rank: 4, alpha: 8, rsLora }));
    perturb(q, 'ad', 0.01);
    deltas.push(maxDiff((await q.run({ x })).logits, base));
  }
  assert.ok(Math.abs(deltas[1]! / deltas[0]! - 2) < 0.05, `ratio ${deltas[1]! / deltas[0]!}, expected √4 = 2`);
});

test('PiSSA: A, B from the top-r SVD of W, the residual replaces W, outputs unchanged at start', async () => {
  const base = smallVit();
  const p = withAdapter(base, 'ad', lora({ targets: 'q', rank: 4, alpha: 4, init: 'pissa' }));
  const w = base.param('blocks.0.attn.q.weight'); // [in, out]
  const res = p.param('blocks.0.attn.q.weight');
  assert.notEqual(res, w);
  const { S } = svd(mat(32, 32, w.data as Float32Array));
  const { S: Sres } = svd(mat(32, 32, res.data as Float32Array));
  assert.ok(Math.abs(Sres[0]! - S[4]!) < 1e-4, 'the residual keeps the remaining singular values');
  const x = images(2);
  assert.ok(maxDiff((await p.run({ x })).logits, (await base.run({ x })).logits) < 1e-5);
  assert.ok(p.trainableNames().every((n) => n.startsWith('ad.')));
});

test('LoRA+: B gets lrScale = loraPlusRatio in the optimizer param groups', () => {
  const p = withAdapter(smallVit(), 'ad', lora({ targets: /attn\.(q|v)$/, rank: 2, loraPlusRatio: 16 }));
  const groups = p.paramGroups();
  assert.equal(groups.length, 1);
  assert.equal(groups[0]!.lrScale, 16);
  assert.deepEqual(groups[0]!.params, ['ad.lora_B.blocks.0.attn.q', 'ad.lora_B.blocks.0.attn.v']);
});

test('errors: unmatched targets list close candidates; rank above min(d_in, d_out) for PiSSA; grouped convs; duplicate names', async () => {
  const base = smallVit();
  assert.throws(() => withAdapter(base, 'ad', lora({ targets: ['blocks.0.attn.qq'] })), (e: Error) => e instanceof PeftError && /matches no .* layer\. Closest candidates: blocks\.0\.attn\.q/.test(e.message));
  assert.throws(() => withAdapter(base, 'ad', lora({ targets: /nothing/ })), /matched no MatMul\/Gemm\/Conv layer.*Candidates: patch_embed, blocks\.0\.attn\.q/);
  assert.throws(() => withAdapter(base, 'ad', lora({ targets: 'head', rank: 16, init: 'pissa' })), /rank 16 exceeds min\(d_in, d_out\) = min\(32, 10\) = 10 for head.*PiSSA/);
  // Above the limit with the usual init, as HF PEFT allows: it trains and merges exactly.
  const wide = withAdapter(base, 'ad', lora({ targets: 'head', rank: 16 }));
  perturb(wide, 'ad', 0.3);
  const xs = images(2);
  assert.ok(maxDiff((await wide.merge('ad').run({ x: xs })).logits, (await wide.run({ x: xs })).logits) <= 1e-5);
  assert.throws(() => withAdapter(base, 'ad', dora({ targets: 'patch_embed' })), /matches no MatMul\/Gemm layer \(patch_embed is a Conv; this method targets MatMul, Gemm\)/);
  assert.throws(() => withAdapter(base, 'ad', lora({ targets: 'q', rank: 0 })), /option 'rank'/);
  const p = withAdapter(base, 'ad', lora({ targets: 'q' }));
  assert.throws(() => p.withAdapter('ad', lora({ targets: 'v' })), /already exists/);
  assert.throws(() => p.withAdapter('bad name', lora({ targets: 'v' })), /must match/);
});

test('Jacobi SVD reconstructs a random matrix and orders singular values', () => {
  const r = new Rng(2);
  const a = mat(7, 4, r.fill(new Float32Array(28)));
  const { U, S, V } = svd(a);
  for (let i = 1; i < 4; i++) assert.ok(S[i - 1]! >= S[i]!);
  const us = mat(7, 4);
  for (let i = 0; i < 7; i++) for (let j = 0; j < 4; j++) us.data[i * 4 + j] = U.data[i * 4 + j]! * S[j]!;
  const back = matmul(us, transpose(V));
  for (let i = 0; i < 28; i++) assert.ok(Math.abs(back.data[i]! - a.data[i]!) < 1e-10);
  const wide = svd(transpose(a));
  for (let i = 0; i < 4; i++) assert.ok(Math.abs(wide.S[i]! - S[i]!) < 1e-10);
});

test('a weight used twice (torch.onnx\'s folded copy, kept as a tie) is one module: one LoRA pair at both uses, IA3 and VeRA too, each folded once by a merge', async () => {
  // DeBERTa-v3's shared key projection: MatMul(x, W) and MatMul(h, Identity(W)), W a folded, transposed Linear weight.
  const r = new Rng(4);
  const base = new RefitModel(new ModelBuilder().input('x', 'float32', ['N', 4])
    .initializer('onnx::MatMul_11', f32([4, 4], r.fill(new Float32Array(16), 0.5)))
    .node('Identity', ['onnx::MatMul_11'], ['onnx::MatMul_12'])
    .node('MatMul', ['x', 'onnx::MatMul_11'], ['h'], {}, '/enc/key_proj/MatMul')
    .node('Tanh', ['h'], ['t'])
    .node('MatMul', ['t', 'onnx::MatMul_12'], ['logits'], {}, '/enc/key_proj_1/MatMul')
    .output('logits').build(), { threads: 1 });
  const x = f32([3, 4], r.fill(new Float32Array(12)));
  const p = withAdapter(base, 'ad', lora({ targets: /key_proj$/, rank: 2 }));
  assert.deepEqual(p.trainableNames().sort(), ['ad.lora_A.enc.key_proj', 'ad.lora_B.enc.key_proj'], 'one pair, named after the first use');
  perturb(p, 'ad', 0.3);
  const y = (await p.run({ x })).logits;
  for (const g of await gradCheck(p.ir, { x }, { params: p.trainableNames(), eps: 1e-2 })) assert.ok(g.relError < 1e-2, `${g.param}: ${g.relError}`);
  assert.ok(maxDiff((await p.merge('ad').run({ x })).logits, y) <= 1e-5, 'the merge folds ΔW into the shared weight once');
  for (const method of [ia3({ targets: /key_proj$/ }), vera({ targets: /key_proj$/, rank: 2 })]) {
    const q = withAdapter(base, 'ad', method);
    perturb(q, 'ad', 0.3);
    assert.ok(maxDiff((await q.merge('ad').run({ x })).logits, (await q.run({ x })).logits) <= 1e-5, `${method.method}: merged once`);
  }
});
