// The per-channel shift K that keeps one-pass BatchNorm moments on the blocked layout precise.
//
// Why: the blocked passes (nchwc-batchstats.ts for BN-adapt, nchwc-step.ts for Tent-style steps)
// take a BN's batch moments from one-pass sums, var = E[d²] − E[d]². With d = x that loses
// digits when |mean| ≫ std (input mean 1000: a Tent gradient 8.7× off, session 37); with d = x − K
// and K a mean of some real outputs of the same channel it loses only about (1 + (mean − K)²/var)
// × float32 rounding. The conv that writes x writes d instead when its bias is lowered by K, so
// the shift costs no pass over the activation: K comes from the same conv run on a small window
// of the first sample.
import { NCHWC_DOMAIN } from './nchwc.ts';
import type { Emitter } from './emitter.ts';
import type { Node } from './ir.ts';

/** Outputs per axis the shift is computed from: a mean of up to 16 real outputs per channel. */
const SHIFT_WINDOW = 4;

/** A blocked Conv as the blocked passes emit it, and the geometry of its input. */
export interface BlockedConvSource {
  /** The nchwc Conv's input: blocked [N, Cp, H, W], or plain NCHW (a stem conv's). */
  x: string;
  /** Its NCHW dims [N, C, H, W] (C without pad lanes). */
  inDims: number[];
  inBlocked: boolean;
  /** The nchwc Conv's weight, bias (padded) and attributes (group, pads, strides, dilations). */
  w: string;
  bias?: string;
  attrs: Node['attrs'];
  /** [kh, kw], from the weight (kernel_shape is optional in ONNX). */
  kernel: number[];
}

/**
 * Make the blocked Conv `conv.node` write y − K instead of y (its bias lowered by K, from
 * firstSampleMean) and move it after K's nodes, at the end of the graph so far: only nodes not yet
 * emitted may read its output. Returns K [Cp].
 */
export const shiftSample = { current: 'grid' as 'grid' | 'window' };
export function shiftBlockedConv(em: Emitter, conv: BlockedConvSource & { node: Node }, outDims: number[], block: number): string {
  const K = shiftSample.current === 'grid' ? gridMean(em, conv, outDims, block, conv.node.outputs[0]!) : firstSampleMean(em, conv, outDims, block, conv.node.outputs[0]!);
  conv.node.inputs[2] = conv.bias ? em.sub(conv.bias, K) : em.neg(K);
  const nodes = em.graph.nodes;
  nodes.splice(nodes.indexOf(conv.node), 1);
  nodes.push(conv.node);
  return K;
}

/** Outputs per channel the shift is the mean of, at least: a grid over every sample's map. */
const SHIFT_SAMPLES = 64;

/**
 * K [Cp]: per channel, the mean of the conv's outputs at the centres of a grid of k × k cells over
 * every sample's map, k as large as leaves at least SHIFT_SAMPLES of them: the same conv with its
 * strides times k computes those outputs alone (1/k² of its work). Its top and left pads grow by
 * (k − o)·stride so that its outputs from the second on are the conv's own at rows and columns
 * o, o + k, … (o = ⌊k/2⌋, away from the padded border); the first, outside the image, is dropped.
 */
function gridMean(em: Emitter, conv: BlockedConvSource, [Cp, H, W]: number[], block: number, hint: string): string {
  const N = conv.inDims[0]!;
  const k = Math.max(1, Math.floor(Math.sqrt((N * H! * W!) / SHIFT_SAMPLES))), o = Math.floor(k / 2);
  const ints = (a: string, d: number[]) => { const v = conv.attrs[a]; return v?.kind === 'ints' ? v.value : d; };
  const strides = ints('strides', [1, 1]), pads = ints('pads', [0, 0, 0, 0]);
  const grown = [0, 1].map((a) => pads[a]! + (k - o) * strides[a]!);
  const attrs: Node['attrs'] = { ...conv.attrs, strides: { kind: 'ints', value: strides.map((v) => v * k) }, pads: { kind: 'ints', value: [...grown, pads[2]!, pads[3]!] } };
  const y0 = em.fresh(`${hint}_grid`);
  em.graph.nodes.push({ name: em.fresh('shift_grid_conv'), opType: 'Conv', domain: NCHWC_DOMAIN, inputs: [conv.x, conv.w, ...(conv.bias ? [conv.bias] : [])], outputs: [y0], attrs });
  // Rows on the grid: o + i·k ≤ H − 1, after the dropped first.
  const [h, w] = [Math.floor((H! - 1 - o) / k) + 1, Math.floor((W! - 1 - o) / k) + 1];
  const grid = em.op('Slice', [em.reshape(y0, [N, Cp! / block, h + 1, w + 1, block]), em.ints([1, 1]), em.ints([h + 1, w + 1]), em.ints([2, 3])]);
  return em.reshape(em.reduce('ReduceMean', grid, [0, 2, 3], false), [Cp!]);
}

/**
 * K [Cp]: per channel, the mean of the conv's outputs over a window of at most SHIFT_WINDOW² of
 * them in the first sample, away from the padding (the same conv run on that input window alone),
 * or over the whole first sample where the output map [H, W] is no larger than the window or the
 * window does not fit. `Cp` is the output's padded channel count; `block` onnxruntime's block;
 * `hint` names the first-sample conv's output.
 */
export function firstSampleMean(em: Emitter, conv: BlockedConvSource, [Cp, H, W]: number[], block: number, hint: string): string {
  const win = firstSampleWindow(em, conv, H!, W!, block);
  const y0 = em.fresh(`${hint}_first_sample`);
  const x0 = win?.x ?? em.op('Slice', [conv.x, em.ints([0]), em.ints([1]), em.ints([0])]);
  em.graph.nodes.push({ name: em.fresh('first_sample_conv'), opType: 'Conv', domain: NCHWC_DOMAIN, inputs: [x0, conv.w, ...(conv.bias ? [conv.bias] : [])], outputs: [y0], attrs: win?.attrs ?? conv.attrs });
  const positions = win ? win.rows * win.cols : H! * W!;
  return em.reshape(em.reduce('ReduceMean', em.reshape(y0, [Cp! / block, positions, block]), [1], false), [Cp!]);
}

/**
 * The first sample's input window whose convolution, without padding, gives outputs
 * [rows, cols] ≤ SHIFT_WINDOW² of the conv's own (those whose receptive field lies inside the
 * image), with the conv's attributes for it; undefined where the output map is no larger than
 * the window (the whole first sample costs no more) or the window does not fit.
 */
function firstSampleWindow(em: Emitter, conv: BlockedConvSource, H: number, W: number, block: number): { x: string; attrs: Node['attrs']; rows: number; cols: number } | undefined {
  const [N, Cin, Hin, Win] = conv.inDims;
  if (conv.inDims.length !== 4 || H * W <= SHIFT_WINDOW * SHIFT_WINDOW) return undefined;
  const ints = (a: string, d: number[]) => { const v = conv.attrs[a]; return v?.kind === 'ints' ? v.value : d; };
  const [kh, kw] = conv.kernel as [number, number];
  const [sh, sw] = ints('strides', [1, 1]) as [number, number];
  const [dh, dw] = ints('dilations', [1, 1]) as [number, number];
  const [pt, pl] = ints('pads', [0, 0, 0, 0]) as [number, number];
  // Along one axis: the first output whose field starts at or after the padding, and how many fit.
  const axis = (size: number, out: number, k: number, s: number, d: number, pad: number) => {
    const first = Math.ceil(pad / s), start = first * s - pad;
    const n = Math.min(SHIFT_WINDOW, out - first, Math.floor((size - start - (k - 1) * d - 1) / s) + 1);
    return { start, n, len: (n - 1) * s + (k - 1) * d + 1 };
  };
  const r = axis(Hin!, H, kh, sh, dh, pt), c = axis(Win!, W, kw, sw, dw, pl);
  if (r.n < 1 || c.n < 1) return undefined;
  // A blocked input is sliced in its memory layout [N, C/b, H, W, b]; the slice is a blocked tensor.
  const Cm = conv.inBlocked ? Math.ceil(Cin! / block) * block : Cin!;
  const mem = conv.inBlocked ? em.reshape(conv.x, [N!, Cm / block, Hin!, Win!, block]) : conv.x;
  const cut = em.op('Slice', [mem, em.ints([0, r.start, c.start]), em.ints([1, r.start + r.len, c.start + c.len]), em.ints([0, 2, 3])]);
  const x = conv.inBlocked ? em.reshape(cut, [1, Cm, r.len, c.len]) : cut;
  return { x, attrs: { ...conv.attrs, pads: { kind: 'ints', value: [0, 0, 0, 0] } }, rows: r.n, cols: c.n };
}
