// SiLU (Swish) as exports write it, y = x·Sigmoid(x) (ONNX has no SiLU op; torch.nn.SiLU in
// EfficientNet, YOLOv5/v8, diffusion U-Nets, and the gate of LLaMA-style MLPs): its gradient taken
// as one, dX = dY·s·(1 + x − y), s = Sigmoid(x), instead of the Mul rule's two
// products plus the Sigmoid rule's three ops and their Sum. Four passes over the activation
// where the rules take six; the same derivative, s + x·s·(1 − s), rearranged.
import type { Node } from '../onnx/ir.ts';
import type { Emitter } from '../onnx/emitter.ts';

/** Switch for benches and tests: the pattern's one gradient, or the Mul and Sigmoid rules'. */
export const siluGradient = { current: true };

/**
 * Mul nodes that compute x·Sigmoid(x), each with the Sigmoid's output s and x, where s is read by
 * that Mul alone (so no other gradient reaches s) and is not a graph output.
 */
export function siluMuls(nodes: readonly Node[], graphOutputs: ReadonlySet<string>): Map<Node, { x: string; s: string }> {
  const out = new Map<Node, { x: string; s: string }>();
  if (!siluGradient.current) return out;
  const readers = new Map<string, number>();
  for (const n of nodes) for (const i of n.inputs) if (i) readers.set(i, (readers.get(i) ?? 0) + 1);
  const sigmoidOf = new Map<string, string>();
  for (const n of nodes) if (n.opType === 'Sigmoid' && n.domain === '' && n.outputs[0]) sigmoidOf.set(n.outputs[0], n.inputs[0]!);
  for (const n of nodes) {
    if (n.opType !== 'Mul' || n.domain !== '' || n.inputs.length !== 2) continue;
    const [a, b] = n.inputs as [string, string];
    for (const [x, s] of [[a, b], [b, a]] as const) {
      if (sigmoidOf.get(s) === x && x !== s && readers.get(s) === 1 && !graphOutputs.has(s)) { out.set(n, { x, s }); break; }
    }
  }
  return out;
}

/** dX of y = x·s, s = Sigmoid(x): dY·(s·((x − y) + 1)). */
export function siluGrad(em: Emitter, dY: string, x: string, s: string, y: string): string {
  return em.mul(dY, em.mul(s, em.add(em.sub(x, y), em.scalar(1))));
}
