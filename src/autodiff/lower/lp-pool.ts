// LpPool and GlobalLpPool (y = (Σ_window |x|^p)^(1/p); Caffe- and Keras-converted models) written as
// ops with gradient rules: |x|^p summed by an AveragePool that counts the padding (its mean times
// the window's size), or a ReduceSum over the spatial axes, then the p-th root.
// Checked against onnxruntime's kernels and finite differences in test/autodiff/spec-ops.test.ts.
import type { Node } from '../../onnx/ir.ts';
import { attrInt, attrInts, attrString, isDefaultDomain } from '../../onnx/ir.ts';
import type { Emitter } from '../../onnx/emitter.ts';
import { bind } from './util.ts';

export const isLpPool = (node: Node) => isDefaultDomain(node) && (node.opType === 'LpPool' || node.opType === 'GlobalLpPool');

export function lpPoolRefusal(node: Node): string | undefined {
  if (attrInts(node, 'dilations', []).some((d) => d !== 1)) return 'dilations other than 1 are not supported';
  return undefined;
}

export function lowerLpPool(node: Node, em: Emitter, shapeOf: (t: string) => number[]): void {
  const x = node.inputs[0]!;
  const p = attrInt(node, 'p', 2);
  const powered = p === 2 ? em.mul(x, x) : p === 1 ? em.op('Abs', [x]) : em.op('Pow', [em.op('Abs', [x]), em.scalar(p)]);
  let summed: string;
  if (node.opType === 'GlobalLpPool') {
    const rank = shapeOf(x).length;
    summed = em.reduce('ReduceSum', powered, Array.from({ length: rank - 2 }, (_, i) => i + 2), true);
  } else {
    const kernel = attrInts(node, 'kernel_shape', []);
    const attrs: Record<string, unknown> = { kernel_shape: kernel, count_include_pad: 1 };
    for (const k of ['strides', 'pads'] as const) { const v = attrInts(node, k); if (v) attrs[k] = v; }
    const autoPad = attrString(node, 'auto_pad', 'NOTSET');
    if (autoPad !== 'NOTSET') attrs.auto_pad = autoPad;
    if (attrInt(node, 'ceil_mode', 0)) attrs.ceil_mode = 1;
    summed = em.mul(em.op('AveragePool', [powered], attrs as never), em.scalar(kernel.reduce((a, b) => a * b, 1)));
  }
  bind(em, p === 1 ? summed : p === 2 ? em.op('Sqrt', [summed]) : em.op('Pow', [summed, em.scalar(1 / p)]), node.outputs[0]!);
}
