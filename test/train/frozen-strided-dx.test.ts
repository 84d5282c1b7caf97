// The Node-only pass that writes a frozen strided conv's input gradient phase by phase in the
// session's copy of a step (src/train/frozen-strided-dx.ts), pinned against the ConvTranspose the
// portable graph keeps: loss and gradients ≤ 1e-5 on BN affine parameters behind strided convs
// (3×3 stride 2 on an even and an odd size, 5×4 stride 3 with uneven pads, a 1×1 stride-2
// shortcut it leaves alone), and only constant weights rewritten.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { RefitModel } from '../../src/model.ts';
import { randomProjectionLoss } from '../../src/autodiff/gradcheck.ts';
import { frozenStridedDx, phaseFrozenStridedDx } from '../../src/train/frozen-strided-dx.ts';
import { signatureOf } from '../../src/onnx/shapes.ts';
import { cloneModel, type Model } from '../../src/onnx/ir.ts';
import '../../src/autodiff/rules/index.ts';
import { f32, type Tensor } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { relErr } from '../helpers/close.ts';

const N = 3, C = 4;

/** x [N, C, H, H] → BN → Conv 3×3/2 → BN → Relu → Conv 5×4/3 (uneven pads) → BN → Relu → y, and the first BN's output → Conv 1×1/6 → p. */
function net(H: number): Model {
  const b = new ModelBuilder({ opset: 13 });
  const rng = new Rng(5);
  const init = (name: string, dims: number[], scale: number, offset = 0) => {
    const d = rng.fill(new Float32Array(dims.reduce((p, q) => p * q, 1)), scale);
    for (let i = 0; i < d.length; i++) d[i]! += offset;
    b.initializer(name, f32(dims, d));
  };
  init('w0', [6, C, 3, 3], 0.3); init('w1', [5, 6, 5, 4], 0.2); init('wp', [5, C, 1, 1], 0.3);
  for (const [k, c] of [[1, 6], [2, 5], [3, C]] as const) { init(`g${k}`, [c], 0.2, 1); init(`be${k}`, [c], 0.2); init(`rm${k}`, [c], 0.1); init(`rv${k}`, [c], 0.1, 1); }
  const bn = (x: string, k: number, y: string) => b.node('BatchNormalization', [x, `g${k}`, `be${k}`, `rm${k}`, `rv${k}`], [y], { epsilon: 1e-5, momentum: 0.9 });
  b.input('x', 'float32', [N, C, H, H]);
  bn('x', 3, 'n3');
  b.node('Conv', ['n3', 'w0'], ['c0'], { pads: [1, 1, 1, 1], kernel_shape: [3, 3], strides: [2, 2] });
  bn('c0', 1, 'n0');
  b.node('Relu', ['n0'], ['r0']);
  b.node('Conv', ['r0', 'w1'], ['c1'], { pads: [2, 0, 1, 2], kernel_shape: [5, 4], strides: [3, 3] });
  bn('c1', 2, 'n1');
  b.node('Relu', ['n1'], ['r1']);
  b.node('Conv', ['n3', 'wp'], ['p'], { kernel_shape: [1, 1], strides: [6, 6] });
  b.node('Identity', ['r1'], ['y']);
  b.output('y');
  b.output('p');
  return b.build();
}

async function step(ir: Model, phases: boolean) {
  const model = new RefitModel(ir, { threads: 1 });
  const saved = frozenStridedDx.current;
  frozenStridedDx.current = phases;
  const s = model.compileTrainStep({ trainable: ['g1', 'be1', 'g2', 'be2', 'g3', 'be3'], loss: randomProjectionLoss(['y', 'p'], 7), batchNorm: 'train' });
  try {
    const H = ir.graph.inputs[0]!.shape![2] as number;
    const b: Record<string, Tensor> = { x: f32([N, C, H, H], new Rng(2).fill(new Float32Array(N * C * H * H), 1)) };
    const { graph } = await s.compile(signatureOf(b));
    return { r: await s.run(b), portable: graph.model };
  } finally {
    frozenStridedDx.current = saved;
    await s.release();
  }
}

for (const H of [24, 25]) {
  test(`frozen strided convs' input gradients by phase (input ${H}×${H}): the same loss and gradients as ConvTranspose (≤ 1e-5)`, async () => {
    const ir = net(H);
    const old = await step(ir, false), phased = await step(ir, true);
    assert.ok(Math.abs(phased.r.loss - old.r.loss) <= 1e-5 * Math.abs(old.r.loss), `loss ${phased.r.loss} vs ${old.r.loss}`);
    for (const [k, g] of old.r.grads) {
      assert.ok(g.some((v) => v !== 0), `d/d${k} not all zero`);
      const e = relErr(phased.r.grads.get(k)!, g);
      assert.ok(e <= 1e-5, `d/d${k} differs by ${e.toExponential(2)}`);
    }
    // The portable graph keeps its ConvTransposes; the pass rewrites the two with k ≥ stride, not the 1×1 one.
    const transposes = (m: Model) => m.graph.nodes.filter((n) => n.opType === 'ConvTranspose').length;
    assert.equal(transposes(phased.portable), 3);
    const copy = cloneModel(phased.portable);
    assert.equal(phaseFrozenStridedDx(copy), 2);
    assert.equal(transposes(copy), 1);
    // A fed (trained) weight is left as it is.
    const fed = cloneModel(phased.portable);
    const w1 = fed.graph.nodes.find((n) => n.opType === 'ConvTranspose' && n.inputs[1] === 'w1')!.inputs[1]!;
    fed.graph.inputs.push({ name: w1, dtype: 'float32', shape: [5, 6, 5, 4] });
    assert.equal(phaseFrozenStridedDx(fed), 1);
  });
}
