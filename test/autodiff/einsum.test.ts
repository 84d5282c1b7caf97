// Einsum: attention patterns, general one- and two-operand equations, the ellipsis with
// broadcasting, summed-away indices, and a deliberately wrong rule shown to fail.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkOp } from './helpers.ts';
import { assertBrokenFails } from './broken.ts';
import { explicitEinsum } from '../../src/autodiff/rules/einsum.ts';
import type { GradRule } from '../../src/autodiff/rule.ts';

const cases: [string, number[][]][] = [
  ['bhqd,bhkd->bhqk', [[2, 2, 3, 4], [2, 2, 5, 4]]], // attention scores
  ['bhqk,bhkd->bhqd', [[2, 2, 3, 5], [2, 2, 5, 4]]], // attention-weighted values
  ['bij,bjk->bik', [[2, 3, 4], [2, 4, 5]]],
  ['ij->ji', [[3, 4]]],
  ['bid,jd->bij', [[2, 3, 4], [5, 4]]],
  // (onnxruntime's shape inference wants every ellipsis of the same rank)
  ['...ij,...jk->...ik', [[2, 3, 3, 4], [2, 3, 4, 2]]],
  ['...ij,...jk->...ik', [[2, 1, 3, 4], [1, 3, 4, 2]]], // size-1 ellipsis dims broadcast both ways
  ['b...d,d->b...', [[2, 3, 4], [4]]], // ellipsis in the middle
  ['ij,jk', [[3, 4], [4, 2]]], // implicit output (ik)
  ['bij,bkj->b', [[2, 3, 4], [2, 5, 4]]], // i and k summed away: broadcast back with Expand
  ['ij->i', [[3, 4]]],
  ['ij->', [[3, 4]]],
  ['i,j->ij', [[3], [4]]], // outer product
  ['ij,ij->ij', [[1, 3], [2, 3]]], // a named index of size 1 broadcast
  ['bhqd,bhkd->bhqk', [[2, 1, 3, 4], [2, 2, 5, 4]]], // one head of queries against two of keys
  ['abc,cd,de->abe', [[2, 3, 4], [4, 2], [2, 3]]], // three operands
];
for (const [eq, shapes] of cases) {
  test(`Einsum '${eq}' on ${shapes.map((s) => `[${s}]`).join(', ')}`, async () => {
    await checkOp('Einsum', shapes.map((shape, k) => ({ name: `x${k}`, shape })), { equation: eq }, { opset: 13 });
  });
}

test('Einsum with one operand frozen (a constant weight)', async () => {
  const { f32 } = await import('../../src/onnx/tensor.ts');
  await checkOp('Einsum', [{ name: 'x', shape: [2, 3, 4] }, { name: 'w', shape: [5, 4], value: f32([5, 4], Array.from({ length: 20 }, (_, i) => Math.sin(i))) }], { equation: 'bid,jd->bij' });
});

test('Einsum: explicit form of the ellipsis, with a broadcast dim getting its own letter', () => {
  const e = explicitEinsum('...ij,...jk->...ik', [[2, 1, 3, 4], [5, 4, 6]]);
  assert.equal(e.inputs[0]!.length, 4);
  assert.equal(e.inputs[1]!.length, 3);
  // Position 1 of the ellipsis: operand 0 has 1, operand 1 has 5, so operand 0's letter is its own.
  assert.notEqual(e.inputs[0]![1], e.inputs[1]![0]);
  assert.deepEqual(e.output.slice(2), ['i', 'k']);
  assert.equal(e.output.length, 4);
});

test('Einsum: a repeated index within one operand (diagonal) is refused by name', async () => {
  await assert.rejects(checkOp('Einsum', [{ name: 'x', shape: [3, 3] }], { equation: 'ii->i' }), /repeated index 'i' within operand 0/);
});

test('Einsum: a wrong rule (operands swapped in the gradient) fails the check', async () => {
  // dA = dY·B (not Bᵀ-contracted): the gradient einsum contracts over the wrong index.
  const wrong: GradRule = (ctx, node, [dY], needs) => {
    const [a, b] = node.inputs as [string, string];
    return [
      needs[0] ? ctx.em.op('Einsum', [dY!, b], { equation: 'ik,jk->ij' }) : null,
      needs[1] ? ctx.em.op('Einsum', [a, dY!], { equation: 'ij,ik->kj' }) : null,
    ];
  };
  await assertBrokenFails('Einsum', wrong, () => checkOp('Einsum', [{ name: 'a', shape: [3, 3] }, { name: 'b', shape: [3, 3] }], { equation: 'ij,jk->ik' }));
});

test('Einsum attention exported by torch 1.13: loss and every gradient match PyTorch to 1e-4', async () => {
  // Fixture: test/fixtures/einsum/make_einsum_fixture.py (scores, weighted values, projections
  // on raw weights, a class head summing the token index away).
  const { readFileSync } = await import('node:fs');
  const { loadModel } = await import('../../src/model.ts');
  const { parseSafetensors } = await import('../../src/io/safetensors.ts');
  const losses = await import('../../src/train/losses.ts');
  const dir = new URL('../fixtures/einsum/', import.meta.url);
  const model = await loadModel(new URL('model.onnx', dir).pathname, { threads: 1 });
  const { tensors } = parseSafetensors(readFileSync(new URL('tensors.safetensors', dir)));
  const step = model.compileTrainStep({ trainable: 'all', loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }) });
  const r = await step.run({ x: tensors.get('input.x')!, y: tensors.get('label.y')! });
  const refLoss = (tensors.get('loss')!.data as Float32Array)[0]!;
  assert.ok(Math.abs(r.loss - refLoss) <= 1e-4 * Math.abs(refLoss), `loss ${r.loss} vs ${refLoss}`);
  let n = 0;
  for (const [k, t] of tensors) {
    if (!k.startsWith('grad.')) continue;
    const g = r.grads.get(k.slice(5));
    assert.ok(g, `no gradient for ${k.slice(5)}`);
    const e = t.data as Float32Array;
    let d2 = 0, e2 = 0;
    for (let i = 0; i < e.length; i++) { d2 += (g[i]! - e[i]!) ** 2; e2 += e[i]! ** 2; }
    assert.ok(Math.sqrt(d2) <= 1e-4 * Math.sqrt(e2), `${k}: ‖diff‖ ${Math.sqrt(d2).toExponential(2)} vs ‖ref‖ ${Math.sqrt(e2).toExponential(2)}`);
    n++;
  }
  assert.equal(n, 6);
  await step.release();
});

test('einsumShape: the output shape an explicit equation gives, broadcasting as the kernel does; the probe believes inference only where they agree', async () => {
  const { einsumShape, probe } = await import('../../src/onnx/shapes.ts');
  const node = (equation: string) => ({ name: 'e', opType: 'Einsum', domain: '', inputs: ['a', 'b'], outputs: ['y'], attrs: { equation: { kind: 'string' as const, value: equation } } });
  assert.deepEqual(einsumShape(node('ij,ij->ij'), [[1, 3], [2, 3]]), [2, 3]);
  assert.deepEqual(einsumShape(node('...ij,...jk->...ik'), [[2, 1, 3, 4], [1, 3, 4, 2]]), [2, 3, 3, 2]);
  assert.deepEqual(einsumShape(node('bhid,bhjd->bhij'), [[2, 4, 49, 8], [2, 4, 49, 8]]), [2, 4, 49, 49]);
  assert.equal(einsumShape(node('ij,jk'), [[2, 3], [3, 4]]), undefined, 'implicit output: not guessed');
  assert.equal(einsumShape(node('ij,jk->ik'), [[2, 3], [4, 4]]), undefined, 'sizes that cannot broadcast');
  // MaxViT-style attention scores: inference is right, so nothing after the Einsum needs a run;
  // a broadcast Einsum (inference says [1, 3], the kernel [2, 3]) still sends its outputs to a run.
  const { ModelBuilder } = await import('../../src/onnx/model-builder.ts');
  const b = new ModelBuilder({ opset: 13 }).input('q', 'float32', ['B', 4, 8]).input('k', 'float32', ['B', 4, 8]);
  b.node('Einsum', ['q', 'k'], ['s'], { equation: 'bid,bjd->bij' }).node('Softmax', ['s'], ['p'], { axis: -1 }).output('p');
  const sig = { q: { dtype: 'float32' as const, dims: [2, 4, 8] }, k: { dtype: 'float32' as const, dims: [2, 4, 8] } };
  const r = await probe(b.build(), sig);
  assert.deepEqual(r.computed, []);
  assert.deepEqual(r.shapes.get('p')?.dims, [2, 4, 4]);
  const c = new ModelBuilder({ opset: 13 }).input('a', 'float32', [1, 3]).input('x', 'float32', [2, 3]);
  c.node('Einsum', ['a', 'x'], ['y'], { equation: 'ij,ij->ij' }).node('Relu', ['y'], ['z']).output('z');
  const r2 = await probe(c.build(), { a: { dtype: 'float32', dims: [1, 3] }, x: { dtype: 'float32', dims: [2, 3] } });
  assert.deepEqual([...r2.computed].sort(), ['y', 'z']);
  assert.deepEqual(r2.shapes.get('z')?.dims, [2, 3]);
});
