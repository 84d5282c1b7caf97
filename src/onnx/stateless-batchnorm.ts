// A training-mode BatchNormalization that is no BatchNorm layer. timm's StdConv2d (BiT, the
// ResNetV2 family) standardises its weight in the forward pass with
// `F.batch_norm(w.reshape(1, out, -1), None, None, training=True)`: torch.onnx writes a
// training-mode BatchNormalization on the weight, with "running" statistics computed from
// another copy of the weight and running outputs nothing reads. Left as it is, refit took it
// for a BatchNorm layer: its gradient rule refused the training form, batchNorm: 'train' (and
// Tent, BN-adapt) refused statistics that are not buffers, and a GroupNorm model counted as a
// BatchNorm model. What it computes is the batch normalisation of its input, so it becomes that
// (an InstanceNormalization of the one-sample weight, or the standard ops of it), and the unread
// statistics (and their copy of the weight) go.
import type { Graph, Node } from './ir.ts';
import { attrFloat, attrInt, constantValue, producers } from './ir.ts';
import { Emitter } from './emitter.ts';
import { constantDims } from './constant-dims.ts';
import { readsOf } from './subgraphs.ts';

/** Whether `n` normalises with its batch's statistics, its statistics inputs are no buffers, and nothing reads its running outputs. */
function isStateless(g: Graph, n: Node, read: Set<string>, opset: number): boolean {
  if (n.opType !== 'BatchNormalization' || (n.domain !== '' && n.domain !== 'ai.onnx')) return false;
  const training = opset >= 14 ? attrInt(n, 'training_mode', 0) === 1 : n.outputs.filter(Boolean).length > 1;
  if (!training) return false;
  const stats = n.inputs.slice(3, 5);
  if (stats.length < 2 || stats.some((s) => !s || g.initializers.has(s))) return false;
  return n.outputs.slice(1).every((o) => !o || !read.has(o));
}

/** The rank of `t` where the graph fixes it: an initializer, or a Reshape to a stored shape. */
function rankOf(g: Graph, prod: Map<string, Node>, t: string): number | undefined {
  const init = g.initializers.get(t);
  if (init) return init.dims.length;
  const p = prod.get(t);
  const shape = p?.opType === 'Reshape' && p.inputs[1] ? constantValue(g, p.inputs[1]) : undefined;
  if (shape) return shape.data.length;
  return g.inputs.find((i) => i.name === t)?.shape?.length ?? g.valueInfo.find((v) => v.name === t)?.shape?.length;
}

/**
 * Replace each such node by InstanceNormalization where its input is one sample, else by
 * ReduceMean/Sub/Mul/ReduceMean/Add/Sqrt/Div and its scale and bias; then remove what computed its
 * unread statistics. Returns the names of the nodes replaced.
 */
export function decomposeStatelessBatchNorms(g: Graph, opset: number): string[] {
  const read = new Set<string>([...g.nodes.flatMap(readsOf), ...g.outputs.map((o) => o.name)]);
  const prod = producers(g);
  const found = g.nodes.filter((n) => isStateless(g, n, read, opset) && rankOf(g, prod, n.inputs[0]!) !== undefined);
  if (!found.length) return [];
  const em = new Emitter(g, opset, 'refit_stdbn_');
  const orphans: string[] = [];
  for (const n of found) {
    const [x, scale, bias, mean, variance] = n.inputs as [string, string, string, string, string];
    const r = rankOf(g, prod, x)!;
    if (r >= 3 && constantDims(g, prod, x)?.[0] === 1) {
      // One sample ([1, C, …], as StdConv2d reshapes its weight): per-channel statistics over the
      // rest are InstanceNormalization's, one node whose gradient rule takes a few passes over the
      // weight where the seven ops' rules took about twenty (NF-ResNet-26's full step: 0.74 of the
      // time, BiT's 0.84; 130 of its 172 kernel ms were those passes).
      const node = { name: em.fresh('instance_norm'), opType: 'InstanceNormalization', domain: '', inputs: [x, scale, bias], outputs: [n.outputs[0]!], attrs: { epsilon: { kind: 'float' as const, value: attrFloat(n, 'epsilon', 1e-5) } } };
      g.nodes.splice(g.nodes.indexOf(n), 1, node);
      orphans.push(mean, variance);
      continue;
    }
    const axes = Array.from({ length: r }, (_, i) => i).filter((i) => i !== 1);
    const perChannel = (v: string) => em.reshape(v, [1, -1, ...Array(r - 2).fill(1)]);
    const { nodes } = em.collect(() => {
      const centred = em.sub(x, em.reduce('ReduceMean', x, axes, true));
      const varianceOf = em.reduce('ReduceMean', em.mul(centred, centred), axes, true);
      const normalised = em.div(centred, em.op('Sqrt', [em.add(varianceOf, em.scalar(attrFloat(n, 'epsilon', 1e-5)))]));
      const y = em.add(em.mul(normalised, perChannel(scale)), perChannel(bias));
      g.nodes[g.nodes.length - 1]!.outputs[0] = n.outputs[0]!; // the last Add writes the node's output
      return y;
    });
    g.nodes.splice(g.nodes.indexOf(n), 1, ...nodes);
    orphans.push(mean, variance);
  }
  removeUnread(g, orphans);
  return found.map((n) => n.name);
}

/** Remove the producers of `tensors` that nothing reads any more, back through their inputs, and initializers left unread. */
function removeUnread(g: Graph, tensors: string[]): void {
  const prod = producers(g);
  const uses = new Map<string, number>();
  for (const n of g.nodes) for (const i of readsOf(n)) if (i) uses.set(i, (uses.get(i) ?? 0) + 1);
  for (const o of g.outputs) uses.set(o.name, (uses.get(o.name) ?? 0) + 1);
  const gone = new Set<Node>();
  const stack = [...tensors];
  while (stack.length) {
    const t = stack.pop()!;
    if ((uses.get(t) ?? 0) > 0) continue;
    const p = prod.get(t);
    if (p && !gone.has(p) && p.outputs.every((o) => !o || (uses.get(o) ?? 0) === 0)) {
      gone.add(p);
      for (const i of readsOf(p)) if (i) { uses.set(i, uses.get(i)! - 1); stack.push(i); }
    } else if (!p && g.initializers.has(t)) g.initializers.delete(t);
  }
  g.nodes = g.nodes.filter((n) => !gone.has(n));
}
