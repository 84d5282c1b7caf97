// BatchNormalization in training mode, lowered to standard ops: batch statistics in the
// forward pass (so gradients flow through them) and updated running statistics as outputs.
// PyTorch semantics: running = momentum_onnx * running + (1 - momentum_onnx) * batch, with the
// unbiased batch variance (n / (n - 1)) in the running variance.
import type { Graph, Node } from '../onnx/ir.ts';
import { attrFloat } from '../onnx/ir.ts';
import type { Emitter } from '../onnx/emitter.ts';

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
  graph.nodes = [];
  for (const node of original) {
    if (node.opType !== 'BatchNormalization') {
      graph.nodes.push(node);
      continue;
    }
    checkRunningStats(graph, node);
    updates.push(...emitTrainBN(node, em, shapeOf, opts.prior ?? 0));
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

function emitTrainBN(node: Node, em: Emitter, shapeOf: (t: string) => number[], prior: number): RunningStatUpdate[] {
  const [x, scale, bias, mean, variance] = node.inputs as [string, string, string, string, string];
  const eps = attrFloat(node, 'epsilon', 1e-5);
  const momentum = attrFloat(node, 'momentum', 0.9);
  const dims = shapeOf(x);
  const C = dims[1]!;
  const axes = dims.map((_, i) => i).filter((i) => i !== 1);
  const n = axes.reduce((p, a) => p * dims[a]!, 1);
  const batchMean = em.reduce('ReduceMean', x, axes, true);
  const centered = em.sub(x, batchMean);
  const batchVar = em.reduce('ReduceMean', em.mul(centered, centered), axes, true);
  let useMean = em.reshape(batchMean, [C]), useVar = em.reshape(batchVar, [C]);
  if (prior > 0) {
    // Mix source and batch statistics; the source ones are constants here (no gradient).
    const a = prior / (prior + dims[0]!);
    const mix = (src: string, b: string) => em.add(em.mul(src, em.scalar(a)), em.mul(b, em.scalar(1 - a)));
    useMean = mix(mean, useMean);
    useVar = mix(variance, useVar);
  }
  // The normalisation itself is onnxruntime's fused BatchNormalization kernel fed with the batch
  // statistics. `batchStatistics` tells its gradient rule that mean and variance are functions
  // of X, so it emits the full batch-statistics gradient in one fused form (norm.ts).
  em.graph.nodes.push({
    name: em.fresh(`${node.name}_batchstats`), opType: 'BatchNormalization', domain: '',
    inputs: [x, scale, bias, useMean, useVar], outputs: [node.outputs[0]!],
    attrs: { epsilon: { kind: 'float', value: eps } },
    meta: { batchStatistics: prior === 0 },
  });
  const m1 = em.scalar(momentum), m2 = em.scalar(1 - momentum);
  const newMean = em.add(em.mul(mean, m1), em.mul(em.reshape(batchMean, [C]), m2));
  const unbiased = em.mul(em.reshape(batchVar, [C]), em.scalar(n > 1 ? n / (n - 1) : 1));
  const newVar = em.add(em.mul(variance, m1), em.mul(unbiased, m2));
  return [{ param: mean, updated: newMean }, { param: variance, updated: newVar }];
}
