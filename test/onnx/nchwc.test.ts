// The Node-only pass that puts convolutions with fed (trainable) weights on onnxruntime's blocked
// NCHWc kernels (src/onnx/nchwc.ts) must not change the numbers: the same step graph with and
// without it gives the same loss and gradients (≤ 1e-5 relative), on the shipped CNN (stem with one
// input channel, 3×3 stride 1 and 2, 1×1 stride-2 shortcuts) and on single convs of the other
// geometries (depthwise, dilation, asymmetric padding, bias).
//
// ReLU is replaced by Tanh in the CNN: the blocked kernels sum in another order, and a ReLU input
// within ~1e-7 of zero may then change sign; with batch-statistics BatchNorm that one element moves
// upstream gradients by up to a few percent (issue 14's first trap), which says nothing about the pass.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/model.ts';
import { buildStepGraph } from '../../src/train/step-graph.ts';
import * as losses from '../../src/train/losses.ts';
import { encodeModel } from '../../src/onnx/proto.ts';
import { createSession, toOrt, fromOrt } from '../../src/onnx/runtime.ts';
import { blockFedConvs, fewPositionWeights, MIN_BLOCKED_POSITIONS, nchwcBlockSize, NCHWC_DOMAIN, padFedOutputs } from '../../src/onnx/nchwc.ts';
import { cloneModel, type Model, type Node } from '../../src/onnx/ir.ts';
import { f32, i64, type Tensor } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';

const block = await nchwcBlockSize();

async function runBoth(model: Model, fed: Set<string>, feeds: Record<string, Tensor>): Promise<{ rewritten: number; worst: number; worstName: string }> {
  const blocked = cloneModel(model);
  const rewritten = blockFedConvs(blocked, fed, block!);
  const outs: Record<string, Tensor>[] = [];
  for (const m of [model, blocked]) {
    const s = await createSession(encodeModel(m), { threads: 1 });
    try {
      const o = await s.run(Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, toOrt(t)])));
      outs.push(Object.fromEntries(Object.entries(o).map(([k, t]) => [k, fromOrt(t)])));
    } finally {
      await s.release();
    }
  }
  let worst = 0, worstName = '';
  for (const k of Object.keys(outs[0]!)) {
    const a = outs[0]![k]!.data as Float32Array, b = outs[1]![k]!.data as Float32Array;
    let diff = 0, scale = 0;
    for (let i = 0; i < a.length; i++) { diff = Math.max(diff, Math.abs(a[i]! - b[i]!)); scale = Math.max(scale, Math.abs(a[i]!)); }
    const rel = diff / (scale || 1);
    if (rel > worst) { worst = rel; worstName = k; }
  }
  return { rewritten, worst, worstName };
}

const randn = (rng: Rng, dims: number[]) => f32(dims, Float32Array.from({ length: dims.reduce((p, d) => p * d, 1) }, () => rng.normal()));

test('onnxruntime reports its NCHWc block size (read from a probe it optimised)', { skip: block === null && 'onnxruntime-node has no blocked kernels on this CPU: the pass is off' }, () => {
  assert.ok([4, 8, 16, 32, 64].includes(block!), `block ${block}`);
});

test('shipped CNN full step: blocking the fed convs changes no loss or gradient (≤ 1e-5 relative)', { skip: block === null && 'no NCHWc kernels here' }, async () => {
  const model = await loadModel('models/fmnist-cnn.onnx', { threads: 1 });
  for (const n of model.ir.graph.nodes) if (n.opType === 'Relu') n.opType = 'Tanh';
  const N = 8;
  const sg = await buildStepGraph(model.ir, { x: { dtype: 'float32', dims: [N, 1, 28, 28] } }, {
    trainable: model.parameterNames('all'), loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }), batchNorm: 'train',
  });
  const rng = new Rng(3);
  const feeds: Record<string, Tensor> = { x: randn(rng, [N, 1, 28, 28]) };
  for (const [, inp] of sg.lossInputs) feeds[inp] = i64([N], Array.from({ length: N }, (_, i) => i % 10));
  for (const p of sg.paramInputs) feeds[p] = model.param(p);
  const r = await runBoth(sg.model, new Set(sg.paramInputs), feeds);
  // Every conv of the CNN has 32·k output channels: all 9 forward convs are blocked, and the 4
  // input gradients of the stride-1 convs after the stem (flipped weights; the stem's input needs
  // none, and stride-2 input gradients are ConvTranspose, which has no blocked kernel).
  assert.equal(r.rewritten, 13);
  assert.ok(r.worst <= 1e-5, `${r.worstName}: ${r.worst.toExponential(2)} relative`);
});

test('input-gradient convs of depthwise and narrow layers: same step with and without the pass', { skip: block === null && 'no NCHWc kernels here' }, async () => {
  // x → Conv 16→32 → Tanh → depthwise 3×3 (32) → Tanh → Conv 32→8 → Tanh → pool → logits [N, 8].
  // The dX of the depthwise conv is a blocked depthwise conv on the flipped weight; the dX of the
  // 32→8 conv reads 8 < block gradient channels (the OIHWBo form without an input reorder). 2×12×12 = 288
  // output positions: fewer, and a fed weight's dX is a ConvTranspose (weightCopies in src/autodiff/rules/conv.ts).
  const rng = new Rng(11);
  const conv = (name: string, x: string, w: string, attrs: Node['attrs']): Node => ({ name, opType: 'Conv', domain: '', inputs: [x, w], outputs: [`${name}.y`], attrs });
  const act = (name: string, x: string): Node => ({ name, opType: 'Tanh', domain: '', inputs: [x], outputs: [`${name}.y`], attrs: {} });
  const pads = { pads: { kind: 'ints' as const, value: [1, 1, 1, 1] } };
  const weights: [string, number[]][] = [['w1', [32, 16, 3, 3]], ['w2', [32, 1, 3, 3]], ['w3', [8, 32, 3, 3]]];
  const model: Model = {
    irVersion: 8, opsets: [{ domain: '', version: 13 }], producerName: 'test', producerVersion: '', docString: '', metadata: {},
    graph: {
      name: 'narrow', inputs: [{ name: 'x', dtype: 'float32', shape: [2, 16, 12, 12] }], outputs: [{ name: 'logits', dtype: 'float32', shape: [2, 8] }], valueInfo: [],
      initializers: new Map(weights.map(([n, d]) => [n, f32(d, Float32Array.from(randn(rng, d).data as Float32Array, (v) => v * 0.3))])),
      nodes: [
        conv('c1', 'x', 'w1', pads), act('a1', 'c1.y'),
        conv('c2', 'a1.y', 'w2', { ...pads, group: { kind: 'int', value: 32 } }), act('a2', 'c2.y'),
        conv('c3', 'a2.y', 'w3', pads), act('a3', 'c3.y'),
        { name: 'pool', opType: 'GlobalAveragePool', domain: '', inputs: ['a3.y'], outputs: ['pooled'], attrs: {} },
        { name: 'flat', opType: 'Flatten', domain: '', inputs: ['pooled'], outputs: ['logits'], attrs: {} },
      ],
    },
  };
  const trainable = weights.map(([n]) => n);
  const sg = await buildStepGraph(model, { x: { dtype: 'float32', dims: [2, 16, 12, 12] } }, { trainable, loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }) });
  const feeds: Record<string, Tensor> = { x: randn(rng, [2, 16, 12, 12]) };
  for (const [, inp] of sg.lossInputs) feeds[inp] = i64([2], [3, 5]);
  for (const p of sg.paramInputs) feeds[p] = model.graph.initializers.get(p)!;
  const r = await runBoth(sg.model, new Set(sg.paramInputs), feeds);
  // Forward: c1, c2 (depthwise), c3 (8 < block outputs: its weight padded with zero filters to a
  // whole block, the padding dropped by ReorderOutput). Input gradients: of c2 (depthwise, flipped)
  // and of c3 (32 outputs, 8 inputs); c1's input x needs none.
  if (block! <= 16) assert.equal(r.rewritten, 5);
  assert.ok(r.worst <= 1e-5, `${r.worstName}: ${r.worst.toExponential(2)} relative`);
});

/** One Conv with a fed weight (and optional fed bias) as a whole model. */
function convModel(x: number[], w: number[], attrs: Record<string, number | number[]>, bias: boolean): Model {
  const node: Node = {
    name: 'conv', opType: 'Conv', domain: '', inputs: ['x', 'w', ...(bias ? ['b'] : [])], outputs: ['y'],
    attrs: Object.fromEntries(Object.entries(attrs).map(([k, v]) => [k, typeof v === 'number' ? { kind: 'int', value: v } : { kind: 'ints', value: v }])),
  };
  return {
    irVersion: 8, opsets: [{ domain: '', version: 13 }], producerName: 'test', producerVersion: '', docString: '', metadata: {},
    graph: {
      name: 'conv', nodes: [node],
      inputs: [{ name: 'x', dtype: 'float32', shape: x }, { name: 'w', dtype: 'float32', shape: w }, ...(bias ? [{ name: 'b', dtype: 'float32' as const, shape: [w[0]!] }] : [])],
      outputs: [{ name: 'y', dtype: 'float32', shape: null }], initializers: new Map(), valueInfo: [],
    },
  };
}

const geometries: { what: string; x: number[]; w: number[]; attrs: Record<string, number | number[]>; bias: boolean; blocked: boolean }[] = [
  { what: 'depthwise 3×3 stride 2', x: [2, 32, 15, 15], w: [32, 1, 3, 3], attrs: { group: 32, strides: [2, 2], pads: [1, 1, 1, 1] }, bias: true, blocked: true },
  { what: 'depthwise 5×5 stride 1', x: [2, 64, 9, 9], w: [64, 1, 5, 5], attrs: { group: 64, pads: [2, 2, 2, 2] }, bias: false, blocked: true },
  { what: '3×3 dilation 2, asymmetric pads', x: [2, 32, 12, 10], w: [48, 32, 3, 3], attrs: { dilations: [2, 2], pads: [2, 1, 0, 2] }, bias: true, blocked: true },
  { what: 'stem 7×7 stride 2 on 3 channels', x: [2, 3, 21, 21], w: [64, 3, 7, 7], attrs: { strides: [2, 2], pads: [3, 3, 3, 3] }, bias: false, blocked: true },
  { what: 'output channels not a block multiple (padded to whole blocks)', x: [2, 32, 8, 8], w: [40, 32, 3, 3], attrs: { pads: [1, 1, 1, 1] }, bias: true, blocked: true },
  { what: 'fewer output channels than a block, as a LoRA A conv (padded)', x: [2, 32, 8, 8], w: [8, 32, 3, 3], attrs: { pads: [1, 1, 1, 1] }, bias: false, blocked: true },
  { what: 'grouped, not depthwise (left alone)', x: [2, 32, 8, 8], w: [32, 16, 3, 3], attrs: { group: 2, pads: [1, 1, 1, 1] }, bias: false, blocked: false },
];

for (const g of geometries) {
  test(`single conv, ${g.what}: same output with and without the pass`, { skip: block === null && 'no NCHWc kernels here' }, async () => {
    // Channel counts above assume a block of at most 16 (AVX-512's); with a larger one fewer convs qualify.
    const model = convModel(g.x, g.w, g.attrs, g.bias);
    const rng = new Rng(7);
    const feeds: Record<string, Tensor> = { x: randn(rng, g.x), w: randn(rng, g.w) };
    if (g.bias) feeds.b = randn(rng, [g.w[0]!]);
    const r = await runBoth(model, new Set(['w', 'b']), feeds);
    if (block! <= 16) assert.equal(r.rewritten, g.blocked ? 1 : 0);
    assert.ok(r.worst <= 1e-5, `${r.worst.toExponential(2)} relative`);
  });
}

test('the pass adds the nchwc opset import only when it rewrote something', { skip: block === null && 'no NCHWc kernels here' }, () => {
  const untouched = convModel([1, 32, 4, 4], [32, 16, 1, 1], { group: 2 }, false);
  assert.equal(blockFedConvs(untouched, new Set(['w']), block!), 0);
  assert.ok(!untouched.opsets.some((o) => o.domain === NCHWC_DOMAIN));
  const baked = convModel([1, 32, 4, 4], [32, 32, 1, 1], {}, false);
  assert.equal(blockFedConvs(baked, new Set(), block!), 0, 'a weight that is not fed is left to onnxruntime');
  padFedOutputs.current = false;
  try { assert.equal(blockFedConvs(convModel([1, 32, 4, 4], [8, 32, 3, 3], { pads: [1, 1, 1, 1] }, false), new Set(['w']), block!), 0, 'padding switched off'); } finally { padFedOutputs.current = true; }
});

test('fed weights of convs with few output positions stay on the plain kernels (fewPositionWeights, MIN_BLOCKED_POSITIONS)', { skip: block === null && 'no NCHWc kernels here' }, () => {
  const shapes = (n: number, hw: number) => new Map([['y', { dims: [n, 32, hw, hw] }]]);
  // 2 × 4 × 4 = 32 output positions: the weight's reorder would cost more than the blocked kernel saves
  const tiny = convModel([2, 32, 4, 4], [32, 32, 3, 3], { pads: [1, 1, 1, 1] }, false);
  const few = fewPositionWeights(tiny, new Set(['w']), shapes(2, 4), MIN_BLOCKED_POSITIONS);
  assert.deepEqual([...few], ['w']);
  assert.equal(blockFedConvs(tiny, new Set(['w'].filter((w) => !few.has(w))), block!), 0);
  // 2 × 16 × 16 = 512: blocked as before
  const large = convModel([2, 32, 16, 16], [32, 32, 3, 3], { pads: [1, 1, 1, 1] }, false);
  const none = fewPositionWeights(large, new Set(['w']), shapes(2, 16), MIN_BLOCKED_POSITIONS);
  assert.equal(none.size, 0);
  if (block! <= 32) assert.equal(blockFedConvs(large, new Set(['w'].filter((w) => !none.has(w))), block!), 1);
});
