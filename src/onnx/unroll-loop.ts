// A Loop that runs a fixed number of times is that many copies of its body. PyTorch exports
// `torch.tensor_split` (and list-building Python loops over a known range) as a Loop with a
// constant trip count that slices its input into a sequence; torchvision's MViT pools its
// attention through 51 of them. refit has no gradient rule for Loop, so unrolling it (with
// ./static-sequences.ts for the sequences it builds) is what lets gradients through.
//
// Unrolled only when the result is certain: the trip count is a constant, the loop's condition is
// absent or constant true, and the body passes its condition through unchanged (or returns a
// constant true), so every iteration runs. Loops whose body holds subgraphs of its own are left
// alone (their outer-scope reads could not follow the renaming).
import type onnxProto from 'onnx-proto';
import { cloneModel, constantValue, opsetVersion, type Graph, type Model, type Node } from './ir.ts';
import { resolveStaticSequences } from './static-sequences.ts';
import { graphFromProto } from './proto.ts';
import { subgraphsOf, readsOf } from './subgraphs.ts';
import { Emitter } from './emitter.ts';
import { tensor, toNumbers, type Tensor } from './tensor.ts';

/** Past this many copied nodes a Loop stays a Loop (a graph is not worth growing without bound). */
export const MAX_UNROLLED_NODES = 20_000;

function isTrue(t: Tensor | undefined): boolean {
  return !!t && t.data.length === 1 && toNumbers(t)[0] !== 0;
}

/** The rank a body input declares (a Loop's iteration number: [1] in PyTorch's exports, [] by the spec). */
function declaredRank(v: onnxProto.onnx.IValueInfoProto | undefined): number {
  return v?.type?.tensorType?.shape?.dim?.length ?? 0;
}

/**
 * Why Loop node `n` cannot be unrolled, or its trip count and body when it can. `tripCountFixed`:
 * judge as if the trip count were a constant (one the input shapes fix, known only once a step
 * folds them; its size is then not checked here).
 */
export function unrollPlan(g: Graph, n: Node, opts: { tripCountFixed?: boolean } = {}): { trips: number; body: onnxProto.onnx.IGraphProto } | string {
  const a = n.attrs.body;
  const body = a?.kind === 'opaque' ? (a.value as onnxProto.onnx.IAttributeProto).g : undefined;
  if (!body) return 'it has no body graph';
  const m = n.inputs[0] ? constantValue(g, n.inputs[0]) : undefined;
  if ((!m || m.data.length !== 1) && !(opts.tripCountFixed && n.inputs[0])) return 'its trip count is not a constant';
  const trips = m ? Number(toNumbers(m)[0]) : 1;
  const cond = n.inputs[1];
  if (cond && !isTrue(constantValue(g, cond))) return 'its condition is not a constant true';
  const inputs = (body.input ?? []).map((v) => v.name ?? '');
  const bodyGraph = graphFromProto(body);
  // The body's condition output, followed back through Identities and Casts (PyTorch's exports
  // pass the outer constant true through one or the other).
  let condOut = body.output?.[0]?.name ?? '';
  const hopOf = (t: string) => bodyGraph.nodes.find((x) => (x.opType === 'Identity' || x.opType === 'Cast') && x.outputs[0] === t);
  for (let hop = hopOf(condOut); hop; hop = hopOf(condOut)) condOut = hop.inputs[0]!;
  const passes = condOut === inputs[1] || isTrue(constantValue(bodyGraph, condOut)) || isTrue(constantValue(g, condOut));
  if (!passes) return 'its body computes whether to stop';
  if (bodyGraph.nodes.some((x) => subgraphsOf(x).length > 0)) return 'its body holds subgraphs of its own';
  const carried = n.inputs.length - 2, scans = (body.output?.length ?? 0) - 1 - carried;
  if (scans > 0 && trips <= 0) return 'it runs no iteration and has scan outputs (their shape is unknown)';
  if (trips * bodyGraph.nodes.length > MAX_UNROLLED_NODES) return `${trips} iterations of ${bodyGraph.nodes.length} nodes exceed ${MAX_UNROLLED_NODES} nodes`;
  return { trips: Math.max(trips, 0), body };
}

/** Replace Loop node `n` by `trips` copies of its body (unrollPlan said it can be). */
function unroll(g: Graph, n: Node, trips: number, proto: onnxProto.onnx.IGraphProto, em: Emitter): void {
  const body = graphFromProto(proto);
  const inputs = (proto.input ?? []).map((v) => v.name ?? '');
  const outputs = (proto.output ?? []).map((v) => v.name ?? '');
  const carriedCount = n.inputs.length - 2;
  const nodes: Node[] = [];
  const identity = (from: string, to: string) => nodes.push({ name: em.fresh(`${n.name}/out`), opType: 'Identity', domain: '', inputs: [from], outputs: [to], attrs: {} });
  // Body initializers are the same every iteration: one copy each.
  const shared = new Map<string, string>();
  for (const [k, t] of body.initializers) shared.set(k, em.constant(t, `${n.name}/${k}`));
  const iterRank = declaredRank(proto.input?.[0]), condRank = declaredRank(proto.input?.[1]);
  let carried = n.inputs.slice(2);
  const scanned: string[][] = outputs.slice(1 + carriedCount).map(() => []);
  for (let i = 0; i < trips; i++) {
    const rename = new Map<string, string>(shared);
    if (inputs[0]) rename.set(inputs[0], em.constant(tensor('int64', iterRank ? [1] : [], [i]), `${n.name}/iter`));
    if (inputs[1]) rename.set(inputs[1], em.constant(tensor('bool', condRank ? [1] : [], [1]), `${n.name}/cond`));
    carried.forEach((c, j) => { if (inputs[2 + j]) rename.set(inputs[2 + j]!, c); });
    const r = (name: string) => (name ? rename.get(name) ?? name : name);
    for (const x of body.nodes) {
      const outs = x.outputs.map((o) => {
        if (!o) return o;
        const fresh = em.fresh(`${o}__iter${i}`);
        rename.set(o, fresh);
        return fresh;
      });
      nodes.push({ ...x, name: em.fresh(`${x.name}__iter${i}`), inputs: x.inputs.map(r), outputs: outs });
    }
    carried = outputs.slice(1, 1 + carriedCount).map(r);
    outputs.slice(1 + carriedCount).forEach((o, k) => scanned[k]!.push(r(o)));
  }
  carried.forEach((c, j) => { const target = n.outputs[j]; if (target) identity(c, target); });
  scanned.forEach((values, k) => {
    const target = n.outputs[carriedCount + k];
    if (!target) return;
    // A scan output stacks the iterations' values on a new first axis.
    const { value: rows, nodes: unsqueezes } = em.collect(() => values.map((v) => em.unsqueeze(v, [0])));
    nodes.push(...unsqueezes, { name: em.fresh(`${n.name}/stack`), opType: 'Concat', domain: '', inputs: rows, outputs: [target], attrs: { axis: { kind: 'int', value: 0 } } });
  });
  g.nodes.splice(g.nodes.indexOf(n), 1, ...nodes);
}

/**
 * Unroll every default-domain Loop of `g` that runs a fixed number of times (see the top of this
 * file); returns how many were unrolled. Loops that cannot be stay as they are. Pass the emitter
 * that owns `g` when there is one: two emitters on one graph hand out the same fresh names.
 */
export function unrollConstantLoops(g: Graph, opset: number, em = new Emitter(g, opset)): number {
  let count = 0;
  const controls = new Set<string>();
  for (const n of [...g.nodes]) {
    if (n.opType !== 'Loop' || (n.domain !== '' && n.domain !== 'ai.onnx')) continue;
    const plan = unrollPlan(g, n);
    if (typeof plan === 'string') continue;
    unroll(g, n, plan.trips, plan.body, em);
    for (const c of n.inputs.slice(0, 2)) if (c) controls.add(c);
    count++;
  }
  // trip counts and conditions nothing reads any more (onnxruntime warns of unused initializers)
  const read = new Set([...g.nodes.flatMap((x) => readsOf(x)), ...g.outputs.map((o) => o.name)]);
  for (const c of controls) if (!read.has(c)) g.initializers.delete(c);
  return count;
}

/**
 * `m` with every Loop that runs a fixed number of times unrolled and the sequences they build
 * resolved (./static-sequences.ts); `m` itself when it has no such Loop.
 */
export function withUnrolledLoops(m: Model): Model {
  if (!m.graph.nodes.some((n) => n.opType === 'Loop' && typeof unrollPlan(m.graph, n) !== 'string')) return m;
  const copy = cloneModel(m);
  const opset = opsetVersion(copy);
  unrollConstantLoops(copy.graph, opset);
  resolveStaticSequences(copy.graph, opset);
  return copy;
}
