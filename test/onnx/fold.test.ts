// Folding what the input signature fixes (src/onnx/fold.ts): a GPT-style block exported by
// torch.onnx with dynamic batch and sequence axes trains and matches PyTorch at two sequence
// lengths; folding never changes forward numbers and never folds what graph-input values reach.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { loadModel } from '../../src/model.ts';
import { parseSafetensors } from '../../src/io/safetensors.ts';
import { readModelFile } from '../../src/onnx/io.ts';
import { encodeModel } from '../../src/onnx/proto.ts';
import { createSession, toOrt, fromOrt } from '../../src/onnx/runtime.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { foldModel, staticTensors, FLOAT_FOLD_MAX_ELEMENTS } from '../../src/onnx/fold.ts';
import { buildStepGraph } from '../../src/train/step-graph.ts';
import { f32, i64, type Tensor } from '../../src/onnx/tensor.ts';
import type { Model } from '../../src/onnx/ir.ts';
import * as losses from '../../src/train/losses.ts';
import { assertCloseToTorch } from '../helpers/close.ts';

const dir = new URL('../fixtures/fold/gpt/', import.meta.url);
const meta = JSON.parse(readFileSync(new URL('meta.json', dir), 'utf8'));
const { tensors } = parseSafetensors(readFileSync(new URL('tensors.safetensors', dir)));
const gptPath = new URL('model.onnx', dir).pathname;

async function run(model: Model, feeds: Record<string, Tensor>): Promise<Map<string, Tensor>> {
  const s = await createSession(encodeModel(model), { optimization: 'disabled', threads: 1 });
  try {
    const out = await s.run(Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, toOrt(t)])));
    return new Map(Object.entries(out).map(([k, t]) => [k, fromOrt(t)]));
  } finally {
    await s.release();
  }
}

test('GPT block with dynamic axes: loss and every gradient match PyTorch at two sequence lengths', async () => {
  const model = await loadModel(gptPath, { threads: 1 });
  const step = model.compileTrainStep({ trainable: meta.trainable, loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }), outputs: ['logits'] });
  for (const { prefix } of meta.lengths as { prefix: string }[]) {
    const r = await step.run({ idx: tensors.get(`${prefix}input.idx`)!, y: tensors.get(`${prefix}label.y`)! });
    const refLoss = (tensors.get(`${prefix}loss`)!.data as Float32Array)[0]!;
    assert.ok(Math.abs(r.loss - refLoss) <= 1e-4 * Math.abs(refLoss), `${prefix} loss ${r.loss} vs ${refLoss}`);
    assertCloseToTorch(`${prefix} logits`, r.outputs.logits!.data as Float32Array, tensors.get(`${prefix}output.logits`)!);
    let n = 0;
    for (const [k, t] of tensors) {
      if (!k.startsWith(`${prefix}grad.`)) continue;
      const p = k.slice(`${prefix}grad.`.length);
      const g = r.grads.get(p);
      assert.ok(g, `${prefix}: no gradient for '${p}'`);
      assertCloseToTorch(`${prefix} grad ${p}`, g, t);
      n++;
    }
    assert.equal(n, meta.trainable.length);
  }
  await step.release();
});

test('GPT step graph: the shape arithmetic is folded away and the computed Slice starts are initializers', async () => {
  const ir = readModelFile(gptPath);
  const sig = { idx: { dtype: 'int64' as const, dims: [2, 5] } };
  const sg = await buildStepGraph(ir, sig, { trainable: meta.trainable, loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }) });
  const g = sg.model.graph;
  const ops = new Set(g.nodes.map((n) => n.opType));
  for (const op of ['Shape', 'Range', 'Concat', 'Equal', 'Unsqueeze']) assert.ok(!ops.has(op), `${op} left in the step graph`);
  // The forward Slices of q, k, v read their starts and ends from initializers (or Constant nodes) now.
  const constants = new Set(g.nodes.filter((n) => n.opType === 'Constant').flatMap((n) => n.outputs));
  const slices = g.nodes.filter((n) => n.opType === 'Slice' && n.name.startsWith('/h/attn/Slice'));
  assert.equal(slices.length, 3);
  for (const s of slices) for (const i of s.inputs.slice(1)) if (i) assert.ok(g.initializers.has(i) || constants.has(i), `${s.name} input ${i} is not a constant`);
  assert.ok(slices.some((s) => g.initializers.has(s.inputs[1]!)), 'a computed start was folded');
  // The mask: Equal(Slice(bias), 0) is a bool [1,1,5,5] initializer; the float buffer is no longer read.
  assert.ok([...g.initializers.values()].some((t) => t.dtype === 'bool' && t.dims.join() === '1,1,5,5'));
  assert.ok(!g.initializers.has('h.attn.bias'));
});

test('folding leaves forward outputs bit-identical (everything frozen: the most folding)', async () => {
  const ir = readModelFile(gptPath);
  for (const { prefix } of meta.lengths as { prefix: string }[]) {
    const idx = tensors.get(`${prefix}input.idx`)!;
    const folded = await foldModel(ir, { idx: { dtype: 'int64', dims: idx.dims } }, []);
    assert.ok(folded.folded.length > 0 && folded.removedNodes > 0);
    // Frozen weights ≤ FLOAT_FOLD_MAX_ELEMENTS are folded through their Transpose, bigger ones would not be.
    assert.ok(folded.model.graph.nodes.length < ir.graph.nodes.length);
    const a = (await run(ir, { idx })).get('logits')!;
    const b = (await run(folded.model, { idx })).get('logits')!;
    assert.deepEqual(b.dims, a.dims);
    assert.deepEqual(b.data, a.data, `${prefix}: folded logits differ`);
  }
});

/**
 * x [N,4] → y = Reshape(x, Concat(Shape(x)[0]·2, -1)) · w (a shape folded from x's shape),
 * z = Gather(e, ArgMax(x)) (an index computed from x's values), big = Transpose(Tile(w)) + Shape-derived
 * float (a large static float left computed).
 */
function toy(): Model {
  const b = new ModelBuilder({ opset: 17 });
  b.input('x', 'float32', ['N', 4]);
  b.initializer('w', f32([2], [0.5, -1.25]));
  b.initializer('e', f32([4], [1, 2, 3, 4]));
  b.initializer('zero', i64([1], [0]));
  b.initializer('two', i64([], [2]));
  b.initializer('minus1', i64([1], [-1]));
  b.initializer('reps', i64([2], [FLOAT_FOLD_MAX_ELEMENTS, 1]));
  b.node('Shape', ['x'], ['sx']);
  b.node('Gather', ['sx', 'zero'], ['n']);
  b.node('Mul', ['n', 'two'], ['n2']);
  b.node('Concat', ['n2', 'minus1'], ['shape'], { axis: 0 });
  b.node('Reshape', ['x', 'shape'], ['xr']);
  b.node('Mul', ['xr', 'w'], ['y']);
  b.node('ArgMax', ['x'], ['am'], { axis: 1, keepdims: 0 });
  b.node('Gather', ['e', 'am'], ['z']);
  // A static float of 2·4096 values: over the limit, so computed in the step, not folded.
  b.node('Reshape', ['w', 'minus1'], ['w1']);
  b.node('Unsqueeze', ['w1', 'minus1'], ['w2']);
  b.node('Tile', ['w2', 'reps'], ['big']);
  b.node('ReduceSum', ['big'], ['s'], { keepdims: 0 });
  b.node('Mul', ['y', 's'], ['ys']);
  b.output('ys', 'float32', null);
  b.output('z', 'float32', null);
  return b.build();
}

test('a Shape of a graph input folds; values computed from graph-input values or trainables never do', async () => {
  const m = toy();
  const stat = staticTensors(m.graph, []);
  for (const t of ['sx', 'n', 'n2', 'shape', 'w1', 'big', 's']) assert.ok(stat.has(t), `${t} should be static`);
  for (const t of ['x', 'xr', 'y', 'am', 'z', 'ys']) assert.ok(!stat.has(t), `${t} must not be static`);
  // With w trainable, nothing computed from w is static (its Shape still would be).
  const statW = staticTensors(m.graph, ['w']);
  for (const t of ['w', 'w1', 'big', 's']) assert.ok(!statW.has(t), `${t} reads a trainable`);
  assert.ok(statW.has('shape'));

  const sig = { x: { dtype: 'float32' as const, dims: [3, 4] } };
  const f = await foldModel(m, sig, []);
  const g = f.model.graph;
  assert.deepEqual(Array.from(g.initializers.get('shape')!.data as BigInt64Array), [6n, -1n]);
  assert.ok(g.initializers.has('s') && !g.initializers.has('big'), 'the small float sum folds; the large Tile was only an input to it');
  assert.ok(!g.initializers.has('am') && g.nodes.some((n) => n.opType === 'ArgMax'));
  assert.deepEqual(g.nodes.map((n) => n.opType).sort(), ['ArgMax', 'Gather', 'Mul', 'Mul', 'Reshape']);
  // Unused after folding: the pieces of the shape arithmetic.
  for (const t of ['zero', 'two', 'reps']) assert.ok(!g.initializers.has(t), `${t} should be dropped`);

  const x = f32([3, 4], [0.1, 2, -3, 0.4, 5, -0.6, 0.7, 0.8, -0.9, 1, 1.1, -12]);
  const a = await run(m, { x });
  const b = await run(f.model, { x });
  for (const k of ['ys', 'z']) assert.deepEqual(b.get(k)!.data, a.get(k)!.data, `${k} differs after folding`);

  // With w trainable, the large float stays computed and w stays a read initializer.
  const fw = await foldModel(m, sig, ['w']);
  assert.ok(fw.model.graph.nodes.some((n) => n.opType === 'Tile'));
  assert.ok(fw.model.graph.initializers.has('w') && fw.model.graph.initializers.has('reps'));
  assert.ok(!fw.model.graph.nodes.some((n) => n.opType === 'Shape'));
});

test('a large static float is not folded when it is what a kept node reads', async () => {
  const b = new ModelBuilder({ opset: 17 });
  b.input('x', 'float32', [1, 1]);
  b.initializer('w', f32([1], [2]));
  b.initializer('reps', i64([1], [FLOAT_FOLD_MAX_ELEMENTS + 1]));
  b.node('Tile', ['w', 'reps'], ['big']);
  b.node('Mul', ['x', 'big'], ['y']);
  b.output('y', 'float32', null);
  const f = await foldModel(b.build(), { x: { dtype: 'float32', dims: [1, 1] } }, []);
  assert.deepEqual(f.folded, []);
  assert.ok(f.model.graph.nodes.some((n) => n.opType === 'Tile'));
});

test('a node with one folded and one kept output stays valid: the folded name is defined once', async () => {
  const n = FLOAT_FOLD_MAX_ELEMENTS + 1;
  const b = new ModelBuilder({ opset: 17 });
  b.input('x', 'float32', [1]);
  b.initializer('w', f32([n + 2], Array.from({ length: n + 2 }, (_, i) => i / 7)));
  b.initializer('sizes', i64([2], [2, n]));
  b.node('Split', ['w', 'sizes'], ['small', 'large'], { axis: 0 });
  b.node('Mul', ['x', 'small'], ['y1']);
  b.node('Mul', ['x', 'large'], ['y2']);
  b.output('y1', 'float32', null);
  b.output('y2', 'float32', null);
  const m = b.build();
  const f = await foldModel(m, { x: { dtype: 'float32', dims: [1] } }, []);
  assert.deepEqual(f.folded, ['small']);
  const split = f.model.graph.nodes.find((nd) => nd.opType === 'Split')!;
  assert.ok(split && !split.outputs.includes('small'));
  const x = f32([1], [1.5]);
  const a = await run(m, { x });
  const c = await run(f.model, { x });
  for (const k of ['y1', 'y2']) assert.deepEqual(c.get(k)!.data, a.get(k)!.data);
});
