// Sequences the graph itself builds at constant positions (SequenceConstruct, SequenceInsert,
// SequenceAt, ConcatFromSequence outside any Loop) become the tensors they hold when a step
// compiles, as an unrolled Loop's did: refit has no gradient rules for sequences.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RefitModel } from '../../src/model.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { f32, i64 } from '../../src/onnx/tensor.ts';
import * as losses from '../../src/train/losses.ts';

test('a step trains through SequenceConstruct, SequenceInsert, SequenceAt and ConcatFromSequence at constant positions', async () => {
  const mb = new ModelBuilder({ opset: 13 });
  mb.input('x', 'float32', [2, 3]);
  mb.initializer('w', f32([3], [1, 2, 3])).initializer('zero', i64([], [0])).initializer('last', i64([], [-1])).initializer('rows', i64([1], [0]));
  mb.node('Mul', ['x', 'w'], ['xw']);
  mb.node('SequenceConstruct', ['x', 'xw'], ['s']);
  mb.node('SequenceInsert', ['s', 'xw', 'zero'], ['s2']); // [xw, x, xw]
  mb.node('SequenceAt', ['s2', 'last'], ['picked']); // xw
  mb.node('ConcatFromSequence', ['s2'], ['stacked'], { axis: 0 }); // [6, 3]
  mb.node('ReduceSum', ['stacked', 'rows'], ['total'], { keepdims: 0 });
  mb.node('Add', ['picked', 'total'], ['y']);
  mb.output('y', 'float32', [2, 3]);
  const model = new RefitModel(mb.build(), { threads: 1 });
  const step = model.compileTrainStep({ trainable: ['w'], loss: losses.mse({ output: 'y', target: 't' }) });
  const x = f32([2, 3], [1, 1, 1, 2, 2, 2]);
  const r = await step.run({ x, t: f32([2, 3], [0, 0, 0, 0, 0, 0]) });
  // y = xw + Σ_rows [xw; x; xw] = x·w + 2·(x0 + x1)·w + (x0 + x1) per column, the same in both rows.
  // Column j: y_ij = x_ij w_j + 6 w_j + 3; dL/dw_j = (2/6) Σ_i y_ij (x_ij + 6).
  const want = [0, 1, 2].map((j) => { const w = [1, 2, 3][j]!; return (2 / 6) * [1, 2].reduce((a, xi) => a + (xi * w + 6 * w + 3) * (xi + 6), 0); });
  assert.deepEqual([...r.grads.get('w')!].map((g) => Math.round(g * 1e3) / 1e3), want.map((g) => Math.round(g * 1e3) / 1e3));
  await step.release();
});
