// Elementwise arithmetic with NumPy broadcasting: Add, Sub, Mul, Div, Neg, Sum, float Mod.
import { registerRules, type GradContext } from '../rule.ts';

/** Gradient of a broadcasting binary op for input i, given the elementwise local gradient. */
function toInput(ctx: GradContext, g: string, out: string, input: string): string {
  return ctx.unbroadcast(g, ctx.shape(out), ctx.shape(input));
}

registerRules({
  Add(ctx, node, [dY], needs) {
    const [a, b] = node.inputs as [string, string];
    const y = node.outputs[0]!;
    return [needs[0] ? toInput(ctx, dY!, y, a) : null, needs[1] ? toInput(ctx, dY!, y, b) : null];
  },
  Sub(ctx, node, [dY], needs) {
    const [a, b] = node.inputs as [string, string];
    const y = node.outputs[0]!;
    return [needs[0] ? toInput(ctx, dY!, y, a) : null, needs[1] ? toInput(ctx, ctx.em.neg(dY!), y, b) : null];
  },
  Mul(ctx, node, [dY], needs) {
    const [a, b] = node.inputs as [string, string];
    const y = node.outputs[0]!;
    const em = ctx.em;
    return [
      needs[0] ? toInput(ctx, em.mul(dY!, b), y, a) : null,
      needs[1] ? toInput(ctx, em.mul(dY!, a), y, b) : null,
    ];
  },
  Div(ctx, node, [dY], needs) {
    const [a, b] = node.inputs as [string, string];
    const y = node.outputs[0]!;
    const em = ctx.em;
    // d(a/b)/da = 1/b ; d(a/b)/db = -y/b
    return [
      needs[0] ? toInput(ctx, em.div(dY!, b), y, a) : null,
      needs[1] ? toInput(ctx, em.neg(em.div(em.mul(dY!, y), b)), y, b) : null,
    ];
  },
  Neg(ctx, _node, [dY]) {
    return [ctx.em.neg(dY!)];
  },
  Mod(ctx, node, [dY], needs) {
    // Float Mod is C's fmod (fmod=1; fmod=0 is for integers only): y = a − b·trunc(a/b), so
    // dy/da = 1 and dy/db = −trunc(a/b), trunc(v) = sign(v)·floor(|v|). Integer Mod carries no gradient.
    if (!needs[0] && !needs[1]) return [null, null];
    const [a, b] = node.inputs as [string, string];
    const y = node.outputs[0]!;
    const em = ctx.em;
    const q = em.div(a, b);
    const trunc = em.mul(em.op('Sign', [q]), em.op('Floor', [em.op('Abs', [q])]));
    return [needs[0] ? toInput(ctx, dY!, y, a) : null, needs[1] ? toInput(ctx, em.neg(em.mul(dY!, trunc)), y, b) : null];
  },
  Sum(ctx, node, [dY], needs) {
    const y = node.outputs[0]!;
    return node.inputs.map((x, i) => (needs[i] ? toInput(ctx, dY!, y, x) : null));
  },
});
