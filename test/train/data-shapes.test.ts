// A model whose shapes depend on its input values (NonZero: a mixture of experts' routing, a graph
// net's self-loops). The step is compiled per input signature with every shape fixed, so the sizes
// such ops select on a batch join the signature (src/onnx/data-shapes.ts): the same input shapes
// with another selection must give that batch's loss and gradients, not the first batch's shapes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RefitModel } from '../../src/model.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { f32, i64 } from '../../src/onnx/tensor.ts';
import * as losses from '../../src/train/losses.ts';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeModel } from '../../src/onnx/proto.ts';
import { inspectModel, formatInspect } from '../../src/cli/inspect.ts';

// out[1, 2] = Σ over the rows of x whose first value is positive of (row · W): rows picked by NonZero.
function model(): RefitModel {
  const b = new ModelBuilder({ opset: 14 });
  b.input('x', 'float32', ['N', 3]);
  b.initializer('W', f32([3, 2], [0.5, -1, 0.25, 2, -0.75, 0.1]));
  b.initializer('col', i64([], [0])).initializer('zero', f32([], [0])).initializer('axis0', i64([1], [0]));
  b.node('Gather', ['x', 'col'], ['first'], { axis: 1 }).node('Greater', ['first', 'zero'], ['pos']);
  b.node('NonZero', ['pos'], ['nz']).node('Squeeze', ['nz', 'axis0'], ['rows']);
  b.node('Gather', ['x', 'rows'], ['picked'], { axis: 0 }).node('MatMul', ['picked', 'W'], ['h']);
  b.node('ReduceSum', ['h', 'axis0'], ['out'], { keepdims: 1 }).output('out', 'float32', [1, 2]);
  return new RefitModel(b.build(), { threads: 1 });
}

/** The loss mean((out − t)²) and dW = Σ_picked xᵢᵀ · 2(out − t)/2, in float64. */
function reference(x: number[][], t: number[]): { loss: number; grad: number[] } {
  const W = [[0.5, -1], [0.25, 2], [-0.75, 0.1]];
  const picked = x.filter((r) => r[0]! > 0);
  const out = [0, 1].map((j) => picked.reduce((s, r) => s + r.reduce((a, v, i) => a + v * W[i]![j]!, 0), 0));
  const d = out.map((o, j) => o - t[j]!);
  return { loss: (d[0]! ** 2 + d[1]! ** 2) / 2, grad: [0, 1, 2].flatMap((i) => [0, 1].map((j) => picked.reduce((s, r) => s + r[i]!, 0) * d[j]!)) };
}

test('NonZero on the input values: a batch of the same shape that selects other rows gets its own loss and gradients (and one that selects none)', async () => {
  const m = model();
  const step = m.compileTrainStep({ trainable: ['W'], loss: losses.mse({ output: 'out', target: 't' }) });
  const t = f32([1, 2], [0.3, -0.2]);
  const batches = [
    [[1, 2, 3], [-1, 0.5, 2], [0.5, -1, 1], [2, 0, -1]], // 3 rows picked
    [[-1, 2, 3], [-1, 0.5, 2], [0.5, -1, 1], [-2, 0, -1]], // 1 row
    [[1, 2, 3], [-1, 0.5, 2], [0.5, -1, 1], [2, 0, -1]], // 3 again (the first step, from the cache)
    [[-1, 2, 3], [-1, 0.5, 2], [-0.5, -1, 1], [-2, 0, -1]], // none
  ];
  for (const x of batches) {
    const r = await step.run({ x: f32([4, 3], x.flat()), t });
    const want = reference(x, [0.3, -0.2]);
    assert.ok(Math.abs(r.loss - want.loss) < 1e-5, `${x.filter((v) => v[0]! > 0).length} rows: loss ${r.loss} vs ${want.loss}`);
    want.grad.forEach((g, i) => assert.ok(Math.abs(r.grads.get('W')![i]! - g) < 1e-5, `grad ${i}: ${r.grads.get('W')![i]} vs ${g}`));
  }
  await step.release(); await m.release();
});

test('refit inspect says which ops give sizes the data decides', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'refit-data-shapes-'));
  try {
    const path = join(dir, 'picked.onnx');
    writeFileSync(path, encodeModel(model().ir));
    const r = await inspectModel(path);
    assert.deepEqual(r.dataShaped, { NonZero: 1 });
    assert.match(formatInspect(r), /data sizes: NonZero ×1 give sizes the input values decide .*compiled again for each new set of sizes/);
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test('an Expand to a size computed from the values fed (a length regulator\'s total duration) is data-decided too', async () => {
  // out[1, 2] = Σ over d copies of (x · W): the copies come from Expand to [d, 2], d an input value.
  const b = new ModelBuilder({ opset: 14 });
  b.input('x', 'float32', [1, 3]).input('d', 'int64', [1]);
  b.initializer('W', f32([3, 2], [0.5, -1, 0.25, 2, -0.75, 0.1])).initializer('two', i64([1], [2])).initializer('axis0', i64([1], [0]));
  b.node('MatMul', ['x', 'W'], ['h']).node('Concat', ['d', 'two'], ['shape'], { axis: 0 }).node('Expand', ['h', 'shape'], ['copies']);
  b.node('ReduceSum', ['copies', 'axis0'], ['out'], { keepdims: 1 }).output('out', 'float32', [1, 2]);
  const m = new RefitModel(b.build(), { threads: 1 });
  const step = m.compileTrainStep({ trainable: ['W'], loss: losses.mse({ output: 'out', target: 't' }) });
  const x = [1, -2, 0.5], W = [[0.5, -1], [0.25, 2], [-0.75, 0.1]], t = [0.3, -0.2];
  for (const d of [3, 1, 3, 0]) {
    const h = [0, 1].map((j) => x.reduce((a, v, i) => a + v * W[i]![j]!, 0));
    const diff = h.map((v, j) => d * v - t[j]!);
    const loss = (diff[0]! ** 2 + diff[1]! ** 2) / 2;
    const grad = [0, 1, 2].flatMap((i) => [0, 1].map((j) => x[i]! * d * diff[j]!));
    const r = await step.run({ x: f32([1, 3], x), d: i64([1], [d]), t: f32([1, 2], t) });
    assert.ok(Math.abs(r.loss - loss) < 1e-5, `d ${d}: loss ${r.loss} vs ${loss}`);
    grad.forEach((g, i) => assert.ok(Math.abs(r.grads.get('W')![i]! - g) < 1e-5, `d ${d}, grad ${i}: ${r.grads.get('W')![i]} vs ${g}`));
  }
  await step.release(); await m.release();
  // inspect names the Expand (it named only NonZero-like ops before), and not the ReduceSum after it
  const dir = mkdtempSync(join(tmpdir(), 'refit-data-shapes-'));
  try {
    writeFileSync(join(dir, 'expand.onnx'), encodeModel(m.ir));
    assert.deepEqual((await inspectModel(join(dir, 'expand.onnx'))).dataShaped, { Expand: 1 });
  } finally { rmSync(dir, { recursive: true, force: true }); }
});
