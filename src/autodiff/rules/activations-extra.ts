// PRelu, Mish, CumSum, Trilu, Clip: ops of real exports (PyTorch PReLU, Mish and ReLU6/Hardtanh,
// causal masks and position ids built with CumSum/Trilu).
//
// The Clip rule here replaces the one in elementwise.ts (this module is imported after it, and a
// later registration wins): its input gradient takes the measured cheaper form below.
import { attrFloat, attrInt, type Node } from '../../onnx/ir.ts';
import type { Emitter } from '../../onnx/emitter.ts';
import { ONNX_DTYPE, type DType } from '../../onnx/tensor.ts';
import { registerRules, type GradContext } from '../rule.ts';

/**
 * Clip's input gradient, dY where lo < x < hi strictly (0 at the bounds, as PyTorch's
 * hardtanh_backward and so ReLU6; torch.clamp's own backward, inclusive at the bounds, is not
 * what refit follows). `src` is the input x or the output y = clip(x): lo < x < hi exactly when
 * lo < y < hi (at or beyond a bound y equals that bound), so both give the same mask.
 *  'where': Where(Greater(src, lo) ∧ Less(src, hi), dY, 0), the old form;
 *  'mul':   dY · Cast(Greater(src, lo) ∧ Less(src, hi)) to float.
 */
export type ClipGradForm = 'where' | 'mul';

export function clipDx(em: Emitter, src: string, lo: string | undefined, hi: string | undefined, dY: string, form: ClipGradForm, dtype: DType = 'float32'): string {
  const gt = lo ? em.op('Greater', [src, lo]) : null;
  const lt = hi ? em.op('Less', [src, hi]) : null;
  const inside = gt && lt ? em.op('And', [gt, lt]) : (gt ?? lt);
  if (!inside) return dY;
  return form === 'where' ? em.op('Where', [inside, dY, em.scalar(0)]) : em.mul(dY, em.op('Cast', [inside], { to: ONNX_DTYPE[dtype] }));
}

/**
 * Measured by bench/activation-forms.ts (bench/results/activation-forms.md; opset 13, 2 threads,
 * kernel time from onnxruntime's profiler, a shared machine): the mask form read off y over the
 * old Where form read off x, on MobileNetV2's ReLU6 activations (batch 16) [16,96,112,112] 0.80,
 * [16,144,56,56] 0.69, [16,192,28,28] 0.64 (an earlier run: 0.70, 0.76, 1.02); one bound
 * [16,144,56,56]: min only 1.08 (earlier 0.79), max only 0.73 (earlier 0.89). onnxruntime's Where
 * with a broadcast scalar zero costs more than a Cast plus a same-shape Mul. Reading y, not x,
 * costs the same and leaves x to its other consumers: onnxruntime then fuses a Conv → Clip into
 * one Conv (reading x keeps the Clip a separate pass), and x need not live until the backward.
 * Not taken: |x − (lo+hi)/2| < (hi−lo)/2 (one comparison, but x − c rounds: 0 < x < 1.2e-7
 * gets mask 0 for ReLU6), and float-only masks (Sign is several times slower than a Mul here).
 */
export const CLIP_GRAD_FORM: ClipGradForm = 'mul';

/**
 * Clip(x, min?, max?), or before opset 11 Clip(x) with min/max attributes. The mask is read off
 * the output y, so x need not be kept for the backward pass when nothing else reads it. A min
 * or max that needs a gradient gets the sum of dY where it was the active bound. (With
 * min > max onnxruntime returns max everywhere; that case is not modelled.)
 */
function clipGrad(ctx: GradContext, node: Node, dY: string, needs: boolean[]): (string | null)[] {
  const em = ctx.em;
  let [x, lo, hi] = node.inputs as [string, string | undefined, string | undefined];
  lo ||= undefined;
  hi ||= undefined;
  if (ctx.opset < 11) {
    // Attribute bounds are constants: only x has a gradient.
    const min = attrFloat(node, 'min'), max = attrFloat(node, 'max');
    lo = min === undefined ? undefined : em.scalar(min);
    hi = max === undefined ? undefined : em.scalar(max);
  }
  const y = node.outputs[0]!;
  const dx = needs[0] ? clipDx(em, y, lo, hi, dY, CLIP_GRAD_FORM, ctx.dtype(y)) : null;
  const boundGrad = (mask: string, bound: string) => {
    const rank = ctx.shape(x).length;
    const s = em.reduce('ReduceSum', em.op('Where', [mask, dY, em.scalar(0)]), Array.from({ length: rank }, (_, i) => i), false);
    return em.reshape(s, ctx.shape(bound));
  };
  return [
    dx,
    lo && needs[1] ? boundGrad(em.op('Less', [x, lo]), lo) : null,    // x < min: the output is min
    hi && needs[2] ? boundGrad(em.op('Greater', [x, hi]), hi) : null, // x > max: the output is max
  ];
}

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
  Clip(ctx, node, [dY], needs) {
    return clipGrad(ctx, node, dY!, needs);
  },
  Trilu(ctx, node, [dY]) {
    // A mask: the gradient keeps the same triangle (k input reused as is).
    const ins = node.inputs[1] ? [dY!, node.inputs[1]] : [dY!];
    return [ctx.em.op('Trilu', ins, { upper: attrInt(node, 'upper', 1) }), null];
  },
});
