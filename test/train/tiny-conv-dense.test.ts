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
import { tinyConvDense, denseTinyConvs, denseConvMatrix } from '../../src/train/tiny-conv-dense.ts';
import { staticShapes } from '../../src/onnx/static-shapes.ts';
import { signatureOf } from '../../src/onnx/shapes.ts';
import type { Model } from '../../src/onnx/ir.ts';
import '../../src/autodiff/rules/index.ts';
import { f32, type Tensor } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { relErr } from '../helpers/close.ts';
import type { StepResult } from '../../src/train/train-step.ts';
import { randomInitializers } from '../helpers/random-init.ts';

const N = 4, C = 8;

/** x [N, C, 2S, 2S] → Conv 3×3/2 → BN → Relu → Conv 3×3 pad 1 (+ bias) → BN → Relu → Conv 3×3 pad 1 + b3 → y. */
function net(S: number, C = 8, n = N): Model {
  const b = new ModelBuilder({ opset: 13 });
  const rng = new Rng(9);
  const init = randomInitializers(b, rng);
  for (const k of [0, 1, 2]) init(`w${k}`, [C, C, 3, 3], 0.2);
  init('b1', [C], 0.3); init('b2', [C], 0.3);
  for (const k of [0, 1]) { init(`g${k}`, [C], 0.2, 1); init(`be${k}`, [C], 0.2); init(`rm${k}`, [C], 0.1); init(`rv${k}`, [C], 0.1, 1); }
  b.input('x', 'float32', [n, C, 2 * S, 2 * S]);
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

const batch = (S: number, C = 8, n = N): Record<string, Tensor> => ({ x: f32([n, C, 2 * S, 2 * S], new Rng(4).fill(new Float32Array(n * C * 4 * S * S), 1)) });
const TRAINABLE = ['g0', 'be0', 'g1', 'be1', 'b2'];

async function step(ir: Model, dense: boolean, trainable = TRAINABLE) {
  const model = new RefitModel(ir, { threads: 1 });
  const saved = tinyConvDense.current;
  tinyConvDense.current = dense;
  const s = model.compileTrainStep({ trainable, loss: randomProjectionLoss(['y'], 5), batchNorm: 'train' });
  try {
    const [n, c, s2] = ir.graph.inputs[0]!.shape! as number[];
    const b = batch(s2! / 2, c, n);
    const { graph } = await s.compile(signatureOf(b));
    return { r: await s.run(b), ops: graph.model.graph.nodes.map((n) => n.opType), inits: [...graph.model.graph.initializers.values()] };
  } finally {
    tinyConvDense.current = saved;
    await s.release();
  }
}

/** Loss, every gradient (none all zero) and running statistics within 1e-5 of the Conv form's. */
function sameStep(dense: StepResult, old: StepResult): void {
  assert.ok(Math.abs(dense.loss - old.loss) <= 1e-5 * Math.abs(old.loss), `loss ${dense.loss} vs ${old.loss}`);
  for (const [k, g] of old.grads) {
    assert.ok(g.some((v) => v !== 0), `d/d${k} not all zero`);
    const e = relErr(dense.grads.get(k)!, g);
    assert.ok(e <= 1e-5, `d/d${k} differs by ${e.toExponential(2)}`);
  }
  for (const [k, v] of old.runningStats) assert.ok(relErr(dense.runningStats.get(k)!, v) <= 1e-5, `running ${k}`);
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
  sameStep(dense.r, old.r);
});

test('not chosen: 3×3 on 4×4 (the matrix would exceed the conv\'s multiply-adds), a trained weight over fewer than 64 output positions, unknown shapes', () => {
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

test('trained convs on 2×2 from 64 output positions: the matrix is built from the fed weight each step, with the Conv form\'s loss and gradients (weights, bias, BN affine; ≤ 1e-5)', async () => {
  const n = 16; // 16 images × 2×2 = 64 output positions
  const sig = (m: number) => ({ x: { dtype: 'float32' as const, dims: [m, C, 4, 4] } });
  const trained = ['w1', 'w2', 'b2', 'g0', 'be0', 'g1', 'be1'];
  const frozen = (t: string) => !trained.includes(t);
  assert.deepEqual(denseTinyConvs(net(2, C, n), sig(n), frozen).rewritten, ['conv1', 'conv2']);
  assert.deepEqual(denseTinyConvs(net(2, C, 8), sig(8), frozen).rewritten, [], '32 positions: the Convs stay');
  const ir = net(2, C, n);
  const old = await step(ir, false, trained);
  const dense = await step(ir, true, trained);
  const count = (ops: string[], op: string) => ops.filter((o) => o === op).length;
  // The forward product and the selection that builds each matrix: four MatMuls, more in the backward.
  assert.ok(count(dense.ops, 'MatMul') >= 4 && count(dense.ops, 'Conv') < count(old.ops, 'Conv'), 'conv1 and conv2 as MatMuls');
  sameStep(dense.r, old.r);
});

test("the matrix built in the graph (tinyConvDense.matrix 'graph') is denseConvMatrix's, bit for bit, over strides, pads, dilations and a 1×1", async () => {
  const cases: { k: number; S: number; attrs: Record<string, number[]> }[] = [
    { k: 3, S: 2, attrs: { pads: [1, 1, 1, 1] } }, // ResNet-18 layer4 at 64×64
    { k: 3, S: 4, attrs: { pads: [1, 1, 1, 1], strides: [2, 2] } }, // its stride-2 entry conv
    { k: 1, S: 4, attrs: { strides: [2, 2] } }, // the 1×1 downsample
    { k: 3, S: 5, attrs: { pads: [2, 0, 1, 2], dilations: [2, 1], strides: [1, 2] } },
  ];
  const saved = { ...tinyConvDense };
  Object.assign(tinyConvDense, { maxRatio: 1e9, matrix: 'graph' });
  try {
    for (const { k, S, attrs } of cases) {
      const b = new ModelBuilder({ opset: 13 });
      const w = f32([6, C, k, k], new Rng(k * 10 + S).fill(new Float32Array(6 * C * k * k), 1));
      b.initializer('w', w);
      b.input('x', 'float32', [N, C, S, S]);
      b.node('Conv', ['x', 'w'], ['y'], { kernel_shape: [k, k], ...attrs }, 'conv');
      b.output('y');
      const ir = b.build();
      const sig = { x: { dtype: 'float32' as const, dims: [N, C, S, S] } };
      const { model, rewritten } = denseTinyConvs(ir, sig, () => true);
      assert.deepEqual(rewritten, ['conv']);
      const mm = model.graph.nodes.find((n) => n.opType === 'MatMul')!;
      assert.ok(!model.graph.initializers.has(mm.inputs[1]!), 'the matrix is computed, not an initializer');
      model.graph.outputs = [...model.graph.outputs, { name: mm.inputs[1]!, dtype: 'float32', shape: null }];
      const shapes = staticShapes(ir.graph, sig);
      const expected = denseConvMatrix(w, shapes.get('x')!.slice(1), shapes.get('y')!.slice(1), ir.graph.nodes[0]!);
      const x = f32([N, C, S, S], new Rng(3).fill(new Float32Array(N * C * S * S), 1));
      const out = await new RefitModel(model, { threads: 1 }).run({ x }, { outputs: [mm.inputs[1]!, 'y'] });
      const got = out[mm.inputs[1]!]!.data as Float32Array;
      assert.equal(got.length, expected.length);
      assert.ok(got.every((v, i) => v === expected[i]), `matrix of ${JSON.stringify(attrs)} k=${k} S=${S}`);
      // And the rewritten conv still computes the conv.
      const conv = await new RefitModel(ir, { threads: 1 }).run({ x });
      assert.ok(relErr(out.y!.data as Float32Array, conv.y!.data as Float32Array) <= 1e-6, 'dense output = conv output');
    }
  } finally {
    Object.assign(tinyConvDense, saved);
  }
});

test("the step with the matrix in the graph gives the baked matrix's loss, gradients and running statistics exactly", async () => {
  // 32 channels: the [128, 128] matrices are above what the step folds into initializers (fold.ts).
  const ir = net(2, 32);
  const saved = tinyConvDense.matrix;
  try {
    tinyConvDense.matrix = 'js';
    const js = await step(ir, true);
    assert.equal(js.inits.filter((t) => t.dims.join() === '128,128').length, 2, 'two baked matrices');
    tinyConvDense.matrix = 'graph';
    const graph = await step(ir, true);
    assert.equal(graph.ops.filter((o) => o === 'Gather').length, 2, 'two matrices, one gather each');
    assert.equal(graph.inits.filter((t) => t.dims.join() === '128,128').length, 0, 'no matrix held in the step graph');
    assert.equal(graph.r.loss, js.r.loss);
    for (const [k, g] of js.r.grads) assert.ok(graph.r.grads.get(k)!.every((v, i) => v === g[i]), `d/d${k}`);
    for (const [k, v] of js.r.runningStats) assert.ok(graph.r.runningStats.get(k)!.every((u, i) => u === v[i]), `running ${k}`);
  } finally {
    tinyConvDense.matrix = saved;
  }
});
