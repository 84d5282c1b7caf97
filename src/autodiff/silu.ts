// SiLU (Swish) as exports write it, y = x·Sigmoid(x) (ONNX has no SiLU op; torch.nn.SiLU in
// EfficientNet, YOLOv5/v8, diffusion U-Nets, and the gate of LLaMA-style MLPs): its gradient taken
// as one, instead of the Mul rule's two products plus the Sigmoid rule's three ops and their Sum
// (six passes over the activation): from x alone, as PyTorch's silu_backward does,
// dY·(1 − t)·(x·t + 1) with t = Sigmoid(−x) recomputed in the backward (seven passes), so the
// forward's s dies at its Mul instead of living until the backward. EfficientNet-B0's Tent step:
// recomputing s the same time as keeping it (0.95–1.04 over three runs) and 107 MB less peak RSS,
// 1882 → 1775 MB (docs/speed.md, session 37); its full step, where the backward keeps y = x·s
// anyway (a trained conv's weight gradient reads its input) and the four-pass form
// dY·s·((x − y) + 1) was used until session 40: 0.89 of that form's time and peak RSS 3367 →
// 2224 MB. With `recompute` off (benches, tests): that four-pass form where y is kept, else five
// passes from x and s.
import type { Node } from '../onnx/ir.ts';
import type { Emitter } from '../onnx/emitter.ts';
import { gatedMuls } from './gated-muls.ts';

/**
 * Switches for benches and tests: the pattern's one gradient, or the Mul and Sigmoid rules'; and
 * whether the gradient recomputes s from x in the backward instead of keeping it.
 */
export const siluGradient = { current: true, recompute: true };

/**
 * Mul nodes that compute x·Sigmoid(x), each with the Sigmoid's output s and x, where s is read by
 * that Mul alone (so no other gradient reaches s) and is not a graph output.
 */
export function siluMuls(nodes: readonly Node[], graphOutputs: ReadonlySet<string>): Map<Node, { x: string; s: string }> {
  if (!siluGradient.current) return new Map();
  const muls = gatedMuls(nodes, graphOutputs, (n) => n.opType === 'Sigmoid');
  return new Map([...muls].map(([n, { x, gate }]) => [n, { x, s: gate }]));
}

/**
 * dX of y = x·s, s = Sigmoid(x), the derivative s + x·s·(1 − s): from x alone (s recomputed), or,
 * with `siluGradient.recompute` off, from y where the backward keeps it anyway (`kept`), else
 * from x and s.
 */
export function siluGrad(em: Emitter, dY: string, x: string, s: string, y: string, kept: boolean): string {
  if (siluGradient.recompute) {
    // s + x·s·(1 − s) = (1 − t)·(1 + x·t) with t = Sigmoid(−x) = 1 − s. Not Sigmoid(x) again:
    // onnxruntime's common-subexpression elimination merges that with the forward's and keeps s
    // alive after all (measured: peak RSS unchanged).
    const t = em.op('Sigmoid', [em.op('Neg', [x])]);
    const dX = em.mul(dY, em.mul(em.sub(em.scalar(1), t), em.add(em.mul(x, t), em.scalar(1))));
    // For a backend pass that writes the same in fewer ops (nchwc-step.ts: five, with onnxruntime's QuickGelu).
    em.graph.nodes[em.graph.nodes.length - 1]!.meta = { siluGradient: { x, dY } };
    return dX;
  }
  const inner = kept ? em.sub(x, y) : em.mul(x, em.sub(em.scalar(1), s));
  return em.mul(dY, em.mul(s, em.add(inner, em.scalar(1))));
}
