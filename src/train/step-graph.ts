// Build the one ONNX graph of a training step: forward, loss and reverse-mode gradients.
import type { Graph, Model, ValueInfo } from '../onnx/ir.ts';
import { cloneModel, consumers, opsetVersion, producers } from '../onnx/ir.ts';
import { Emitter } from '../onnx/emitter.ts';
import { probe, probeShapes, type InputSignature, type ShapeMap } from '../onnx/shapes.ts';
import { applyFold, planFold, FLOAT_FOLD_MAX_ELEMENTS } from '../onnx/fold.ts';
import { inlineConstantIfs } from '../onnx/inline-if.ts';
import { withUnrolledLoops, unrollConstantLoops } from '../onnx/unroll-loop.ts';
import { withEmbeddingBags } from '../onnx/embedding-bag.ts';
import { resolveStaticSequences } from '../onnx/static-sequences.ts';
import { edgeCutsAsTensors } from '../autodiff/edge-cuts.ts';
import { buildBackward, type StopGradient } from '../autodiff/backward.ts';
import { lowerForGradient } from '../autodiff/lower/index.ts';
import { lowerQuantized } from '../autodiff/lower/quant.ts';
import { refuseFloat16Trainables } from '../autodiff/lower/float16.ts';
import { NCHWC_DOMAIN, nchwcBlockSize } from '../onnx/nchwc.ts';
import { isFloat, size, type Tensor } from '../onnx/tensor.ts';
import type { LossSpec } from './loss-spec.ts';
import { lowerBatchNormTrain, type RunningStatUpdate } from './batchnorm-train.ts';
import { embeddingPaddingRows } from '../onnx/padding-rows.ts';
import { checkpointStepGraph } from './checkpoint.ts';

export interface StepGraphOptions {
  /** Initializer names to differentiate; fed as inputs so updates need no recompile. */
  trainable: string[];
  loss: LossSpec;
  /** Extra forward tensors returned by each step. */
  outputs?: string[];
  /** 'train': BatchNorm uses batch statistics and returns updated running statistics. */
  batchNorm?: 'eval' | 'train';
  /**
   * Activation checkpointing: keep about √n of the n saved activations and recompute the others in
   * the backward (./checkpoint.ts); a number sets the segment count. Same gradients, less memory,
   * one more forward's worth of some nodes.
   */
  checkpoint?: boolean | number;
  /** Where no gradient flows back (PyTorch's `.detach()`, which an export loses): a tensor, or one use of it (src/autodiff/backward.ts). */
  stopGradient?: StopGradient[];
  /** Lookups of an embedding's one all-zero row pass no gradient (PyTorch's padding_idx; src/onnx/padding-rows.ts). Default true. */
  paddingRows?: boolean;
}

export interface StepGraph {
  model: Model;
  shapes: ShapeMap;
  /** Fed each run from the live parameter values. */
  paramInputs: string[];
  /** Loss inputs (labels, weights) by the name the loss declared → graph input name. */
  lossInputs: Map<string, string>;
  lossOutput: string;
  gradOutputs: Map<string, string | null>;
  extraOutputs: Map<string, string>;
  runningStats: RunningStatUpdate[];
  /** Milliseconds spent per compile phase (probe, fold, lower, loss, backward, outputs): where compile time goes. */
  timings: Record<string, number>;
}

export const LOSS_OUTPUT = 'refit.loss';
/** Fold rounds after the first (each a probe of the whole graph) while Ifs inline or Loops unroll. */
const MAX_FOLD_ROUNDS = 8;

/** Whether gradients are output before a final Reshape (gradientsBeforeViews); benches switch it off to compare. */
export const gradientOutputs = { beforeReshape: true };

/**
 * For gradients whose last node is a Reshape (every conv weight gradient: its Gemm gives [O, C·k²])
 * read by nothing else: the tensor before the Reshape. onnxruntime copies a Reshape whose result
 * is a graph output (a whole weight-sized copy per step: 4.4 ms for ResNet's 512×512×3×3 weights
 * at batch 2), and the step reads gradients flat, so it outputs the unreshaped tensor.
 */
function gradientsBeforeViews(g: Graph, names: string[]): Map<string, string> {
  const prod = producers(g), readers = consumers(g);
  const fixed = new Set([...g.outputs.map((o) => o.name), ...g.inputs.map((i) => i.name), ...g.initializers.keys()]);
  const out = new Map<string, string>();
  for (const name of names) {
    const p = prod.get(name);
    if (!p || p.opType !== 'Reshape' || (p.domain !== '' && p.domain !== 'ai.onnx')) continue;
    // Only where nothing else reads the reshaped gradient (one parameter's, no other node's) and the
    // tensor before it is the graph's own (not an input or a constant).
    if (fixed.has(name) || readers.has(name) || names.indexOf(name) !== names.lastIndexOf(name) || fixed.has(p.inputs[0]!)) continue;
    out.set(name, p.inputs[0]!);
  }
  return out;
}

/** `batch`: the values to probe with, for a model whose shapes depend on them (src/onnx/data-shapes.ts); zeros otherwise. */
export async function buildStepGraph(given: Model, sig: InputSignature, opts: StepGraphOptions, batch?: Record<string, Tensor>): Promise<StepGraph> {
  const timings: Record<string, number> = {};
  let clock = performance.now();
  const lap = (phase: string) => { const t = performance.now(); timings[phase] = (timings[phase] ?? 0) + t - clock; clock = t; };
  // Before the probe, so the fold sees what each iteration computes from its constant iteration number.
  // An edge cut ({ tensor, into }) becomes a tensor of its own first, so lowering `into` keeps it.
  refuseFloat16Trainables(given.graph, opts.trainable);
  const cut = edgeCutsAsTensors(withUnrolledLoops(withEmbeddingBags(given)), opts.stopGradient);
  const source = cut.model;
  const model = cloneModel(source);
  const g = model.graph;
  const opset = opsetVersion(model);
  const em = new Emitter(g, opset);
  // One probe gives the forward shapes and the values of everything the signature fixes.
  // What is fed each run (trainables; running statistics in 'train' mode) never folds.
  const fed = opts.batchNorm === 'train'
    ? [...opts.trainable, ...source.graph.nodes.filter((n) => n.opType === 'BatchNormalization').flatMap((n) => n.inputs.slice(3, 5))]
    : opts.trainable;
  const plan = planFold(source.graph, fed);
  lap('plan');
  const { shapes: forwardShapes, values } = await probe(source, sig, { feeds: batch, values: plan.candidates, maxFloatElements: FLOAT_FOLD_MAX_ELEMENTS });
  lap('probe');
  const shapeOf = (t: string) => {
    const s = forwardShapes.get(t);
    if (!s) throw new Error(`tensor '${t}' does not exist in the model (known outputs: ${source.graph.outputs.map((o) => o.name).join(', ')})`);
    return s.dims;
  };
  for (const r of opts.loss.reads) shapeOf(r);
  for (const o of opts.outputs ?? []) shapeOf(o);
  // Before the loss and backward exist, so gradient rules see folded values as constants.
  applyFold(g, plan, values, { roots: [...opts.loss.reads, ...(opts.outputs ?? [])], keep: fed });
  // An If on a shape (PyTorch's `if x.dim() == 3:`, as its LocalResponseNorm export has) now has a
  // constant condition: the branch it takes replaces it, so gradients flow through.
  // A Loop whose trip count the input shapes fix (PyTorch 1.13's repeat_interleave over a
  // dimension) is unrollable now that the fold made it a constant; what its copies compute from
  // their iteration numbers (slice bounds) is folded in a further round. The inlined branches'
  // and the copies' tensors were inside subgraphs, which the probe does not see: another probe
  // gives their shapes (Silero VAD's LSTM, in the If on its sample rate, needs them to unroll).
  // Rounds repeat while they inline or unroll something: an inlined branch may hold Ifs on the
  // shapes of its own tensors (Silero VAD v5's file nests them three deep: rank checks around its LSTM).
  for (let round = 0; round < MAX_FOLD_ROUNDS; round++) {
    const inlined = inlineConstantIfs(g, fed);
    const unrolled = unrollConstantLoops(g, opset, em);
    // Sequences with known elements become those tensors: an unrolled Loop's, or the graph's own
    // (SequenceConstruct, SequenceInsert and SequenceAt at constant positions).
    const resolved = resolveStaticSequences(g, opset, (t) => forwardShapes.get(t)?.dims, em);
    if (inlined + unrolled + resolved === 0) break;
    const again = planFold(g, fed);
    const { shapes: inner, values: more } = await probe(model, sig, { feeds: batch, values: again.candidates, maxFloatElements: FLOAT_FOLD_MAX_ELEMENTS, known: forwardShapes });
    for (const [k, v] of inner) if (!forwardShapes.has(k)) forwardShapes.set(k, v); // for the lowerings
    applyFold(g, again, more, { roots: [...opts.loss.reads, ...(opts.outputs ?? [])], keep: fed });
  }
  lap('fold');
  // LSTM/GRU unrolled, com.microsoft fused ops unfused, blocked NCHWc ops (a model saved at level 'all') unblocked
  const nchwcBlock = g.nodes.some((n) => n.domain === NCHWC_DOMAIN) ? await nchwcBlockSize() : null;
  lowerForGradient(g, shapeOf, em, { trainable: opts.trainable, nchwcBlock, dtypeOf: (t) => forwardShapes.get(t)?.dtype });
  lowerQuantized(g, em, opts.trainable); // int8 layers → float with straight-through gradients; float16 → float32

  const runningStats = opts.batchNorm === 'train' ? lowerBatchNormTrain(g, em, shapeOf) : [];
  const statInputs = runningStats.map((r) => r.param);
  lap('lower');

  // Loss inputs become graph inputs.
  const lossInputs = new Map<string, string>();
  const lossSig: InputSignature = {};
  for (const li of opts.loss.inputs) {
    const name = `refit.${li.name}`;
    em.reserve(name);
    lossInputs.set(li.name, name);
    const dims = li.shape(shapeOf);
    g.inputs.push({ name, dtype: li.dtype, shape: dims });
    lossSig[name] = { dtype: li.dtype, dims };
  }
  const lossTensor = opts.loss.build({
    em,
    shape: shapeOf,
    input: (n) => {
      const t = lossInputs.get(n);
      if (!t) throw new Error(`loss ${opts.loss.describe} reads undeclared input '${n}'`);
      return t;
    },
  });
  em.graph.nodes.push({ name: em.fresh('loss_out'), opType: 'Identity', domain: '', inputs: [lossTensor], outputs: [LOSS_OUTPUT], attrs: {} });
  em.reserve(LOSS_OUTPUT);

  // Shapes for forward + loss (the backward pass needs the loss nodes' shapes too).
  g.outputs = [{ name: LOSS_OUTPUT, dtype: 'float32', shape: [] }];
  lap('loss');
  const shapes = await probeShapes(model, { ...sig, ...lossSig }, batch);
  lap('probe');
  const lossShape = shapes.get(LOSS_OUTPUT)!;
  if (size(lossShape.dims) !== 1) throw new Error(`loss ${opts.loss.describe} must be a scalar, got shape [${lossShape.dims}]`);

  const paddingRows = opts.paddingRows === false ? undefined : embeddingPaddingRows(g);
  const grads = buildBackward(g, shapes, em, { loss: LOSS_OUTPUT, wrt: opts.trainable, ...(cut.stops ? { stopGradient: cut.stops.filter((t) => !cut.made.has(t) || shapes.has(t)) } : {}), ...(paddingRows?.size ? { paddingRows } : {}) });
  lap('backward');

  // Trainables and running statistics become inputs; everything else stays baked in.
  const paramInputs = [...opts.trainable, ...statInputs.filter((s) => !opts.trainable.includes(s))];
  for (const p of paramInputs) {
    const t = g.initializers.get(p)!;
    g.initializers.delete(p);
    g.inputs.push({ name: p, dtype: t.dtype, shape: [...t.dims] });
  }
  const outputs: ValueInfo[] = [{ name: LOSS_OUTPUT, dtype: 'float32' as const, shape: lossShape.dims }];
  const gradOutputs = new Map<string, string | null>();
  const unviewed = gradientOutputs.beforeReshape ? gradientsBeforeViews(g, [...grads.values()].filter((n): n is string => !!n)) : new Map<string, string>();
  for (const [p, gname] of grads) {
    if (!gname) { gradOutputs.set(p, null); continue; }
    const out = `refit.grad.${p}`;
    em.reserve(out);
    const src = unviewed.get(gname) ?? gname;
    g.nodes.push({ name: em.fresh('grad_out'), opType: 'Identity', domain: '', inputs: [src], outputs: [out], attrs: {} });
    // Read flat (TrainStep.run): a gradient output before its Reshape keeps the values, not the dims.
    outputs.push({ name: out, dtype: 'float32', shape: src === gname ? shapes.get(p)!.dims : null });
    gradOutputs.set(p, out);
  }
  const extraOutputs = new Map<string, string>();
  for (const o of opts.outputs ?? []) {
    const s = shapes.get(o)!;
    const out = `refit.out.${o}`;
    em.reserve(out);
    g.nodes.push({ name: em.fresh('extra_out'), opType: 'Identity', domain: '', inputs: [o], outputs: [out], attrs: {} });
    outputs.push({ name: out, dtype: s.dtype as 'float32', shape: s.dims });
    extraOutputs.set(o, out);
  }
  const running: RunningStatUpdate[] = [];
  for (const r of runningStats) {
    const out = `refit.running.${r.param}`;
    em.reserve(out);
    g.nodes.push({ name: em.fresh('running_out'), opType: 'Identity', domain: '', inputs: [r.updated], outputs: [out], attrs: {} });
    outputs.push({ name: out, dtype: 'float32', shape: shapes.get(r.param)!.dims });
    running.push({ param: r.param, updated: out });
  }
  g.outputs = outputs;
  for (const p of opts.trainable) {
    const s = shapes.get(p);
    if (s && !isFloat(s.dtype)) throw new Error(`trainable '${p}' has dtype ${s.dtype}; only float tensors can be trained`);
  }
  lap('outputs');
  const step: StepGraph = { model, shapes, paramInputs, lossInputs, lossOutput: LOSS_OUTPUT, gradOutputs, extraOutputs, runningStats: running, timings };
  if (!opts.checkpoint) return step;
  const { checkpoint: _, ...checkpointed } = await checkpointStepGraph(step, typeof opts.checkpoint === 'number' ? { segments: opts.checkpoint } : {});
  lap('checkpoint');
  return checkpointed;
}
