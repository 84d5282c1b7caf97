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
export function lowerBatchNormTrain(graph: Graph, em: Emitter, shapeOf: (t: string) => number[]): RunningStatUpdate[] {
  const updates: RunningStatUpdate[] = [];
  const original = graph.nodes;
  graph.nodes = [];
  for (const node of original) {
    if (node.opType !== 'BatchNormalization') {
      graph.nodes.push(node);
      continue;
    }
    updates.push(...emitTrainBN(node, em, shapeOf));
  }
  return updates;
}

function emitTrainBN(node: Node, em: Emitter, shapeOf: (t: string) => number[]): RunningStatUpdate[] {
  const [x, scale, bias, mean, variance] = node.inputs as [string, string, string, string, string];
  const eps = attrFloat(node, 'epsilon', 1e-5);
  const momentum = attrFloat(node, 'momentum', 0.9);
  const dims = shapeOf(x);
  const C = dims[1]!;
  const axes = dims.map((_, i) => i).filter((i) => i !== 1);
  const n = axes.reduce((p, a) => p * dims[a]!, 1);
  const bshape = dims.map((d, i) => (i === 1 ? C : 1));
  const batchMean = em.reduce('ReduceMean', x, axes, true);
  const centered = em.sub(x, batchMean);
  const batchVar = em.reduce('ReduceMean', em.mul(centered, centered), axes, true);
  const invStd = em.op('Reciprocal', [em.op('Sqrt', [em.add(batchVar, em.scalar(eps))])]);
  const normed = em.mul(centered, invStd);
  const affine = em.add(em.mul(normed, em.reshape(scale, bshape)), em.reshape(bias, bshape));
  // Keep the node's output name so downstream nodes are untouched.
  em.graph.nodes.push({ name: em.fresh(`${node.name}_train`), opType: 'Identity', domain: '', inputs: [affine], outputs: [node.outputs[0]!], attrs: {} });
  const m1 = em.scalar(momentum), m2 = em.scalar(1 - momentum);
  const newMean = em.add(em.mul(mean, m1), em.mul(em.reshape(batchMean, [C]), m2));
  const unbiased = em.mul(em.reshape(batchVar, [C]), em.scalar(n > 1 ? n / (n - 1) : 1));
  const newVar = em.add(em.mul(variance, m1), em.mul(unbiased, m2));
  return [{ param: mean, updated: newMean }, { param: variance, updated: newVar }];
}
