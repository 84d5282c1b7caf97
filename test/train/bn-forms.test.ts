// Train-mode BatchNorm: the one-node batch statistics ('bn-train', src/train/batchnorm-train.ts)
// and the gradient forms (src/autodiff/rules/norm.ts) pinned against the decomposed form they
// replaced: loss, every gradient and the updated running statistics within 1e-5 relative, on an
// activation whose mean is 40× its standard deviation (where a one-pass E[x²] − E[x]² variance
// would lose about 1e-4), two BatchNorm layers of the same small channel count (onnxruntime's
// ConstantSharing merges equal small initializers), opset 13's five-output form, and a NaN batch
// that must not reach the next one (the kernel updates its running inputs in place).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { RefitModel } from '../../src/model.ts';
import { randomProjectionLoss } from '../../src/autodiff/gradcheck.ts';
import { batchStatsForm, type BatchStatsForm } from '../../src/train/batchnorm-train.ts';
import { bnGradForm, OLD_BN_GRAD_FORM, type BnGradForm } from '../../src/autodiff/rules/norm.ts';
import { batchStatModel } from '../../src/tta/bn-adapt.ts';
import '../../src/autodiff/rules/index.ts';
import { f32, type Tensor } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { relErr } from '../helpers/close.ts';
import { randomInitializers } from '../helpers/random-init.ts';

const N = 4, CIN = 3, H = 6;

/** x → Conv(bias 40) → BN → Relu → Conv → BN → y: the first BN sees mean ≈ 40, std ≈ 1. */
function net(opset: number, C: number): { model: ReturnType<ModelBuilder['build']>; trainable: string[] } {
  const b = new ModelBuilder({ opset });
  const rng = new Rng(3);
  const init = randomInitializers(b, rng);
  init('w1', [C, CIN, 3, 3], 0.3); init('b1', [C], 0.5, 40);
  init('w2', [C, C, 1, 1], 0.3);
  for (const k of [1, 2]) {
    init(`g${k}`, [C], 0.2, 1); init(`be${k}`, [C], 0.2);
    init(`rm${k}`, [C], 0.1); init(`rv${k}`, [C], 0.1, 1);
  }
  b.input('x', 'float32', [N, CIN, H, H]);
  b.node('Conv', ['x', 'w1', 'b1'], ['c1'], { pads: [1, 1, 1, 1], kernel_shape: [3, 3] });
  b.node('BatchNormalization', ['c1', 'g1', 'be1', 'rm1', 'rv1'], ['n1'], { epsilon: 1e-5, momentum: 0.9 });
  b.node('Relu', ['n1'], ['r1']);
  b.node('Conv', ['r1', 'w2'], ['c2'], { kernel_shape: [1, 1] });
  b.node('BatchNormalization', ['c2', 'g2', 'be2', 'rm2', 'rv2'], ['y'], { epsilon: 1e-3, momentum: 0.8 });
  b.output('y');
  // b1 is not trained: through a batch-statistics BN its gradient is exactly 0, so both forms
  // return float32 noise there and a relative comparison would compare noise.
  return { model: b.build(), trainable: ['w1', 'w2', 'g1', 'be1', 'g2', 'be2'] };
}

function batch(seed: number, nan = false): Record<string, Tensor> {
  const x = new Rng(seed).fill(new Float32Array(N * CIN * H * H), 1);
  if (nan) x[5] = NaN;
  return { x: f32([N, CIN, H, H], x) };
}

interface StepNumbers { loss: number; grads: Map<string, Float32Array>; running: Map<string, Float32Array> }

/** Compile and run one train step with the given forms (the forms are read while compiling). */
async function stepWith(opset: number, C: number, stats: BatchStatsForm, grad: BnGradForm | 'auto', batches = [batch(1)]): Promise<StepNumbers[]> {
  const { model: ir, trainable } = net(opset, C);
  const model = new RefitModel(ir, { threads: 1 });
  const step = model.compileTrainStep({ trainable, loss: randomProjectionLoss(['y'], 2), batchNorm: 'train' });
  const saved = [batchStatsForm.current, bnGradForm.current] as const;
  batchStatsForm.current = stats; bnGradForm.current = grad;
  try {
    const out: StepNumbers[] = [];
    for (const b of batches) {
      const r = await step.run(b);
      out.push({ loss: r.loss, grads: new Map([...r.grads].map(([k, v]) => [k, Float32Array.from(v)])), running: new Map([...r.runningStats].map(([k, v]) => [k, Float32Array.from(v)])) });
    }
    return out;
  } finally {
    [batchStatsForm.current, bnGradForm.current] = saved;
    await step.release();
  }
}

function assertSame(what: string, a: StepNumbers, ref: StepNumbers, tol = 1e-5): void {
  assert.ok(Number.isFinite(ref.loss), `${what}: reference loss ${ref.loss}`);
  assert.ok(Math.abs(a.loss - ref.loss) <= tol * Math.abs(ref.loss), `${what}: loss ${a.loss} vs ${ref.loss}`);
  assert.equal(a.grads.size, ref.grads.size);
  for (const [k, g] of ref.grads) {
    const e = relErr(a.grads.get(k)!, g);
    assert.ok(e <= tol, `${what}: d/d${k} differs by ${e.toExponential(2)} relative`);
  }
  assert.equal(a.running.size, 4, `${what}: four running statistics`);
  for (const [k, v] of ref.running) {
    const e = relErr(a.running.get(k)!, v);
    assert.ok(e <= tol, `${what}: running ${k} differs by ${e.toExponential(2)} relative`);
  }
}

const GRAD_FORMS: [string, BnGradForm | 'auto'][] = [
  ['auto', 'auto'],
  ['bn-affine dX', { sumGX: 'mul-reduce', dX: 'bn-affine' }],
  ['diag-matmul Σg·x (blocks of 8)', { sumGX: 'diag-matmul', block: 8, dX: 'mul-add' }],
];

for (const opset of [13, 17]) {
  test(`train-mode BatchNorm (opset ${opset}): the one-node statistics and each gradient form match the decomposed form within 1e-5, mean 40× std`, async () => {
    const [ref] = await stepWith(opset, 16, 'decomposed', OLD_BN_GRAD_FORM);
    const [statsOnly] = await stepWith(opset, 16, 'bn-train', OLD_BN_GRAD_FORM);
    assertSame('bn-train statistics', statsOnly!, ref!);
    for (const [name, form] of GRAD_FORMS) {
      const [got] = await stepWith(opset, 16, 'bn-train', form);
      assertSame(`bn-train + ${name}`, got!, ref!);
    }
  });
}

test('train-mode BatchNorm: two layers of the same 4 channels keep their own batch moments', async () => {
  const [ref] = await stepWith(17, 4, 'decomposed', OLD_BN_GRAD_FORM);
  const [got] = await stepWith(17, 4, 'bn-train', 'auto');
  assertSame('C = 4', got!, ref!);
});

test('train-mode BatchNorm: a NaN batch does not leak into the next step (running inputs are updated in place by the kernel)', async () => {
  const [, afterNan] = await stepWith(17, 16, 'bn-train', 'auto', [batch(1, true), batch(2)]);
  const [fresh] = await stepWith(17, 16, 'bn-train', 'auto', [batch(2)]);
  assertSame('after a NaN batch', afterNan!, fresh!, 0);
});

test('BN-adapt: the one-node statistics match the decomposed form (prior 0 and prior 16), and a NaN batch does not leak', async () => {
  const { model: ir } = net(17, 16);
  const model = new RefitModel(ir, { threads: 1 });
  for (const prior of [0, 16]) {
    const outs: Float32Array[] = [];
    for (const form of ['decomposed', 'bn-train'] as const) {
      const saved = batchStatsForm.current;
      batchStatsForm.current = form;
      const m = await batchStatModel(model, batch(1), prior).finally(() => { batchStatsForm.current = saved; });
      const nanOut = (await m.run(batch(1, true)))['y']!.data as Float32Array;
      assert.ok(nanOut.some((v) => Number.isNaN(v)), 'a NaN input gives NaN statistics');
      outs.push(Float32Array.from((await m.run(batch(1)))['y']!.data as Float32Array));
      await m.release();
    }
    const e = relErr(outs[1]!, outs[0]!);
    assert.ok(e <= 1e-5, `prior ${prior}: outputs differ by ${e.toExponential(2)} relative`);
  }
  await model.release();
});
