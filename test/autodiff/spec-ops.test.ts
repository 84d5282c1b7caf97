// Ops the ONNX backend tests showed without a gradient (test/real/onnx-backend-node.test.ts runs
// every variant the ONNX project ships): NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss,
// MeanVarianceNormalization, LpNormalization, STFT, LpPool and GlobalLpPool are written as ops with rules
// (src/autodiff/lower/); ReverseSequence, Compress, float Mod, DFT, MaxUnpool and OneHot's values have rules.
// Forward against onnxruntime's kernels, gradients against finite differences.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gradCheck } from '../../src/autodiff/gradcheck.ts';
import { oneOp, assertLowersLikeOrt, type OneOp } from './lower-helpers.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { f32, i64, tensor } from '../../src/onnx/tensor.ts';

const s = (v: string) => ({ kind: 'string' as const, value: v });
const labels = i64([2, 3], [0, 4, 2, 1, -1, 3]); // -1: ignored where ignore_index is -1
const nll = (attrs: Record<string, unknown>, weight = false, op = 'NegativeLogLikelihoodLoss'): OneOp => ({
  op, opset: 13, feed: '', outputs: ['loss'], attrs: attrs as never,
  inputs: [['x', [2, 5, 3]], ['t', attrs.ignore_index ? labels : i64([2, 3], [0, 4, 2, 1, 0, 3])], ...(weight ? [['w', f32([5], [0.5, 1, 2, 1.5, 0.25])] as [string, ReturnType<typeof f32>]] : [])],
});
const LOSSES: [string, OneOp][] = [
  ['NLL mean', nll({})],
  ['NLL sum, weights', nll({ reduction: s('sum') }, true)],
  ['NLL none, ignore_index -1', nll({ reduction: s('none'), ignore_index: -1 })],
  ['NLL mean, weights, ignore_index -1', nll({ ignore_index: -1 }, true)],
  ['SCE mean', nll({}, false, 'SoftmaxCrossEntropyLoss')],
  ['SCE mean, weights, ignore_index -1', nll({ ignore_index: -1 }, true, 'SoftmaxCrossEntropyLoss')],
];
const STFTS: [string, OneOp][] = [
  ['STFT, a window of 16 (trained too), step 6 (overlapping frames)', { op: 'STFT', opset: 17, feed: '', outputs: ['y'], inputs: [['signal', [2, 40, 1]], ['step', i64([], [6])], ['window', [16]]] }],
  ['STFT, frame_length 8, no window, two-sided', { op: 'STFT', opset: 17, feed: '', outputs: ['y'], attrs: { onesided: 0 }, inputs: [['signal', [1, 30, 1]], ['step', i64([], [8])], ['', [0]], ['length', i64([], [8])]] }],
];
const POOLS: [string, OneOp][] = [
  ['LpPool p 2, 3×3 stride 2, padded', { op: 'LpPool', opset: 13, feed: '', outputs: ['y'], attrs: { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }, inputs: [['x', [2, 3, 7, 6]]] }],
  ['LpPool p 1, 1-D kernel 2', { op: 'LpPool', opset: 13, feed: '', outputs: ['y'], attrs: { kernel_shape: [2], p: 1 }, inputs: [['x', [2, 3, 9]]] }],
  ['LpPool p 3, auto_pad SAME_UPPER', { op: 'LpPool', opset: 13, feed: '', outputs: ['y'], attrs: { kernel_shape: [2, 2], p: 3, auto_pad: s('SAME_UPPER') }, inputs: [['x', [1, 2, 5, 5]]] }],
  ['GlobalLpPool p 2', { op: 'GlobalLpPool', opset: 13, feed: '', outputs: ['y'], inputs: [['x', [2, 3, 4, 5]]] }],
];
const NORMS: [string, OneOp][] = [
  ['MVN, default axes', { op: 'MeanVarianceNormalization', opset: 13, feed: '', outputs: ['y'], inputs: [['x', [2, 3, 4, 2]]] }],
  ['MVN, axes [1]', { op: 'MeanVarianceNormalization', opset: 13, feed: '', outputs: ['y'], attrs: { axes: [1] }, inputs: [['x', [2, 3, 4]]] }],
  ['LpNormalization p 2, last axis', { op: 'LpNormalization', opset: 13, feed: '', outputs: ['y'], inputs: [['x', [3, 5]]] }],
  ['LpNormalization p 1, axis 1', { op: 'LpNormalization', opset: 13, feed: '', outputs: ['y'], attrs: { p: 1, axis: 1 }, inputs: [['x', [2, 4, 3]]] }],
];

test('the loss, normalisation and pooling ops and STFT written as standard ops equal onnxruntime\'s kernels (≤ 1e-5)', async () => {
  await assertLowersLikeOrt([...LOSSES, ...NORMS, ...STFTS, ...POOLS]);
});

test('finite differences through the lowered losses (the scores and the class weights) and normalisations', async () => {
  for (const [label, spec] of [...LOSSES, ...NORMS, ...STFTS, ...POOLS]) {
    const { model, feeds, params } = oneOp(spec);
    const weights = model.graph.initializers.has('w') ? ['w'] : [];
    for (const r of await gradCheck(model, feeds, { params: [...params, ...weights], eps: 1e-3, seed: 2 })) {
      assert.ok(r.relError < 1e-2, `${label}, ${r.param}: ${r.relError}`);
      assert.ok(r.analyticNorm > 0, `${label}, ${r.param}: no gradient`);
    }
  }
});

test('ReverseSequence, Compress (with and without an axis) and float Mod: gradients equal finite differences', async () => {
  const cases: [string, ModelBuilder][] = [];
  const w = (d: number[], seed: number) => f32(d, Array.from({ length: d.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i * 1.7 + seed) * 2));
  {
    const b = new ModelBuilder({ opset: 13 });
    b.input('dummy', 'float32', [1]).initializer('x', w([4, 3, 2], 1)).initializer('lens', i64([3], [4, 2, 1]));
    b.node('ReverseSequence', ['x', 'lens'], ['y'], { batch_axis: 1, time_axis: 0 });
    cases.push(['ReverseSequence', b.output('y')]);
  }
  for (const axis of [undefined, 1, -1]) {
    const b = new ModelBuilder({ opset: 13 });
    b.input('dummy', 'float32', [1]).initializer('x', w([3, 4], 2)).initializer('c', tensor('bool', [axis === undefined ? 7 : axis === 1 ? 3 : 4], axis === 1 ? [1, 0, 1] : axis === -1 ? [0, 1, 1, 0] : [1, 0, 0, 1, 1, 0, 1]));
    b.node('Compress', ['x', 'c'], ['y'], axis === undefined ? {} : { axis });
    cases.push([`Compress axis ${axis}`, b.output('y')]);
  }
  {
    const b = new ModelBuilder({ opset: 13 });
    b.input('dummy', 'float32', [1]).initializer('x', w([2, 5], 3)).initializer('m', f32([5], [0.7, -1.3, 2.1, 0.9, -0.6]));
    b.node('Mod', ['x', 'm'], ['y'], { fmod: 1 });
    cases.push(['Mod fmod', b.output('y')]);
  }
  for (const [label, b] of cases) {
    const model = b.build();
    const params = [...model.graph.initializers.entries()].filter(([, t]) => t.dtype === 'float32').map(([k]) => k);
    for (const r of await gradCheck(model, { dummy: f32([1], [0]) }, { params, eps: 1e-3, seed: 3 })) {
      assert.ok(r.relError < 1e-2, `${label}, ${r.param}: ${r.relError}`);
      assert.ok(r.analyticNorm > 0, `${label}, ${r.param}: no gradient`);
    }
  }
});

test('DFT (forward, one-sided, inverse of a complex signal, dft_length longer and shorter), MaxUnpool and OneHot\'s values: gradients equal finite differences', async () => {
  const w = (d: number[], seed: number) => f32(d, Array.from({ length: d.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i * 1.3 + seed)));
  const cases: [string, ModelBuilder][] = [];
  const dft = (label: string, x: number[], attrs: Record<string, number>, length?: number) => {
    const b = new ModelBuilder({ opset: 17 });
    b.input('dummy', 'float32', [1]).initializer('x', w(x, cases.length));
    if (length !== undefined) b.initializer('n', i64([], [length]));
    b.node('DFT', length !== undefined ? ['x', 'n'] : ['x'], ['y'], attrs);
    cases.push([label, b.output('y')]);
  };
  dft('DFT of a real signal', [2, 8, 1], { axis: 1 });
  dft('one-sided DFT', [2, 8, 1], { axis: 1, onesided: 1 });
  dft('inverse DFT of a complex signal', [2, 6, 2], { axis: 1, inverse: 1 });
  dft('DFT with dft_length 10 > 8', [2, 8, 1], { axis: 1 }, 10);
  dft('DFT with dft_length 5 < 8, on axis 2', [2, 3, 8, 2], { axis: 2 }, 5);
  {
    // opset 20: the axis is an input
    const b = new ModelBuilder({ opset: 20 });
    b.input('dummy', 'float32', [1]).initializer('x', w([2, 8, 1], 7)).initializer('axis', i64([], [1]));
    b.node('DFT', ['x', '', 'axis'], ['y'], { onesided: 1 });
    cases.push(['one-sided DFT-20, axis as an input', b.output('y')]);
  }
  {
    const b = new ModelBuilder({ opset: 13 });
    b.input('dummy', 'float32', [1]).initializer('x', w([1, 2, 2, 2], 9)).initializer('i', i64([1, 2, 2, 2], [0, 3, 9, 14, 17, 18, 28, 31]));
    b.node('MaxUnpool', ['x', 'i'], ['y'], { kernel_shape: [2, 2], strides: [2, 2] });
    cases.push(['MaxUnpool', b.output('y')]);
  }
  {
    const b = new ModelBuilder({ opset: 13 });
    b.input('dummy', 'float32', [1]).initializer('x', f32([2], [-0.3, 1.7])).initializer('i', i64([2, 3], [0, 2, 4, 1, 1, -1])).initializer('depth', i64([], [5]));
    b.node('OneHot', ['i', 'depth', 'x'], ['y'], { axis: 1 });
    cases.push(['OneHot\'s off and on values', b.output('y')]);
  }
  for (const [label, b] of cases) {
    const model = b.build();
    for (const r of await gradCheck(model, { dummy: f32([1], [0]) }, { params: ['x'], eps: 1e-3, seed: 5 })) {
      assert.ok(r.relError < 1e-2, `${label}: ${r.relError}`);
      assert.ok(r.analyticNorm > 0, `${label}: no gradient`);
    }
  }
});
