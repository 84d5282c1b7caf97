// DepthToSpace/SpaceToDepth (rules/rearrange.ts) and PRelu, Mish, CumSum, Trilu
// (rules/activations-extra.ts): finite differences per form, and for each rule a broken
// variant shown to fail the same check.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkOp } from './helpers.ts';
import { ruleFor, registerRules, type GradRule } from '../../src/autodiff/rule.ts';
import { i64 } from '../../src/onnx/tensor.ts';
import type { AttrInput } from '../../src/onnx/ir.ts';

const x = (shape: number[]) => ({ name: 'x', shape });
const axis = (a: number) => ({ name: 'axis', shape: [], value: i64([], [a]) });
const k = (v: number) => ({ name: 'k', shape: [], value: i64([], [v]) });

type Check = () => Promise<unknown>;
const CHECKS: Record<string, [string, Check][]> = {
  DepthToSpace: [
    ['DCR', () => checkOp('DepthToSpace', [x([2, 8, 2, 3])], { blocksize: 2, mode: 'DCR' })],
    ['CRD', () => checkOp('DepthToSpace', [x([2, 8, 2, 3])], { blocksize: 2, mode: 'CRD' })],
    ['CRD blocksize 3', () => checkOp('DepthToSpace', [x([1, 18, 2, 2])], { blocksize: 3, mode: 'CRD' })],
  ],
  SpaceToDepth: [
    ['blocksize 2', () => checkOp('SpaceToDepth', [x([2, 3, 4, 6])], { blocksize: 2 })],
  ],
  PRelu: [
    // eps 1e-4 keeps the differences away from the kink at 0.
    ['slope [C,1,1]', () => checkOp('PRelu', [x([2, 3, 4, 4]), { name: 's', shape: [3, 1, 1], scale: 0.3 }], {}, { eps: 1e-4 })],
    ['slope [1]', () => checkOp('PRelu', [x([2, 3, 4]), { name: 's', shape: [1], scale: 0.3 }], {}, { eps: 1e-4 })],
    ['slope of x\'s shape', () => checkOp('PRelu', [x([2, 3, 4]), { name: 's', shape: [2, 3, 4], scale: 0.3 }], {}, { eps: 1e-4 })],
    ['slope [C] on [N, C] (trailing broadcast)', () => checkOp('PRelu', [x([4, 3]), { name: 's', shape: [3], scale: 0.3 }], {}, { eps: 1e-4 })],
  ],
  Mish: [
    ['opset 18', () => checkOp('Mish', [{ name: 'x', shape: [3, 5], scale: 2 }], {}, { opset: 18 })],
  ],
  CumSum: [
    ['axis 1', () => checkOp('CumSum', [x([2, 5, 3]), axis(1)])],
    ['exclusive', () => checkOp('CumSum', [x([2, 5, 3]), axis(1)], { exclusive: 1 })],
    ['reverse, negative axis', () => checkOp('CumSum', [x([2, 5, 3]), axis(-1)], { reverse: 1 })],
    ['exclusive and reverse', () => checkOp('CumSum', [x([4, 5]), axis(0)], { exclusive: 1, reverse: 1 })],
  ],
  Trilu: [
    ['upper (default), no k', () => checkOp('Trilu', [x([2, 4, 5])])],
    ['lower, k = -1', () => checkOp('Trilu', [x([2, 4, 5]), k(-1)], { upper: 0 })],
    ['upper, k = 2', () => checkOp('Trilu', [x([5, 4]), k(2)], { upper: 1 })],
  ],
};

for (const [op, checks] of Object.entries(CHECKS)) {
  for (const [name, run] of checks) test(`${op} ${name}`, async () => { await run(); });
}

/** Wrong rules, each a plausible mistake. */
const flip = (attr: string, to: AttrInput): ((real: GradRule) => GradRule) => (real) => (ctx, node, dOut, needs) =>
  real(ctx, { ...node, attrs: { ...node.attrs, [attr]: typeof to === 'string' ? { kind: 'string', value: to } : { kind: 'int', value: to as number } } }, dOut, needs);
const BROKEN: Record<string, [(real: GradRule) => GradRule, Check]> = {
  // CRD undone as if it were DCR.
  DepthToSpace: [flip('mode', 'DCR'), CHECKS.DepthToSpace![1]![1]],
  // Undone with the CRD order.
  SpaceToDepth: [() => (ctx, node, [dY]) => [ctx.em.op('DepthToSpace', [dY!], { blocksize: 2, mode: 'CRD' })], CHECKS.SpaceToDepth![0]![1]],
  // dSlope without the factor x.
  PRelu: [(real) => (ctx, node, dOut, needs) => {
    const [dX] = real(ctx, node, dOut, [needs[0]!, false]);
    const em = ctx.em;
    const dS = ctx.unbroadcast(em.op('Where', [em.op('Greater', [node.inputs[0]!, em.scalar(0)]), em.scalar(0), dOut[0]!]), ctx.shape(node.inputs[0]!), ctx.shape(node.inputs[1]!));
    return [dX!, dS];
  }, CHECKS.PRelu![0]![1]],
  // Mish' without the σ(x) factor.
  Mish: [() => (ctx, node, [dY]) => {
    const em = ctx.em, xx = node.inputs[0]!;
    const t = em.op('Tanh', [em.op('Softplus', [xx])]);
    return [em.mul(dY!, em.add(t, em.mul(xx, em.sub(em.scalar(1), em.mul(t, t)))))];
  }, CHECKS.Mish![0]![1]],
  // Summed in the same direction as the forward.
  CumSum: [(real) => (ctx, node, dOut, needs) => real(ctx, { ...node, attrs: { ...node.attrs, reverse: { kind: 'int', value: 1 } } }, dOut, needs), CHECKS.CumSum![0]![1]],
  // The other triangle.
  Trilu: [flip('upper', 0), CHECKS.Trilu![2]![1]],
};

for (const [op, [make, check]] of Object.entries(BROKEN)) {
  test(`a broken ${op} rule fails the same check`, async () => {
    const real = ruleFor(op)!;
    registerRules({ [op]: make(real) });
    try {
      await assert.rejects(check(), /relative error/);
    } finally {
      registerRules({ [op]: real });
    }
  });
}
