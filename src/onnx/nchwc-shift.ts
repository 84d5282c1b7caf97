// The per-channel shift K that keeps one-pass BatchNorm moments on the blocked layout precise.
//
// Why: the blocked passes (nchwc-batchstats.ts for BN-adapt, nchwc-step.ts for Tent-style steps)
// take a BN's batch moments from one-pass sums, var = E[d²] − E[d]². With d = x that loses
// digits when |mean| ≫ std (input mean 1000: a Tent gradient 8.7× off, session 37); with d = x − K
// it loses only about (1 + (mean − K)²/var) × float32 rounding, and the sums themselves round less
// the nearer d's mean is to 0. The conv that writes x writes d instead when its bias is lowered by
// K, so the shift costs no pass over the activation: K is the mean of the same conv's outputs on a
// sparse grid over every sample. (A 4×4 window in the first sample's corner, the form before
// session 38, sat up to 1.9 std from MobileNetV2's batch means and left its moments 3–19× less
// precise than onnxruntime's two-pass kernel; the grid matches the kernel: docs/speed.md.)
import { NCHWC_DOMAIN } from './nchwc.ts';
import type { Emitter } from './emitter.ts';
import type { Node } from './ir.ts';

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
 * gridMean) and move it after K's nodes, at the end of the graph so far: only nodes not yet
 * emitted may read its output. Returns K [Cp].
 */
export function shiftBlockedConv(em: Emitter, conv: BlockedConvSource & { node: Node }, outDims: number[], block: number): string {
  const K = gridMean(em, conv, outDims, block, conv.node.outputs[0]!);
  lowerConvBias(em, conv, K);
  return K;
}

/** The blocked Conv `conv.node` lowered by K [Cp] (its bias minus K), moved after K's nodes. */
export function lowerConvBias(em: Emitter, conv: { node: Node; bias?: string }, K: string): void {
  conv.node.inputs[2] = conv.bias ? em.sub(conv.bias, K) : em.neg(K);
  const nodes = em.graph.nodes;
  nodes.splice(nodes.indexOf(conv.node), 1);
  nodes.push(conv.node);
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
