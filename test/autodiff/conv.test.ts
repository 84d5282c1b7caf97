import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkOp } from './helpers.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { Emitter } from '../../src/onnx/emitter.ts';
import { encodeModel } from '../../src/onnx/proto.ts';
import { createSession } from '../../src/onnx/runtime.ts';
import { probeShapes } from '../../src/onnx/shapes.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import type { AttrInput } from '../../src/onnx/ir.ts';
import { Rng } from '../../src/util/rng.ts';
import {
  type DxForm, type DwForm, convGeom, convDx, convDw, dxApplies, dwApplies, pickDx, pickDw,
} from '../../src/autodiff/rules/conv.ts';

const X = (shape: number[]) => ({ name: 'x', shape });
const W = (shape: number[]) => ({ name: 'w', shape, scale: 0.5 });
const B = (o: number) => ({ name: 'b', shape: [o] });

test('Conv 2-D, stride 1, pad 1, bias', async () => {
  await checkOp('Conv', [X([2, 3, 5, 5]), W([4, 3, 3, 3]), B(4)], { pads: [1, 1, 1, 1] });
});
test('Conv with more than 64 output positions (dW as a MatMul batched over N)', async () => {
  await checkOp('Conv', [X([2, 2, 10, 9]), W([3, 2, 3, 3]), B(3)], { pads: [1, 1, 1, 1] });
  await checkOp('Conv', [X([1, 2, 19, 17]), W([3, 2, 3, 3])], { strides: [2, 2], pads: [1, 1, 1, 1] });
});
test('Conv 2-D, stride 2, asymmetric pads, leftover rows', async () => {
  await checkOp('Conv', [X([2, 3, 6, 7]), W([4, 3, 3, 2])], { strides: [2, 3], pads: [0, 1, 2, 0] });
});
test('Conv 2-D, dilation 2, stride 1 and stride 2', async () => {
  await checkOp('Conv', [X([1, 2, 7, 6]), W([3, 2, 3, 2])], { dilations: [2, 3], pads: [1, 0, 2, 1] });
  await checkOp('Conv', [X([1, 2, 8, 7]), W([3, 2, 2, 2])], { dilations: [2, 2], strides: [2, 2], pads: [1, 1, 0, 0] });
});
test('Conv groups (2 groups) and depthwise', async () => {
  await checkOp('Conv', [X([2, 4, 5, 5]), W([6, 2, 3, 3]), B(6)], { group: 2, pads: [1, 1, 1, 1] });
  await checkOp('Conv', [X([2, 3, 6, 6]), W([3, 1, 3, 3])], { group: 3, strides: [2, 2], pads: [1, 1, 1, 1] });
  await checkOp('Conv', [X([2, 3, 5, 5]), W([6, 1, 3, 3])], { group: 3, pads: [1, 0, 1, 0] });
});
test('Conv 1-D with bias, stride and pads', async () => {
  await checkOp('Conv', [X([2, 3, 9]), W([4, 3, 3]), B(4)], { strides: [2], pads: [2, 1] });
  await checkOp('Conv', [X([2, 3, 9]), W([4, 3, 3])], { dilations: [2], pads: [0, 3] });
});
test('Conv 1x1 pointwise, stride 1 and stride 2', async () => {
  await checkOp('Conv', [X([2, 4, 4, 4]), W([3, 4, 1, 1]), B(3)], {});
  await checkOp('Conv', [X([2, 4, 5, 5]), W([3, 4, 1, 1])], { strides: [2, 2] });
});
test('Conv auto_pad SAME_UPPER, SAME_LOWER, VALID', async () => {
  await checkOp('Conv', [X([1, 2, 6, 5]), W([3, 2, 3, 2])], { auto_pad: 'SAME_UPPER', strides: [2, 2] });
  await checkOp('Conv', [X([1, 2, 6, 5]), W([3, 2, 2, 3])], { auto_pad: 'SAME_LOWER' });
  await checkOp('Conv', [X([1, 2, 6, 5]), W([3, 2, 3, 3])], { auto_pad: 'VALID', strides: [1, 2] });
});
test('Conv 3-D', async () => {
  await checkOp('Conv', [X([1, 2, 4, 4, 3]), W([2, 2, 2, 3, 2]), B(2)], { pads: [1, 1, 0, 0, 1, 1], strides: [1, 2, 1] });
});

// Every formulation the rule can choose from (see bench/conv-grad-forms.ts) gives the same
// gradients as the one it picks, which the finite-difference tests above check.
const DX_FORMS: DxForm[] = ['conv-flip', 'conv-flip-matmul', 'conv-flip-gather', 'convtranspose', 'convtranspose-sympads', 'conv-zero-insert', 'polyphase', 'phases'];
const DW_FORMS: DwForm[] = [
  'onehot-gemm', 'onehot-matmul', 'slices-gemm', 'slices-matmul', 'onehot-mulsum', 'slices-mulsum', 'conv-xt', 'conv-nc', 'gather-matmul', 'gather-mulsum', 'taps-gemm', 'onehot-swapped', 'onehot-dy',
];
const GEOMS: { x: number[]; w: number[]; attrs: Record<string, AttrInput> }[] = [
  { x: [2, 4, 7, 6], w: [6, 2, 3, 2], attrs: { group: 2, strides: [2, 1], pads: [1, 0, 0, 1], dilations: [1, 2] } },
  { x: [2, 3, 8, 8], w: [3, 1, 3, 3], attrs: { group: 3, strides: [2, 2], pads: [1, 1, 1, 1] } },
  { x: [2, 3, 6, 6], w: [3, 1, 3, 3], attrs: { group: 3, pads: [1, 1, 1, 1] } },
  { x: [2, 3, 10], w: [4, 3, 3], attrs: { strides: [3], pads: [2, 0], dilations: [2] } },
  { x: [2, 4, 5, 5], w: [3, 4, 1, 1], attrs: { strides: [2, 2] } },
  // stride 1, groups 1 (the tap-by-tap Gemm form is picked): dilated with asymmetric pads, and 3-D
  { x: [2, 3, 8, 7], w: [5, 3, 3, 2], attrs: { dilations: [2, 1], pads: [2, 0, 1, 1] } },
  { x: [2, 2, 5, 4, 6], w: [3, 2, 2, 3, 3], attrs: { pads: [1, 1, 1, 0, 1, 1] } },
  // stride 1, narrowing (O < C) with ≥ 64 output positions per image: dY's columns ('onehot-dy'), asymmetric pads
  { x: [2, 6, 9, 8], w: [3, 6, 3, 3], attrs: { pads: [1, 0, 1, 2] } },
  // stride > 1 in 2-D (the polyphase form): asymmetric pads, odd sizes, kernels longer than 2s, groups
  { x: [2, 3, 7, 9], w: [4, 3, 3, 3], attrs: { strides: [2, 2], pads: [0, 1, 1, 0] } },
  { x: [1, 2, 11, 10], w: [3, 2, 5, 4], attrs: { strides: [3, 3], pads: [2, 1, 0, 2] } },
  { x: [2, 4, 9, 9], w: [4, 2, 4, 4], attrs: { group: 2, strides: [2, 2], pads: [1, 1, 2, 2] } },
  { x: [1, 2, 9, 8], w: [3, 2, 3, 3], attrs: { strides: [2, 2], pads: [2, 2, 0, 1] } },
  // depthwise 5x5 stride 1 and 2 (odd size: the phases form crops), dilated, multiplier 2, 3-D
  { x: [2, 4, 9, 9], w: [4, 1, 5, 5], attrs: { group: 4, pads: [2, 2, 2, 2] } },
  { x: [2, 4, 9, 11], w: [4, 1, 5, 5], attrs: { group: 4, strides: [2, 2], pads: [2, 2, 2, 2] } },
  { x: [2, 3, 9, 9], w: [3, 1, 3, 3], attrs: { group: 3, dilations: [2, 2], pads: [2, 2, 2, 2] } },
  { x: [2, 3, 8, 7], w: [6, 1, 3, 3], attrs: { group: 3, strides: [2, 2], pads: [1, 0, 1, 1] } },
  { x: [1, 3, 8, 6, 5], w: [3, 1, 3, 3, 3], attrs: { group: 3, strides: [2, 1, 2], pads: [1, 1, 1, 1, 1, 1] } },
  { x: [2, 2, 10, 10], w: [2, 1, 3, 3], attrs: { group: 2, strides: [3, 3], pads: [0, 1, 2, 0] } },
];
for (const [gi, geo] of GEOMS.entries()) {
  test(`Conv gradient forms agree (geometry ${gi})`, async () => {
    const b = new ModelBuilder({ opset: 17 });
    const rng = new Rng(11 + gi);
    const rand = (d: number[]) => f32(d, rng.fill(new Float32Array(d.reduce((a, c) => a * c, 1))));
    b.initializer('x', rand(geo.x)).initializer('w', rand(geo.w));
    b.node('Conv', ['x', 'w'], ['y'], geo.attrs);
    b.output('y');
    const m = b.build();
    const yShape = (await probeShapes(m, {})).get('y')!.dims;
    const node = m.graph.nodes[0]!;
    const g = convGeom(node, geo.x, geo.w, yShape);
    b.initializer('dy', rand(yShape));
    const em = new Emitter(m.graph, 17);
    const outs: [string, string][] = [];
    for (const f of DX_FORMS) if (dxApplies(g, f)) outs.push([`dX ${f}`, convDx(em, g, 'dy', 'w', f)]);
    for (const f of DW_FORMS) if (dwApplies(g, f)) outs.push([`dW ${f}`, convDw(em, g, 'x', 'dy', f)]);
    for (const [, o] of outs) b.output(o);
    const session = await createSession(encodeModel(m), { threads: 1 });
    const res = await session.run({});
    await session.release();
    for (const kind of ['dX', 'dW']) {
      const picked = `${kind} ${kind === 'dX' ? pickDx(g) : pickDw(g)}`;
      const ref = res[outs.find(([n]) => n === picked)![1]]!.data as Float32Array;
      for (const [name, o] of outs.filter(([n]) => n.startsWith(kind))) {
        const v = res[o]!.data as Float32Array;
        assert.equal(v.length, ref.length, `${name}: size`);
        const scale = Math.max(...Array.from(ref, Math.abs));
        const err = Math.max(...Array.from(v, (a, i) => Math.abs(a - ref[i]!)));
        assert.ok(err <= 1e-5 * scale, `${name} differs from ${picked} by ${err} (scale ${scale})`);
      }
    }
  });
}

test('the dW choice: the swapped one-hot columns where they are small (of dY where the conv narrows), the taps where they would be large, neither below 64 output positions', () => {
  const pick = (x: number[], w: number[], strides = [1, 1]) => {
    const node = new ModelBuilder({ opset: 17 }).input('x', 'float32', x).initializer('w', f32(w, new Float32Array(w.reduce((a, c) => a * c, 1))))
      .node('Conv', ['x', 'w'], ['y'], { pads: [1, 1, 1, 1], strides }).build().graph.nodes[0]!;
    const out = x.slice(2).map((d) => Math.floor((d + 2 - 3) / strides[0]!) + 1);
    return pickDw(convGeom(node, x, w, [x[0]!, w[0]!, ...out]));
  };
  assert.equal(pick([2, 64, 24, 24], [64, 64, 3, 3]), 'onehot-swapped', "ESPCN's layer: 2.7 MB of columns");
  assert.equal(pick([64, 32, 28, 28], [32, 32, 3, 3]), 'onehot-swapped', 'cnn28: 58 MB of columns, under the cap');
  assert.equal(pick([64, 64, 56, 56], [64, 64, 3, 3]), 'taps-gemm', "ResNet-18 224's layer1 at batch 64: 462 MB of columns, over the cap: the taps build none");
  assert.equal(pick([64, 3, 28, 28], [32, 3, 3, 3]), 'onehot-swapped', 'few channels: the one-hot columns either way, swapped');
  assert.equal(pick([64, 32, 28, 28], [64, 32, 3, 3], [2, 2]), 'onehot-swapped', 'stride 2: the one-hot columns either way');
  assert.equal(pick([64, 256, 4, 4], [256, 256, 3, 3]), 'taps-gemm', '16 output positions: per-sample products too short');
  assert.equal(pick([2, 256, 4, 4], [256, 256, 3, 3]), 'onehot-gemm', 'batch 2: 32 positions in all, so no per-tap Concat of weight-sized products');
  assert.equal(pick([64, 32, 28, 28], [8, 32, 3, 3]), 'onehot-dy', 'a LoRA A conv (8 of 32 channels): the columns of dY, 4× smaller');
  assert.equal(pick([64, 32, 28, 28], [8, 32, 3, 3], [2, 2]), 'onehot-swapped', 'stride 2: X\'s columns');
  assert.equal(pick([64, 256, 4, 4], [8, 256, 3, 3]), 'taps-gemm', '16 output positions per image: not the per-sample products');
});

test('the dX choice: a fed dense weight is flipped per step only where its conv has 256 output positions or more; a constant or grouped one always', () => {
  const geom = (x: number[], w: number[]) => {
    const node = new ModelBuilder({ opset: 17 }).input('x', 'float32', x).initializer('w', f32(w, new Float32Array(w.reduce((a, c) => a * c, 1))))
      .node('Conv', ['x', 'w'], ['y'], { pads: [1, 1, 1, 1] }).build().graph.nodes[0]!;
    return convGeom(node, x, w, [x[0]!, w[0]!, ...x.slice(2)]);
  };
  const few = geom([2, 512, 2, 2], [512, 512, 3, 3]), many = geom([64, 512, 2, 2], [512, 512, 3, 3]);
  assert.equal(pickDx(few, {}, true), 'convtranspose', 'ResNet-18 layer4 at batch 2 and 64×64: 8 positions');
  assert.equal(pickDx(few, {}, false), 'conv-flip-matmul');
  assert.equal(pickDx(many, {}, true), 'conv-flip-matmul', '256 positions');
  assert.equal(pickDx(few, { convTransposeUnequalPads: true }, true), 'convtranspose', 'equal pads here: no WebGPU detour needed');
  const depthwise = convGeom(new ModelBuilder({ opset: 17 }).input('x', 'float32', [2, 512, 2, 2]).initializer('w', f32([512, 1, 3, 3], new Float32Array(4608)))
    .node('Conv', ['x', 'w'], ['y'], { pads: [1, 1, 1, 1], group: 512 }).build().graph.nodes[0]!, [2, 512, 2, 2], [512, 1, 3, 3], [2, 512, 2, 2]);
  assert.equal(pickDx(depthwise, {}, true), 'conv-flip-matmul', 'a grouped weight is small to flip, and grouped ConvTranspose is slow');
});
