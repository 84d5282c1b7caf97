// BatchNormalization in training mode, lowered to standard ops: batch statistics in the
// forward pass (so gradients flow through them) and updated running statistics as outputs.
// PyTorch semantics: running = momentum_onnx * running + (1 - momentum_onnx) * batch, with the
// unbiased batch variance (n / (n - 1)) in the running variance.
import type { Graph, Node } from '../onnx/ir.ts';
import { attrFloat } from '../onnx/ir.ts';
import type { Emitter } from '../onnx/emitter.ts';
import { f32 } from '../onnx/tensor.ts';
import { runtimeFaults } from '../onnx/runtime.ts';

export interface RunningStatUpdate {
  /** Initializer holding the running statistic. */
  param: string;
  /** Step-graph tensor holding its updated value. */
  updated: string;
}

/**
 * Replace every BatchNormalization node by its training-mode form. `rankOf` gives the rank
 * and element count per channel of each node's input.
 */
export interface BatchStatOptions {
  /**
   * Source-prior strength N (Schneider et al. 2020): normalise with
   * N/(N+n)·running + n/(N+n)·batch statistics for a batch of n. 0 (default) uses batch statistics only.
   */
  prior?: number;
}

export function lowerBatchNormTrain(graph: Graph, em: Emitter, shapeOf: (t: string) => number[], opts: BatchStatOptions = {}): RunningStatUpdate[] {
  const updates: RunningStatUpdate[] = [];
  const original = graph.nodes;
  const read = new Set([...original.flatMap((n) => n.inputs), ...graph.outputs.map((o) => o.name)]);
  graph.nodes = [];
  for (const node of original) {
    if (node.opType !== 'BatchNormalization') {
      graph.nodes.push(node);
      continue;
    }
    checkRunningStats(graph, node);
    // The fused form passes no gradient back through its moments: a graph that reads the node's
    // own running outputs gets the decomposed one.
    const runningRead = node.outputs.slice(1).some((o) => o && read.has(o));
    updates.push(...emitTrainBN(node, graph, em, shapeOf, opts.prior ?? 0, runningRead));
  }
  return updates;
}

/**
 * Train mode feeds and updates the running statistics, so each must be an initializer of its own.
 * (The loader unties torch.onnx's aliases; what is left here is a computed statistic.)
 */
export function checkRunningStats(graph: Graph, node: Node): void {
  for (const slot of [3, 4]) {
    const s = node.inputs[slot];
    const what = slot === 3 ? 'running mean' : 'running variance';
    if (!s) throw new Error(`BatchNormalization node '${node.name}' has no ${what} input; batchNorm: 'train' needs both running statistics. Compile with batchNorm: 'eval'`);
    if (!graph.initializers.has(s)) {
      const p = graph.nodes.find((n) => n.outputs.includes(s));
      throw new Error(`BatchNormalization node '${node.name}': its ${what} '${s}' is ${p ? `computed by node '${p.name}' (${p.opType})` : 'a graph input'}, not an initializer, so batchNorm: 'train' cannot update it. Store it as an initializer, or compile with batchNorm: 'eval'`);
    }
  }
}

/**
 * How the batch statistics are computed. Both are standard ops and give the same numbers
 * (test/train/bn-forms.test.ts pins them within 1e-5):
 * - 'bn-train': one BatchNormalization node in training mode (opset ≥ 14: training_mode=1 and
 *   outputs Y, running mean, running var; opsets 9–13: the five-output form) fed zero running
 *   statistics and momentum 0, so its "running" outputs are exactly the batch mean and the biased
 *   batch variance. onnxruntime's CPU kernel (onnxruntime-web's too) takes both moments in two
 *   passes (sum, then Σ(x − μ)², so no cancellation when |mean| ≫ std) and normalises in a
 *   third, one thread, with no activation-sized temporaries.
 * - 'decomposed': ReduceMean, Sub, Mul, ReduceMean, then an inference BatchNormalization fed the
 *   moments (the form before; kept as the reference the tests and bench/bn-forms.ts compare to).
 * Chosen: 'bn-train'. bench/bn-forms.ts (bench/results/bn-forms.md) on the six BN layers of cnn28,
 * ResNet-18 and MobileNetV2 (moments, normalisation and running updates): 0.59–0.73× the
 * decomposed form's process CPU time and 0.19–0.77× its median wall time, on a 2-core machine
 * shared with other jobs (the wall times scattered; the CPU times are the steadier figure, and
 * they favour this single-threaded kernel a little against the two-threaded ops). In the BN-adapt
 * block Conv → BN → activation it brought the cost over plain inference from 1.13–1.79× to
 * 1.06–1.41× (CPU). Its kernel only takes float and double, so other dtypes keep the decomposed
 * form.
 */
export type BatchStatsForm = 'bn-train' | 'decomposed';
/** The form the lowering emits; tests and the bench switch it to compare the two. */
export const batchStatsForm: { current: BatchStatsForm } = { current: 'bn-train' };

/**
 * The statistics BatchNorm normalises with under a source prior of strength N (Schneider et al.
 * 2020): a·source + (1 − a)·batch with a = N / (N + batch size); the batch's own when N is 0.
 */
export function mixWithPrior(em: Emitter, prior: number, batch: number, source: { mean: string; variance: string }, stats: { mean: string; variance: string }): { useMean: string; useVar: string } {
  if (prior <= 0) return { useMean: stats.mean, useVar: stats.variance };
  const a = prior / (prior + batch);
  const mix = (src: string, b: string) => em.add(em.mul(src, em.scalar(a)), em.mul(b, em.scalar(1 - a)));
  return { useMean: mix(source.mean, stats.mean), useVar: mix(source.variance, stats.variance) };
}

function emitTrainBN(node: Node, graph: Graph, em: Emitter, shapeOf: (t: string) => number[], prior: number, runningRead: boolean): RunningStatUpdate[] {
  const [x, scale, bias, mean, variance] = node.inputs as [string, string, string, string, string];
  if (node.outputs[3] || node.outputs[4]) {
    throw new Error(`BatchNormalization node '${node.name}' declares the saved mean and variance outputs of opsets 9–13's training form ('${node.outputs[3] ?? ''}', '${node.outputs[4] ?? ''}'), which refit does not compute; export the model in evaluation mode`);
  }
  const eps = attrFloat(node, 'epsilon', 1e-5);
  const momentum = attrFloat(node, 'momentum', 0.9);
  const dims = shapeOf(x);
  const C = dims[1]!;
  const axes = dims.map((_, i) => i).filter((i) => i !== 1);
  const n = axes.reduce((p, a) => p * dims[a]!, 1);
  const statType = graph.initializers.get(mean)?.dtype;
  // onnxruntime-web's WebGPU provider rejects the training-mode node at run time (onnx/webgpu-faults.ts).
  const fusedOk = !runningRead && batchStatsForm.current === 'bn-train' && statType === 'float32' && graph.initializers.get(scale)?.dtype !== 'float16' && !runtimeFaults().batchNormTrainingMode;
  const epsAttr = { epsilon: { kind: 'float' as const, value: eps } };
  let batchMean: string, batchVar: string;
  if (fusedOk) {
    // Zero "running" inputs and momentum 0: the running outputs are the batch moments themselves.
    // The running inputs are zeros computed from x, never initializers: onnxruntime's kernel
    // declares the running outputs as aliases of the running inputs (it updates them in place),
    // so with an initializer there it wrote each batch's moments into the initializer (a NaN batch
    // then poisoned every later one: 0·NaN), and its ConstantSharing pass merged two equal zero
    // initializers into one buffer that both outputs then aliased (wrong moments). Two distinct
    // tiny nodes (C elements from x, times 0) give each output a buffer of its own, every run;
    // they are non-finite only when x is, and then so are the moments.
    const flat = em.reshape(x, [-1]);
    // Zeros whatever x is shifted by (meta.shiftInvariant: nchwc-step.ts may hand it x − K).
    em.graph.nodes[em.graph.nodes.length - 1]!.meta = { shiftInvariant: { x } };
    const head = em.op('Slice', [flat, em.ints([0]), em.ints([C])], {}, `${node.name}_head`);
    const zeroMean = em.mul(head, em.scalar(0));
    const zeroVar = em.mul(zeroMean, em.scalar(0));
    const train14 = em.opset >= 14;
    const outs = [prior === 0 ? node.outputs[0]! : em.fresh(`${node.name}_stats_y`), em.fresh(`${node.name}_batch_mean`), em.fresh(`${node.name}_batch_var`)];
    if (!train14) outs.push(em.fresh(`${node.name}_saved_mean`), em.fresh(`${node.name}_saved_invstd`));
    em.graph.nodes.push({
      name: em.fresh(`${node.name}_batchstats`), opType: 'BatchNormalization', domain: '',
      inputs: [x, prior === 0 ? scale : em.constant(f32([C], new Float32Array(C).fill(1)), 'bn_ones'), prior === 0 ? bias : em.constant(f32([C], new Float32Array(C)), 'bn_zeros'), zeroMean, zeroVar],
      outputs: outs,
      attrs: { ...epsAttr, momentum: { kind: 'float', value: 0 }, ...(train14 ? { training_mode: { kind: 'int', value: 1 } } : {}) },
      // Its gradient rule (norm.ts batchStatisticsGrad) reads the moments from outputs 1 and 2.
      meta: { batchStatistics: prior === 0 },
    });
    [batchMean, batchVar] = [outs[1]!, outs[2]!];
  } else {
    const m = em.reduce('ReduceMean', x, axes, true);
    const centered = em.sub(x, m);
    batchMean = em.reshape(m, [C]);
    batchVar = em.reshape(em.reduce('ReduceMean', em.mul(centered, centered), axes, true), [C]);
  }
  if (!fusedOk || prior !== 0) {
    // Mix source and batch statistics; the source ones are constants here (no gradient).
    const { useMean, useVar } = mixWithPrior(em, prior, dims[0]!, { mean, variance }, { mean: batchMean, variance: batchVar });
    // The normalisation itself is onnxruntime's fused BatchNormalization kernel fed with the batch
    // statistics. `batchStatistics` tells its gradient rule that mean and variance are functions
    // of X, so it emits the full batch-statistics gradient in one fused form (norm.ts).
    em.graph.nodes.push({
      name: em.fresh(`${node.name}_batchstats`), opType: 'BatchNormalization', domain: '',
      inputs: [x, scale, bias, useMean, useVar], outputs: [node.outputs[0]!],
      attrs: epsAttr,
      meta: { batchStatistics: prior === 0 },
    });
  }
  // PyTorch's running-statistic update, with the unbiased batch variance.
  const newMean = momentumMix(em, mean, batchMean, momentum);
  const newVar = momentumMix(em, variance, em.mul(batchVar, em.scalar(n > 1 ? n / (n - 1) : 1)), momentum);
  // A node in training mode in the file itself (torch.onnx's TrainingMode.TRAINING; opset 14's
  // training_mode=1) declares its updated statistics as outputs 1 and 2, and the graph may read
  // them: ONNX's mean is the one above, its variance mixes the biased batch variance.
  const declare = (out: string | undefined, value: () => string, what: string) => {
    if (out) em.graph.nodes.push({ name: em.fresh(`${node.name}_${what}`), opType: 'Identity', domain: '', inputs: [value()], outputs: [out], attrs: {} });
  };
  declare(node.outputs[1], () => newMean, 'running_mean');
  declare(node.outputs[2], () => momentumMix(em, variance, batchVar, momentum), 'running_var');
  return [{ param: mean, updated: newMean }, { param: variance, updated: newVar }];
}

/** momentum·running + (1 − momentum)·batch, as ONNX and PyTorch (with its momentum the complement) update running statistics. */
function momentumMix(em: Emitter, running: string, batch: string, momentum: number): string {
  return em.add(em.mul(running, em.scalar(momentum)), em.mul(batch, em.scalar(1 - momentum)));
}
