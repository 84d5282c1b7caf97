// Graph surgery shared by the adapter methods: intercept a tensor, re-sort nodes, drop dead ones.
import type { Graph, Node } from '../onnx/ir.ts';
import type { Emitter } from '../onnx/emitter.ts';
import { PeftError } from './errors.ts';

/**
 * Replace the value of tensor `t` for all its consumers (and graph outputs) by `build(t0)`,
 * where `t0` is the old value. The producer's output is renamed so the name `t` keeps
 * meaning "the layer's output", which lets several adapters stack on one layer.
 */
export function intercept(g: Graph, em: Emitter, t: string, build: (old: string) => string): void {
  const prod = g.nodes.find((n) => n.outputs.includes(t));
  if (!prod) throw new PeftError(`cannot attach an adapter to '${t}': it is not produced by a node`);
  const old = em.fresh(`${t}.base`);
  prod.outputs[prod.outputs.indexOf(t)] = old;
  const fresh = build(old);
  g.nodes.push({ name: em.fresh(`${t}.adapted`), opType: 'Identity', domain: '', inputs: [fresh], outputs: [t], attrs: {} });
}

/** Reorder nodes topologically (stable: keeps the original order where it is already valid). */
export function toposort(g: Graph): void {
  const prod = new Map<string, Node>();
  for (const n of g.nodes) for (const o of n.outputs) if (o) prod.set(o, n);
  const done = new Set<Node>(), onStack = new Set<Node>(), out: Node[] = [];
  const visit = (n: Node) => {
    if (done.has(n)) return;
    if (onStack.has(n)) throw new PeftError(`graph rewrite produced a cycle through node '${n.name}'`);
    onStack.add(n);
    for (const i of n.inputs) { const p = i ? prod.get(i) : undefined; if (p) visit(p); }
    onStack.delete(n);
    done.add(n);
    out.push(n);
  };
  for (const n of g.nodes) visit(n);
  g.nodes = out;
}

/** x · Wᵀ for a weight stored PyTorch-style [out, in] (every adapter matrix is). */
export function linearT(em: Emitter, x: string, w: string): string {
  return em.op('MatMul', [x, em.transpose(w, [1, 0])]);
}

export type Activation = 'relu' | 'gelu' | 'swish' | 'tanh';

export function activation(em: Emitter, x: string, kind: Activation): string {
  switch (kind) {
    case 'relu': return em.op('Relu', [x]);
    case 'tanh': return em.op('Tanh', [x]);
    case 'swish': return em.mul(x, em.op('Sigmoid', [x]));
    // exact (erf) GELU, as PyTorch's default; opset 17 has no Gelu op
    case 'gelu': return em.mul(em.mul(x, em.add(em.op('Erf', [em.div(x, em.scalar(Math.SQRT2))]), em.scalar(1))), em.scalar(0.5));
  }
}
