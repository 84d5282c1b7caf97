// Run a check with a deliberately wrong gradient rule registered for one op, then restore
// the real rule: each new rule's test shows its finite-difference check can fail.
import assert from 'node:assert/strict';
import { registerRules, ruleFor, type GradRule } from '../../src/autodiff/rule.ts';
import '../../src/autodiff/rules/index.ts';

export async function withRule<T>(op: string, rule: GradRule, fn: () => Promise<T>): Promise<T> {
  const real = ruleFor(op);
  assert.ok(real, `no real rule registered for ${op}`);
  registerRules({ [op]: rule });
  try {
    return await fn();
  } finally {
    registerRules({ [op]: real });
  }
}

/** Assert that `check` fails with a large relative error while `op` has the wrong rule `rule`. */
export async function assertBrokenFails(op: string, rule: GradRule, check: () => Promise<unknown>): Promise<void> {
  await withRule(op, rule, () => assert.rejects(check(), /relative error|gradient is all zero/));
}

/** A wrong rule made from the real one: every input gradient scaled by `k` (k ≠ 1). */
export function scaled(op: string, k: number): GradRule {
  const real = ruleFor(op)!;
  return (ctx, node, dOut, needs) => real(ctx, node, dOut, needs).map((g) => (g ? ctx.em.mul(g, ctx.em.scalar(k)) : g));
}
