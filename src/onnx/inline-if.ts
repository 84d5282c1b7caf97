// An If whose condition is a constant is one of its branches. Optimum merges a text decoder and
// its KV-cache twin into one file with a single If on a `use_cache_branch` input (transformers.js
// ships these as decoder_model_merged.onnx); once that input is fixed (./kv-cache.ts), the If
// always takes the same branch, and inlining it gives refit a flat graph it can differentiate.
//
// Inlining: the branch's nodes go where the If was, its initializers join the graph's, and each
// branch output is renamed to the If output it stands for. Branches read outer-scope tensors by
// name (optimum moves the shared weights to the top graph), so only names the branch itself
// defines can clash with the outer graph's; those are renamed.
import type onnxProto from 'onnx-proto';
import type { Graph, Node } from './ir.ts';
import { graphFromProto } from './proto.ts';
import { outerReads, readsOf } from './subgraphs.ts';
import { toNumbers } from './tensor.ts';

/**
 * The value of a one-element condition that is an initializer or a Constant node's output, or a
 * comparison, logical op or Cast of such values (Silero VAD's `Cast(Equal(sr, 16000))` once its
 * sample rate is fixed), or of what a graph input's declared shape fixes (its rank, and its
 * static dims: Silero VAD v5's `Cast(Squeeze(Gather(Shape(state), 0)))` on a state declared
 * [2, ?, 128]); undefined when it is computed otherwise or fed.
 */
export function constantCondition(g: Graph, name: string): boolean | undefined {
  const v = smallValue(g, name, 8);
  return v?.length === 1 && v[0] !== null ? v[0] !== 0 : undefined;
}

const SCALAR_OPS: Partial<Record<string, (a: number, b: number) => number>> = {
  Equal: (a, b) => Number(a === b), Greater: (a, b) => Number(a > b), Less: (a, b) => Number(a < b),
  GreaterOrEqual: (a, b) => Number(a >= b), LessOrEqual: (a, b) => Number(a <= b),
  And: (a, b) => Number(a !== 0 && b !== 0), Or: (a, b) => Number(a !== 0 || b !== 0), Xor: (a, b) => Number((a !== 0) !== (b !== 0)),
};

/** Elements a small value may have to be followed (a Shape's dims). */
const MAX_ELEMENTS = 8;

/**
 * A small constant value, flat, with null for elements only a run decides (a symbolic dim): an
 * initializer or Constant, the Shape and Size of a graph input with a declared shape, and what
 * the ops above, Not, Identity, Cast, Gather with a constant index, Squeeze and Unsqueeze compute
 * from such values, at most `depth` nodes deep.
 */
function smallValue(g: Graph, name: string, depth: number): (number | null)[] | undefined {
  const init = g.initializers.get(name);
  if (init) return init.data.length <= MAX_ELEMENTS ? toNumbers(init) : undefined;
  const input = g.inputs.find((i) => i.name === name);
  if (input) return undefined;
  const n = g.nodes.find((x) => x.outputs[0] === name);
  if (!n || depth === 0 || (n.domain !== '' && n.domain !== 'ai.onnx')) return undefined;
  if (n.opType === 'Constant') {
    const t = n.attrs.value?.kind === 'tensor' ? n.attrs.value.value : undefined;
    return t && t.data.length <= MAX_ELEMENTS ? toNumbers(t) : undefined;
  }
  const dims = n.opType === 'Shape' || n.opType === 'Size' ? g.inputs.find((i) => i.name === n.inputs[0])?.shape : undefined;
  if (dims) {
    const known = dims.map((d) => (typeof d === 'number' ? d : null));
    if (n.opType === 'Size') return known.every((d) => d !== null) ? [known.reduce((a, b) => a! * b!, 1)] : undefined;
    const start = n.attrs.start?.kind === 'int' ? n.attrs.start.value : 0;
    const end = n.attrs.end?.kind === 'int' ? n.attrs.end.value : known.length;
    return known.slice(start, end);
  }
  if (n.opType === 'Shape') return undefined; // of a computed tensor: the step's fold decides it
  const args = n.inputs.map((i) => (i ? smallValue(g, i, depth - 1) : undefined));
  const a = args[0];
  if (!a) return undefined;
  // Size of a small value counts its elements: of a Shape, the rank, known even where the dims are not.
  if (n.opType === 'Size') return [a.length];
  if (n.opType === 'Identity' || n.opType === 'Squeeze' || n.opType === 'Unsqueeze') return a;
  if (n.opType === 'Gather') {
    const idx = args[1];
    if (!idx || (n.attrs.axis?.kind === 'int' && n.attrs.axis.value !== 0)) return undefined;
    return idx.map((i) => (i === null ? null : a[i < 0 ? i + a.length : i] ?? null));
  }
  if (a.length !== 1 || a[0] === null) return undefined;
  if (n.opType === 'Not') return [Number(a[0] === 0)];
  if (n.opType === 'Cast') {
    const to = n.attrs.to?.kind === 'int' ? n.attrs.to.value : undefined;
    return [to === 9 ? Number(a[0] !== 0) : to === 1 || to === 10 || to === 11 || to === 16 ? a[0] : Math.trunc(a[0])]; // 9 bool; 1, 10, 11, 16 floats
  }
  const b = args[1];
  const op = SCALAR_OPS[n.opType];
  return op && args.length === 2 && b?.length === 1 && b[0] !== null ? [op(a[0], b[0])] : undefined;
}

/** The branch graph an If node takes for `value`. */
function branchOf(n: Node, value: boolean): Graph {
  const key = value ? 'then_branch' : 'else_branch';
  const a = n.attrs[key];
  const proto = a?.kind === 'opaque' ? (a.value as onnxProto.onnx.IAttributeProto).g : undefined;
  if (!proto) throw new Error(`If node '${n.name}' has no ${key} graph`);
  const g = graphFromProto(proto);
  // Only the outputs' names matter here; a nested branch's outputs are often written without a
  // type (Silero VAD v5's), which graphFromProto drops as values it cannot describe.
  g.outputs = (proto.output ?? []).map((o) => g.outputs.find((v) => v.name === o.name) ?? { name: o.name ?? '', dtype: 'float32', shape: null, untyped: true });
  return g;
}

/** Replace If node `n` of `g` by the branch it takes when its condition is `value`. */
export function inlineIf(g: Graph, n: Node, value: boolean): void {
  const at = g.nodes.indexOf(n);
  if (at < 0) throw new Error(`inlineIf: node '${n.name}' is not in the graph`);
  const b = branchOf(n, value);
  if (b.outputs.length !== n.outputs.length) throw new Error(`If node '${n.name}': its ${value ? 'then' : 'else'} branch has ${b.outputs.length} outputs for the node's ${n.outputs.length}`);

  // Names the branch defines, renamed where the outer graph already uses them.
  const outer = new Set<string>([...g.initializers.keys(), ...g.inputs.map((v) => v.name), ...g.nodes.flatMap((x) => x.outputs)]);
  const outerNodes = new Set(g.nodes.map((x) => x.name));
  const fresh = (used: Set<string>, base: string) => {
    let k = 1, name = `${base}_inlined`;
    while (used.has(name)) name = `${base}_inlined_${++k}`;
    used.add(name);
    return name;
  };
  const rename = new Map<string, string>();
  const defined = [...b.initializers.keys(), ...b.nodes.flatMap((x) => x.outputs)].filter(Boolean);
  for (const name of defined) if (outer.has(name)) rename.set(name, fresh(outer, name));
  // A branch output produced inside the branch takes the If output's name; one that is an outer
  // tensor (or appears twice among the outputs) is copied by an Identity.
  const copies: Node[] = [];
  b.outputs.forEach((o, i) => {
    const target = n.outputs[i]!;
    if (!target) return; // an omitted If output
    const own = defined.includes(o.name) && !rename.has(o.name) && !b.outputs.slice(0, i).some((p) => p.name === o.name);
    if (own) rename.set(o.name, target);
    else copies.push({ name: fresh(outerNodes, `${n.name}_out${i}`), opType: 'Identity', domain: '', inputs: [rename.get(o.name) ?? o.name], outputs: [target], attrs: {} });
  });
  // A nested subgraph's outer-scope reads are not rewritten, so none may read a renamed name (a
  // branch output taking the If output's name is a rename too: Silero VAD v5's nested Ifs read none).
  const clash = b.nodes.flatMap((x) => outerReads(x).filter((name) => rename.has(name)));
  if (clash.length) {
    throw new Error(`If node '${n.name}': a subgraph nested in its branch reads names that inlining must rename (${[...new Set(clash)].slice(0, 3).join(', ')}); refit cannot inline it`);
  }
  const r = (name: string) => rename.get(name) ?? name;
  const nodes = b.nodes.map((x) => ({
    ...x,
    name: outerNodes.has(x.name) ? fresh(outerNodes, x.name) : (outerNodes.add(x.name), x.name),
    inputs: x.inputs.map((i) => (i ? r(i) : i)),
    outputs: x.outputs.map((o) => (o ? r(o) : o)),
  }));
  for (const [k, t] of b.initializers) g.initializers.set(r(k), t);
  const shaped = new Set(g.valueInfo.map((v) => v.name));
  for (const v of b.valueInfo) if (!shaped.has(r(v.name))) g.valueInfo.push({ ...v, name: r(v.name) });
  g.nodes.splice(at, 1, ...nodes, ...copies);
}

/**
 * Inline every If whose condition is a constant, including those a branch brings in; returns how
 * many. Initializers only the If read (its condition, weights of the branches not taken: Silero
 * VAD's 8 kHz model) go too, unless named in `keep` (onnxruntime warns about each unused one, and
 * they are no parameters of what is left).
 */
export function inlineConstantIfs(g: Graph, keep: Iterable<string> = []): number {
  const kept = new Set(keep);
  let count = 0;
  for (;;) {
    const n = g.nodes.find((x) => x.opType === 'If' && x.domain === '' && constantCondition(g, x.inputs[0]!) !== undefined);
    if (!n) return count;
    const readByIf = readsOf(n).filter((t) => t && g.initializers.has(t) && !kept.has(t));
    inlineIf(g, n, constantCondition(g, n.inputs[0]!)!);
    count++;
    if (!readByIf.length) continue;
    const read = new Set([...g.nodes.flatMap((x) => readsOf(x)), ...g.outputs.map((o) => o.name)]);
    for (const t of readByIf) if (!read.has(t)) g.initializers.delete(t);
  }
}
