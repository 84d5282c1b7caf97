// Reductions beyond Sum/Mean: Max, Min, L2, SumSquare, LogSumExp, Prod, in both axes forms
// (attribute before opset 18, input from 18; ReduceSum's input from 13), keepdims 0/1,
// noop_with_empty_axes, and with a deliberately wrong rule shown to fail the same check.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkOp } from './helpers.ts';
import { assertBrokenFails } from './broken.ts';
import { f32, i64, tensor } from '../../src/onnx/tensor.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { RefitModel } from '../../src/model.ts';
import { gradCheck } from '../../src/autodiff/gradcheck.ts';
import type { GradRule } from '../../src/autodiff/rule.ts';
import type { LossSpec } from '../../src/train/loss-spec.ts';

const ints = (v: number[]) => ({ shape: [v.length], value: i64([v.length], v) });
const OPS = ['ReduceMax', 'ReduceMin', 'ReduceL1', 'ReduceL2', 'ReduceSumSquare', 'ReduceLogSum', 'ReduceLogSumExp', 'ReduceProd', 'ReduceSum', 'ReduceMean'];
// Uniform in ±[0.3, 1.3] around 0 keeps ReduceProd's products moderate; Max/Min draws are distinct.
// ReduceLogSum needs positive sums: its input is drawn in [0.2, 1.2].
let positive = false;
const x = (shape: number[]) => ({ name: 'x', shape, dist: 'uniform' as const, ...(positive ? { offset: 0.7, scale: 0.5 } : { scale: 1.3 }) });

/** One reduction over `axes` in the form of `opset`. */
function reduceCase(op: string, opset: number, shape: number[], axes: number[] | undefined, attrs: Record<string, number> = {}) {
  const asInput = op === 'ReduceSum' ? opset >= 13 : opset >= 18;
  const inputs: Parameters<typeof checkOp>[1] = [x(shape)];
  const a: Record<string, number | number[]> = { ...attrs };
  if (axes) { if (asInput) inputs.push({ name: 'axes', ...ints(axes) }); else a.axes = axes; }
  return () => checkOp(op, inputs, a, { opset });
}

for (const op of OPS) {
  for (const opset of [13, 18]) {
    test(`${op} (opset ${opset}): one axis kept, two axes with a negative one dropped, all axes`, async () => {
      positive = op === 'ReduceLogSum';
      await reduceCase(op, opset, [3, 4, 2], [1])();
      await reduceCase(op, opset, [3, 4, 2], [0, -1], { keepdims: 0 })();
      await reduceCase(op, opset, [2, 3], undefined, { keepdims: 0 })();
      await reduceCase(op, opset, [2, 3], undefined)();
    });
  }
  test(`${op} (opset 18): noop_with_empty_axes with empty axes is the identity`, async () => {
    positive = op === 'ReduceLogSum';
    await checkOp(op, [x([2, 3]), { name: 'axes', ...ints([]) }], { noop_with_empty_axes: 1 }, { opset: 18 });
  });
}

test('ReduceMax/ReduceMin: ties split the gradient evenly (torch.amax convention)', async () => {
  for (const op of ['ReduceMax', 'ReduceMin']) {
    const b = new ModelBuilder({ opset: 17 });
    // Row 0 ties 3 ways on its max (2) and 2 ways on its min (−1); row 1 has unique extrema.
    b.initializer('x', f32([2, 4], [2, -1, 2, 2, 0.5, 3, -2, 1]));
    b.input('dummy', 'float32', [1]);
    b.node(op, ['x'], ['y'], { axes: [1], keepdims: 0 });
    b.node('Identity', ['dummy'], ['dummy_out']);
    b.output('y');
    const model = new RefitModel(b.build(), { threads: 1 });
    const sum: LossSpec = { describe: 'sum(y)', reads: ['y'], inputs: [], build: (ctx) => ctx.em.reduce('ReduceSum', 'y', [0], false) };
    const step = model.compileTrainStep({ trainable: ['x'], loss: sum });
    const g = Array.from((await step.run({ dummy: tensor('float32', [1], [0]) })).grads.get('x')!);
    const third = 1 / 3;
    const want = op === 'ReduceMax' ? [third, 0, third, third, 0, 1, 0, 0] : [0, 1, 0, 0, 0, 0, 1, 0];
    g.forEach((v, i) => assert.ok(Math.abs(v - want[i]!) < 1e-6, `${op} grad ${g} vs ${want}`));
    await step.release();
  }
});

/** ReduceProd checked at inputs holding zeros (the product is a polynomial, so the central difference is exact there too). */
async function prodWithZeros() {
  const b = new ModelBuilder({ opset: 17 });
  // Slices along axis 1: no zero, one zero, two zeros.
  b.initializer('x', f32([3, 3], [0.7, -1.2, 0.9, 0.8, 0, -1.1, 0, 1.3, 0]));
  b.input('dummy', 'float32', [1]);
  b.node('ReduceProd', ['x'], ['y'], { axes: [1], keepdims: 1 });
  b.node('Identity', ['dummy'], ['dummy_out']);
  b.output('y');
  const [r] = await gradCheck(b.build(), { dummy: tensor('float32', [1], [0]) }, { params: ['x'] });
  assert.ok(r!.relError < 1e-2 && r!.analyticNorm > 0, `ReduceProd with zeros: relative error ${r!.relError}`);
}
test('ReduceProd with zeros in a slice (one zero, two zeros) is exact', prodWithZeros);

// ---- deliberately wrong rules fail the same checks ----

/** The naive y/x form of ReduceProd's gradient: right without zeros, NaN/wrong with them. */
const prodOverX: GradRule = (ctx, node, [dY]) => {
  const em = ctx.em;
  return [em.mul(em.div(node.outputs[0]!, node.inputs[0]!), dY!), null];
};
/** Max/Min gradient broadcast to every element, no mask. */
const noMask: GradRule = (ctx, node, [dY]) => [ctx.em.op('Expand', [dY!, ctx.em.ints(ctx.shape(node.inputs[0]!))]), null];
/** L2 gradient x·dY (forgot to divide by the norm). */
const l2NoDiv: GradRule = (ctx, node, [dY]) => [ctx.em.mul(node.inputs[0]!, dY!), null];
/** SumSquare gradient x·dY (forgot the 2). */
const ssNoTwo: GradRule = l2NoDiv;
/** L1 gradient dY everywhere (forgot the sign). */
const l1NoSign: GradRule = (ctx, node, [dY]) => [ctx.em.op('Expand', [dY!, ctx.em.ints(ctx.shape(node.inputs[0]!))]), null];
/** LogSum gradient dY/x (the derivative of Σ log x, not of log Σx). */
const logSumWrong: GradRule = (ctx, node, [dY]) => [ctx.em.div(dY!, node.inputs[0]!), null];
/** LogSumExp gradient exp(x)·dY (forgot to subtract y). */
const lseNoShift: GradRule = (ctx, node, [dY]) => [ctx.em.mul(ctx.em.op('Exp', [node.inputs[0]!]), dY!), null];

test('wrong reduction rules fail the finite-difference check', async () => {
  const kept = (op: string) => reduceCase(op, 17, [3, 4], [1]);
  await assertBrokenFails('ReduceMax', noMask, kept('ReduceMax'));
  await assertBrokenFails('ReduceMin', noMask, kept('ReduceMin'));
  await assertBrokenFails('ReduceL2', l2NoDiv, kept('ReduceL2'));
  await assertBrokenFails('ReduceL1', l1NoSign, kept('ReduceL1'));
  positive = true;
  await assertBrokenFails('ReduceLogSum', logSumWrong, kept('ReduceLogSum'));
  positive = false;
  await assertBrokenFails('ReduceSumSquare', ssNoTwo, kept('ReduceSumSquare'));
  await assertBrokenFails('ReduceLogSumExp', lseNoShift, kept('ReduceLogSumExp'));
  await assertBrokenFails('ReduceProd', prodOverX, prodWithZeros);
});

for (const opset of [11, 17]) {
  test(`reductions, LogSoftmax (middle axis) and TopK exported by torch 1.13 at opset ${opset}: gradient matches PyTorch to 1e-4`, async () => {
    // Fixture: test/fixtures/reductions/make_reduction_fixture.py. Opset 11 goes through loadModel's upgrade to 13.
    const { readFileSync } = await import('node:fs');
    const { loadModel } = await import('../../src/model.ts');
    const { parseSafetensors } = await import('../../src/io/safetensors.ts');
    const dir = new URL('../fixtures/reductions/', import.meta.url);
    const model = await loadModel(new URL(`model_opset${opset}.onnx`, dir).pathname, { threads: 1 });
    const { tensors } = parseSafetensors(readFileSync(new URL('tensors.safetensors', dir)));
    const loss: LossSpec = { describe: 'y', reads: ['y'], inputs: [], build: (ctx) => ctx.em.reshape('y', []) };
    const step = model.compileTrainStep({ trainable: ['w'], loss });
    const r = await step.run({ x: tensors.get('input.x')! });
    const refLoss = (tensors.get('loss')!.data as Float32Array)[0]!;
    assert.ok(Math.abs(r.loss - refLoss) <= 1e-4 * Math.abs(refLoss), `loss ${r.loss} vs ${refLoss}`);
    const g = r.grads.get('w')!, e = tensors.get('grad.w')!.data as Float32Array;
    let d2 = 0, e2 = 0;
    for (let i = 0; i < e.length; i++) { d2 += (g[i]! - e[i]!) ** 2; e2 += e[i]! ** 2; }
    assert.ok(Math.sqrt(d2) <= 1e-4 * Math.sqrt(e2), `grad.w: ‖diff‖ ${Math.sqrt(d2).toExponential(2)} vs ‖ref‖ ${Math.sqrt(e2).toExponential(2)}`);
    await step.release();
  });
}
