// HardSwish, y = x·h with h = HardSigmoid(x) = clip(x/6 + ½, 0, 1) (MobileNetV3; torch.onnx writes
// nn.Hardswish so below opset 14, and as the HardSwish op from 14): its input gradient taken from
// h alone, dY·(h + (h − ½)·m), m = 1 where 0 < h < 1. Inside, h − ½ = x/6, so the derivative is
// x/3 + ½; outside, h is exactly 0 or 1, the derivative. The product (h − ½)·m is u − Shrink(u)
// with u = h − ½: Shrink with lambd the float just below ½ keeps u only where |u| = ½ (h at 0 or 1;
// u = h − ½ is exact there, h being αx + ½ rounded at ½'s scale). Five element-wise passes, no
// bool tensor and no Where, where the Mul and HardSigmoid rules take eight (two products, a
// scaled one, Greater, Less, And, Where and their Sum; onnxruntime's Where is several times a
// Mul's time, and so is its Shrink): on [16, 64, 112, 112] 0.57–0.89 of their kernel time, on
// [16, 240, 28, 28] 0.53–0.55; MobileNetV3-Large's Tent step 0.988 (session 39, docs/speed.md).
// The backward reads h, not x. Inside or outside is read off h as onnxruntime rounds it, as the
// HardSigmoid rule did: at 3 − ulp, x/6 + ½ rounds to 1 and the derivative is 1 (PyTorch's
// hardswish_backward, reading x, gives 1.5 there).
import type { Node } from '../onnx/ir.ts';
import { attrFloat, floatAttr } from '../onnx/ir.ts';
import type { Emitter } from '../onnx/emitter.ts';
import { gatedMuls } from './gated-muls.ts';

/** Switch for benches and tests: the one gradient, or the Mul and HardSigmoid rules'. */
export const hardSwishGradient = { current: true };

/** Shrink's lambd: the largest float32 below ½. */
const BELOW_HALF = Math.fround(0.5 - 2 ** -25);

/** Whether a HardSigmoid node is HardSwish's: α = 1/6 and β = ½ (as float32 attributes). */
function isHardSwishSigmoid(n: Node): boolean {
  return Math.fround(attrFloat(n, 'alpha', 0.2)) === Math.fround(1 / 6) && Math.fround(attrFloat(n, 'beta', 0.5)) === 0.5;
}

/**
 * Mul nodes that compute x·HardSigmoid(x) with HardSwish's constants, each with x and the
 * HardSigmoid's output h, where h is read by that Mul alone and is not a graph output.
 */
export function hardSwishMuls(nodes: readonly Node[], graphOutputs: ReadonlySet<string>): Map<Node, { x: string; h: string }> {
  if (!hardSwishGradient.current) return new Map();
  const muls = gatedMuls(nodes, graphOutputs, (n) => n.opType === 'HardSigmoid' && isHardSwishSigmoid(n));
  return new Map([...muls].map(([n, { x, gate }]) => [n, { x, h: gate }]));
}

/** dX of y = x·h, h = HardSigmoid(x) with α = 1/6, β = ½: dY·(h + (u − Shrink(u))), u = h − ½. */
export function hardSwishGrad(em: Emitter, dY: string, h: string): string {
  const u = em.sub(h, em.scalar(0.5));
  const inside = em.sub(u, em.op('Shrink', [u], { bias: floatAttr(0), lambd: floatAttr(BELOW_HALF) }));
  return em.mul(dY, em.add(h, inside));
}

/** h = HardSigmoid(x) with HardSwish's constants, for the HardSwish op's gradient. */
export function hardSwishGate(em: Emitter, x: string): string {
  return em.op('HardSigmoid', [x], { alpha: floatAttr(1 / 6), beta: floatAttr(0.5) });
}
