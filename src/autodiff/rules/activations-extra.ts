// PRelu, Mish, CumSum, Trilu: ops of real exports (PyTorch PReLU and Mish, causal masks and
// position ids built with CumSum/Trilu).
import { attrInt, type Node } from '../../onnx/ir.ts';
import { registerRules, type GradContext } from '../rule.ts';

registerRules({
  PRelu(ctx: GradContext, node: Node, [dY], needs) {
    // y = x (x > 0), slope·x (else); slope broadcasts to x ([C,1,1], [1], or x's shape).
    const em = ctx.em;
    const [x, slope] = node.inputs as [string, string];
    const pos = em.op('Greater', [x, em.scalar(0)]);
    const dX = needs[0] ? em.op('Where', [pos, dY!, em.mul(dY!, slope)]) : null;
    let dS: string | null = null;
    if (needs[1]) {
      const xs = ctx.shape(x), ss = ctx.shape(slope);
      dS = ctx.unbroadcast(em.op('Where', [pos, em.scalar(0), em.mul(dY!, x)]), xs, ss);
    }
    return [dX, dS];
  },
  Mish(ctx, node, [dY]) {
    // y = x·tanh(softplus(x)): y' = t + x·(1 − t²)·σ(x), t = tanh(softplus(x)).
    const em = ctx.em;
    const x = node.inputs[0]!;
    const t = em.op('Tanh', [em.op('Softplus', [x])]);
    const d = em.add(t, em.mul(em.mul(x, em.sub(em.scalar(1), em.mul(t, t))), em.op('Sigmoid', [x])));
    return [em.mul(dY!, d)];
  },
  CumSum(ctx, node, [dY]) {
    // The adjoint of a running sum is the running sum in the other direction (same exclusivity).
    // The axis input is reused as is: it may be any integer tensor fixed at run time.
    const reverse = attrInt(node, 'reverse', 0);
    return [ctx.em.op('CumSum', [dY!, node.inputs[1]!], { exclusive: attrInt(node, 'exclusive', 0), reverse: reverse ? 0 : 1 }), null];
  },
  Trilu(ctx, node, [dY]) {
    // A mask: the gradient keeps the same triangle (k input reused as is).
    const ins = node.inputs[1] ? [dY!, node.inputs[1]] : [dY!];
    return [ctx.em.op('Trilu', ins, { upper: attrInt(node, 'upper', 1) }), null];
  },
});
