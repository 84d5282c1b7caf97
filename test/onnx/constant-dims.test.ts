// constantDims: the static shape of a tensor computed from constants, without running the graph.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { producers } from '../../src/onnx/ir.ts';
import { constantDims } from '../../src/onnx/constant-dims.ts';
import { f32, i64 } from '../../src/onnx/tensor.ts';

test('shapes through Reshape (0 and −1), broadcasting, reductions, Flatten, MatMul and Transpose; undefined past data or an unknown op', () => {
  const g = new ModelBuilder({ opset: 13 }).input('x', 'float32', ['N', 4])
    .initializer('w', f32([6, 2, 3], new Array(36).fill(1))).initializer('g', f32([6, 1, 1], new Array(6).fill(1)))
    .initializer('s1', i64([3], [0, -1, 1])).initializer('v', f32([3], [1, 2, 3])).initializer('m', f32([3, 5], new Array(15).fill(1)))
    .node('ReduceL2', ['w'], ['n'], { axes: [1, 2], keepdims: 1 })
    .node('Div', ['w', 'n'], ['u']).node('Mul', ['g', 'u'], ['wn'])
    .node('Reshape', ['wn', 's1'], ['r'])
    .node('Flatten', ['w'], ['fl'], { axis: 2 })
    .node('MatMul', ['v', 'm'], ['vm'])
    .node('Transpose', ['w'], ['t'], { perm: [2, 0, 1] })
    .node('ReduceMean', ['w'], ['rm'], { axes: [0], keepdims: 0 })
    .node('Add', ['w', 'm'], ['bad'])
    .node('Add', ['x', 'v'], ['fromData'])
    .node('Gather', ['w', 's1'], ['unknown'])
    .output('fromData').build().graph;
  const prod = producers(g);
  const dims = (t: string) => constantDims(g, prod, t);
  assert.deepEqual(dims('wn'), [6, 2, 3], 'weight norm: g · w / ‖w‖');
  assert.deepEqual(dims('r'), [6, 6, 1], 'Reshape: 0 copies, −1 takes the rest');
  assert.deepEqual(dims('fl'), [12, 3]);
  assert.deepEqual(dims('vm'), [5], 'a 1-D left operand is a row the result drops');
  assert.deepEqual(dims('t'), [3, 6, 2]);
  assert.deepEqual(dims('rm'), [2, 3]);
  assert.equal(dims('bad'), undefined, 'shapes that do not broadcast');
  assert.equal(dims('fromData'), undefined, 'a graph input is no constant');
  assert.equal(dims('unknown'), undefined, 'an op outside the list');
});
