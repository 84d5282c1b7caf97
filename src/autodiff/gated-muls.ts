// x·f(x) as exports write a self-gated activation (SiLU: f = Sigmoid; HardSwish below opset 14:
// f = HardSigmoid with α = 1/6, β = ½): the Mul nodes whose one operand is the gate f(x) of the
// other, found so that backward.ts can take the product's gradient as one (./silu.ts, ./hardswish.ts).
import type { Node } from '../onnx/ir.ts';

/**
 * Mul nodes that compute x·f(x), f a node `isGate` accepts, each with x and the gate's output,
 * where that output is read by the Mul alone (so no other gradient reaches it) and is not a graph
 * output.
 */
export function gatedMuls(nodes: readonly Node[], graphOutputs: ReadonlySet<string>, isGate: (n: Node) => boolean): Map<Node, { x: string; gate: string }> {
  const out = new Map<Node, { x: string; gate: string }>();
  const readers = new Map<string, number>();
  for (const n of nodes) for (const i of n.inputs) if (i) readers.set(i, (readers.get(i) ?? 0) + 1);
  const gateOf = new Map<string, string>();
  for (const n of nodes) if (n.domain === '' && n.outputs[0] && isGate(n)) gateOf.set(n.outputs[0], n.inputs[0]!);
  for (const n of nodes) {
    if (n.opType !== 'Mul' || n.domain !== '' || n.inputs.length !== 2) continue;
    const [a, b] = n.inputs as [string, string];
    for (const [x, gate] of [[a, b], [b, a]] as const) {
      if (gateOf.get(gate) === x && x !== gate && readers.get(gate) === 1 && !graphOutputs.has(gate)) { out.set(n, { x, gate }); break; }
    }
  }
  return out;
}
