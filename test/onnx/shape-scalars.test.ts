// Scalars in shape arithmetic that nothing reads (src/onnx/shapes.ts): ONNX's own expansion of
// LayerNormalization computes `Rank = Size(Shape(X))` and never uses it. Once the Shape was a
// constant the Size node went with it, and the probe that asks each scalar's rank read a name no
// node produced: onnxruntime rejected the step ("Node input '…Rank' is not a graph input").
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RefitModel } from '../../src/model.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import * as losses from '../../src/train/losses.ts';

test('a step compiles where Size(Shape(x)) is computed and never read', async () => {
  const mb = new ModelBuilder({ opset: 17 });
  mb.input('x', 'float32', [2, 3]);
  mb.initializer('w', f32([3], [1, 2, 3]));
  mb.node('Shape', ['x'], ['x_shape']);
  mb.node('Size', ['x_shape'], ['rank']);
  mb.node('Mul', ['x', 'w'], ['y']);
  mb.output('y', 'float32', [2, 3]);
  const model = new RefitModel(mb.build(), { threads: 1 });
  const step = model.compileTrainStep({ trainable: ['w'], loss: losses.mse({ output: 'y', target: 't' }) });
  const x = f32([2, 3], [1, 1, 1, 2, 2, 2]);
  const r = await step.run({ x, t: f32([2, 3], [0, 0, 0, 0, 0, 0]) });
  // mean((x·w)²) over 6 values: d/dw_j = (2/6) Σ_i x_ij² w_j = (2/6)·5·w_j.
  assert.deepEqual([...r.grads.get('w')!].map((g) => Math.round(g * 1e4) / 1e4), [1.6667, 3.3333, 5]);
  await step.release();
});
