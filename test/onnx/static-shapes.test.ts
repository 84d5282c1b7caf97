// Static forward shapes (src/onnx/static-shapes.ts) against onnxruntime's, on a graph with every op
// the propagation reads; and what it leaves unknown (a shape only a run would tell).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { probeShapes } from '../../src/onnx/shapes.ts';
import { staticShapes } from '../../src/onnx/static-shapes.ts';
import { f32, i64 } from '../../src/onnx/tensor.ts';

function model(opset: number) {
  const b = new ModelBuilder({ opset });
  b.input('x', 'float32', ['N', 4, 9, 9]);
  b.initializer('w', f32([8, 4, 3, 3], new Float32Array(8 * 4 * 9).fill(0.1)));
  b.initializer('w2', f32([8, 8, 1, 3], new Float32Array(8 * 8 * 3).fill(0.1)));
  b.initializer('scale', f32([1, 8, 1, 1], new Float32Array(8).fill(2)));
  b.initializer('pads', i64([8], [0, 0, 1, 2, 0, 0, 0, 1]));
  b.initializer('split', i64([2], [3, 5]));
  b.initializer('starts', i64([2], [1, -1])); b.initializer('ends', i64([2], [-1, -100])); b.initializer('axes', i64([2], [2, 3])); b.initializer('steps', i64([2], [2, -2]));
  b.initializer('un', i64([2], [0, 3])); b.initializer('rs', i64([3], [0, -1, 4])); b.initializer('rax', i64([1], [1]));
  b.initializer('m', f32([4, 6], new Float32Array(24).fill(1)));
  b.node('Conv', ['x', 'w'], ['c'], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }); // [N, 8, 5, 5]
  b.node('Mul', ['c', 'scale'], ['cs']); // broadcast
  b.node('Pad', ['cs', 'pads'], ['p']); // [N, 8, 6, 8]
  b.node('Conv', ['p', 'w2'], ['c2'], { kernel_shape: [1, 3], dilations: [1, 2] }); // [N, 8, 6, 4]
  b.node('MaxPool', ['c2'], ['mp'], { kernel_shape: [2, 2], strides: [2, 2], ceil_mode: 1 }); // [N, 8, 3, 2]
  b.node('Split', ['mp', 'split'], ['s1', 's2'], { axis: 1 });
  b.node('Concat', ['s2', 's1', 's1'], ['cat'], { axis: 1 }); // [N, 11, 3, 2]
  b.node('Slice', ['cat', 'starts', 'ends', 'axes', 'steps'], ['sl']); // [N, 11, 1, 1]
  b.node('Unsqueeze', ['sl', 'un'], ['u']); // [1, N, 11, 1, 1]
  b.node('Squeeze', ['u', 'un'], ['sq']); // [N, 11, 1]… then Reshape
  b.node('GlobalAveragePool', ['c'], ['gap']); // [N, 8, 1, 1]
  b.node('Reshape', ['c', 'rs'], ['r']); // [N, 50, 4]
  b.node('Transpose', ['r'], ['t'], { perm: [0, 2, 1] }); // [N, 4, 50]
  // Reductions take their axes as an input from opset 18, as an attribute before.
  if (opset >= 18) b.node('ReduceMean', ['t', 'rax'], ['red'], { keepdims: 0 }); // [N, 50]
  else b.node('ReduceMean', ['t'], ['red'], { keepdims: 0, axes: [1] });
  b.node('Flatten', ['gap'], ['fl']); // [N, 8]
  b.node('Transpose', ['t'], ['tt'], { perm: [0, 2, 1] });
  b.node('MatMul', ['tt', 'm'], ['mm']); // [N, 50, 6]
  b.node('Shape', ['x'], ['shp']);
  b.node('Reshape', ['x', 'shp'], ['unknown']);
  for (const o of ['sq', 'red', 'fl', 'mm', 'unknown']) b.output(o);
  return b.build();
}

test('static shapes equal onnxruntime\'s for Conv, broadcast, Pad, pools, Split, Concat, Slice, (Un)squeeze, Reshape, Transpose, reductions, Flatten and MatMul', async () => {
  for (const opset of [13, 18]) {
    const ir = model(opset);
    const sig = { x: { dtype: 'float32' as const, dims: [3, 4, 9, 9] } };
    const got = staticShapes(ir.graph, sig);
    const want = await probeShapes(ir, sig);
    let compared = 0;
    for (const n of ir.graph.nodes) for (const o of n.outputs) {
      if (!o || o === 'unknown' || o === 'shp') continue;
      assert.deepEqual(got.get(o), want.get(o)!.dims, `opset ${opset}: ${n.opType} '${o}'`);
      compared++;
    }
    assert.equal(compared, 18);
    // A Reshape to a shape the graph computes is left unknown, and so is everything after it.
    assert.equal(got.get('unknown'), undefined);
  }
});
