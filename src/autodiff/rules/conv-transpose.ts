// ConvTranspose as a trainable layer: gradients of input, weight and bias, 1-D, 2-D and 3-D,
// with groups, strides, dilations, output_padding (< stride, as onnxruntime requires), output_shape,
// explicit or auto pads.
//
// ConvTranspose(X, W) is the adjoint (w.r.t. its input) of the Conv with the same weight W
// [C, O/g, k...], strides, dilations, pads and group that maps O channels to C. So:
//   dX = Conv(dY, W)                            (a plain Conv; see the timings below)
//   dW = Conv's dW with the roles swapped: its "input" is dY, its "output gradient" is X,
//        built by conv.ts's convDw (one-hot im2col of dY + MatMul, measured fastest there).
//   dB = Σ dY over batch and space.
// Only the begin pads matter: the end of dY is cropped (or the Conv's end pad chosen) so that
// the Conv maps dY exactly back onto X's grid; rows that only output_padding or output_shape
// added receive no input and drop out.
//
// Measured once by bench/conv-transpose-grad.ts (2-core machine shared with other jobs, load
// average 13–17 during the runs, so medians scatter widely; min over two runs of 60 and 100
// interleaved rounds, p25 over five runs of 20–100 rounds; onnxruntime-node 1.30, optimization
// 'all', 2 intra-op threads), ms:
//
// | decoder layer N=8, 64→32 ch, 32×32 → 64×64, k=4 s=2 p=1 | min | p25 |
// |---|---|---|
// | forward ConvTranspose                                   | 7.4–8.1 | 10.6–22.0 |
// | dX = Conv(dY, W) (this rule)                             | 3.7–6.2 | 15.0–32.0 |
// | dW one-hot im2col + batched MatMul (this rule, pickDw)   | 9.3–20.5 | 26.9–45.8 |
// | dW one Conv of transposed dY with X as kernel (conv-xt)  | 9.2–10.4 | 14.4–31.5 |
//
// The dX Conv does the forward's FLOPs (0.54 GFLOP) and at its best ran at about the machine's
// matmul rate, twice as fast as onnxruntime's ConvTranspose forward. A polyphase dX (SpaceToDepth
// of dY, then a stride-1 Conv) was tried in two runs and was not faster (p25 a tie in one, 25.7
// vs 15.0 in the other, min 7.4 vs 3.7), so it was removed. For dW, conv-xt beat the one-hot
// im2col on this k=4 layer in p25 in all five runs, but lost on k=2 s=2 p=0 (min 9.3 vs 3.2) and
// k=3 s=2 p=1 output_padding=1 (min 13.7 vs 10.7), one run each; with the machine this loaded,
// the rule keeps conv.ts's pickDw rather than a per-geometry choice from three data points.
// (pickDw sees the adjoint geometry, so a depthwise ConvTranspose gets conv.ts's depthwise choice,
// e.g. 'conv-nc' when its input has ≤ 196 positions or the kernel is 5×5 or larger.)
import { attrInt, attrInts, attrString, type Node } from '../../onnx/ir.ts';
import { registerRules, type GradContext } from '../rule.ts';
import { convDw, pickDw, type ConvGeom } from './conv.ts';

const range = (n: number, from = 0) => Array.from({ length: n }, (_, i) => i + from);

/** The geometry of the adjoint Conv (dY → X) of one ConvTranspose node, plus how much of dY's end it reads. */
export interface ConvTransposeGeom {
  /** The Conv mapping dY [N, O, crop...] to X's grid [N, C, inSp...] with weight W [C, O/g, k...]. */
  conv: ConvGeom;
  /** dY rows the Conv reads per spatial dim (≤ the ConvTranspose output size). */
  crop: number[];
}

/**
 * Resolve a ConvTranspose's begin pads as the ONNX spec and onnxruntime 1.30 do (probed: a
 * one-tap kernel shows where each input lands): with output_shape, or with auto_pad SAME_*
 * (target size in·s), the total pad is split with the smaller half at the head for SAME_UPPER
 * and the larger half at the head otherwise (NOTSET included); else the explicit pads. (Some
 * older onnxruntime sources split it the other way round; the finite-difference tests would
 * catch a change.)
 */
export function convTransposeGeom(node: Node, x: number[], w: number[], y: number[]): ConvTransposeGeom {
  const where = `${node.opType} node '${node.name}'`;
  if (x.length < 3) throw new Error(`${where}: input '${node.inputs[0]}' has shape [${x}], expected rank ≥ 3 (N, C, spatial...)`);
  if (w.length !== x.length) throw new Error(`${where}: weight '${node.inputs[1]}' has shape [${w}], expected rank ${x.length} to match input [${x}]`);
  const nd = x.length - 2, ones = new Array<number>(nd).fill(1), zeros = new Array<number>(nd).fill(0);
  const group = attrInt(node, 'group', 1);
  const k = attrInts(node, 'kernel_shape', w.slice(2));
  const strides = attrInts(node, 'strides', ones), dil = attrInts(node, 'dilations', ones);
  const outPad = attrInts(node, 'output_padding', zeros);
  const outShape = attrInts(node, 'output_shape', []);
  const autoPad = attrString(node, 'auto_pad', 'NOTSET');
  const pads = attrInts(node, 'pads', new Array<number>(2 * nd).fill(0));
  const inSp = x.slice(2), outSp = y.slice(2);
  if (w[0] !== x[1]) throw new Error(`${where}: weight '${node.inputs[1]}' has shape [${w}], expected ${x[1]} input channels first (input [${x}])`);
  const kext = k.map((kk, i) => (kk - 1) * dil[i]! + 1);
  const full = inSp.map((n, i) => (n - 1) * strides[i]! + outPad[i]! + kext[i]!);
  const split = (total: number) => (autoPad === 'SAME_UPPER' ? Math.floor(total / 2) : total - Math.floor(total / 2));
  let padB: number[];
  if (outShape.length > 0) {
    const target = outShape.length === nd ? outShape : outShape.slice(2);
    padB = full.map((f, i) => split(Math.max(0, f - target[i]!)));
  } else if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') {
    padB = full.map((f, i) => split(Math.max(0, f - inSp[i]! * strides[i]!)));
  } else if (autoPad === 'VALID') {
    padB = zeros;
  } else if (autoPad === 'NOTSET') {
    padB = pads.slice(0, nd);
  } else {
    throw new Error(`${where}: unknown auto_pad '${autoPad}'`);
  }
  // The Conv over dY rows [0, crop) with pads (padB, padE) lands exactly on X's grid when
  // crop + padB + padE − kext = s·(in − 1). The last dY row any input reaches is s·(in−1) + kext − 1 − padB.
  const reach = inSp.map((n, i) => (n - 1) * strides[i]! + kext[i]! - padB[i]!);
  const crop = reach.map((r, i) => Math.min(r, outSp[i]!));
  const padE = reach.map((r, i) => r - crop[i]!);
  if (crop.some((c) => c <= 0)) throw new Error(`${where}: output [${y}] receives no input (pads [${padB}] too large)`);
  const conv: ConvGeom = {
    nd, N: x[0]!, C: y[1]!, inSp: crop, outSp: inSp, k, strides, dil, padB, padE, O: x[1]!, group,
  };
  return { conv, crop };
}

registerRules({
  ConvTranspose(ctx: GradContext, node, [dY], needs) {
    const em = ctx.em;
    if (ctx.opset < 11) throw new Error(`the ConvTranspose gradient needs opset ≥ 11 (Slice with inputs), the model has opset ${ctx.opset}`);
    const [x, w, b] = node.inputs as [string, string, string | undefined];
    const yShape = ctx.shape(node.outputs[0]!);
    const { conv: g, crop } = convTransposeGeom(node, ctx.shape(x), ctx.shape(w), yShape);
    const spatial = range(g.nd, 2);
    // dY restricted to the rows that inputs reach (output_padding / a larger output_shape add rows they do not).
    const dYc = crop.some((c, i) => c < yShape[2 + i]!) ? em.op('Slice', [dY!, em.ints(spatial.map(() => 0)), em.ints(crop), em.ints(spatial)]) : dY!;
    const dX = needs[0]
      ? em.op('Conv', [dYc, w], { strides: g.strides, dilations: g.dil, group: g.group, pads: [...g.padB, ...g.padE], kernel_shape: g.k })
      : null;
    const dW = needs[1] ? convDw(em, g, dYc, x, pickDw(g)) : null;
    const dB = b && needs[2] ? em.reduce('ReduceSum', dY!, [0, ...spatial], false) : null;
    return [dX, dW, dB];
  },
});
