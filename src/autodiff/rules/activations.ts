// Pointwise activations.
import { registerRules } from '../rule.ts';

registerRules({
  Relu(ctx, node, [dY]) {
    const em = ctx.em;
    const x = node.inputs[0]!;
    const mask = em.op('Cast', [em.op('Greater', [x, em.scalar(0)])], { to: 1 });
    return [em.mul(dY!, mask)];
  },
});
