// The forms real exports use, for rules that existed before (Clip with tensor or missing bounds
// and with attributes before opset 11, Pow with a tensor exponent, Split in all three forms,
// Expand with a lower-rank shape, variadic Sum/Mean/Max/Min with ties, Div by a parameter, the
// softmax family at any axis and before opset 13), and the cheap new elementwise rules, each new
// rule with a deliberately wrong variant shown to fail the same check.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkOp } from './helpers.ts';
import { assertBrokenFails, scaled, withRule } from './broken.ts';
import { f32, i64, tensor } from '../../src/onnx/tensor.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { RefitModel } from '../../src/model.ts';
import type { GradRule } from '../../src/autodiff/rule.ts';
import type { LossSpec } from '../../src/train/loss-spec.ts';
import { buildStepGraph } from '../../src/train/step-graph.ts';
import { randomProjectionLoss } from '../../src/autodiff/gradcheck.ts';
import { encodeModel } from '../../src/onnx/proto.ts';
import { createSession, toOrt } from '../../src/onnx/runtime.ts';
import { Rng } from '../../src/util/rng.ts';

const ints = (v: number[]) => ({ shape: [v.length], value: i64([v.length], v) });
const uniform = (lo: number, hi: number) => ({ offset: (lo + hi) / 2, scale: (hi - lo) / 2, dist: 'uniform' as const });

/**
 * RefitModel takes opset ≥ 13 only (loadModel upgrades older files), so the rules' pre-13
 * branches are checked here on the step graph itself: one node at `opset` on a trainable x,
 * gradient against central differences. Returns the relative error.
 */
async function legacyCheck(op: string, shape: number[], attrs: Record<string, number | number[]>, opset: number, nOut = 1, used = ['y0']): Promise<number> {
  const b = new ModelBuilder({ opset });
  const n = shape.reduce((a, c) => a * c, 1);
  const x0 = new Rng(4).fill(new Float32Array(n), 1.5, 'uniform');
  b.initializer('x', f32(shape, x0));
  b.input('dummy', 'float32', [1]);
  const outs = Array.from({ length: nOut }, (_, k) => `y${k}`);
  b.node(op, ['x'], outs, attrs);
  b.node('Identity', ['dummy'], ['dummy_out']);
  for (const o of used) b.output(o);
  const sg = await buildStepGraph(b.build(), { dummy: { dtype: 'float32', dims: [1] } }, { trainable: ['x'], loss: randomProjectionLoss(used, 1) });
  const session = await createSession(encodeModel(sg.model), { threads: 1 });
  const run = async (x: Float32Array) => {
    const r = await session.run({ dummy: toOrt(f32([1], [0])), x: toOrt(f32(shape, x)) });
    return { loss: (r[sg.lossOutput]!.data as Float32Array)[0]!, grad: r[sg.gradOutputs.get('x')!]?.data as Float32Array };
  };
  const { grad } = await run(x0);
  let d2 = 0, n2 = 0;
  const eps = 1e-3;
  for (let i = 0; i < n; i++) {
    const xp = x0.slice(); xp[i]! += eps;
    const xm = x0.slice(); xm[i]! -= eps;
    const num = ((await run(xp)).loss - (await run(xm)).loss) / (2 * eps);
    d2 += (num - grad[i]!) ** 2; n2 += num * num;
  }
  await session.release();
  return Math.sqrt(d2) / Math.max(Math.sqrt(n2), 1e-3);
}

// ---- softmax family ----

for (const op of ['Softmax', 'LogSoftmax']) {
  test(`${op} before opset 13 (coerced to 2-D at axis): default axis 1, axis 0, axis −1`, async () => {
    for (const attrs of [{}, { axis: 0 }, { axis: -1 }] as Record<string, number>[]) {
      const err = await legacyCheck(op, [2, 3, 4], attrs, 11);
      assert.ok(err < 1e-2, `${op} opset 11 ${JSON.stringify(attrs)}: relative error ${err}`);
    }
  });
  test(`${op} (opset 13) on the middle axis of a 4-D input and on axis −2`, async () => {
    await checkOp(op, [{ name: 'x', shape: [2, 3, 2, 4] }], { axis: 2 }, { opset: 13 });
    await checkOp(op, [{ name: 'x', shape: [2, 3, 2, 4] }], { axis: -2 }, { opset: 13 });
  });
  test(`${op} before opset 13: the single-axis formula (a wrong rule there) fails the check`, async () => {
    const singleAxis: GradRule = (ctx, node, [dY]) => {
      const em = ctx.em;
      const y = node.outputs[0]!;
      if (op === 'Softmax') return [em.mul(y, em.sub(dY!, em.reduce('ReduceSum', em.mul(dY!, y), [1], true)))];
      return [em.sub(dY!, em.mul(em.op('Exp', [y]), em.reduce('ReduceSum', dY!, [1], true)))];
    };
    const err = await withRule(op, singleAxis, () => legacyCheck(op, [2, 3, 4], {}, 11));
    assert.ok(err > 0.1, `the wrong rule gave relative error ${err}`);
  });
}
test('Hardmax passes no gradient (a one-hot output is piecewise constant)', async () => {
  // x → Hardmax and x → Identity: only the Identity path carries a gradient, all ones under Σ.
  const b = new ModelBuilder({ opset: 13 });
  b.initializer('x', f32([2, 3], [0.1, 0.5, -0.2, 1, 0, 2]));
  b.input('dummy', 'float32', [1]);
  b.node('Hardmax', ['x'], ['h'], { axis: 1 });
  b.node('Add', ['h', 'x'], ['y']);
  b.node('Identity', ['dummy'], ['dummy_out']);
  b.output('y');
  const model = new RefitModel(b.build(), { threads: 1 });
  const sum: LossSpec = { describe: 'sum(y)', reads: ['y'], inputs: [], build: (ctx) => ctx.em.reduce('ReduceSum', 'y', [0, 1], false) };
  const step = model.compileTrainStep({ trainable: ['x'], loss: sum });
  const r = await step.run({ dummy: tensor('float32', [1], [0]) });
  assert.deepEqual(Array.from(r.grads.get('x')!), [1, 1, 1, 1, 1, 1]);
  await step.release();
});

// ---- forms of existing rules ----

test('Clip with scalar tensor bounds, each missing in turn (an empty input name)', async () => {
  const x = { name: 'x', shape: [4, 6], scale: 1.5, dist: 'uniform' as const };
  await checkOp('Clip', [x, { name: 'lo', shape: [], value: f32([], [-0.5]) }, { name: '', shape: [] }]);
  await checkOp('Clip', [x, { name: '', shape: [] }, { name: 'hi', shape: [], value: f32([], [0.6]) }]);
});
test('Clip before opset 11 (min/max attributes), and Split with the split attribute (opset 11)', async () => {
  for (const attrs of [{ min: -0.5, max: 0.6 }, { max: 0.6 }, {}] as Record<string, number>[]) {
    const err = await legacyCheck('Clip', [4, 6], attrs, 10);
    assert.ok(err < 1e-2, `Clip opset 10 ${JSON.stringify(attrs)}: relative error ${err}`);
  }
  const err = await legacyCheck('Split', [3, 7], { axis: 1, split: [2, 4, 1] }, 11, 3, ['y0', 'y2']);
  assert.ok(err < 1e-2, `Split opset 11: relative error ${err}`);
});
test('Pow with a tensor exponent: gradients to both the base and the exponent (d/dB = A^B ln A)', async () => {
  await checkOp('Pow', [{ name: 'a', shape: [3, 4], ...uniform(0.5, 2) }, { name: 'b', shape: [3, 4], ...uniform(-1.5, 2.5) }]);
  await checkOp('Pow', [{ name: 'a', shape: [3, 4], ...uniform(0.5, 2) }, { name: 'b', shape: [], ...uniform(1, 2) }]);
});
test('Pow: the exponent gradient is 0, not NaN, where the base is 0 (exponent ≥ 0, as PyTorch)', async () => {
  const a = f32([2, 3], [0, 0.5, 1.5, 0, 2, 0.8]);
  const [r] = await checkOp('Pow', [{ name: 'a', shape: [2, 3], value: a }, { name: 'b', shape: [2, 3], ...uniform(1, 2) }]);
  assert.ok(Number.isFinite(r!.analyticNorm));
});
test('Slice with INT64_MAX end, a negative clamped start and a −1 step to INT64_MIN', async () => {
  // Exact int64 extremes (a JS number would round 2⁶³ − 1 up to 2⁶³, which wraps to −2⁶³).
  const MAX = 9223372036854775807n, MIN = -9223372036854775808n;
  const big = (v: bigint[]) => ({ shape: [v.length], value: i64([v.length], BigInt64Array.from(v)) });
  await checkOp('Slice', [{ name: 'x', shape: [4, 5] }, { name: 's', ...ints([-100, 1]) }, { name: 'e', ...big([MAX, MAX]) }, { name: 'a', ...ints([0, 1]) }]);
  await checkOp('Slice', [{ name: 'x', shape: [4, 5] }, { name: 's', ...big([MAX]) }, { name: 'e', ...big([MIN]) }, { name: 'a', ...ints([1]) }, { name: 'st', ...ints([-1]) }]);
});
test('Expand where the shape has lower rank than the input, and where it adds axes', async () => {
  await checkOp('Expand', [{ name: 'x', shape: [2, 1, 3] }, { name: 's', ...ints([4, 1]) }]);
  await checkOp('Expand', [{ name: 'x', shape: [3, 1] }, { name: 's', ...ints([2, 3, 4]) }]);
});
test('Sum and Mean, variadic with broadcasting', async () => {
  for (const op of ['Sum', 'Mean']) {
    await checkOp(op, [{ name: 'a', shape: [2, 3, 4] }, { name: 'b', shape: [3, 1] }, { name: 'c', shape: [4] }, { name: 'd', shape: [1, 1, 1] }]);
    await checkOp(op, [{ name: 'a', shape: [3] }]);
  }
});
test('Mean: a wrong rule (dY to every input, no 1/n) fails', async () => {
  const noDivide: GradRule = (ctx, node, [dY], needs) => node.inputs.map((x, i) => (needs[i] ? ctx.unbroadcast(dY!, ctx.shape(node.outputs[0]!), ctx.shape(x)) : null));
  await assertBrokenFails('Mean', noDivide, () => checkOp('Mean', [{ name: 'a', shape: [2, 3] }, { name: 'b', shape: [3] }]));
});
test('Max and Min with four broadcast inputs', async () => {
  for (const op of ['Max', 'Min']) {
    const u = { dist: 'uniform' as const };
    await checkOp(op, [{ name: 'a', shape: [3, 4], ...u }, { name: 'b', shape: [3, 4], ...u }, { name: 'c', shape: [4], ...u }, { name: 'd', shape: [3, 1], ...u }]);
  }
});
test('Div by a parameter (both operands trainable, broadcast divisor)', async () => {
  await checkOp('Div', [{ name: 'a', shape: [3, 4] }, { name: 'b', shape: [4], ...uniform(0.5, 1.5) }]);
  await checkOp('Div', [{ name: 'a', shape: [3, 4], value: f32([3, 4], Array.from({ length: 12 }, (_, i) => Math.cos(i))) }, { name: 'b', shape: [3, 1], ...uniform(-1.5, -0.5) }]);
});
test('Where with a broadcast condition and a scalar branch', async () => {
  await checkOp('Where', [{ name: 'c', shape: [4], value: tensor('bool', [4], [1, 0, 0, 1]) }, { name: 'x', shape: [3, 4] }, { name: 'y', shape: [] }]);
});
test('Gather with negative indices on a non-zero axis', async () => {
  await checkOp('Gather', [{ name: 'x', shape: [2, 5, 3] }, { name: 'i', shape: [3], value: i64([3], [-1, 0, -1]) }], { axis: 1 });
});

// ---- new elementwise and activation rules ----

type Case = [op: string, domain: ReturnType<typeof uniform>, attrs?: Record<string, number>];
const unary: Case[] = [
  ['Tan', uniform(-1.2, 1.2)],
  ['Atan', uniform(-3, 3)],
  ['Asin', uniform(-0.9, 0.9)],
  ['Acos', uniform(-0.9, 0.9)],
  ['Sinh', uniform(-2, 2)],
  ['Cosh', uniform(0.2, 2)],
  ['Asinh', uniform(-3, 3)],
  ['Acosh', uniform(1.2, 3)],
  ['Atanh', uniform(-0.9, 0.9)],
  ['Celu', uniform(0.1, 2)],
  ['Celu', uniform(-3, -0.1)],
  ['Celu', uniform(-3, -0.1), { alpha: 0.5 }],
  ['ThresholdedRelu', uniform(1.1, 3)],
  ['ThresholdedRelu', uniform(0.5, 1.9), { alpha: 0.4 }],
  ['Shrink', uniform(0.6, 2), { lambd: 0.5, bias: 0.3 }],
  ['Shrink', uniform(-2, -0.6)],
];
for (const [op, domain, attrs] of unary) {
  test(`${op} on [${domain.offset - domain.scale}, ${domain.offset + domain.scale}]${attrs ? ' ' + JSON.stringify(attrs) : ''}`, async () => {
    await checkOp(op, [{ name: 'x', shape: [3, 4], ...domain }], attrs ?? {}, { opset: 13 });
  });
}
test('ThresholdedRelu and Shrink pass nothing inside their dead zone', async () => {
  await checkOp('ThresholdedRelu', [{ name: 'x', shape: [3, 4], ...uniform(-2, 0.9) }], {}, { opset: 13, allowZero: true });
  const [r] = await checkOp('Shrink', [{ name: 'x', shape: [3, 4], ...uniform(-0.4, 0.4) }], {}, { opset: 13, allowZero: true });
  assert.equal(r!.analyticNorm, 0);
});
test('new unary rules: wrong variants (sign flipped or scaled) fail the check', async () => {
  const check = (op: string, domain: ReturnType<typeof uniform>) => () => checkOp(op, [{ name: 'x', shape: [3, 4], ...domain }], {}, { opset: 13 });
  for (const [op, domain] of unary) {
    if (op === 'Celu' || op === 'Shrink' || op === 'ThresholdedRelu') continue;
    await assertBrokenFails(op, scaled(op, -1), check(op, domain));
  }
  // The piecewise ones: slope 1 where the true slope is e^(x/α) (Celu), and the dead zone widened.
  const celuAsRelu: GradRule = (ctx, node, [dY]) => [dY!];
  await assertBrokenFails('Celu', celuAsRelu, check('Celu', uniform(-3, -0.1)));
  await assertBrokenFails('ThresholdedRelu', scaled('ThresholdedRelu', 0.5), check('ThresholdedRelu', uniform(1.1, 3)));
  await assertBrokenFails('Shrink', scaled('Shrink', 0), check('Shrink', uniform(0.6, 2)));
});

test('CastLike: the gradient flows to its input, cast back; its type-giving input gets none and blocks nothing', async () => {
  await checkOp('CastLike', [{ name: 'x', shape: [2, 3] }, { name: 'like', shape: [1], value: f32([1], [0]) }]);
  // PyTorch's dynamo exporter casts scalars like the tensor they meet: x · CastLike(2.5 as float64, x)
  const b = new ModelBuilder({ opset: 17 });
  b.input('dummy', 'float32', [1]);
  b.initializer('x', f32([2, 2], [0.5, -1, 2, 3]));
  b.initializer('c', tensor('float64', [], [2.5]));
  b.node('CastLike', ['c', 'x'], ['c32']);
  b.node('Mul', ['x', 'c32'], ['y0']);
  b.node('Identity', ['dummy'], ['dummy_out']);
  b.output('y0');
  const model = new RefitModel(b.build(), { threads: 1 });
  const sum: LossSpec = { describe: 'sum(y0)', reads: ['y0'], inputs: [], build: (ctx) => ctx.em.reduce('ReduceSum', 'y0', [0, 1], false) };
  const step = model.compileTrainStep({ trainable: ['x'], loss: sum });
  const r = await step.run({ dummy: f32([1], [0]) });
  assert.deepEqual([...r.grads.get('x')!], [2.5, 2.5, 2.5, 2.5]);
  await step.release();
});
