// Shapes the input values decide, not only the input shapes. NonZero (PyTorch's `torch.where(mask)`
// in a mixture of experts' routing, PyG's `add_remaining_self_loops`), Unique, Compress and
// NonMaxSuppression give as many elements as the data selects; a Range, Expand, Reshape, Slice …
// whose target shape, sizes or bounds are computed from the values fed (a length regulator
// repeating each token by a predicted duration, a slice to `lengths.max()`) does too. A training
// step is compiled for one input signature with every shape fixed, so for such a model the sizes
// these ops give on a batch join the signature: the step is compiled for them, probed on that
// batch's own values, and compiled again when a batch gives other sizes (an MoE's routing changes
// most batches).
import type onnxProto from 'onnx-proto';
import type { Graph, Model, Node } from './ir.ts';
import { subgraphsOf, readsOf } from './subgraphs.ts';
import { embeddingBagOf } from './embedding-bag.ts';
import { cloneModel } from './ir.ts';
import { createSession, toOrt, type SessionOptions, type ort } from './runtime.ts';
import type { Tensor } from './tensor.ts';

export const DATA_SHAPED_OPS = new Set(['NonZero', 'Unique', 'Compress', 'NonMaxSuppression']);

/** Input slots that set an output's shape: a target shape, sizes, bounds, a count, axes. */
const SHAPE_SLOTS: Partial<Record<string, readonly number[]>> = {
  Reshape: [1], Expand: [1], Tile: [1], Slice: [1, 2, 3, 4], Pad: [1, 3], ConstantOfShape: [0], Range: [0, 1, 2],
  TopK: [1], Split: [1], Squeeze: [1], Unsqueeze: [1], Resize: [2, 3], Upsample: [1], OneHot: [1], CenterCropPad: [1],
  ReduceSum: [1], ReduceMean: [1], ReduceMax: [1], ReduceMin: [1], ReduceProd: [1], ReduceL1: [1], ReduceL2: [1],
  ReduceLogSum: [1], ReduceLogSumExp: [1], ReduceSumSquare: [1],
};

const isDefault = (domain: string) => domain === '' || domain === 'ai.onnx';

/**
 * The outputs whose sizes the values fed decide: of the ops above, and of any op whose shape slot
 * reads a tensor computed from those values. Shape and Size read only a tensor's shape, so what
 * they give counts as computed from the values only where that shape is itself decided by them.
 */
export function dataShapedOutputs(g: Graph): string[] {
  const valued = new Set(g.inputs.map((i) => i.name).filter((n) => !g.initializers.has(n)));
  const shaped = new Set<string>();
  const out: string[] = [];
  for (const n of g.nodes) {
    const slots = isDefault(n.domain) ? SHAPE_SLOTS[n.opType] : undefined;
    const decides = (isDefault(n.domain) && DATA_SHAPED_OPS.has(n.opType)) || (slots ?? []).some((i) => !!n.inputs[i] && valued.has(n.inputs[i]!));
    const readsShaped = n.inputs.some((i) => !!i && shaped.has(i));
    const outputs = n.outputs.filter(Boolean);
    if (decides) out.push(...outputs);
    if (decides || readsShaped) for (const o of outputs) shaped.add(o);
    const readsShapeOnly = n.opType === 'Shape' || n.opType === 'Size';
    if (decides || (readsShapeOnly ? readsShaped : n.inputs.some((i) => !!i && valued.has(i)))) for (const o of outputs) valued.add(o);
  }
  return out;
}

type GraphProto = onnxProto.onnx.IGraphProto;

/**
 * Where values fed decide sizes inside a Loop, If or Scan body (PyTorch's EmbeddingBag exports a
 * Loop over the bags whose body slices the ids at `offsets[i] … offsets[i + 1]`): the top-level
 * sizer cannot see those sizes (a step unrolls such a Loop and folds them), so a step's key holds
 * the values of the graph inputs they come from. `nodes`: the control-flow nodes concerned.
 */
export function subgraphDataShapes(g: Graph): { inputs: string[]; nodes: Node[] } {
  const sources = new Map<string, Set<string>>(); // valued tensor → the graph inputs its values come from
  for (const i of g.inputs) if (!g.initializers.has(i.name)) sources.set(i.name, new Set([i.name]));
  const keyed = new Set<string>(), nodes: Node[] = [];
  for (const n of g.nodes) {
    const here = new Set<string>();
    // an EmbeddingBag's Loop becomes a fixed-shape product in a step (embedding-bag.ts): its sizes do not vary
    if (!embeddingBagOf(n, g)) for (const body of subgraphsOf(n)) scanBody(body, n.opType, n.inputs, (t) => sources.get(t), here);
    if (here.size) { nodes.push(n); for (const x of here) keyed.add(x); }
    flow(n.opType, readsOf(n), n.outputs, (t) => sources.get(t), (t, s) => sources.set(t, s));
  }
  return { inputs: [...keyed], nodes };
}

/** A node's outputs take the sources of what it reads, except Shape and Size, which read no values. */
function flow(op: string, reads: readonly string[], outputs: readonly string[], get: (t: string) => Set<string> | undefined, set: (t: string, s: Set<string>) => void): void {
  if (op === 'Shape' || op === 'Size') return;
  const s = new Set<string>();
  for (const i of reads) for (const x of (i && get(i)) || []) s.add(x);
  if (s.size) for (const o of outputs) if (o) set(o, s);
}

/** Body inputs that take a node's inputs: a Loop's carried values (after the iteration number and condition), a Scan's all. */
function bodyInputSources(body: GraphProto, op: string, inputs: readonly string[], get: (t: string) => Set<string> | undefined): Map<string, Set<string>> {
  const local = new Map<string, Set<string>>();
  (body.input ?? []).forEach((v, k) => {
    const outer = op === 'Loop' ? (k >= 2 ? inputs[k] : undefined) : op === 'Scan' ? inputs[k] : undefined;
    const s = outer ? get(outer) : undefined;
    if (v.name && s) local.set(v.name, s);
  });
  return local;
}

/** Adds to `keyed` the graph inputs whose values reach a shape slot (or a NonZero-like op) in `body` or its own subgraphs. */
function scanBody(body: GraphProto, op: string, inputs: readonly string[], outer: (t: string) => Set<string> | undefined, keyed: Set<string>): void {
  const local = bodyInputSources(body, op, inputs, outer);
  const defined = new Set([...(body.input ?? []).map((v) => v.name ?? ''), ...(body.initializer ?? []).map((t) => t.name ?? '')]);
  const get = (t: string) => local.get(t) ?? (defined.has(t) ? undefined : outer(t));
  for (const n of body.node ?? []) {
    const type = n.opType ?? '', domain = n.domain ?? '', ins = n.input ?? [];
    if (isDefault(domain)) {
      const slots = DATA_SHAPED_OPS.has(type) ? ins.map((_, i) => i) : SHAPE_SLOTS[type] ?? [];
      for (const i of slots) for (const x of (ins[i] && get(ins[i]!)) || []) keyed.add(x);
    }
    for (const a of n.attribute ?? []) for (const sub of [...(a.g ? [a.g] : []), ...(a.graphs ?? [])]) scanBody(sub, type, ins, get, keyed);
    for (const o of n.output ?? []) if (o) defined.add(o);
    flow(type, ins, n.output ?? [], get, (t, s) => local.set(t, s));
  }
}

/** Computes, per batch, the sizes of a model's data-shaped tensors: one session, created at first use. */
export class DataShapes {
  private session: Promise<ort.InferenceSession> | null = null;

  /** `inputs`: graph inputs whose values themselves join the key (subgraphDataShapes). */
  constructor(private readonly model: Model, readonly tensors: string[], private readonly options: SessionOptions = {}, readonly inputs: string[] = []) {}

  /** A key of the sizes on this batch ('' when the model has no data-shaped tensor). */
  async key(batch: Record<string, Tensor>): Promise<string> {
    const values = this.inputs.map((i) => `${i}=${batch[i] ? Array.from(batch[i]!.data as ArrayLike<number | bigint>, String).join(',') : ''}`).join(';');
    if (!this.tensors.length) return values;
    return `${await this.sizes(batch)}${values ? `|${values}` : ''}`;
  }

  private async sizes(batch: Record<string, Tensor>): Promise<string> {
    this.session ??= (() => {
      // Their shapes only (a Shape node each), so a large tensor is never copied out.
      const m = cloneModel(this.model);
      m.graph.outputs = this.tensors.map((t, k) => {
        const name = `refit.size_of_${k}`;
        m.graph.nodes.push({ name, opType: 'Shape', domain: '', inputs: [t], outputs: [name], attrs: {} });
        return { name, dtype: 'int64', shape: null };
      });
      return createSession(m, this.options);
    })();
    const s = await this.session;
    const feeds: Record<string, ort.Tensor> = {};
    for (const i of s.inputNames) if (batch[i]) feeds[i] = toOrt(batch[i]);
    const out = await s.run(feeds);
    return this.tensors.map((_, k) => Array.from(out[`refit.size_of_${k}`]!.data as BigInt64Array, Number).join('x')).join(';');
  }

  async release(): Promise<void> {
    const s = this.session;
    this.session = null;
    if (s) await (await s).release();
  }
}
