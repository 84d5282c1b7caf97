// Depthwise and stride-2 Conv gradients: finite-difference checks of what the rule emits on small
// depthwise layers (3×3 and 5×5, stride 1 and 2, padding, dilation, channel multiplier), and the
// forms bench/conv-grad-forms.ts chose pinned against the forms they replaced (≤ 1e-5 relative)
// on the geometries the rule picks them for.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkOp } from './helpers.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { Emitter } from '../../src/onnx/emitter.ts';
import { encodeModel } from '../../src/onnx/proto.ts';
import { createSession } from '../../src/onnx/runtime.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import type { AttrInput } from '../../src/onnx/ir.ts';
import { Rng } from '../../src/util/rng.ts';
import { type DxForm, type DwForm, convGeom, convDx, convDw, dxApplies, dwApplies, pickDx, pickDw } from '../../src/autodiff/rules/conv.ts';

const X = (shape: number[]) => ({ name: 'x', shape });
const W = (shape: number[]) => ({ name: 'w', shape, scale: 0.5 });
const B = (o: number) => ({ name: 'b', shape: [o] });

test('depthwise 3x3 stride 1 and 2, pad 1, bias', async () => {
  await checkOp('Conv', [X([2, 4, 7, 7]), W([4, 1, 3, 3]), B(4)], { group: 4, pads: [1, 1, 1, 1] });
  await checkOp('Conv', [X([2, 4, 8, 8]), W([4, 1, 3, 3]), B(4)], { group: 4, strides: [2, 2], pads: [1, 1, 1, 1] });
  await checkOp('Conv', [X([2, 3, 9, 7]), W([3, 1, 3, 3])], { group: 3, strides: [2, 2], pads: [1, 1, 1, 1] });
});
test('depthwise 5x5 stride 1 and 2, pad 2', async () => {
  await checkOp('Conv', [X([2, 3, 8, 8]), W([3, 1, 5, 5])], { group: 3, pads: [2, 2, 2, 2] });
  await checkOp('Conv', [X([2, 3, 9, 10]), W([3, 1, 5, 5])], { group: 3, strides: [2, 2], pads: [2, 2, 2, 2] });
});
test('depthwise with dilation, asymmetric pads, multiplier 2', async () => {
  await checkOp('Conv', [X([2, 3, 9, 9]), W([3, 1, 3, 3])], { group: 3, dilations: [2, 2], pads: [2, 2, 2, 2] });
  await checkOp('Conv', [X([2, 3, 9, 8]), W([3, 1, 3, 3])], { group: 3, dilations: [2, 1], strides: [2, 2], pads: [1, 0, 2, 1] });
  await checkOp('Conv', [X([2, 2, 8, 7]), W([4, 1, 3, 3])], { group: 2, strides: [2, 2], pads: [1, 0, 1, 1] });
});

/** Run every named form of one Conv geometry and compare each against `ref` (≤ 1e-5 of its max). */
async function pin(x: number[], w: number[], attrs: Record<string, AttrInput>, kind: 'dX' | 'dW', forms: (DxForm | DwForm)[], expectPick?: string) {
  const b = new ModelBuilder({ opset: 17 });
  const rng = new Rng(5);
  const rand = (d: number[]) => f32(d, rng.fill(new Float32Array(d.reduce((a, c) => a * c, 1))));
  b.initializer('x', rand(x)).initializer('w', rand(w));
  b.node('Conv', ['x', 'w'], ['y'], attrs);
  const m = b.build();
  const node = m.graph.nodes[0]!;
  const k = w.slice(2), s = (attrs.strides as number[] | undefined) ?? k.map(() => 1), p = (attrs.pads as number[] | undefined) ?? [0, 0, 0, 0];
  const d = (attrs.dilations as number[] | undefined) ?? k.map(() => 1);
  const out = x.slice(2).map((h, i) => Math.floor((h + p[i]! + p[i + 2]! - (k[i]! - 1) * d[i]! - 1) / s[i]!) + 1);
  const g = convGeom(node, x, w, [x[0]!, w[0]!, ...out]);
  const picked = kind === 'dX' ? pickDx(g) : pickDw(g);
  if (expectPick) assert.equal(picked, expectPick, `${kind} form picked for [${x}] * [${w}]`);
  b.initializer('dy', rand([x[0]!, w[0]!, ...out]));
  const em = new Emitter(m.graph, 17);
  const outs = forms.map((f) => [f, kind === 'dX' ? convDx(em, g, 'dy', 'w', f as DxForm) : convDw(em, g, 'x', 'dy', f as DwForm)] as const);
  for (const [f] of outs) assert.ok(kind === 'dX' ? dxApplies(g, f as DxForm) : dwApplies(g, f as DwForm), `${f} applies`);
  for (const [, o] of outs) b.output(o);
  const session = await createSession(encodeModel(m), { threads: 1 });
  const res = await session.run({});
  await session.release();
  const ref = res[outs[0]![1]]!.data as Float32Array;
  const scale = Math.max(...Array.from(ref, Math.abs));
  for (const [f, o] of outs.slice(1)) {
    const v = res[o]!.data as Float32Array;
    assert.equal(v.length, ref.length);
    const err = Math.max(...Array.from(v, (a, i) => Math.abs(a - ref[i]!)));
    assert.ok(err <= 1e-5 * scale, `${kind} ${f} differs from ${forms[0]} by ${err} (scale ${scale})`);
  }
}

// dW: conv-nc (chosen for depthwise 5×5, and 3×3 with ≤ 196 output positions) against the
// one-hot im2col + batched MatMul it replaced there; the other depthwise geometries keep it.
test('depthwise dW conv-nc = onehot-matmul where conv-nc is picked', async () => {
  await pin([2, 16, 14, 14], [16, 1, 5, 5], { group: 16, pads: [2, 2, 2, 2] }, 'dW', ['onehot-matmul', 'conv-nc'], 'conv-nc');
  await pin([2, 8, 28, 28], [8, 1, 5, 5], { group: 8, strides: [2, 2], pads: [2, 2, 2, 2] }, 'dW', ['onehot-matmul', 'conv-nc'], 'conv-nc');
  await pin([2, 960, 7, 7], [960, 1, 3, 3], { group: 960, pads: [1, 1, 1, 1] }, 'dW', ['onehot-matmul', 'conv-nc'], 'conv-nc');
  await pin([2, 64, 14, 14], [64, 1, 3, 3], { group: 64, strides: [2, 2], pads: [1, 1, 1, 1] }, 'dW', ['onehot-matmul', 'conv-nc'], 'conv-nc');
  await pin([2, 24, 14, 14], [24, 1, 3, 3], { group: 24, pads: [1, 1, 1, 1] }, 'dW', ['onehot-matmul', 'conv-nc'], 'conv-nc');
  // dilation 2 with a leftover row (the Conv's extra taps are cropped), multiplier 2
  await pin([2, 6, 11, 10], [6, 1, 3, 3], { group: 6, dilations: [2, 2], strides: [2, 2], pads: [1, 1, 1, 1] }, 'dW', ['onehot-matmul', 'conv-nc'], 'conv-nc');
  await pin([2, 4, 9, 9], [8, 1, 3, 3], { group: 4, pads: [1, 1, 1, 1] }, 'dW', ['onehot-matmul', 'conv-nc'], 'conv-nc');
});
test('depthwise dW keeps onehot-matmul on large 3×3 layers', async () => {
  await pin([1, 4, 28, 28], [4, 1, 3, 3], { group: 4, pads: [1, 1, 1, 1] }, 'dW', ['onehot-matmul', 'conv-nc'], 'onehot-matmul');
});

// dX stride 1: the fed weight flipped by a MatMul with the tap-reversal matrix (chosen wherever
// the flipped Conv applies) against the Slice with negative steps it replaced.
test('stride-1 dX conv-flip-matmul = conv-flip (Slice flip)', async () => {
  await pin([2, 16, 8, 8], [16, 16, 3, 3], { pads: [1, 1, 1, 1] }, 'dX', ['conv-flip', 'conv-flip-matmul'], 'conv-flip-matmul');
  await pin([2, 8, 9, 7], [12, 4, 3, 2], { group: 2, pads: [1, 0, 2, 1], dilations: [2, 1] }, 'dX', ['conv-flip', 'conv-flip-matmul'], 'conv-flip-matmul');
  await pin([2, 12, 9, 9], [12, 1, 5, 5], { group: 12, pads: [2, 2, 2, 2] }, 'dX', ['conv-flip', 'conv-flip-matmul'], 'conv-flip-matmul');
  await pin([2, 64, 4, 4], [64, 64, 3, 3], { pads: [1, 1, 1, 1] }, 'dX', ['conv-flip', 'conv-flip-matmul', 'convtranspose'], 'conv-flip-matmul');
  await pin([2, 4, 6, 6], [3, 4, 1, 1], {}, 'dX', ['conv-flip', 'conv-flip-matmul'], 'conv-flip-matmul');
});
