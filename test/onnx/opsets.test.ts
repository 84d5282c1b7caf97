// The same model family compiles and differentiates correctly at opsets 13 through 21: emitted
// gradient nodes follow each opset's signatures (Reduce* axes, Squeeze/Unsqueeze, Split).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { gradCheck } from '../../src/autodiff/gradcheck.ts';
import { f32, i64 } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';

function model(opset: number) {
  const rng = new Rng(opset);
  const b = new ModelBuilder({ opset });
  b.input('x', 'float32', ['N', 2, 3, 3]);
  b.initializer('conv.weight', f32([4, 2, 3, 3], rng.fill(new Float32Array(72), 0.3)));
  b.initializer('bn.weight', f32([4], [1, 0.5, 2, 1.5]));
  b.initializer('bn.bias', f32([4], [0.1, 0, -0.1, 0.2]));
  b.initializer('bn.running_mean', f32([4], [0, 0.1, 0, 0]));
  b.initializer('bn.running_var', f32([4], [1, 1, 2, 1]));
  b.initializer('fc.weight', f32([4, 5], rng.fill(new Float32Array(20), 0.5)));
  b.node('Conv', ['x', 'conv.weight'], ['c'], { pads: [1, 1, 1, 1] });
  b.node('BatchNormalization', ['c', 'bn.weight', 'bn.bias', 'bn.running_mean', 'bn.running_var'], ['bnout']);
  b.node('Tanh', ['bnout'], ['t']);
  if (opset >= 18) {
    b.initializer('axes', i64([2], [2, 3]));
    b.node('ReduceMean', ['t', 'axes'], ['pooled'], { keepdims: 0 });
  } else {
    b.node('ReduceMean', ['t'], ['pooled'], { axes: [2, 3], keepdims: 0 });
  }
  b.node('MatMul', ['pooled', 'fc.weight'], ['z']);
  b.node('Softmax', ['z'], ['y'], { axis: -1 });
  b.output('y');
  return b.build();
}

for (const opset of [13, 15, 17, 18, 21]) {
  for (const bn of ['eval', 'train'] as const) {
    test(`opset ${opset}, batchNorm ${bn}: gradients match finite differences`, async () => {
      const x = f32([3, 2, 3, 3], new Rng(1).fill(new Float32Array(54)));
      const reports = await gradCheck(model(opset), { x }, { batchNorm: bn, eps: 1e-3 });
      assert.equal(reports.length, 4);
      for (const r of reports) assert.ok(r.relError < 1e-2, `${r.param}: ${r.relError}`);
    });
  }
}
