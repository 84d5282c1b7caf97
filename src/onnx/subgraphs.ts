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

type ValueInfoProto = onnxProto.onnx.IValueInfoProto;

/**
 * A value's type with its tensor dims made unknown (element type and rank kept); sequences and
 * others as they are. The rank stays: without it onnxruntime's inference downstream can go wrong
 * (torchvision's Keypoint R-CNN: an If's NMS indices of unknown rank, and a Resize in the Loop
 * after it had its computed sizes inferred as 0 elements, and the session was refused).
 */
function withoutShape(v: ValueInfoProto): ValueInfoProto {
  const t = v.type?.tensorType;
  return t?.shape ? { ...v, type: { ...v.type, tensorType: { elemType: t.elemType, shape: { dim: (t.shape.dim ?? []).map(() => ({})) } } } } : v;
}

function graphWithoutShapes(g: GraphProto): GraphProto {
  return {
    ...g,
    output: (g.output ?? []).map(withoutShape),
    valueInfo: [],
    node: (g.node ?? []).map((n) => (n.attribute?.some((a) => a.g || a.graphs?.length) ? { ...n, attribute: n.attribute.map(attrWithoutShapes) } : n)),
  };
}

/** `a` with each subgraph it holds (If's branch, a body) replaced by `f` of it; `a` itself when it holds none. */
export function mapSubgraphs(a: onnxProto.onnx.IAttributeProto, f: (g: GraphProto) => GraphProto): onnxProto.onnx.IAttributeProto {
  if (!a.g && !a.graphs?.length) return a;
  return { ...a, ...(a.g ? { g: f(a.g) } : {}), ...(a.graphs?.length ? { graphs: a.graphs.map(f) } : {}) };
}

const attrWithoutShapes = (a: onnxProto.onnx.IAttributeProto) => mapSubgraphs(a, graphWithoutShapes);

/**
 * `n` with the output dims and value_info its subgraphs declare removed (a copy; `n` itself when
 * it has no subgraph). PyTorch's exporter can declare an If branch's output with the traced
 * example's dims ([2, 320, 384] where the run gives [2, 65, 384] in torchvision's MViT blocks), and
 * onnxruntime allocates the branch's output from that declaration and fails; inferred, it is right.
 */
export function withoutSubgraphShapes(n: Node): Node {
  if (subgraphsOf(n).length === 0) return n;
  return { ...n, attrs: Object.fromEntries(Object.entries(n.attrs).map(([k, a]) => [k, a.kind === 'opaque' ? { kind: 'opaque', value: attrWithoutShapes(a.value as onnxProto.onnx.IAttributeProto) } : a])) };
}
