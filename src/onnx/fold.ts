// Fold what the input signature fixes. A training step is compiled for one input signature,
// so every value that depends only on shapes and constants is a constant of that step:
// exporters compute Slice starts, Reshape/Expand shapes, Pad pads, Resize sizes and masks
// from `Shape → Gather → Mul → Unsqueeze → Concat …` subgraphs. Folding them into
// initializers lets gradient rules read them with ctx.constant, and drops the shape
// arithmetic from every step.
//
// The values come from onnxruntime itself (the shape probe already runs the whole graph with
// every value exposed), never from op re-implementations in TypeScript, so a folded value is
// bit-for-bit what the unfolded graph computes.
import type { Graph, Model, Node } from './ir.ts';
import { cloneModel } from './ir.ts';
import { isFloat, size, type Tensor } from './tensor.ts';
import { probe, type InputSignature } from './shapes.ts';
import { readsOf } from './subgraphs.ts';

/**
 * Which static tensors become initializers:
 * - every non-float static tensor that a kept node reads (shapes, indices, axes, bool masks):
 *   gradient rules need these as constants, and they are small or, for masks, no bigger than
 *   the activations they mask (folded whatever their size; an initializer that only fed them
 *   is dropped, so nothing is held twice unless another node still reads it);
 * - a float static tensor only if it holds at most FLOAT_FOLD_MAX_ELEMENTS values. Rules need
 *   float constants only for exponents, clip bounds and resize scales (scalars or short
 *   vectors); larger static floats are usually frozen weights behind a Transpose or a
 *   DequantizeLinear, which folding would copy (an int8 weight would come back at 4× its
 *   size). Those stay computed in the step from their (folded) static inputs. 4096 values
 *   (16 KiB in float32) also covers causal masks sliced from a buffer up to 64×64.
 */
export const FLOAT_FOLD_MAX_ELEMENTS = 4096;

/** Ops never folded even when all inputs are static: random, or not plain tensor functions. */
const NEVER_STATIC = new Set([
  'RandomNormal', 'RandomUniform', 'RandomNormalLike', 'RandomUniformLike', 'Multinomial', 'Bernoulli', 'Dropout',
  'If', 'Loop', 'Scan',
  'SequenceConstruct', 'SequenceEmpty', 'SequenceInsert', 'SequenceErase', 'SequenceAt', 'SequenceLength',
  'SplitToSequence', 'ConcatFromSequence', 'SequenceMap', 'Optional', 'OptionalGetElement', 'OptionalHasElement',
]);

/** Ops whose outputs are static whatever their input values: the signature fixes every shape. */
const SHAPE_OF = new Set(['Shape', 'Size']);

/**
 * Every tensor whose value is fixed by the input signature and the frozen constants:
 * non-trainable initializers that are not graph inputs, Constant outputs, Shape/Size of
 * anything, and outputs of deterministic default-domain ops all of whose inputs are static.
 * Graph-input values and trainables are never static, nor anything computed from them.
 */
export function staticTensors(graph: Graph, trainable: Iterable<string>): Set<string> {
  const variable = new Set(trainable);
  for (const v of graph.inputs) variable.add(v.name); // an initializer listed as input can be overridden by a feed
  const stat = new Set<string>();
  for (const name of graph.initializers.keys()) if (!variable.has(name)) stat.add(name);
  // ONNX nodes are topologically sorted, so one pass sees every input before its consumers.
  for (const n of graph.nodes) {
    if (!isStaticNode(n, stat)) continue;
    for (const o of n.outputs) if (o && !variable.has(o)) stat.add(o); // a Constant node's output may be a trainable weight
  }
  return stat;
}

function isStaticNode(n: Node, stat: ReadonlySet<string>): boolean {
  if (n.domain !== '' && n.domain !== 'ai.onnx') return false;
  if (n.opType === 'Constant') return true;
  if (SHAPE_OF.has(n.opType)) return true;
  if (NEVER_STATIC.has(n.opType)) return false;
  if (Object.values(n.attrs).some((a) => a.kind === 'opaque')) return false; // subgraph attributes
  const ins = n.inputs.filter((i) => i);
  return ins.length > 0 && ins.every((i) => stat.has(i));
}

export interface FoldPlan {
  /** Static tensors produced by nodes (their values are what the probe must return). */
  candidates: Set<string>;
  static: Set<string>;
}

/** What to ask the probe for. Pure graph analysis: no shapes needed yet. */
export function planFold(graph: Graph, trainable: Iterable<string>): FoldPlan {
  const stat = staticTensors(graph, trainable);
  const candidates = new Set<string>();
  for (const n of graph.nodes) {
    if (n.opType === 'Constant') continue;
    for (const o of n.outputs) if (o && stat.has(o)) candidates.add(o);
  }
  return { candidates, static: stat };
}

export interface FoldResult {
  /** Tensors that became initializers, in graph order. */
  folded: string[];
  removedNodes: number;
  removedInitializers: string[];
}

/**
 * Rewrite `graph` in place: each static tensor that a kept node (or a root) reads and that
 * the policy above allows becomes an initializer with its probed value; nodes no root needs
 * any more are removed, and so are initializers only they read (never a trainable).
 * `values` holds the probed value of every plan candidate; `roots` are tensors that must stay
 * computable besides the graph outputs (loss reads, extra outputs).
 */
export function applyFold(graph: Graph, plan: FoldPlan, values: ReadonlyMap<string, Tensor>, opts: { roots?: Iterable<string>; keep?: Iterable<string> } = {}): FoldResult {
  const prod = new Map<string, Node>();
  for (const n of graph.nodes) for (const o of n.outputs) if (o) prod.set(o, n);
  const outputs = new Set(graph.outputs.map((o) => o.name));
  const foldable = (t: string): Tensor | undefined => {
    if (!plan.candidates.has(t) || outputs.has(t)) return undefined; // an output stays produced by its node
    const v = values.get(t);
    if (!v) return undefined; // not returned by the probe (e.g. not a tensor): leave it computed
    if (isFloat(v.dtype) && size(v.dims) > FLOAT_FOLD_MAX_ELEMENTS) return undefined;
    return v;
  };

  // Backward liveness from the roots; a foldable static tensor stops the walk.
  const fold = new Map<string, Tensor>();
  const live = new Set<Node>();
  const seen = new Set<string>();
  const stack = [...outputs, ...(opts.roots ?? [])];
  while (stack.length) {
    const t = stack.pop()!;
    if (!t || seen.has(t)) continue;
    seen.add(t);
    const p = prod.get(t);
    if (!p) continue; // graph input or initializer
    const v = outputs.has(t) ? undefined : foldable(t);
    if (v) { fold.set(t, v); continue; }
    if (live.has(p)) continue;
    live.add(p);
    for (const i of readsOf(p)) if (i) stack.push(i); // an If branch's reads of this graph too
  }

  const readBefore = new Set<string>();
  for (const n of graph.nodes) for (const i of readsOf(n)) if (i) readBefore.add(i);
  const before = graph.nodes.length;
  const folded: string[] = [];
  for (const n of graph.nodes) for (const o of n.outputs) if (fold.has(o)) folded.push(o);
  for (const t of folded) graph.initializers.set(t, fold.get(t)!);
  graph.nodes = graph.nodes.filter((n) => live.has(n));
  // A kept node (one whose other output is needed but not folded, e.g. a Split of a large
  // static float) must not define the folded name twice: its copy gets an unused fresh name.
  const names = new Set<string>([...graph.initializers.keys(), ...graph.inputs.map((v) => v.name)]);
  for (const n of graph.nodes) for (const o of n.outputs) if (o) names.add(o);
  for (const n of graph.nodes) {
    n.outputs = n.outputs.map((o) => {
      if (!fold.has(o)) return o;
      let fresh = `${o}.unfolded`;
      for (let k = 1; names.has(fresh); k++) fresh = `${o}.unfolded${k}`;
      names.add(fresh);
      return fresh;
    });
  }

  const readAfter = new Set<string>([...outputs, ...(opts.roots ?? [])]);
  for (const n of graph.nodes) for (const i of readsOf(n)) if (i) readAfter.add(i);
  const keep = new Set(opts.keep ?? []);
  const removedInitializers: string[] = [];
  for (const name of [...graph.initializers.keys()]) {
    // Only initializers this fold orphaned: one nobody read before (a declared but unused
    // parameter) is the caller's business.
    if (readBefore.has(name) && !readAfter.has(name) && !keep.has(name)) {
      graph.initializers.delete(name);
      removedInitializers.push(name);
    }
  }
  const produced = new Set<string>();
  for (const n of graph.nodes) for (const o of n.outputs) if (o) produced.add(o);
  // Folded tensors lose their value_info too: it may carry the export's symbolic dims.
  graph.valueInfo = graph.valueInfo.filter((v) => produced.has(v.name));
  return { folded, removedNodes: before - graph.nodes.length, removedInitializers };
}

/** A folded copy of `model` for one input signature (one probe). The step graph builder uses planFold/applyFold directly to share its probe. */
export async function foldModel(model: Model, sig: InputSignature, trainable: Iterable<string>, roots: Iterable<string> = []): Promise<{ model: Model } & FoldResult> {
  const keep = [...trainable];
  const plan = planFold(model.graph, keep);
  const { values } = await probe(model, sig, { values: plan.candidates });
  const out = cloneModel(model);
  const r = applyFold(out.graph, plan, values, { roots, keep });
  return { model: out, ...r };
}
