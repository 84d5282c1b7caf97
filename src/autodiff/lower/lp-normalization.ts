// LpNormalization (y = x / ‖x‖_p along one axis, p 1 or 2; Keras and Caffe converters write it for
// an embedding's normalisation, where torch.onnx writes ReduceL2 and Div) as ops with gradient rules.
import type { Node } from '../../onnx/ir.ts';
import { attrInt, isDefaultDomain } from '../../onnx/ir.ts';
import type { Emitter } from '../../onnx/emitter.ts';
import { bind, refuse } from './util.ts';

export const isLpNormalization = (node: Node) => isDefaultDomain(node) && node.opType === 'LpNormalization';

export function lpNormalizationRefusal(node: Node): string | undefined {
  const p = attrInt(node, 'p', 2);
  return p === 1 || p === 2 ? undefined : `p = ${p} (the spec allows 1 and 2)`;
}

export function lowerLpNormalization(node: Node, em: Emitter, shapeOf: (t: string) => number[]): void {
  const why = lpNormalizationRefusal(node);
  if (why) refuse(node, why);
  const x = node.inputs[0]!;
  const rank = shapeOf(x).length;
  const a = attrInt(node, 'axis', -1);
  const axis = a < 0 ? a + rank : a;
  const norm = attrInt(node, 'p', 2) === 1 ? em.reduce('ReduceSum', em.op('Abs', [x]), [axis], true) : em.op('Sqrt', [em.reduce('ReduceSumSquare', x, [axis], true)]);
  bind(em, em.div(x, norm), node.outputs[0]!);
}
