// Control-flow nodes (If, Loop, Scan) carry subgraphs that read tensors of the enclosing graph by
// name, without listing them as inputs. A pass that follows data through node inputs alone would
// miss those reads: a weight read only inside an If branch would look unused, and its gradient
// silently zero. outerReads names them.
import type onnxProto from 'onnx-proto';
import type { Node } from './ir.ts';

type GraphProto = onnxProto.onnx.IGraphProto;

/** The subgraphs a node's attributes hold (If's branches, Loop's and Scan's bodies). */
export function subgraphsOf(n: Node): GraphProto[] {
  const out: GraphProto[] = [];
  for (const a of Object.values(n.attrs)) {
    if (a.kind !== 'opaque') continue;
    const p = a.value as onnxProto.onnx.IAttributeProto;
    if (p.g) out.push(p.g);
    for (const g of p.graphs ?? []) out.push(g);
  }
  return out;
}

function collectReads(g: GraphProto, into: Set<string>): void {
  const defined = new Set<string>([...(g.input ?? []).map((v) => v.name ?? ''), ...(g.initializer ?? []).map((t) => t.name ?? '')]);
  for (const n of g.node ?? []) {
    for (const i of n.input ?? []) if (i && !defined.has(i)) into.add(i);
    for (const a of n.attribute ?? []) {
      const nested = new Set<string>();
      if (a.g) collectReads(a.g, nested);
      for (const s of a.graphs ?? []) collectReads(s, nested);
      for (const i of nested) if (!defined.has(i)) into.add(i);
    }
    for (const o of n.output ?? []) if (o) defined.add(o);
  }
  for (const o of g.output ?? []) if (o.name && !defined.has(o.name)) into.add(o.name);
}

const cache = new WeakMap<Node, string[]>();

/** Tensors of the enclosing graph that a node's subgraphs read (empty for a node without subgraphs). */
export function outerReads(n: Node): string[] {
  let r = cache.get(n);
  if (!r) {
    const s = new Set<string>();
    for (const g of subgraphsOf(n)) collectReads(g, s);
    r = [...s];
    cache.set(n, r);
  }
  return r;
}

/** What a node reads: its inputs, and for If/Loop/Scan the enclosing graph's tensors its subgraphs read. */
export function readsOf(n: Node): readonly string[] {
  const outer = outerReads(n);
  return outer.length ? [...n.inputs, ...outer] : n.inputs;
}
