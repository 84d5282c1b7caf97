// LRN (local response normalization across channels: AlexNet, CaffeNet, GoogLeNet v1 and ZFNet in
// the ONNX model zoo, converted from Caffe) written as ops with gradient rules:
//   y = x / (bias + alpha/size · Σ x²)^beta,
// the sum over channels max(0, c − ⌊(size−1)/2⌋) … min(C−1, c + ⌈(size−1)/2⌉), as the ONNX spec
// defines it. Checked against onnxruntime's kernel in test/autodiff/lrn.test.ts.
import type { Node } from '../../onnx/ir.ts';
import { attrFloat, attrInt, isDefaultDomain } from '../../onnx/ir.ts';
import type { Emitter } from '../../onnx/emitter.ts';
import { i64 } from '../../onnx/tensor.ts';
import { bind, refuse } from './util.ts';

export const isLrn = (node: Node) => isDefaultDomain(node) && node.opType === 'LRN';

export function lowerLrn(node: Node, em: Emitter, shapeOf: (t: string) => number[]): void {
  const x = node.inputs[0]!;
  const dims = shapeOf(x);
  const size = attrInt(node, 'size', 0);
  if (size < 1) refuse(node, `size must be a positive integer, got ${size}`);
  const C = dims[1]!;
  const lo = Math.floor((size - 1) / 2), hi = Math.ceil((size - 1) / 2);
  // zero channels on both sides, then the window as `size` shifted slices summed
  const pads = [0, lo, ...dims.slice(2).map(() => 0), 0, hi, ...dims.slice(2).map(() => 0)];
  const sq = em.op('Pad', [em.mul(x, x), em.constant(i64([pads.length], pads), 'lrn_pads')]);
  const one = (k: number) => em.op('Slice', [sq, em.ints([k]), em.ints([k + C]), em.ints([1])]);
  const window = em.sum(Array.from({ length: size }, (_, k) => one(k)));
  const d = em.add(em.scalar(attrFloat(node, 'bias', 1)), em.mul(window, em.scalar(attrFloat(node, 'alpha', 1e-4) / size)));
  bind(em, em.mul(x, em.op('Pow', [d, em.scalar(-attrFloat(node, 'beta', 0.75))])), node.outputs[0]!);
}
