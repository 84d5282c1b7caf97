// Elementwise math: Sqrt, Reciprocal, Pow, Exp, Log, Erf, Abs, Sin, Cos, Softplus, Softsign,
// Where, Min, Max, Mean, and the other trigonometric and hyperbolic functions. Each rule is
// the cheapest standard-op form, reusing the forward output where that is exact, and computes
// only the gradients that `needs` asks for.
import type { Node } from '../../onnx/ir.ts';
import { type Tensor, f32, isFloat, toNumbers } from '../../onnx/tensor.ts';
import { registerRules, type GradContext } from '../rule.ts';

/** Sum a gradient taken at the output's (broadcast) shape down to one input's shape. */
function toInput(ctx: GradContext, g: string, node: Node, input: string): string {
  return ctx.unbroadcast(g, ctx.shape(node.outputs[0]!), ctx.shape(input));
}

/**
 * The compile-time value of input i, or undefined. An input that needs a gradient is never
 * treated as constant: the context's constant() also sees the trainable initializers (which
 * become graph inputs only after the backward pass is built), and baking their current value
 * in would be wrong after the first update.
 */
function constInput(ctx: GradContext, node: Node, i: number, needs: boolean[]): Tensor | undefined {
  const name = node.inputs[i];
  if (!name || needs[i]) return undefined;
  return ctx.constant(name);
}

/** Pow(a, b): da = dY·b·a^(b−1); db = dY·y·ln(a) (defined for a > 0, 0 at a = 0 with b ≥ 0, as in PyTorch). */
function powGrad(ctx: GradContext, node: Node, dY: string, needs: boolean[]): (string | null)[] {
  const em = ctx.em;
  const [a, b] = node.inputs as [string, string];
  const y = node.outputs[0]!;
  const pow = (base: string, exp: string) => em.op('Pow', [base, exp]);
  let da: string | null = null, db: string | null = null;
  if (needs[0]) {
    const cb = constInput(ctx, node, 1, needs);
    let local: string;
    if (cb) {
      const e = toNumbers(cb);
      if (e.length === 1 && e[0] === 0) local = em.mul(dY, em.scalar(0));
      else if (e.length === 1 && e[0] === 1) local = dY;
      else if (e.length === 1 && e[0] === 2) local = em.mul(dY, em.mul(a, em.scalar(2)));
      else if (e.length === 1) local = em.mul(dY, em.mul(pow(a, em.scalar(e[0]! - 1)), em.scalar(e[0]!)));
      else {
        // A constant exponent tensor (it may broadcast): fold b and b − 1 at compile time, in float32
        // whatever the exponent's own type (Pow allows integer exponents).
        const bF = em.constant(f32(cb.dims, Float32Array.from(e)), 'pow_exp');
        const bM1 = em.constant(f32(cb.dims, Float32Array.from(e, (v) => v - 1)), 'pow_exp_m1');
        local = em.mul(dY, em.mul(pow(a, bM1), bF));
      }
    } else {
      const bF = isFloat(ctx.dtype(b)) ? b : em.op('Cast', [b], { to: 1 });
      local = em.mul(dY, em.mul(pow(a, em.sub(bF, em.scalar(1))), bF));
    }
    da = toInput(ctx, local, node, a);
  }
  if (needs[1]) {
    // y·ln a, and 0 where a = 0 and b ≥ 0 (there y = 0 and ln a = −∞; PyTorch masks the same).
    const zeroBase = em.op('And', [em.op('Equal', [a, em.scalar(0)]), em.op('GreaterOrEqual', [b, em.scalar(0)])]);
    const local = em.op('Where', [zeroBase, em.scalar(0), em.mul(y, em.op('Log', [a]))]);
    db = toInput(ctx, em.mul(dY, local), node, b);
  }
  return [da, db];
}


/**
 * Min and Max, variadic with broadcasting. The gradient goes to the selected input; on ties it
 * goes to the FIRST input (lowest index) that attains the result, and the others get 0, so the
 * gradients always sum to dY (Max(x, x) has gradient dY, not 2·dY). Same convention as ArgMax.
 */
/**
 * Max/Min: the gradient goes to the inputs that attain the output, split evenly among tied ones,
 * as PyTorch's maximum/minimum do (a tie of two gets dY/2 each).
 */
function minMaxGrad(ctx: GradContext, node: Node, dY: string, needs: boolean[]): (string | null)[] {
  const em = ctx.em;
  const y = node.outputs[0]!;
  const xs = node.inputs;
  if (xs.length === 1) return [dY];
  const to = ({ float64: 11, float16: 10 } as Record<string, number>)[ctx.dtype(y)] ?? 1;
  const hits = xs.map((x) => em.op('Cast', [em.op('Equal', [x, y])], { to }));
  // Each Equal broadcasts x against y, whose shape is already the broadcast of every input.
  const share = em.div(dY, em.sum(hits));
  return xs.map((x, i) => (needs[i] ? toInput(ctx, em.mul(share, hits[i]!), node, x) : null));
}

registerRules({
  Sqrt(ctx, node, [dY]) {
    // d√x = 1/(2√x) = 0.5/y
    const em = ctx.em;
    return [em.div(em.mul(dY!, em.scalar(0.5)), node.outputs[0]!)];
  },
  Reciprocal(ctx, node, [dY]) {
    // d(1/x) = −1/x² = −y²
    const em = ctx.em;
    const y = node.outputs[0]!;
    return [em.mul(em.mul(dY!, y), em.neg(y))];
  },
  Pow(ctx, node, [dY], needs) {
    return powGrad(ctx, node, dY!, needs);
  },
  Exp(ctx, node, [dY]) {
    return [ctx.em.mul(dY!, node.outputs[0]!)];
  },
  Log(ctx, node, [dY]) {
    return [ctx.em.div(dY!, node.inputs[0]!)];
  },
  Erf(ctx, node, [dY]) {
    // d erf(x) = 2/√π · exp(−x²)
    const em = ctx.em;
    const x = node.inputs[0]!;
    const e = em.op('Exp', [em.neg(em.mul(x, x))]);
    return [em.mul(dY!, em.mul(e, em.scalar(2 / Math.sqrt(Math.PI))))];
  },
  Abs(ctx, node, [dY]) {
    // sign(x); 0 at x = 0 (the subgradient PyTorch uses)
    return [ctx.em.mul(dY!, ctx.em.op('Sign', [node.inputs[0]!]))];
  },
  Sin(ctx, node, [dY]) {
    return [ctx.em.mul(dY!, ctx.em.op('Cos', [node.inputs[0]!]))];
  },
  Cos(ctx, node, [dY]) {
    const em = ctx.em;
    return [em.mul(dY!, em.neg(em.op('Sin', [node.inputs[0]!])))];
  },
  Softplus(ctx, node, [dY]) {
    // d ln(1 + eˣ) = sigmoid(x)
    return [ctx.em.mul(dY!, ctx.em.op('Sigmoid', [node.inputs[0]!]))];
  },
  Softsign(ctx, node, [dY]) {
    // d x/(1+|x|) = 1/(1+|x|)²
    const em = ctx.em;
    const d = em.add(em.op('Abs', [node.inputs[0]!]), em.scalar(1));
    return [em.div(dY!, em.mul(d, d))];
  },
  Where(ctx, node, [dY], needs) {
    // The condition gets no gradient; X gets dY where cond, Y where not, each unbroadcast.
    const em = ctx.em;
    const [c, x, y] = node.inputs as [string, string, string];
    const zero = em.scalar(0);
    return [
      null,
      needs[1] ? toInput(ctx, em.op('Where', [c, dY!, zero]), node, x) : null,
      needs[2] ? toInput(ctx, em.op('Where', [c, zero, dY!]), node, y) : null,
    ];
  },
  Min(ctx, node, [dY], needs) {
    return minMaxGrad(ctx, node, dY!, needs);
  },
  Max(ctx, node, [dY], needs) {
    return minMaxGrad(ctx, node, dY!, needs);
  },
  Mean(ctx, node, [dY], needs) {
    // Variadic with broadcasting: each input gets dY/n, summed down to its shape.
    const g = ctx.em.mul(dY!, ctx.em.scalar(1 / node.inputs.length));
    return node.inputs.map((x, i) => (needs[i] ? toInput(ctx, g, node, x) : null));
  },
  Tan(ctx, node, [dY]) {
    // 1 + tan² = 1 + y²
    const em = ctx.em;
    const y = node.outputs[0]!;
    return [em.mul(dY!, em.add(em.mul(y, y), em.scalar(1)))];
  },
  Atan(ctx, node, [dY]) {
    const em = ctx.em;
    const x = node.inputs[0]!;
    return [em.div(dY!, em.add(em.mul(x, x), em.scalar(1)))];
  },
  Asin(ctx, node, [dY]) {
    // 1/√(1 − x²)
    const em = ctx.em;
    const x = node.inputs[0]!;
    return [em.div(dY!, em.op('Sqrt', [em.sub(em.scalar(1), em.mul(x, x))]))];
  },
  Acos(ctx, node, [dY]) {
    // −1/√(1 − x²)
    const em = ctx.em;
    const x = node.inputs[0]!;
    return [em.neg(em.div(dY!, em.op('Sqrt', [em.sub(em.scalar(1), em.mul(x, x))])))];
  },
  Sinh(ctx, node, [dY]) {
    return [ctx.em.mul(dY!, ctx.em.op('Cosh', [node.inputs[0]!]))];
  },
  Cosh(ctx, node, [dY]) {
    return [ctx.em.mul(dY!, ctx.em.op('Sinh', [node.inputs[0]!]))];
  },
  Asinh(ctx, node, [dY]) {
    // 1/√(x² + 1)
    const em = ctx.em;
    const x = node.inputs[0]!;
    return [em.div(dY!, em.op('Sqrt', [em.add(em.mul(x, x), em.scalar(1))]))];
  },
  Acosh(ctx, node, [dY]) {
    // 1/√(x² − 1), x > 1
    const em = ctx.em;
    const x = node.inputs[0]!;
    return [em.div(dY!, em.op('Sqrt', [em.sub(em.mul(x, x), em.scalar(1))]))];
  },
  Atanh(ctx, node, [dY]) {
    // 1/(1 − x²), |x| < 1
    const em = ctx.em;
    const x = node.inputs[0]!;
    return [em.div(dY!, em.sub(em.scalar(1), em.mul(x, x)))];
  },
});
