// PyTorch's nn.EmbeddingBag as torch.onnx writes it (symbolic_opset10/11's embedding_bag): a Loop
// over the bags whose body slices the ids at starts[i] … ends[i], gathers their rows and sums or
// averages them (optionally times per-sample weights). The bag sizes are values, so a training step
// that unrolled the Loop would be compiled again for every batch of other offsets. For a step the
// Loop becomes one fixed-shape computation of the same function:
//   member[b, j] = starts[b] ≤ j < ends[b]           (j over the ids: [bags, ids])
//   out = member · rows                                (rows = table[ids], times the weights)
//   mean: out / max(Σ_j member[b, j], 1)               (an empty bag gives 0, as PyTorch's)
// whose shapes the input shapes fix. The membership matrix costs bags × ids floats. 'max' bags
// (not linear) keep their Loop, and a step is then compiled per set of offsets (data-shapes.ts).
import type onnxProto from 'onnx-proto';
import { attrInt, attrInts, cloneModel, constantValue, opsetVersion, type Graph, type Model, type Node } from './ir.ts';
import { graphFromProto } from './proto.ts';
import { i64, toNumbers } from './tensor.ts';
import { Emitter } from './emitter.ts';

interface BagLoop {
  /** Outer tensors: the starts (one per bag, perhaps one more), the ends (one per bag), the ids, the table, the per-sample weights. */
  starts: string; ends: string; ids: string; table: string; weights?: string;
  mode: 'sum' | 'mean';
}

const bodyOf = (n: Node) => {
  const a = n.attrs.body;
  return a?.kind === 'opaque' ? (a.value as onnxProto.onnx.IAttributeProto).g ?? undefined : undefined;
};

/** The EmbeddingBag a Loop node of `outer` computes, or undefined when it is another loop (or a 'max' bag). */
export function embeddingBagOf(n: Node, outer: Graph): BagLoop | undefined {
  if (n.opType !== 'Loop' || n.inputs.length !== 2 || n.outputs.length !== 1) return undefined;
  const proto = bodyOf(n);
  if (!proto || (proto.input?.length ?? 0) !== 2 || (proto.output?.length ?? 0) !== 2) return undefined;
  const body = graphFromProto(proto);
  const iter = proto.input![0]!.name ?? '';
  const prod = new Map(body.nodes.flatMap((x) => x.outputs.map((o) => [o, x] as const)));
  const local = (t: string) => prod.has(t) || body.initializers.has(t) || body.inputs.some((i) => i.name === t);
  const is = (t: string | undefined, op: string) => (t ? prod.get(t) : undefined)?.opType === op ? prod.get(t!)! : undefined;
  const zeroAxis = (x: Node, slot: number) => {
    const t = x.inputs[slot];
    const c = t ? constantValue(body, t) ?? (local(t) ? undefined : constantValue(outer, t)) : undefined;
    return c !== undefined && toNumbers(c).join() === '0';
  };
  // starts[i] and ends[i]: Unsqueeze(Gather(outer, iter)) each
  const bound = (t: string | undefined) => {
    const u = is(t, 'Unsqueeze'), gth = is(u?.inputs[0], 'Gather');
    return gth && gth.inputs[1] === iter && !local(gth.inputs[0]!) && attrInt(gth, 'axis', 0) === 0 ? gth.inputs[0]! : undefined;
  };
  const reduce = prod.get(proto.output![1]!.name ?? '');
  if (!reduce || (reduce.opType !== 'ReduceSum' && reduce.opType !== 'ReduceMean') || attrInt(reduce, 'keepdims', 1) !== 0) return undefined;
  const axes = reduce.inputs[1] ? constantValue(body, reduce.inputs[1]) : undefined;
  if ((axes ? toNumbers(axes) : attrInts(reduce, 'axes', [])).join() !== '0') return undefined;
  let rows: string | undefined = reduce.inputs[0], weights: string | undefined;
  const mul = is(rows, 'Mul');
  if (mul) {
    const w = mul.inputs.map((i) => is(i, 'Unsqueeze')).find((u) => u && is(u.inputs[0], 'Slice'));
    const ws = w ? is(w.inputs[0], 'Slice')! : undefined;
    if (!w || !ws || local(ws.inputs[0]!)) return undefined;
    weights = ws.inputs[0]!;
    rows = mul.inputs.find((i) => i !== w.outputs[0]);
  }
  const gather = is(rows, 'Gather'), slice = is(gather?.inputs[1], 'Slice');
  if (!gather || !slice || attrInt(gather, 'axis', 0) !== 0 || local(gather.inputs[0]!) || local(slice.inputs[0]!) || !zeroAxis(slice, 3)) return undefined;
  const starts = bound(slice.inputs[1]), ends = bound(slice.inputs[2]);
  if (!starts || !ends) return undefined;
  return { starts, ends, ids: slice.inputs[0]!, table: gather.inputs[0]!, ...(weights ? { weights } : {}), mode: reduce.opType === 'ReduceSum' ? 'sum' : 'mean' };
}

/** Replace, in `g`, each EmbeddingBag Loop (embeddingBagOf) by its fixed-shape form; returns how many. */
export function rewriteEmbeddingBags(g: Graph, em: Emitter): number {
  const original = g.nodes;
  let count = 0;
  g.nodes = [];
  for (const n of original) {
    const bag = embeddingBagOf(n, { ...g, nodes: original });
    if (!bag) { g.nodes.push(n); continue; }
    count++;
    const bags = em.op('Shape', [bag.ends]); // [1]: one end per bag
    const positions = em.op('Range', [em.constant(i64([], [0]), 'zero'), em.op('Squeeze', [em.op('Shape', [bag.ids]), em.constant(i64([1], [0]), 'axis0')]), em.constant(i64([], [1]), 'one')]);
    const starts = em.op('Slice', [bag.starts, em.constant(i64([1], [0]), 'zero1'), bags, em.constant(i64([1], [0]), 'axis0')]);
    const column = (t: string) => em.unsqueeze(em.op('Cast', [t], { to: 7 }), [1]); // [bags, 1] int64
    const row = em.unsqueeze(positions, [0]); // [1, ids]
    const member = em.op('Cast', [em.op('And', [em.op('GreaterOrEqual', [row, column(starts)]), em.op('Less', [row, column(bag.ends)])])], { to: 1 });
    let rows = em.op('Gather', [bag.table, bag.ids], { axis: 0 });
    if (bag.weights) rows = em.mul(rows, em.unsqueeze(bag.weights, [1]));
    let out = em.op('MatMul', [member, rows]);
    if (bag.mode === 'mean') out = em.div(out, em.op('Max', [em.reduce('ReduceSum', member, [1], true), em.scalar(1)]));
    g.nodes.push({ name: em.fresh(`${n.name}/bags`), opType: 'Identity', domain: '', inputs: [out], outputs: [n.outputs[0]!], attrs: {} });
  }
  return count;
}

/** `m` with its EmbeddingBag Loops in the fixed-shape form (a copy; `m` itself when it has none). */
export function withEmbeddingBags(m: Model): Model {
  if (!m.graph.nodes.some((n) => embeddingBagOf(n, m.graph))) return m;
  const copy = cloneModel(m);
  rewriteEmbeddingBags(copy.graph, new Emitter(copy.graph, opsetVersion(copy)));
  return copy;
}
