// RoiAlign (Mask R-CNN's pooling; torchvision's detection heads, MultiScaleRoIAlign) written as ops
// with gradient rules, following onnxruntime's kernel (Detectron's): for roi r, bin (ph, pw) and
// sample (iy, ix) of a fixed sampling_ratio s per bin side,
//   y = y1·scale − o + (ph + (iy + ½)/s) · (y2 − y1)·scale / output_height      (x alike)
// with o = ½ for coordinate_transformation_mode 'half_pixel' (opset 16's default) and 0 for
// 'output_half_pixel' (opset 10's only behaviour, whose roi sides are also at least 1);
// a sample with y < −1 or y > H (or x likewise) counts 0; otherwise it is clamped to [0, H − 1]
// and read bilinearly; each bin is the mean of its s² samples.
// The features are gathered per sample from [N·H·W, C], so the gradient reaches them through
// Gather (a scatter-add); it reaches the boxes through the bilinear weights, as the formula says
// (torchvision detaches its proposals: pass them to stopGradient for PyTorch's gradients).
// Refused: sampling_ratio 0 (a sample grid the box sizes decide) and mode 'max'.
// Checked against onnxruntime's kernel and finite differences in test/autodiff/roi-align.test.ts.
import type { Node } from '../../onnx/ir.ts';
import { attrFloat, attrInt, attrString, isDefaultDomain } from '../../onnx/ir.ts';
import type { Emitter } from '../../onnx/emitter.ts';
import { f32 } from '../../onnx/tensor.ts';
import { bind, refuse, split } from './util.ts';

export const isRoiAlign = (node: Node) => isDefaultDomain(node) && node.opType === 'RoiAlign';

export function roiAlignRefusal(node: Node, shapeOf?: (t: string) => number[]): string | undefined {
  if (attrString(node, 'mode', 'avg') !== 'avg') return `mode '${attrString(node, 'mode', 'avg')}' is not supported (only avg)`;
  if (attrInt(node, 'sampling_ratio', 0) <= 0) return 'sampling_ratio 0 (an adaptive sample grid, which the box sizes decide) is not supported; export with a fixed sampling_ratio (torchvision uses 2)';
  if (shapeOf && shapeOf(node.inputs[0]!).length !== 4) return `input of rank ${shapeOf(node.inputs[0]!).length} is not supported (only [N, C, H, W])`;
  return undefined;
}

export function lowerRoiAlign(node: Node, em: Emitter, shapeOf: (t: string) => number[], opset: number): void {
  const why = roiAlignRefusal(node, shapeOf);
  if (why) refuse(node, why);
  const [x, rois, batchIndices] = node.inputs as [string, string, string];
  const [N, C, H, W] = shapeOf(x) as [number, number, number, number];
  const oh = attrInt(node, 'output_height', 1), ow = attrInt(node, 'output_width', 1);
  const s = attrInt(node, 'sampling_ratio', 0);
  const scale = attrFloat(node, 'spatial_scale', 1);
  const halfPixel = opset >= 16 && attrString(node, 'coordinate_transformation_mode', 'half_pixel') === 'half_pixel';
  const offset = halfPixel ? 0.5 : 0;
  const [x1, y1, x2, y2] = split(em, rois, [1, 1, 1, 1], 1); // each [R, 1]
  /** Sample coordinates [R, bins·s] along one side, clamped, with their validity and bilinear parts. */
  const side = (lo: string, hi: string, bins: number, size: number) => {
    const start = em.sub(em.mul(lo, em.scalar(scale)), em.scalar(offset));
    let extent = em.mul(em.sub(hi, lo), em.scalar(scale));
    if (!halfPixel) extent = em.op('Max', [extent, em.scalar(1)]);
    const steps = new Float32Array(bins * s);
    for (let b = 0; b < bins; b++) for (let i = 0; i < s; i++) steps[b * s + i] = (b + (i + 0.5) / s) / bins;
    const at = em.add(start, em.mul(extent, em.constant(f32([1, bins * s], steps), 'roi_steps')));
    const valid = em.op('And', [em.op('GreaterOrEqual', [at, em.scalar(-1)]), em.op('LessOrEqual', [at, em.scalar(size)])]);
    const clamped = em.op('Min', [em.op('Max', [at, em.scalar(0)]), em.scalar(size - 1)]);
    const low = em.op('Floor', [clamped]);
    const high = em.op('Min', [em.add(low, em.scalar(1)), em.scalar(size - 1)]);
    const frac = em.sub(clamped, low); // the gradient reaches the boxes through these
    return { valid, low, high, frac, rest: em.sub(em.scalar(1), frac) };
  };
  const ys = side(y1!, y2!, oh, H), xs = side(x1!, x2!, ow, W);
  // [R, Sh, Sw]: the two sides combined
  const rows = (t: string) => em.unsqueeze(t, [2]), cols = (t: string) => em.unsqueeze(t, [1]);
  const valid = em.op('Cast', [em.op('And', [rows(ys.valid), cols(xs.valid)])], { to: 1 });
  const base = em.mul(em.unsqueeze(em.op('Cast', [batchIndices], { to: 1 }), [1, 2]), em.scalar(H * W)); // [R, 1, 1]
  const table = em.reshape(em.transpose(x, [0, 2, 3, 1]), [N * H * W, C]);
  const corner = (y: string, xx: string, weight: string) => {
    const index = em.op('Cast', [em.add(base, em.add(em.mul(rows(y), em.scalar(W)), cols(xx)))], { to: 7 }); // [R, Sh, Sw]
    return em.mul(em.op('Gather', [table, index], { axis: 0 }), em.unsqueeze(em.mul(weight, valid), [3])); // [R, Sh, Sw, C]
  };
  const w = (a: string, b: string) => em.mul(rows(a), cols(b));
  const samples = em.sum([
    corner(ys.low, xs.low, w(ys.rest, xs.rest)), corner(ys.low, xs.high, w(ys.rest, xs.frac)),
    corner(ys.high, xs.low, w(ys.frac, xs.rest)), corner(ys.high, xs.high, w(ys.frac, xs.frac)),
  ]);
  const bins = em.reduce('ReduceMean', em.reshape(samples, [-1, oh, s, ow, s, C]), [2, 4], false); // [R, oh, ow, C]
  bind(em, em.transpose(bins, [0, 3, 1, 2]), node.outputs[0]!);
}
