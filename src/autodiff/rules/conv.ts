// Conv: gradients of input, weight and bias in standard ONNX ops, 1-D, 2-D and 3-D, with groups,
// strides, dilations, explicit or auto pads.
//
// The formulation of each gradient is chosen per layer geometry from measurements in
// bench/conv-grad-forms.ts (results in bench/results/conv-grad-forms.md, 2-core machine,
// onnxruntime-node 1.30, graph optimization 'all', 2 intra-op threads). See pickDx / pickDw.
import { windowGeom, type WindowGeom } from './window.ts';
import { attrInt, type Node } from '../../onnx/ir.ts';
import type { Emitter } from '../../onnx/emitter.ts';
import { f32, i64 } from '../../onnx/tensor.ts';
import { registerRules, type GradContext } from '../rule.ts';

/** Static geometry of one Conv node for one input signature; pads resolved from auto_pad. */
export interface ConvGeom extends WindowGeom {
  O: number;
  group: number;
}

/** Resolve a Conv's attributes against static shapes (auto_pad becomes explicit pads). */
export function convGeom(node: Pick<Node, 'name' | 'opType' | 'attrs'>, x: number[], w: number[], y: number[]): ConvGeom {
  if (x.length - 2 < 1) throw new Error(`input has shape [${x}], expected rank ≥ 3 (N, C, spatial...)`);
  if (w.length !== x.length) throw new Error(`weight has shape [${w}], expected rank ${x.length} to match input [${x}]`);
  return { ...windowGeom(node, x, y, w.slice(2)), O: w[0]!, group: attrInt(node as Node, 'group', 1) };
}

const prod = (xs: number[]) => xs.reduce((a, b) => a * b, 1);
const range = (n: number, from = 0) => Array.from({ length: n }, (_, i) => i + from);
/** Effective (dilated) kernel extent per spatial dim. */
const kext = (g: ConvGeom) => g.k.map((k, i) => (k - 1) * g.dil[i]! + 1);
/**
 * Input rows left over after the last window (floor semantics of the forward output size):
 * H + pB + pE = (OH - 1)·s + kext + rest, with 0 ≤ rest < s.
 */
const rest = (g: ConvGeom) => kext(g).map((e, i) => g.inSp[i]! + g.padB[i]! + g.padE[i]! - (g.outSp[i]! - 1) * g.strides[i]! - e);

// ---------------------------------------------------------------- dX formulations

export type DxForm = 'conv-flip' | 'convtranspose' | 'conv-zero-insert' | 'polyphase';

/** Whether a dX form applies to a geometry. */
export function dxApplies(g: ConvGeom, form: DxForm): boolean {
  const e = kext(g);
  // The flipped conv needs non-negative pads kext-1-pB and kext-1-pE' (pE' = pE - rest).
  const padsOk = () => e.every((x, i) => g.padB[i]! <= x - 1 && g.padE[i]! - rest(g)[i]! <= x - 1);
  if (form === 'conv-flip') return g.strides.every((s) => s === 1) && padsOk();
  if (form === 'conv-zero-insert') return padsOk();
  if (form === 'polyphase') return g.nd === 2 && g.strides[0]! > 1 && g.strides[0] === g.strides[1] && g.dil.every((d) => d === 1);
  return true;
}

/**
 * Per spatial dim of a stride-s conv, the taps that reach each output phase a = y mod s of dX:
 * dX[s·q + a] = Σ_m dY[q + carry_a − m] · W[s·m + r_a] over the taps s·m + r_a < k. All phases
 * read one window of dY, [q − lo, q + hi]; tap j of it uses kernel index `tap[a][j]` (−1: none).
 */
function phaseTaps(k: number, s: number, pB: number): { lo: number; hi: number; tap: number[][] } {
  const ph = Array.from({ length: s }, (_, a) => ({ r: (a + pB) % s, carry: Math.floor((a + pB) / s), M: Math.max(0, Math.ceil((k - ((a + pB) % s)) / s)) }));
  const lo = Math.max(0, ...ph.map((p) => p.M - 1 - p.carry)), hi = Math.max(0, ...ph.map((p) => p.carry));
  const tap = ph.map((p) => Array.from({ length: lo + hi + 1 }, (_, j) => {
    const m = p.carry + lo - j;
    return m >= 0 && m < p.M ? s * m + p.r : -1;
  }));
  return { lo, hi, tap };
}

/**
 * dX of a 2-D stride-s conv as one stride-1 Conv over dY producing all s² output phases as
 * channels (c·s² + phase, so groups stay contiguous), then DepthToSpace (CRD) and a crop. Its
 * kernel is gathered from W with zeros where a phase has no tap; a stride-1 Conv gets
 * onnxruntime's NCHWc kernels, which ConvTranspose does not.
 */
function polyphaseDx(em: Emitter, g: ConvGeom, dY: string, w: string): string {
  const s = g.strides[0]!, G = g.group, Og = g.O / G, Cg = g.C / G, [kh, kw] = g.k as [number, number];
  const th = phaseTaps(kh, s, g.padB[0]!), tw = phaseTaps(kw, s, g.padB[1]!);
  const Mh = th.lo + th.hi + 1, Mw = tw.lo + tw.hi + 1;
  const Q = g.inSp.map((h) => Math.ceil(h / s));
  // K[c·s² + ah·s + aw, o', jh, jw] = W[(c div Cg)·Og + o', c mod Cg, tap_h, tap_w], or the zero slot.
  const zero = g.O * Cg * kh * kw;
  const idx: number[] = [];
  for (let c = 0; c < g.C; c++) for (let ah = 0; ah < s; ah++) for (let aw = 0; aw < s; aw++) {
    for (let o = 0; o < Og; o++) for (let jh = 0; jh < Mh; jh++) for (let jw = 0; jw < Mw; jw++) {
      const ih = th.tap[ah]![jh]!, iw = tw.tap[aw]![jw]!;
      const oo = Math.floor(c / Cg) * Og + o;
      idx.push(ih < 0 || iw < 0 ? zero : ((oo * Cg + (c % Cg)) * kh + ih) * kw + iw);
    }
  }
  const wz = em.op('Concat', [em.reshape(w, [zero]), em.constant(f32([1], new Float32Array(1)), 'polyphase_zero')], { axis: 0 });
  const k = em.op('Gather', [wz, em.constant(i64([g.C * s * s, Og, Mh, Mw], idx), 'polyphase_taps')], { axis: 0 });
  // Rows past the last dY row are zeros: pad to Q + hi rows, or crop the surplus afterwards.
  const padE = [Q[0]! + th.hi - g.outSp[0]!, Q[1]! + tw.hi - g.outSp[1]!].map((p) => Math.max(0, p));
  const y = em.op('Conv', [dY, k], { group: G, kernel_shape: [Mh, Mw], pads: [th.lo, tw.lo, ...padE] });
  const d2s = em.op('DepthToSpace', [y], { blocksize: s, mode: 'CRD' });
  return em.op('Slice', [d2s, em.ints([0, 0]), em.ints(g.inSp), em.ints([2, 3])]);
}

/** W [O, C/g, k...] → [C, O/g, k...] (per group C↔O swap), optionally flipped spatially. */
export function transposeWeight(em: Emitter, g: ConvGeom, w: string, flip: boolean): string {
  const Og = g.O / g.group, Cg = g.C / g.group;
  let t: string;
  if (g.group === 1) t = em.transpose(w, [1, 0, ...range(g.nd, 2)]);
  else {
    t = em.reshape(w, [g.group, Og, Cg, ...g.k]);
    t = em.transpose(t, [0, 2, 1, ...range(g.nd, 3)]);
    t = em.reshape(t, [g.C, Og, ...g.k]);
  }
  if (!flip) return t;
  const axes = range(g.nd, 2);
  return em.op('Slice', [t, em.ints(g.k.map((k) => k - 1)), em.ints(g.k.map((k) => -k - 1)), em.ints(axes), em.ints(axes.map(() => -1))]);
}

/** Gradient of the Conv input from dY [N, O, outSp...]; returns [N, C, inSp...]. */
export function convDx(em: Emitter, g: ConvGeom, dY: string, w: string, form: DxForm): string {
  const e = kext(g), r = rest(g);
  if (form === 'convtranspose') {
    // out = s·(OH-1) + op + kext - pB - pE'; choose pE' = pE - rest, or output_padding where negative.
    const padE = g.padE.map((p, i) => Math.max(0, p - r[i]!));
    const outPad = g.padE.map((p, i) => Math.max(0, r[i]! - p));
    const attrs: Record<string, number[] | number> = { strides: g.strides, dilations: g.dil, group: g.group, pads: [...g.padB, ...padE], kernel_shape: g.k };
    if (outPad.some((p) => p > 0)) attrs.output_padding = outPad;
    return em.op('ConvTranspose', [dY, w], attrs);
  }
  if (form === 'polyphase') return polyphaseDx(em, g, dY, w);
  if (form === 'conv-flip' && g.strides.some((s) => s > 1)) throw new Error('internal: the conv-flip dX form needs stride 1');
  // 'conv-zero-insert': dY with s-1 zeros between elements, then the stride-1 flipped conv.
  let src = dY;
  const shp = [g.N, g.O, ...g.outSp];
  for (let i = 0; i < g.nd; i++) {
    const s = g.strides[i]!, ax = 2 + i;
    if (s === 1) continue;
    // [.., OH, 1] padded to [.., OH, s], merged to OH·s and cropped to (OH-1)·s + 1.
    src = em.unsqueeze(src, [ax + 1]);
    const pads = new Array<number>(2 * (shp.length + 1)).fill(0);
    pads[shp.length + 1 + ax + 1] = s - 1;
    src = em.op('Pad', [src, em.ints(pads)]);
    src = em.reshape(src, shp.map((d, j) => (j === ax ? d * s : d)));
    shp[ax] = (shp[ax]! - 1) * s + 1;
    src = em.op('Slice', [src, em.ints([0]), em.ints([shp[ax]!]), em.ints([ax])]);
  }
  const wf = transposeWeight(em, g, w, true);
  const pads = [...e.map((x, i) => x - 1 - g.padB[i]!), ...e.map((x, i) => x - 1 - (g.padE[i]! - r[i]!))];
  return em.op('Conv', [src, wf], { dilations: g.dil, group: g.group, pads, kernel_shape: g.k });
}

// ---------------------------------------------------------------- dW formulations

/**
 * 'conv-xt': one Conv of X (channels↔batch swapped) with dY as the kernel.
 * Otherwise im2col then a contraction over N·L: the im2col is a grouped Conv with a one-hot
 * kernel ('onehot-*') or one strided Slice per kernel tap ('slices-*'); the contraction is
 * one Gemm ('*-gemm', groups batched in a MatMul), a MatMul batched over N then a sum over N
 * ('*-matmul'), or, for depthwise convs only, Mul + ReduceSum ('*-mulsum').
 */
export type DwForm = 'conv-xt' | 'onehot-gemm' | 'onehot-matmul' | 'onehot-mulsum' | 'slices-gemm' | 'slices-matmul' | 'slices-mulsum';

export const isDepthwise = (g: ConvGeom) => g.group === g.C && g.O === g.C;

export function dwApplies(g: ConvGeom, form: DwForm): boolean {
  if (form.endsWith('-mulsum')) return isDepthwise(g);
  return true;
}

export const isPointwise = (g: ConvGeom) => g.k.every((k) => k === 1) && g.padB.every((p) => p === 0) && g.padE.every((p) => p === 0);

/**
 * im2col of X: [N, C·K, outSp...] with channel c·K + t holding input channel c at kernel tap t.
 * 'onehot': one grouped Conv with a one-hot kernel; 'slices': Pad once, then one strided Slice
 * per tap. A pointwise (1x1, unpadded) conv needs none: X itself, or a strided Slice of it.
 */
export function im2col(em: Emitter, g: ConvGeom, x: string, how: 'onehot' | 'slices'): string {
  const K = prod(g.k);
  const axes = range(g.nd, 2);
  if (isPointwise(g)) {
    if (g.strides.every((s) => s === 1)) return x;
    return em.op('Slice', [x, em.ints(axes.map(() => 0)), em.ints(g.outSp.map((o, i) => (o - 1) * g.strides[i]! + 1)), em.ints(axes), em.ints(g.strides)]);
  }
  if (how === 'onehot') {
    const oh = new Float32Array(g.C * K * K);
    for (let c = 0; c < g.C; c++) for (let t = 0; t < K; t++) oh[(c * K + t) * K + t] = 1;
    const wk = em.constant(f32([g.C * K, 1, ...g.k], oh), 'im2col_onehot');
    return em.op('Conv', [x, wk], { group: g.C, strides: g.strides, dilations: g.dil, pads: [...g.padB, ...g.padE], kernel_shape: g.k });
  }
  const taps = tapSlices(em, g, x).map((t) => em.unsqueeze(t, [2]));
  const cat = em.op('Concat', taps, { axis: 2 }); // [N, C, K, outSp...]
  return em.reshape(cat, [g.N, g.C * K, ...g.outSp]);
}

/** One strided Slice of the padded X per kernel tap (row-major over the kernel dims): [N, C, outSp...] each. */
function tapSlices(em: Emitter, g: ConvGeom, x: string): string[] {
  const K = prod(g.k);
  const axes = range(g.nd, 2);
  let xp = x;
  if (g.padB.some((p) => p > 0) || g.padE.some((p) => p > 0)) xp = em.op('Pad', [x, em.ints([0, 0, ...g.padB, 0, 0, ...g.padE])]);
  const taps: string[] = [];
  for (let t = 0; t < K; t++) {
    const idx: number[] = [];
    let rem = t;
    for (let i = g.nd - 1; i >= 0; i--) { idx[i] = rem % g.k[i]!; rem = Math.floor(rem / g.k[i]!); }
    const starts = idx.map((j, i) => j * g.dil[i]!);
    const ends = starts.map((s0, i) => s0 + (g.outSp[i]! - 1) * g.strides[i]! + 1);
    taps.push(em.op('Slice', [xp, em.ints(starts), em.ints(ends), em.ints(axes), em.ints(g.strides)]));
  }
  return taps;
}

/** Gradient of the Conv weight; returns [O, C/g, k...]. */
export function convDw(em: Emitter, g: ConvGeom, x: string, dY: string, form: DwForm): string {
  const K = prod(g.k), L = prod(g.outSp), Og = g.O / g.group, Cg = g.C / g.group, G = g.group;
  if (form === 'conv-xt') {
    // dW[o, c, t] = Σ_n,p X[n, c, p·s + t·d - pB] dY[n, o, p]: a Conv over X with channels↔batch
    // swapped and dY as the kernel (dilation = forward stride, stride = forward dilation).
    let xt = em.reshape(x, [g.N, G, Cg, ...g.inSp]);
    xt = em.transpose(xt, [2, 1, 0, ...range(g.nd, 3)]);
    xt = em.reshape(xt, [Cg, G * g.N, ...g.inSp]);
    const dyt = em.transpose(dY, [1, 0, ...range(g.nd, 2)]); // [O, N, outSp]
    let r = em.op('Conv', [xt, dyt], { group: G, strides: g.dil, dilations: g.strides, pads: [...g.padB, ...g.padE], kernel_shape: g.outSp });
    // Its output size is k + floor(rest/d) along each dim: crop the extra taps.
    if (rest(g).some((r0, i) => r0 >= g.dil[i]!)) r = em.op('Slice', [r, em.ints(g.k.map(() => 0)), em.ints(g.k), em.ints(range(g.nd, 2))]);
    return em.transpose(r, [1, 0, ...range(g.nd, 2)]); // [O, Cg, k]
  }
  if (form === 'slices-mulsum') {
    // Depthwise, tap by tap: dW[c, t] = Σ_n,p slice_t(X)[n, c, p] dY[n, c, p].
    const sums = tapSlices(em, g, x).map((t) => em.reduce('ReduceSum', em.mul(t, dY), [0, ...range(g.nd, 2)], false));
    const cat = em.op('Concat', sums.map((s) => em.unsqueeze(s, [1])), { axis: 1 }); // [C, K]
    return em.reshape(cat, [g.O, 1, ...g.k]);
  }
  const cols = im2col(em, g, x, form.startsWith('slices') ? 'slices' : 'onehot'); // [N, C·K, outSp]
  if (form === 'onehot-mulsum') {
    const c4 = em.reshape(cols, [g.N, g.C, K, L]);
    const d4 = em.reshape(dY, [g.N, g.C, 1, L]);
    return em.reshape(em.reduce('ReduceSum', em.mul(c4, d4), [0, 3], false), [g.O, 1, ...g.k]);
  }
  if (form.endsWith('-matmul')) {
    // Batched over N (and groups): MatMul(dY [N, G, Og, L], colsᵀ [N, G, L, Cg·K]), then sum over N.
    // onnxruntime fuses the Transpose into the MatMul (FusedMatMul transB).
    const dy4 = em.reshape(dY, [g.N, G, Og, L]);
    const c4 = em.transpose(em.reshape(cols, [g.N, G, Cg * K, L]), [0, 1, 3, 2]);
    const m = em.op('MatMul', [dy4, c4]);
    return em.reshape(em.reduce('ReduceSum', m, [0], false), [g.O, Cg, ...g.k]);
  }
  if (G === 1) {
    // [O, N·L] · [C·K, N·L]ᵀ: moving the batch next to the spatial axis copies contiguous rows of L.
    const dy2 = em.reshape(em.transpose(em.reshape(dY, [g.N, g.O, L]), [1, 0, 2]), [g.O, g.N * L]);
    const c2 = em.reshape(em.transpose(em.reshape(cols, [g.N, g.C * K, L]), [1, 0, 2]), [g.C * K, g.N * L]);
    return em.reshape(em.op('Gemm', [dy2, c2], { transB: 1 }), [g.O, Cg, ...g.k]);
  }
  // Groups batched: [G, Og, N·L] · [G, N·L, Cg·K].
  const dy3 = em.reshape(em.transpose(em.reshape(dY, [g.N, G, Og, L]), [1, 2, 0, 3]), [G, Og, g.N * L]);
  const c3 = em.transpose(em.reshape(cols, [g.N, G, Cg * K, L]), [1, 0, 3, 2]);
  const m = em.op('MatMul', [dy3, em.reshape(c3, [G, g.N * L, Cg * K])]);
  return em.reshape(m, [g.O, Cg, ...g.k]);
}

// ---------------------------------------------------------------- the choice
//
// Measured by bench/conv-grad-forms.ts (bench/results/conv-grad-forms.md: N=64, 2 intra-op threads,
// optimization 'all', ms p25 of 40 interleaved runs on the idle 2-core machine, load average ≈ 1.1;
// each choice below held in two such runs).
//
// dX, stride 1: 'conv-flip', a Conv of dY with the C↔O-swapped, flipped weight (it gets the NCHWc
//   kernels). 3x3 64ch 14x14: 3.7 vs ConvTranspose 6.5; 3x3 32ch 28x28: 4.3 vs 8.4; groups=4:
//   2.0 vs 4.9; depthwise: 1.2 vs 3.3; 1x1: 0.7 vs 1.4; 3x3 128ch 7x7: 6.2 vs 6.0 (a tie).
// dX, stride > 1: ConvTranspose. Zero-inserting dY, then the stride-1 form, does s² times the work
//   (3x3 s2 32→64 28x28: 5.1 vs 24.0). The polyphase form (one stride-1 Conv over all s² phases,
//   then DepthToSpace) gets the NCHWc kernels but multiplies zero taps: 16 instead of 9 per output
//   for 3x3 s2, and it lost everywhere (3x3 s2 32→64 28x28: 5.9 vs 5.1; 64ch 14x14: 3.7 vs 3.2;
//   1x1 s2: 3.9 vs 1.5; depthwise s2: 7.6 vs 4.6). One Conv per phase with only its own taps, then
//   Concat and DepthToSpace, lost too (tried and removed: 6.0 vs 5.5 and 4.0 vs 3.1).
export function pickDx(g: ConvGeom): DxForm {
  if (dxApplies(g, 'conv-flip')) return 'conv-flip';
  return 'convtranspose';
}

// dW: im2col, then one contraction over N·L. The one Conv of transposed X with dY as its kernel
//   ('conv-xt') lost everywhere, closest on depthwise (3x3 64ch 14x14: 13.6 vs 5.6; depthwise:
//   4.1 vs 3.6). Depthwise Mul + ReduceSum ('*-mulsum') lost to the batched MatMul too (4.5 vs 3.6).
// im2col: the one-hot grouped Conv beats one Slice per kernel tap everywhere (3x3 64ch 14x14:
//   onehot-matmul 5.6 vs slices-matmul 7.4; 32ch 28x28: 7.6 vs 10.1; s2: 3.3 vs 6.7). (An earlier
//   run on the same machine under load average 5–6 had the slices ahead at stride 1; with the
//   machine idle the one-hot Conv won in both runs, and the shipped CNN's full fine-tuning step
//   went from 108–112 to 102–105 ms at batch 64.)
// Contraction: a MatMul batched over N (onnxruntime fuses the Transpose into it), then ReduceSum
//   over N, beats one Gemm over N·L, which first copies the K-times-larger columns (1x1 64ch 14x14:
//   0.5 vs 0.8; with groups, Gemms batched over groups are about 7× slower). With few output positions
//   (L ≤ 64, e.g. 7x7) the per-sample products get too small and one Gemm wins or ties: 3x3 128ch
//   7x7: onehot-gemm 5.2 vs onehot-matmul 6.0; 3x3 s2 64ch 14x14→7x7: 2.2 vs 2.2.
export function pickDw(g: ConvGeom): DwForm {
  return g.group === 1 && prod(g.outSp) <= 64 ? 'onehot-gemm' : 'onehot-matmul';
}

registerRules({
  Conv(ctx: GradContext, node, [dY], needs) {
    const em = ctx.em;
    if (ctx.opset < 11) throw new Error(`the Conv gradient needs opset ≥ 11 (Slice and Pad with inputs), the model has opset ${ctx.opset}`);
    const [x, w, b] = node.inputs as [string, string, string | undefined];
    const g = convGeom(node, ctx.shape(x), ctx.shape(w), ctx.shape(node.outputs[0]!));
    const dX = needs[0] ? convDx(em, g, dY!, w, pickDx(g)) : null;
    const dW = needs[1] ? convDw(em, g, x, dY!, pickDw(g)) : null;
    const dB = b && needs[2] ? em.reduce('ReduceSum', dY!, [0, ...range(g.nd, 2)], false) : null;
    return [dX, dW, dB];
  },
});
