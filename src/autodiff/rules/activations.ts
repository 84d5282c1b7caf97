// Pointwise activations and the softmax family (Hardmax: no gradient). Rules reuse the forward output where the
// derivative is a cheap function of it (sigmoid' = y(1−y), tanh' = 1−y², softmax, Elu).
import { attrFloat, attrInt, attrString, type Node } from '../../onnx/ir.ts';
import type { Emitter } from '../../onnx/emitter.ts';
import { ONNX_DTYPE, type DType } from '../../onnx/tensor.ts';
import { registerRules, type GradContext } from '../rule.ts';
import { hardSwishGate, hardSwishGrad } from '../hardswish.ts';

/** dY where `cond`, else `other` (a tensor) or 0. One Where instead of Cast + Mul. */
function where(ctx: GradContext, cond: string, a: string, b?: string): string {
  return ctx.em.op('Where', [cond, a, b ?? ctx.em.scalar(0)]);
}

/**
 * The axes Softmax/LogSoftmax normalise over, non-negative. From opset 13: the one `axis`
 * (default −1). Before 13 the input is coerced to 2-D at `axis` (default 1) and normalised
 * over the flattened tail, i.e. over every axis from `axis` on.
 */
function softmaxAxes(ctx: GradContext, node: Node): number[] {
  const rank = ctx.shape(node.inputs[0]!).length;
  const raw = attrInt(node, 'axis', ctx.opset >= 13 ? -1 : 1);
  const axis = raw < 0 ? raw + rank : raw;
  if (axis < 0 || axis >= Math.max(rank, 1)) throw new Error(`${node.opType} node '${node.name}': axis ${raw} is out of range for input '${node.inputs[0]}' of rank ${rank}`);
  return ctx.opset >= 13 ? [axis] : Array.from({ length: rank - axis }, (_, i) => axis + i);
}

/**
 * Relu's input gradient, dY where x > 0 (0 at x = 0, as PyTorch). `src` is the input x or the
 * output y = max(x, 0): x > 0 exactly when y > 0.
 *  'mul':   dY · Cast(src > 0) to float;
 *  'where': Where(src > 0, dY, 0).
 */
export type ReluGradForm = 'mul' | 'where';

export function reluDx(em: Emitter, src: string, dY: string, form: ReluGradForm, dtype: DType = 'float32'): string {
  const pos = em.op('Greater', [src, em.scalar(0)]);
  return form === 'where' ? em.op('Where', [pos, dY, em.scalar(0)]) : em.mul(dY, em.op('Cast', [pos], { to: ONNX_DTYPE[dtype] }));
}

/**
 * Mul by a 0/1 mask: Where(x > 0, dY, 0) was slower in onnxruntime (the shipped CNN's Tent step:
 * 48-49 vs 44 ms per batch of 64; bench/activation-forms.ts, kernel time over the mask Mul:
 * 1.03-1.64 on [16,64,112,112], [64,64,32,32], [16,144,56,56]). The mask reads y rather than x at
 * the same cost (0.82-1.07 over reading x, noise on a shared machine) so that onnxruntime can fuse
 * a Conv → Relu into one Conv, and x need not live until the backward pass.
 */
export const RELU_GRAD_FORM: ReluGradForm = 'mul';

const GELU_K = Math.sqrt(2 / Math.PI); // tanh form: 0.5x(1 + tanh(K(x + C x³)))
const GELU_C = 0.044715;

registerRules({
  Relu(ctx, node, [dY]) {
    // The mask is read off the output, as PyTorch's threshold_backward does.
    const y = node.outputs[0]!;
    return [reluDx(ctx.em, y, dY!, RELU_GRAD_FORM, ctx.dtype(y))];
  },
  LeakyRelu(ctx, node, [dY]) {
    const em = ctx.em;
    const alpha = attrFloat(node, 'alpha', 0.01);
    return [where(ctx, em.op('Greater', [node.inputs[0]!, em.scalar(0)]), dY!, em.mul(dY!, em.scalar(alpha)))];
  },
  Sigmoid(ctx, node, [dY]) {
    // y(1 − y)
    const em = ctx.em;
    const y = node.outputs[0]!;
    return [em.mul(em.mul(dY!, y), em.sub(em.scalar(1), y))];
  },
  Tanh(ctx, node, [dY]) {
    // 1 − y²
    const em = ctx.em;
    const y = node.outputs[0]!;
    return [em.mul(dY!, em.sub(em.scalar(1), em.mul(y, y)))];
  },
  Gelu(ctx, node, [dY]) {
    const em = ctx.em;
    const x = node.inputs[0]!;
    const approximate = attrString(node, 'approximate', 'none');
    const s = (v: number) => em.scalar(v);
    let d: string;
    if (approximate === 'none') {
      // y = x·Φ(x): y' = Φ(x) + x·φ(x), Φ(x) = ½(1 + erf(x/√2)), φ(x) = exp(−x²/2)/√(2π)
      const u = em.mul(x, s(Math.SQRT1_2));
      const cdf = em.add(em.mul(em.op('Erf', [u]), s(0.5)), s(0.5));
      const pdfX = em.mul(em.mul(em.op('Exp', [em.neg(em.mul(u, u))]), x), s(1 / Math.sqrt(2 * Math.PI)));
      d = em.add(cdf, pdfX);
    } else if (approximate === 'tanh') {
      // y = ½x(1 + t), t = tanh(K(x + C x³)):
      // y' = ½(1 + t) + ½x(1 − t²)·K(1 + 3C x²)
      const x2 = em.mul(x, x);
      const t = em.op('Tanh', [em.mul(em.mul(x, em.add(em.mul(x2, s(GELU_C)), s(1))), s(GELU_K))]);
      const dInner = em.add(em.mul(x2, s(3 * GELU_C * GELU_K)), s(GELU_K));
      const halfX = em.mul(x, s(0.5));
      const a = em.add(em.mul(t, s(0.5)), s(0.5));
      const b = em.mul(em.mul(halfX, em.sub(s(1), em.mul(t, t))), dInner);
      d = em.add(a, b);
    } else {
      throw new Error(`Gelu: unknown approximate='${approximate}' (expected 'none' or 'tanh')`);
    }
    return [em.mul(dY!, d)];
  },
  Softmax(ctx, node, [dY]) {
    // dx = y·(g − Σ_axis g·y)
    const em = ctx.em;
    const y = node.outputs[0]!;
    const dot = em.reduce('ReduceSum', em.mul(dY!, y), softmaxAxes(ctx, node), true);
    return [em.mul(y, em.sub(dY!, dot))];
  },
  LogSoftmax(ctx, node, [dY]) {
    // dx = g − exp(y)·Σ_axis g
    const em = ctx.em;
    const y = node.outputs[0]!;
    const total = em.reduce('ReduceSum', dY!, softmaxAxes(ctx, node), true);
    return [em.sub(dY!, em.mul(em.op('Exp', [y]), total))];
  },
  /** Hardmax outputs a one-hot: piecewise constant, so its gradient is zero (no gradient flows). */
  Hardmax() {
    return [null];
  },
  HardSigmoid(ctx, node, [dY]) {
    // y = clip(αx + β, 0, 1): y' = α strictly inside (0, 1), read off the output.
    const em = ctx.em;
    const y = node.outputs[0]!;
    const alpha = attrFloat(node, 'alpha', 0.2);
    const inside = em.op('And', [em.op('Greater', [y, em.scalar(0)]), em.op('Less', [y, em.scalar(1)])]);
    return [where(ctx, inside, em.mul(dY!, em.scalar(alpha)))];
  },
  HardSwish(ctx, node, [dY]) {
    // y = x·clip(x/6 + ½, 0, 1): y' = 0 for x < −3, 1 for x > 3, x/3 + ½ between; from h =
    // clip(x/6 + ½, 0, 1) recomputed, in five element-wise ops (../hardswish.ts).
    return [hardSwishGrad(ctx.em, dY!, hardSwishGate(ctx.em, node.inputs[0]!))];
  },
  Elu(ctx, node, [dY]) {
    // y' = 1 for x > 0, else αeˣ = y + α
    const em = ctx.em;
    const alpha = attrFloat(node, 'alpha', 1);
    const pos = em.op('Greater', [node.inputs[0]!, em.scalar(0)]);
    return [where(ctx, pos, dY!, em.mul(dY!, em.add(node.outputs[0]!, em.scalar(alpha))))];
  },
  Selu(ctx, node, [dY]) {
    // y' = γ for x > 0, else γαeˣ = y + γα
    const em = ctx.em;
    const alpha = attrFloat(node, 'alpha', 1.67326319217681884765625);
    const gamma = attrFloat(node, 'gamma', 1.05070102214813232421875);
    const pos = em.op('Greater', [node.inputs[0]!, em.scalar(0)]);
    return [where(ctx, pos, em.mul(dY!, em.scalar(gamma)), em.mul(dY!, em.add(node.outputs[0]!, em.scalar(gamma * alpha))))];
  },
  Celu(ctx, node, [dY]) {
    // y = max(0, x) + min(0, α(e^(x/α) − 1)): y' = 1 for x > 0, else e^(x/α) = y/α + 1
    const em = ctx.em;
    const alpha = attrFloat(node, 'alpha', 1);
    const pos = em.op('Greater', [node.inputs[0]!, em.scalar(0)]);
    return [where(ctx, pos, dY!, em.mul(dY!, em.add(em.mul(node.outputs[0]!, em.scalar(1 / alpha)), em.scalar(1))))];
  },
  ThresholdedRelu(ctx, node, [dY]) {
    // y = x for x > α, else 0
    const em = ctx.em;
    return [where(ctx, em.op('Greater', [node.inputs[0]!, em.scalar(attrFloat(node, 'alpha', 1))]), dY!)];
  },
  Shrink(ctx, node, [dY]) {
    // y = x ∓ bias where |x| > λ, else 0: y' = 1 where |x| > λ
    const em = ctx.em;
    const lambd = attrFloat(node, 'lambd', 0.5);
    return [where(ctx, em.op('Greater', [em.op('Abs', [node.inputs[0]!]), em.scalar(lambd)]), dY!)];
  },
});
