// Frozen convolutions on tiny images as dense MatMuls in the step (src/train/tiny-conv-dense.ts),
// pinned against the Conv form: loss, gradients (through the dense map's transpose, to BN affine
// parameters before it and to a trained conv bias) and running statistics within 1e-5, on the
// geometry it is chosen for (3×3 pad 1 on 2×2, as ResNet-18's layer4 at 64×64 input), with a
// stride-2 conv into it; and where it is not chosen (4×4 input, a trained weight).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { RefitModel } from '../../src/model.ts';
import { randomProjectionLoss } from '../../src/autodiff/gradcheck.ts';
import { tinyConvDense, denseTinyConvs, staticShapes } from '../../src/train/tiny-conv-dense.ts';
import { signatureOf } from '../../src/onnx/shapes.ts';
import type { Model } from '../../src/onnx/ir.ts';
import '../../src/autodiff/rules/index.ts';
import { f32, type Tensor } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { relErr } from '../helpers/close.ts';

const N = 4, C = 8;

/** x [N, C, 2S, 2S] → Conv 3×3/2 → BN → Relu → Conv 3×3 pad 1 (+ bias) → BN → Relu → Conv 3×3 pad 1 + b3 → y. */
function net(S: number): Model {
  const b = new ModelBuilder({ opset: 13 });
  const rng = new Rng(9);
  const init = (name: string, dims: number[], scale: number, offset = 0) => {
    const d = rng.fill(new Float32Array(dims.reduce((p, q) => p * q, 1)), scale);
    for (let i = 0; i < d.length; i++) d[i]! += offset;
    b.initializer(name, f32(dims, d));
  };
  for (const k of [0, 1, 2]) init(`w${k}`, [C, C, 3, 3], 0.2);
  init('b1', [C], 0.3); init('b2', [C], 0.3);
  for (const k of [0, 1]) { init(`g${k}`, [C], 0.2, 1); init(`be${k}`, [C], 0.2); init(`rm${k}`, [C], 0.1); init(`rv${k}`, [C], 0.1, 1); }
  b.input('x', 'float32', [N, C, 2 * S, 2 * S]);
  b.node('Conv', ['x', 'w0'], ['c0'], { pads: [1, 1, 1, 1], kernel_shape: [3, 3], strides: [2, 2] }, 'conv0');
  b.node('BatchNormalization', ['c0', 'g0', 'be0', 'rm0', 'rv0'], ['n0'], { epsilon: 1e-5, momentum: 0.9 });
  b.node('Relu', ['n0'], ['r0']);
  b.node('Conv', ['r0', 'w1', 'b1'], ['c1'], { pads: [1, 1, 1, 1], kernel_shape: [3, 3] }, 'conv1');
  b.node('BatchNormalization', ['c1', 'g1', 'be1', 'rm1', 'rv1'], ['n1'], { epsilon: 1e-5, momentum: 0.9 });
  b.node('Relu', ['n1'], ['r1']);
  b.node('Conv', ['r1', 'w2', 'b2'], ['y'], { pads: [1, 1, 1, 1], kernel_shape: [3, 3] }, 'conv2');
  b.output('y');
  return b.build();
}

const batch = (S: number): Record<string, Tensor> => ({ x: f32([N, C, 2 * S, 2 * S], new Rng(4).fill(new Float32Array(N * C * 4 * S * S), 1)) });
const TRAINABLE = ['g0', 'be0', 'g1', 'be1', 'b2'];

async function step(ir: Model, dense: boolean, trainable = TRAINABLE) {
  const model = new RefitModel(ir, { threads: 1 });
  const saved = tinyConvDense.current;
  tinyConvDense.current = dense;
  const s = model.compileTrainStep({ trainable, loss: randomProjectionLoss(['y'], 5), batchNorm: 'train' });
  try {
    const b = batch(ir.graph.inputs[0]!.shape![2] as number / 2);
    const { graph } = await s.compile(signatureOf(b));
    return { r: await s.run(b), ops: graph.model.graph.nodes.map((n) => n.opType) };
  } finally {
    tinyConvDense.current = saved;
    await s.release();
  }
}

test('3×3 pad-1 convs on 2×2 as dense MatMuls: same loss, gradients and running statistics as the Conv form (≤ 1e-5)', async () => {
  const ir = net(2);
  const old = await step(ir, false);
  const dense = await step(ir, true);
  const count = (ops: string[], op: string) => ops.filter((o) => o === op).length;
  // conv1 and conv2 (2×2) become MatMuls; the stride-2 conv0 (4×4 → 2×2: more entries than multiply-adds) stays.
  assert.equal(count(dense.ops, 'Conv') < count(old.ops, 'Conv'), true, 'fewer Convs');
  // Two forward MatMuls, and the input gradient of conv2's as a Gemm against the matrix (transB).
  assert.equal(count(dense.ops, 'MatMul'), 2);
  assert.ok(count(dense.ops, 'Gemm') >= 1, 'input gradient through the dense map');
  assert.ok(Math.abs(dense.r.loss - old.r.loss) <= 1e-5 * Math.abs(old.r.loss), `loss ${dense.r.loss} vs ${old.r.loss}`);
  for (const [k, g] of old.r.grads) {
    assert.ok(g.some((v) => v !== 0), `d/d${k} not all zero`);
    const e = relErr(dense.r.grads.get(k)!, g);
    assert.ok(e <= 1e-5, `d/d${k} differs by ${e.toExponential(2)}`);
  }
  for (const [k, v] of old.r.runningStats) assert.ok(relErr(dense.r.runningStats.get(k)!, v) <= 1e-5, `running ${k}`);
});

test('not chosen: 3×3 on 4×4 (the matrix would exceed the conv\'s multiply-adds), a trained weight, unknown shapes', () => {
  const sig = (S: number) => ({ x: { dtype: 'float32' as const, dims: [N, C, 2 * S, 2 * S] } });
  const frozen = (t: string) => !TRAINABLE.includes(t);
  assert.deepEqual(denseTinyConvs(net(2), sig(2), frozen).rewritten, ['conv1', 'conv2']);
  assert.deepEqual(denseTinyConvs(net(4), sig(4), frozen).rewritten, []);
  assert.deepEqual(denseTinyConvs(net(2), sig(2), (t) => frozen(t) && t !== 'w1').rewritten, ['conv2']);
  const m = net(2);
  assert.deepEqual(staticShapes(m.graph, sig(2)).get('r1'), [N, C, 2, 2]);
  const before = m.graph.nodes.length;
  denseTinyConvs(m, sig(2), frozen);
  assert.equal(m.graph.nodes.length, before, 'the model is not changed');
  assert.ok(m.graph.initializers.has('w1'));
});
