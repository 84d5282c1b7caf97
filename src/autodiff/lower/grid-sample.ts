// GridSample (opset 16; PyTorch's F.grid_sample: spatial transformers, optical flow, deformable
// attention) written as ops with gradient rules, for 4-D input [N, C, H, W] and grid [N, Ho, Wo, 2]
// of (x, y) in [−1, 1]:
//   ix = (gx + 1)/2 · (W − 1)            align_corners 1
//   ix = ((gx + 1) · W − 1)/2            align_corners 0          (iy alike with H)
//   border padding clamps ix to [0, W − 1] first; zeros padding counts corners outside as 0.
//   bilinear: the four corners ⌊ix⌋, ⌊ix⌋ + 1 (× the same for iy) gathered from the flattened
//   input and weighted by (1 − fx, fx) × (1 − fy, fy); nearest: the corner at round(ix), round(iy)
//   (half to even, as both onnxruntime and PyTorch round).
// The gradient reaches the input through GatherElements (a scatter-add) and, for bilinear, the
// grid through the weights: PyTorch's grid_sample backward. Checked against onnxruntime's kernel
// and finite differences in test/autodiff/grid-sample.test.ts.
import type { Node } from '../../onnx/ir.ts';
import { attrInt, attrString, isDefaultDomain } from '../../onnx/ir.ts';
import type { Emitter } from '../../onnx/emitter.ts';
import { bind, refuse, split } from './util.ts';

export const isGridSample = (node: Node) => isDefaultDomain(node) && node.opType === 'GridSample';

const MODES: Record<string, 'bilinear' | 'nearest'> = { bilinear: 'bilinear', linear: 'bilinear', nearest: 'nearest' };

/** Why this GridSample cannot be written out here, or undefined when it can. */
export function gridSampleRefusal(node: Node, shapeOf?: (t: string) => number[]): string | undefined {
  const mode = attrString(node, 'mode', 'bilinear');
  if (!MODES[mode]) return `mode '${mode}' is not supported (only bilinear / linear and nearest)`;
  const padding = attrString(node, 'padding_mode', 'zeros');
  if (padding !== 'zeros' && padding !== 'border') return `padding_mode '${padding}' is not supported (only zeros and border)`;
  if (shapeOf && shapeOf(node.inputs[0]!).length !== 4) return `input of rank ${shapeOf(node.inputs[0]!).length} is not supported (only [N, C, H, W])`;
  return undefined;
}

export function lowerGridSample(node: Node, em: Emitter, shapeOf: (t: string) => number[]): void {
  const why = gridSampleRefusal(node, shapeOf);
  if (why) refuse(node, why);
  const [x, grid] = node.inputs as [string, string];
  const [N, C, H, W] = shapeOf(x) as [number, number, number, number];
  const [, Ho, Wo] = shapeOf(grid) as [number, number, number, number];
  const align = attrInt(node, 'align_corners', 0) !== 0;
  const border = attrString(node, 'padding_mode', 'zeros') === 'border';
  const [gx, gy] = split(em, grid, [1, 1], 3).map((g) => em.squeeze(g, [3])) as [string, string]; // [N, Ho, Wo]
  const pixel = (g: string, size: number) => {
    const p = align
      ? em.mul(em.add(g, em.scalar(1)), em.scalar((size - 1) / 2))
      : em.div(em.sub(em.mul(em.add(g, em.scalar(1)), em.scalar(size)), em.scalar(1)), em.scalar(2));
    return border ? em.op('Clip', [p, em.scalar(0), em.scalar(size - 1)]) : p;
  };
  const ix = pixel(gx, W), iy = pixel(gy, H);
  const flat = em.reshape(x, [N, C, H * W]);
  /** x at integer coordinates (cx, cy) [N, Ho, Wo] (float, no gradient), as [N, C, Ho, Wo], 0 outside the image. */
  const corner = (cx: string, cy: string, weight: string) => {
    const inside = (c: string, size: number) => em.op('And', [em.op('GreaterOrEqual', [c, em.scalar(0)]), em.op('LessOrEqual', [c, em.scalar(size - 1)])]);
    const valid = em.op('Cast', [em.op('And', [inside(cx, W), inside(cy, H)])], { to: 1 });
    const clamp = (c: string, size: number) => em.op('Clip', [c, em.scalar(0), em.scalar(size - 1)]);
    const index = em.op('Cast', [em.add(em.mul(clamp(cy, H), em.scalar(W)), clamp(cx, W))], { to: 7 }); // [N, Ho, Wo]
    const spread = em.op('Expand', [em.reshape(index, [N, 1, Ho * Wo]), em.ints([N, C, Ho * Wo])]);
    const v = em.reshape(em.op('GatherElements', [flat, spread], { axis: 2 }), [N, C, Ho, Wo]);
    return em.mul(v, em.unsqueeze(em.mul(weight, valid), [1]));
  };
  if (MODES[attrString(node, 'mode', 'bilinear')] === 'nearest') {
    bind(em, corner(em.op('Round', [ix]), em.op('Round', [iy]), em.scalar(1)), node.outputs[0]!);
    return;
  }
  const x0 = em.op('Floor', [ix]), y0 = em.op('Floor', [iy]);
  const x1 = em.add(x0, em.scalar(1)), y1 = em.add(y0, em.scalar(1));
  const fx = em.sub(ix, x0), fy = em.sub(iy, y0); // the gradient reaches the grid through these
  const gx0 = em.sub(em.scalar(1), fx), gy0 = em.sub(em.scalar(1), fy);
  bind(em, em.sum([
    corner(x0, y0, em.mul(gx0, gy0)), corner(x1, y0, em.mul(fx, gy0)),
    corner(x0, y1, em.mul(gx0, fy)), corner(x1, y1, em.mul(fx, fy)),
  ]), node.outputs[0]!);
}
