// The penultimate features of a classifier: the tensor its last linear layer maps to the logits.
// RMT's contrastive term, T3A's prototypes, LAME's affinity and the continual controller's error
// memory read them. refit's own models name them 'features'; a model exported from PyTorch or
// elsewhere has only its logits, so refit finds the head's input and adds it as an output.
import { producers, type Graph } from './ir.ts';

export interface Penultimate {
  /** The head's input tensor, [batch, D]. */
  tensor: string;
  /** Feature width D (from the head's weight). */
  dim: number;
}

/** Ops that only reshape a [batch, C] tensor on the way to the logits output (or name it). */
const PASS_THROUGH = new Set(['Identity', 'Flatten', 'Reshape', 'Squeeze']);

/**
 * Finds the input of the linear layer that computes `logits` (Gemm, or MatMul with an optional
 * bias Add, through Identity/Flatten/Reshape/Squeeze), or says why there is none.
 */
export function findPenultimate(graph: Graph, logits: string): Penultimate | { reason: string } {
  const out = graph.outputs.find((o) => o.name === logits);
  if (!out) return { reason: `the model has no output '${logits}'` };
  if (out.shape && out.shape.length !== 2) return { reason: `output '${logits}' is not [batch, classes] (shape [${out.shape.join(', ')}])` };
  const prod = producers(graph);
  // A weight: an initializer, or one dequantized from an int8 initializer (QDQ models).
  const weight = (t: string) => {
    const dq = prod.get(t);
    return graph.initializers.get(dq?.opType === 'DequantizeLinear' ? dq.inputs[0]! : t);
  };
  const isWeight = (t: string) => weight(t) !== undefined;
  // In a QDQ model the head's input is Quantize→Dequantize of the float features: take those.
  const unquantized = (t: string) => {
    const dq = prod.get(t), q = dq?.opType === 'DequantizeLinear' ? prod.get(dq.inputs[0]!) : undefined;
    return q?.opType === 'QuantizeLinear' ? q.inputs[0]! : t;
  };
  let t = logits;
  for (let hops = 0; hops < 8; hops++) {
    const n = prod.get(t);
    if (!n) return { reason: `output '${logits}' is not computed by a node` };
    if (PASS_THROUGH.has(n.opType)) { t = n.inputs[0]!; continue; }
    if (n.opType === 'Add') {
      const [a, b] = n.inputs as [string, string];
      if (isWeight(b) && !isWeight(a)) { t = a; continue; }
      if (isWeight(a) && !isWeight(b)) { t = b; continue; }
    }
    if (n.opType === 'Gemm') {
      const transA = n.attrs.transA?.kind === 'int' ? n.attrs.transA.value : 0;
      const transB = n.attrs.transB?.kind === 'int' ? n.attrs.transB.value : 0;
      const w = weight(n.inputs[1]!);
      if (transA === 0 && w && w.dims.length === 2 && !isWeight(n.inputs[0]!)) return { tensor: unquantized(n.inputs[0]!), dim: w.dims[transB ? 1 : 0]! };
    }
    if (n.opType === 'MatMul') {
      const [a, b] = n.inputs as [string, string];
      const w = weight(b);
      if (w && w.dims.length === 2 && !isWeight(a)) return { tensor: unquantized(a), dim: w.dims[0]! };
    }
    return { reason: `output '${logits}' comes from ${n.opType} node '${n.name}', not from a linear layer (Gemm, or MatMul with a weight)` };
  }
  return { reason: `no linear layer within 8 nodes of output '${logits}'` };
}

/** Why `withFeatures` cannot add the features: `reason` alone, for callers that phrase their own message. */
export class FeaturesError extends Error {
  constructor(readonly reason: string) {
    super(`withFeatures: ${reason}`);
    this.name = 'FeaturesError';
  }
}

/**
 * Adds the head's input as a graph output named `name` ([batch, dim], float32, the batch dim as
 * the logits output's), through an Identity node, or declares the tensor `name` as the output when
 * it already is the head's input (or an Identity of it: a features output someone removed).
 * Rewrites `graph` in place: call it on a clone.
 */
export function addFeaturesOutput(graph: Graph, p: Penultimate, logits: string, name: string): void {
  const batch = graph.outputs.find((o) => o.name === logits)?.shape?.[0] ?? 'batch';
  const prod = producers(graph).get(name);
  const isHeadInput = p.tensor === name || (prod?.opType === 'Identity' && prod.inputs[0] === p.tensor);
  if (!isHeadInput) {
    if (prod || graph.initializers.has(name) || graph.inputs.some((v) => v.name === name)) throw new FeaturesError(`the graph already has a tensor named '${name}' that is not the linear head's input; pass another name`);
    graph.nodes.push({ name: `refit_${name}`, opType: 'Identity', domain: '', inputs: [p.tensor], outputs: [name], attrs: {} });
  }
  graph.outputs.push({ name, dtype: 'float32', shape: [batch, p.dim] });
}
