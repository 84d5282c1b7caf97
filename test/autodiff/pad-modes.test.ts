// Pad in reflect, edge and wrap mode (PyTorch's ReflectionPad2d, ReplicationPad2d, a conv's
// padding_mode) written as one Gather per padded axis (src/autodiff/lower/pad-modes.ts): the
// forward equals onnxruntime's Pad, and gradients pass finite differences, alone and inside a
// CycleGAN-style block.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gradCheck } from '../../src/autodiff/gradcheck.ts';
import { assertLowersLikeOrt, oneOp, type OneOp } from './lower-helpers.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { f32, i64 } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { modePadRefusal } from '../../src/autodiff/lower/pad-modes.ts';

const s = (v: string) => ({ kind: 'string' as const, value: v });
const pad = (mode: string, shape: number[], pads: number[], extra: Partial<OneOp> = {}): OneOp =>
  ({ op: 'Pad', opset: 13, feed: '', outputs: ['y'], attrs: { mode: s(mode) }, inputs: [['x', shape], ['pads', i64([pads.length], pads)]], ...extra });
const CASES: [string, OneOp][] = [
  ['reflect 1 on H and W (ReflectionPad2d(1))', pad('reflect', [2, 3, 4, 5], [0, 0, 1, 1, 0, 0, 1, 1])],
  ['reflect, uneven and up to n − 1 (ReflectionPad2d((3, 0, 2, 1)))', pad('reflect', [1, 2, 3, 4], [0, 0, 2, 3, 0, 0, 1, 0])],
  ['edge (ReplicationPad2d((1, 2, 0, 3)))', pad('edge', [2, 2, 3, 3], [0, 0, 0, 1, 0, 0, 3, 2])],
  ['reflect on a 1-D signal (ReflectionPad1d, HiFi-GAN\'s discriminators)', pad('reflect', [2, 3, 6], [0, 0, 3, 0, 0, 2])],
  ['reflect at opset 10 (pads an attribute)', { op: 'Pad', opset: 10, feed: '', outputs: ['y'], attrs: { mode: s('reflect'), pads: [0, 0, 1, 2, 0, 0, 2, 1] }, inputs: [['x', [1, 2, 4, 4]]] }],
  ['edge on chosen axes (opset 18 axes input)', { ...pad('edge', [2, 3, 4], [2, 1], { opset: 18 }), inputs: [['x', [2, 3, 4]], ['pads', i64([2], [2, 1])], ['', []], ['axes', i64([1], [-1])]] }],
  ['wrap (opset 19)', pad('wrap', [1, 2, 3, 4], [0, 0, 2, 3, 0, 0, 1, 4], { opset: 19 })],
];

test('Pad in reflect, edge and wrap mode written as Gathers equals onnxruntime\'s Pad', async () => {
  await assertLowersLikeOrt(CASES, 0);
});

test('finite differences through each mode: every copy\'s gradient reaches its source', async () => {
  for (const [label, spec] of CASES.filter(([, c]) => c.opset! >= 13)) { // a step's graph is at opset ≥ 13 (loadModel upgrades older ones)
    const { model, feeds, params } = oneOp(spec);
    for (const r of await gradCheck(model, feeds, { params, outputs: ['y'], maxElements: 48 })) {
      assert.ok(r.relError <= 1e-2, `${label}: relative error ${r.relError.toExponential(2)}`);
      assert.ok(r.analyticNorm > 0);
    }
  }
});

test('a CycleGAN resnet block\'s first half (Conv → ReflectionPad2d(1) → Conv 3×3 → InstanceNorm; its ReLU left out, whose kinks blur finite differences): the conv before the padding passes finite differences; reflect pads ≥ the axis are refused by name before any run', async () => {
  const r = new Rng(3);
  const w = (dims: number[]) => f32(dims, r.fill(new Float32Array(dims.reduce((a, c) => a * c, 1)), 0.3, 'normal'));
  const block = (p: number) => new ModelBuilder({ opset: 13 }).input('x', 'float32', [2, 3, 6, 6])
    .initializer('conv0.weight', w([3, 3, 1, 1])).initializer('pads', i64([8], [0, 0, p, p, 0, 0, p, p]))
    .initializer('conv1.weight', w([4, 3, 3, 3])).initializer('conv1.bias', w([4]))
    .initializer('norm.weight', f32([4], [1.1, 0.9, 1, 1.2])).initializer('norm.bias', f32([4], [0.1, 0, -0.1, 0.2]))
    .node('Conv', ['x', 'conv0.weight'], ['h'], { kernel_shape: [1, 1] })
    .node('Pad', ['h', 'pads'], ['hp'], { mode: s('reflect') })
    .node('Conv', ['hp', 'conv1.weight', 'conv1.bias'], ['c'], { kernel_shape: [3, 3] })
    .node('InstanceNormalization', ['c', 'norm.weight', 'norm.bias'], ['out'], { epsilon: { kind: 'float', value: 1e-5 } })
    .output('out', 'float32', [2, 4, 6, 6]).build(); // p = 1: 6×6 out
  for (const rep of await gradCheck(block(1), { x: w([2, 3, 6, 6]) }, { params: ['conv0.weight', 'conv1.weight'], outputs: ['out'] })) {
    assert.ok(rep.relError <= 1e-3 && rep.analyticNorm > 0, `${rep.param}: relative error ${rep.relError.toExponential(2)}`);
  }
  // onnxruntime's own Pad refuses such pads when the step is probed; the lowering's check says it before any run (a diagnosis)
  const big = block(6);
  assert.match(modePadRefusal(big.graph.nodes[1]!, big.graph, () => [2, 3, 6, 6])!, /reflect pads of 6\/6 on an axis of 6 \(each must be ≤ 5\)/);
  assert.equal(modePadRefusal(block(1).graph.nodes[1]!, block(1).graph, () => [2, 3, 6, 6]), undefined);
});
