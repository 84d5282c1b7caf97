// Models saved by onnxruntime at optimization level 'all' (its default) hold its blocked NCHWc
// layout: com.microsoft.nchwc Conv (fused activation, residual Sum), pools, ReorderInput /
// ReorderOutput, weights stored reordered and padded to whole blocks. src/autodiff/lower/nchwc.ts
// writes them as standard ops on the same memory: the lowered forward equals onnxruntime's blocked
// kernels, and gradients through it (w.r.t. the stored, reordered weights) pass finite differences.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { NCHWC_DOMAIN, nchwcBlockSize } from '../../src/onnx/nchwc.ts';
import { f32, type Tensor } from '../../src/onnx/tensor.ts';
import type { Model } from '../../src/onnx/ir.ts';
import { gradCheck } from '../../src/autodiff/gradcheck.ts';
import { Rng } from '../../src/util/rng.ts';
import { findSites } from '../../src/peft/sites.ts';
import { lowered, runModel, maxAbsDiff } from './lower-helpers.ts';
import { savedByOrt } from '../helpers/ort-saved.ts';

const f = (value: number) => ({ kind: 'float' as const, value });
const ints = (value: number[]) => ({ kind: 'ints' as const, value });

/**
 * A small CNN whose every layer onnxruntime blocks: an RGB stem (plain NCHW input, OIHWBo filter)
 * with 12 output channels (padded to a whole block), a depthwise stride-2 conv + Clip (ReLU6),
 * a pointwise conv + HardSwish, a conv whose residual Add and Relu onnxruntime fuses (Sum input),
 * nearest ×2 Resize, MaxPool, bilinear ×2 Resize, AveragePool (count_include_pad 0),
 * GlobalAveragePool, then a Gemm head.
 */
function smallCnn(): { model: Model; feeds: Record<string, Tensor> } {
  const rng = new Rng(3);
  const b = new ModelBuilder({ opset: 14 });
  const w = (name: string, dims: number[], scale = 0.4) => b.initializer(name, f32(dims, rng.fill(new Float32Array(dims.reduce((a, c) => a * c, 1)), scale, 'normal')));
  b.input('x', 'float32', [2, 3, 12, 12]);
  w('w1', [12, 3, 3, 3]); w('b1', [12], 0.1);
  w('w2', [12, 1, 3, 3]); w('b2', [12], 0.1);
  w('w3', [32, 12, 1, 1]); w('b3', [32], 0.1);
  w('w4', [32, 32, 3, 3], 0.1); w('b4', [32], 0.1);
  w('wf', [5, 32]); w('bf', [5], 0.1);
  b.initializer('lo', f32([], [0])); b.initializer('hi', f32([], [6]));
  b.node('Conv', ['x', 'w1', 'b1'], ['c1'], { pads: ints([1, 1, 1, 1]) });
  b.node('Relu', ['c1'], ['r1']);
  b.node('Conv', ['r1', 'w2', 'b2'], ['c2'], { pads: ints([1, 1, 1, 1]), strides: ints([2, 2]), group: { kind: 'int', value: 12 } });
  b.node('Clip', ['c2', 'lo', 'hi'], ['r2']);
  b.node('Conv', ['r2', 'w3', 'b3'], ['c3']);
  b.node('HardSwish', ['c3'], ['r3']);
  b.node('Conv', ['r3', 'w4', 'b4'], ['c4'], { pads: ints([1, 1, 1, 1]) });
  b.node('Add', ['c4', 'r3'], ['s4']);
  b.node('Relu', ['s4'], ['r4']);
  b.initializer('roi', f32([0], [])); b.initializer('x2', f32([4], [1, 1, 2, 2]));
  b.node('Resize', ['r4', 'roi', 'x2'], ['u1'], { mode: { kind: 'string', value: 'nearest' }, coordinate_transformation_mode: { kind: 'string', value: 'asymmetric' }, nearest_mode: { kind: 'string', value: 'floor' } });
  b.node('MaxPool', ['u1'], ['p1'], { kernel_shape: ints([2, 2]), strides: ints([2, 2]) });
  b.node('Resize', ['p1', 'roi', 'x2'], ['u2'], { mode: { kind: 'string', value: 'linear' } });
  b.node('AveragePool', ['u2'], ['p2'], { kernel_shape: ints([3, 3]), pads: ints([1, 1, 1, 1]), count_include_pad: { kind: 'int', value: 0 } });
  b.node('GlobalAveragePool', ['p2'], ['g']);
  b.node('Flatten', ['g'], ['fl']);
  b.node('Gemm', ['fl', 'wf', 'bf'], ['y'], { transB: { kind: 'int', value: 1 }, alpha: f(1) });
  b.output('y', 'float32', [2, 5]);
  const x = f32([2, 3, 12, 12], new Rng(5).fill(new Float32Array(2 * 3 * 144), 1, 'normal'));
  return { model: b.build(), feeds: { x } };
}


const floatParams = (m: Model) => [...m.graph.initializers].filter(([, t]) => t.dtype === 'float32' && t.data.length > 1).map(([n]) => n);

test('a model saved at level \'all\' lowers to standard ops that equal onnxruntime\'s blocked kernels', { skip: (await nchwcBlockSize()) === null ? 'onnxruntime has no NCHWc kernels on this CPU' : false }, async () => {
  const { model, feeds } = smallCnn();
  const saved = await savedByOrt(model, 'all');
  const ops = new Set(saved.graph.nodes.filter((n) => n.domain === NCHWC_DOMAIN).map((n) => n.opType));
  for (const op of ['Conv', 'ReorderOutput', 'MaxPool', 'AveragePool', 'GlobalAveragePool', 'Upsample']) assert.ok(ops.has(op), `onnxruntime wrote no nchwc ${op} (found ${[...ops]})`);
  const acts = new Set(saved.graph.nodes.filter((n) => n.domain === NCHWC_DOMAIN && n.opType === 'Conv').map((n) => String(n.attrs.activation?.value)));
  const sums = saved.graph.nodes.filter((n) => n.domain === NCHWC_DOMAIN && n.opType === 'Conv' && n.inputs[3]).length;
  assert.ok(acts.has('HardSwish') && acts.has('Clip') && sums > 0, `fused activations ${[...acts]}, ${sums} Sum inputs: the forms this test means to cover were not written`);
  const params = floatParams(saved);
  const { model: low, count } = await lowered(saved, feeds, params);
  assert.equal(low.graph.nodes.filter((n) => n.domain === NCHWC_DOMAIN && n.opType !== 'ReorderInput').length, 0, 'blocked nodes left after lowering');
  assert.ok(count >= 8, `${count} nodes lowered`);
  const want = (await runModel(saved, feeds)).get('y')!;
  const orig = (await runModel(model, feeds)).get('y')!;
  const got = (await runModel(low, feeds)).get('y')!;
  assert.ok(maxAbsDiff(want, orig) <= 1e-4, 'onnxruntime\'s saved model differs from the original');
  assert.ok(maxAbsDiff(got, want) <= 1e-5, `lowered vs onnxruntime's blocked kernels: max |diff| ${maxAbsDiff(got, want)}`);
});

test('gradients through the lowered blocked ops (w.r.t. the stored reordered weights) pass finite differences', { skip: (await nchwcBlockSize()) === null ? 'onnxruntime has no NCHWc kernels on this CPU' : false }, async () => {
  const { model, feeds } = smallCnn();
  const saved = await savedByOrt(model, 'all');
  const reports = await gradCheck(saved, feeds, { params: floatParams(saved), outputs: ['y'], maxElements: 24 });
  assert.ok(reports.length >= 8, `${reports.length} parameters checked`);
  for (const r of reports) {
    assert.ok(r.relError <= 1e-2, `d/d${r.param}: relative error ${r.relError.toExponential(2)}`);
    assert.ok(r.analyticNorm > 0, `d/d${r.param}: zero gradient`);
  }
});

test('PEFT takes no blocked conv for a layer: its weight and input are not in the layout an adapter assumes', { skip: (await nchwcBlockSize()) === null ? 'onnxruntime has no NCHWc kernels on this CPU' : false }, async () => {
  const { model } = smallCnn();
  const saved = await savedByOrt(model, 'all');
  assert.ok(saved.graph.nodes.some((n) => n.domain === NCHWC_DOMAIN && n.opType === 'Conv'));
  assert.deepEqual(findSites(saved.graph).map((s) => s.op), ['Gemm']);
  assert.deepEqual(findSites(model.graph).map((s) => s.op), ['Conv', 'Conv', 'Conv', 'Conv', 'Gemm'], 'the unsaved model has its convs as sites');
});
