// What a compiled training step must hold in memory, counted from its graph and probed shapes
// (issue 14, part 4; in the spirit of EcoTTA and "On-Device Training Under 256KB Memory"):
//
// - saved activations: the values the backward pass reads from the forward. A step graph is
//   forward + loss, then backward (src/train/step-graph.ts). Its second shape probe covers exactly
//   forward + loss (StepGraph.shapes), and buildBackward appends nodes whose outputs it never
//   probed. So a node whose outputs are all in `shapes` is forward; every other node is backward,
//   except the Identity copies that write graph outputs (loss, extra outputs, running statistics).
//   A saved activation is a forward node's output that a backward node reads (the batch the
//   backward reads is counted once, as input). Whatever onnxruntime does, each must live from the forward node that
//   makes it to the last backward node that reads it, so all of them are alive when the backward
//   starts: their sum is a floor of the step's peak, not the peak itself (the backward's own
//   temporaries and the runtime's arena come on top; see docs/web.md "Memory budget").
//   Values read by a backward node only for their shape (Shape) are counted too: onnxruntime
//   keeps a tensor until its last reader has run.
// - parameters: trainable tensors at their dtype's size; gradients: one float32 per trainable
//   element (the step's outputs); optimizer state: float32 slots per trainable element (SGD 0,
//   SGD with momentum 1, Adam/AdamW 2, as src/train/optim keeps them); frozen: every other
//   initializer of the model (weights, BatchNorm running statistics, LoRA's frozen base).
// All at the batch size the step was compiled for.
import type { Model } from '../onnx/ir.ts';
import type { DType } from '../onnx/tensor.ts';
import { size } from '../onnx/tensor.ts';
import type { StepGraph } from './step-graph.ts';
import type { TrainStep } from './train-step.ts';
import { probe, type InputSignature } from '../onnx/shapes.ts';

export type OptimizerKind = 'sgd' | 'sgd-momentum' | 'adam' | 'adamw';

/** Float32 slots per trainable element that each optimizer keeps (src/train/optim). */
export const OPTIMIZER_SLOTS: Readonly<Record<OptimizerKind, number>> = { sgd: 0, 'sgd-momentum': 1, adam: 2, adamw: 2 };

const BYTES: Record<DType, number> = {
  float32: 4, float64: 8, float16: 2, int8: 1, uint8: 1, int16: 2, uint16: 2, int32: 4, uint32: 4, int64: 8, uint64: 8, bool: 1,
};
export const bytesPerElement = (d: DType): number => BYTES[d];

export interface SavedTensor {
  name: string;
  dtype: DType;
  dims: number[];
  bytes: number;
  /** Op types of the backward nodes that read it (deduplicated). */
  readBy: string[];
}

export interface StepMemory {
  optimizer: OptimizerKind;
  /** The batch size the step was compiled for (first dimension of the first data input). */
  batch: number;
  /** Forward values (and data inputs) the backward reads: alive together when the backward starts. */
  activationBytes: number;
  saved: SavedTensor[];
  /** The batch as fed: model inputs and loss inputs (labels). */
  inputBytes: number;
  trainableParams: number;
  trainableBytes: number;
  gradientBytes: number;
  optimizerStateBytes: number;
  /** Every initializer of the model that does not train (frozen weights, running statistics). */
  frozenBytes: number;
  /** activation + input + trainable + gradient + optimizer state + frozen. */
  totalBytes: number;
  /** With livenessPeak computed (memoryBudget count 'liveness'): its peak of node outputs alive at once. */
  livenessPeakBytes?: number;
  /** livenessPeakBytes + input + trainable + optimizer state + frozen (gradients are among the node outputs). */
  peakEstimateBytes?: number;
}

/**
 * Account a compiled step. `model` is the model the step was compiled from (its initializers are
 * the parameters; the step graph bakes some of them in or folds them away).
 */
export function accountStep(graph: StepGraph, model: Model, trainable: readonly string[], opts: { optimizer?: OptimizerKind } = {}): StepMemory {
  const optimizer = opts.optimizer ?? 'adamw';
  if (!(optimizer in OPTIMIZER_SLOTS)) throw new Error(`memory accounting: unknown optimizer '${String(optimizer)}'; one of ${Object.keys(OPTIMIZER_SLOTS).join(', ')}`);
  const g = graph.model.graph;
  const outputs = new Set(g.outputs.map((o) => o.name));
  const params = new Set(graph.paramInputs);
  const lossInputs = new Set(graph.lossInputs.values());
  // Data inputs: the batch (model inputs and loss inputs), not the fed parameters.
  const dataInputs = g.inputs.filter((i) => !params.has(i.name));
  const isForward = (outs: string[]) => outs.every((o) => !o || graph.shapes.has(o));
  // The batch itself is counted once, in inputBytes (it is fed, and held for the whole step).
  const forwardValues = new Set<string>();
  const readers = new Map<string, Set<string>>();
  for (const n of g.nodes) {
    if (isForward(n.outputs)) { for (const o of n.outputs) if (o) forwardValues.add(o); continue; }
    if (n.opType === 'Identity' && n.outputs.length === 1 && outputs.has(n.outputs[0]!)) continue; // an output copy
    for (const i of n.inputs) if (i && forwardValues.has(i) && !g.initializers.has(i)) {
      let s = readers.get(i);
      if (!s) readers.set(i, (s = new Set()));
      s.add(n.opType);
    }
  }
  const meta = (name: string): { dtype: DType; dims: number[] } => {
    const s = graph.shapes.get(name);
    if (s) return s;
    const i = g.inputs.find((x) => x.name === name)!;
    return { dtype: i.dtype, dims: (i.shape ?? []).map(Number) };
  };
  const saved: SavedTensor[] = [];
  for (const [name, ops] of readers) {
    const { dtype, dims } = meta(name);
    saved.push({ name, dtype, dims: [...dims], bytes: size(dims) * BYTES[dtype], readBy: [...ops] });
  }
  const activationBytes = saved.reduce((a, s) => a + s.bytes, 0);
  let inputBytes = 0;
  for (const i of dataInputs) { const m = meta(i.name); inputBytes += size(m.dims) * BYTES[m.dtype]; }
  const firstModelInput = dataInputs.find((i) => !lossInputs.has(i.name));
  const batch = firstModelInput ? meta(firstModelInput.name).dims[0] ?? 1 : 1;

  const inits = model.graph.initializers;
  const trainSet = new Set(trainable);
  let trainableParams = 0, trainableBytes = 0, frozenBytes = 0;
  for (const [name, t] of inits) {
    const bytes = t.data.length * BYTES[t.dtype];
    if (trainSet.has(name)) { trainableParams += t.data.length; trainableBytes += bytes; } else frozenBytes += bytes;
  }
  for (const p of trainable) if (!inits.has(p)) throw new Error(`memory accounting: trainable '${p}' is not an initializer of the model`);
  const gradientBytes = trainableParams * 4;
  const optimizerStateBytes = trainableParams * 4 * OPTIMIZER_SLOTS[optimizer];
  return {
    optimizer, batch, activationBytes, saved, inputBytes, trainableParams, trainableBytes, gradientBytes, optimizerStateBytes, frozenBytes,
    totalBytes: activationBytes + inputBytes + trainableBytes + gradientBytes + optimizerStateBytes + frozenBytes,
  };
}

/** Bytes as a short human string: 1.2 MB, 340 kB, 96 B (decimal units). */
export function formatBytes(b: number): string {
  if (b >= 1e9) return `${(b / 1e9).toFixed(2)} GB`;
  if (b >= 1e6) return `${(b / 1e6).toFixed(2)} MB`;
  if (b >= 1e3) return `${(b / 1e3).toFixed(1)} kB`;
  return `${b} B`;
}

/** Account a TrainStep at one input signature (compiles it if needed; the session is created too). */
export async function accountTrainStep(step: TrainStep, sig: InputSignature, opts: { optimizer?: OptimizerKind } = {}): Promise<StepMemory> {
  const { graph } = await step.compile(sig);
  return accountStep(graph, step.model.ir, step.trainable, opts);
}

/** Ops whose output onnxruntime may hand out as a view of the input: no new bytes, the input lives as long. */
const ALIAS_OPS = new Set(['Identity', 'Reshape', 'Flatten', 'Squeeze', 'Unsqueeze']);

export interface LivenessPeak {
  /** The most bytes of node outputs alive at once, executing the nodes in graph order. */
  peakBytes: number;
  /** The node at which it is reached, and whether it is in the forward or the backward. */
  node: string;
  phase: 'forward' | 'backward';
}

/**
 * An estimate of the step's peak, beyond the saved activations: every node output is allocated when
 * its node runs and freed after its last reader (graph outputs live to the end; views of an input —
 * Reshape, Squeeze … — cost nothing and extend that input's life), in the graph's node order. It
 * leaves out what a kernel allocates inside (a convolution's im2col buffer), onnxruntime's own
 * order and in-place reuse, and the allocator's overhead. Needs every value's shape: the whole step
 * graph goes through onnxruntime's shape inference once (no run for static models).
 */
export async function livenessPeak(graph: StepGraph): Promise<LivenessPeak> {
  const g = graph.model.graph;
  const sig: InputSignature = {};
  for (const i of g.inputs) {
    const s = graph.shapes.get(i.name);
    sig[i.name] = s ? { dtype: s.dtype, dims: [...s.dims] } : { dtype: i.dtype, dims: (i.shape ?? []).map(Number) };
  }
  const { shapes } = await probe(graph.model, sig);
  const bytes = (t: string) => { const s = shapes.get(t); return s ? size(s.dims) * BYTES[s.dtype] : 0; };
  const root = new Map<string, string>();
  const rootOf = (t: string) => root.get(t) ?? t;
  const lastUse = new Map<string, number>();
  const outputs = new Set(g.outputs.map((o) => o.name));
  g.nodes.forEach((n, k) => {
    if (ALIAS_OPS.has(n.opType) && n.inputs[0] && !g.initializers.has(n.inputs[0]) && !outputs.has(n.outputs[0]!)) root.set(n.outputs[0]!, rootOf(n.inputs[0]));
    for (const i of n.inputs) if (i) lastUse.set(rootOf(i), k);
  });
  for (const o of outputs) lastUse.set(rootOf(o), Infinity);
  const freeAt = new Map<number, string[]>();
  for (const [t, k] of lastUse) if (k !== Infinity) freeAt.set(k, [...(freeAt.get(k) ?? []), t]);
  let live = 0, peak = 0, at = '', phase: LivenessPeak['phase'] = 'forward';
  const alive = new Set<string>();
  g.nodes.forEach((n, k) => {
    for (const o of n.outputs) if (o && rootOf(o) === o && !g.initializers.has(o)) { alive.add(o); live += bytes(o); }
    if (live > peak) { peak = live; at = n.name; phase = n.outputs.every((o) => !o || graph.shapes.has(o)) ? 'forward' : 'backward'; }
    for (const o of n.outputs) if (o && rootOf(o) === o && !lastUse.has(o)) { alive.delete(o); live -= bytes(o); } // never read
    for (const t of freeAt.get(k) ?? []) if (alive.delete(t)) live -= bytes(t);
  });
  return { peakBytes: peak, node: at, phase };
}
