// MeanVarianceNormalization (a Caffe layer kept by its converters) written as ops with gradient
// rules, as the ONNX spec's function body defines it:
//   y = (x − E[x]) / (sqrt(E[x²] − E[x]²) + 1e-9),   E over `axes` (default [0, 2, 3]).
// Checked against onnxruntime's kernel by the ONNX backend node tests (test/real/onnx-backend-node.test.ts).
import type { Node } from '../../onnx/ir.ts';
import { attrInts, isDefaultDomain } from '../../onnx/ir.ts';
import type { Emitter } from '../../onnx/emitter.ts';
import { bind } from './util.ts';

export const isMvn = (node: Node) => isDefaultDomain(node) && node.opType === 'MeanVarianceNormalization';

export function lowerMvn(node: Node, em: Emitter): void {
  const x = node.inputs[0]!;
  const axes = attrInts(node, 'axes', [0, 2, 3]);
  const mean = em.reduce('ReduceMean', x, axes, true);
  const variance = em.sub(em.reduce('ReduceMean', em.mul(x, x), axes, true), em.mul(mean, mean));
  const std = em.add(em.op('Sqrt', [variance]), em.scalar(1e-9));
  bind(em, em.div(em.sub(x, mean), std), node.outputs[0]!);
}
