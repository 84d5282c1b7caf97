// Conv: gradients of input, weight and bias in standard ONNX ops, 1-D, 2-D and 3-D, with groups,
// strides, dilations, explicit or auto pads.
//
// The formulation of each gradient is chosen per layer geometry from measurements in
// bench/conv-grad-forms.ts (results in bench/results/conv-grad-forms.md, 2-core machine,
// onnxruntime-node 1.30, graph optimization 'all', 2 intra-op threads). See pickDx / pickDw.
import { windowGeom, kext, rest, transposePads, type WindowGeom } from './window.ts';
import { attrInt, type Node } from '../../onnx/ir.ts';
import type { Emitter } from '../../onnx/emitter.ts';
import { f32, i64 } from '../../onnx/tensor.ts';
import { registerRules, type GradContext } from '../rule.ts';
import { runtimeFaults, type BackendFaults } from '../../onnx/runtime.ts';

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

// ---------------------------------------------------------------- dX formulations

/**
 * 'conv-flip': stride-1 Conv of dY with the C↔O-swapped, spatially flipped weight; the flip is a
 * Slice with negative steps. 'conv-flip-matmul' / 'conv-flip-gather': the same Conv with the
 * flip done as a MatMul by the k²×k² tap-reversal matrix / as a Gather of whole tap planes (see
 * flipTaps). 'phases': one stride-1 Conv per output phase with only that phase's taps, then
 * Concat + DepthToSpace (2-D, equal strides > 1, no dilation).
 */
export type DxForm = 'conv-flip' | 'conv-flip-matmul' | 'conv-flip-gather' | 'convtranspose' | 'convtranspose-sympads' | 'conv-zero-insert' | 'polyphase' | 'phases';

/** How the conv-flip dX forms reverse the kernel taps. */
export type FlipHow = 'slice' | 'matmul' | 'gather';
const flipOf = (f: DxForm): FlipHow => (f === 'conv-flip-matmul' ? 'matmul' : f === 'conv-flip-gather' ? 'gather' : 'slice');

/** Whether a dX form applies to a geometry. */
export function dxApplies(g: ConvGeom, form: DxForm): boolean {
  const e = kext(g);
  // The flipped conv needs non-negative pads kext-1-pB and kext-1-pE' (pE' = pE - rest).
  const padsOk = () => e.every((x, i) => g.padB[i]! <= x - 1 && g.padE[i]! - rest(g)[i]! <= x - 1);
  if (form.startsWith('conv-flip')) return g.strides.every((s) => s === 1) && padsOk();
  if (form === 'convtranspose-sympads') return transposePads(g, true) !== null;
  if (form === 'conv-zero-insert') return padsOk();
  const poly = g.nd === 2 && g.strides[0]! > 1 && g.strides[0] === g.strides[1] && g.dil.every((d) => d === 1);
  if (form === 'polyphase') return poly;
  // Every phase needs at least one tap (k ≥ s along each dim).
  if (form === 'phases') return poly && g.k.every((k) => k >= g.strides[0]!);
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

/**
 * dX of a 2-D stride-s conv, phase by phase: output rows s·q + a (per dim) get only the taps
 * s·m + r_a, so each of the s² phases is a stride-1 Conv of dY with its own small kernel (for
 * 3×3 s2: 2×2, 2×1, 1×2 and 1×1, 9 taps in all, no zero taps), gathered from the C↔O-swapped
 * weight. The phases are interleaved by two Concats on inner axes: a row's phases side by side
 * ([.., Q1, s] → [.., 1, Q1·s]), then the rows ([.., Q0, s, Q1·s] → [.., Q0·s, Q1·s]): half the
 * time DepthToSpace takes beyond the copy (onnxruntime's is a generic 6-D transpose: 1.4 against
 * 2.7 ms for [64, 4·32, 14, 14]).
 */
export function phasesDx(em: Emitter, g: ConvGeom, dY: string, w: string): string {
  const s = g.strides[0]!, G = g.group, Og = g.O / G, [kh, kw] = g.k as [number, number];
  const Q = g.inSp.map((h) => Math.ceil(h / s));
  const wt = em.reshape(transposeWeight(em, g, w, false), [g.C, Og, kh * kw]);
  /** Per dim and phase a: the kernel taps in correlation order, the dY rows to drop at the start and end, and the Conv's pads. */
  const dimPhase = (d: number, a: number) => {
    const k = g.k[d]!, pB = g.padB[d]!, OH = g.outSp[d]!;
    const r = (a + pB) % s, carry = Math.floor((a + pB) / s), M = Math.ceil((k - r) / s);
    // dX[s·q + a] = Σ_j dY[q + carry − (M−1) + j] · W[s·(M−1−j) + r], j < M.
    const taps = range(M).map((j) => s * (M - 1 - j) + r);
    let P = M - 1 - carry, drop0 = 0;
    if (P < 0) { drop0 = -P; P = 0; }
    const len = OH - drop0;
    let E = Q[d]! - len - P + M - 1, keep = len;
    if (E < 0) { keep = len + E; E = 0; }
    return { taps, drop0, keep, P, E };
  };
  const rows: string[] = [], phases: string[] = [];
  for (let ah = 0; ah < s; ah++) {
    const cols: string[] = [];
    for (let aw = 0; aw < s; aw++) {
      const ph = dimPhase(0, ah), pw = dimPhase(1, aw);
      const idx = ph.taps.flatMap((th) => pw.taps.map((tw) => th * kw + tw));
      const k = em.reshape(em.op('Gather', [wt, em.ints(idx)], { axis: 2 }), [g.C, Og, ph.taps.length, pw.taps.length]);
      let src = dY;
      if (ph.drop0 || pw.drop0 || ph.keep < g.outSp[0]! - ph.drop0 || pw.keep < g.outSp[1]! - pw.drop0) {
        src = em.op('Slice', [dY, em.ints([ph.drop0, pw.drop0]), em.ints([ph.drop0 + ph.keep, pw.drop0 + pw.keep]), em.ints([2, 3])]);
      }
      const y = em.op('Conv', [src, k], { group: G, kernel_shape: [ph.taps.length, pw.taps.length], pads: [ph.P, pw.P, ph.E, pw.E] });
      em.graph.nodes.at(-1)!.meta = { phaseWeightOf: { weight: w, taps: idx } }; // lets the NCHWc pass build the blocked weight from a fed one
      phases.push(y);
      cols.push(em.reshape(y, [-1, g.C, Q[0]!, Q[1]!, 1])); // -1: the batch
    }
    rows.push(em.reshape(em.op('Concat', cols, { axis: 4 }), [-1, g.C, Q[0]!, 1, Q[1]! * s]));
  }
  const full = em.reshape(em.op('Concat', rows, { axis: 3 }), [-1, g.C, Q[0]! * s, Q[1]! * s]);
  em.graph.nodes.at(-1)!.meta = { phaseInterleave: { phases, stride: s } }; // lets the blocked step interleave in its layout
  if (Q.every((q, i) => q * s === g.inSp[i])) return full;
  return em.op('Slice', [full, em.ints([0, 0]), em.ints(g.inSp), em.ints([2, 3])]);
}

/**
 * Reverse the kernel taps of t [A, B, k...] along every spatial dim. 'slice': one Slice with
 * negative steps (onnxruntime copies it element by element). 'gather': taps moved outermost
 * ([K, A·B], one Transpose), one Gather of whole tap planes, moved back. ('matmul', the taps
 * times the K×K reversal matrix, exact since each output is one product by 1 plus zeros, is
 * built in transposeWeight together with the C↔O swap.)
 */
function flipTaps(em: Emitter, g: ConvGeom, t: string, A: number, B: number, how: Exclude<FlipHow, 'matmul'>): string {
  const K = prod(g.k), axes = range(g.nd, 2);
  if (how === 'slice') {
    return em.op('Slice', [t, em.ints(g.k.map((k) => k - 1)), em.ints(g.k.map((k) => -k - 1)), em.ints(axes), em.ints(axes.map(() => -1))]);
  }
  const tk = em.transpose(em.reshape(t, [A * B, K]), [1, 0]);
  const r = em.op('Gather', [tk, em.ints(range(K).reverse())], { axis: 0 });
  return em.reshape(em.transpose(r, [1, 0]), [A, B, ...g.k]);
}

/** W [O, C/g, k...] → [C, O/g, k...] (per group C↔O swap), optionally flipped spatially. */
export function transposeWeight(em: Emitter, g: ConvGeom, w: string, flip: boolean, how: FlipHow = 'slice'): string {
  const Og = g.O / g.group, Cg = g.C / g.group;
  if (flip && how === 'matmul') {
    // The C↔O swap as a Transpose straight into the MatMul by the k²×k² reversal matrix (no
    // Reshape between them, in case onnxruntime fuses the pair; 1.30 did not: its optimized graph
    // keeps Transpose and MatMul, bench/results/conv-grad-forms-summary.md).
    const K = prod(g.k);
    const j = new Float32Array(K * K);
    for (let i = 0; i < K; i++) j[i * K + (K - 1 - i)] = 1;
    const rev = em.constant(f32([K, K], j), 'tap_reversal');
    const t = g.group === 1
      ? em.transpose(em.reshape(w, [g.O, g.C, K]), [1, 0, 2])
      : em.transpose(em.reshape(w, [g.group, Og, Cg, K]), [0, 2, 1, 3]);
    return em.reshape(em.op('MatMul', [t, rev]), [g.C, Og, ...g.k]);
  }
  let t: string;
  if (g.group === 1) t = em.transpose(w, [1, 0, ...range(g.nd, 2)]);
  else {
    t = em.reshape(w, [g.group, Og, Cg, ...g.k]);
    t = em.transpose(t, [0, 2, 1, ...range(g.nd, 3)]);
    t = em.reshape(t, [g.C, Og, ...g.k]);
  }
  if (!flip) return t;
  return flipTaps(em, g, t, g.C, Og, how === 'matmul' ? 'slice' : how);
}

/** Gradient of the Conv input from dY [N, O, outSp...]; returns [N, C, inSp...]. */
export function convDx(em: Emitter, g: ConvGeom, dY: string, w: string, form: DxForm): string {
  const e = kext(g), r = rest(g);
  if (form === 'convtranspose' || form === 'convtranspose-sympads') {
    // out = s·(OH-1) + op + kext - pB - pE'; choose pE' = pE - rest, or output_padding where negative.
    const pads = transposePads(g, form === 'convtranspose-sympads');
    if (!pads) throw new Error(`internal: the ${form} dX form does not apply to this geometry`);
    const { padE, outPad } = pads;
    const attrs: Record<string, number[] | number> = { strides: g.strides, dilations: g.dil, group: g.group, pads: [...g.padB, ...padE], kernel_shape: g.k };
    if (outPad.some((p) => p > 0)) attrs.output_padding = outPad;
    const dx = em.op('ConvTranspose', [dY, w], attrs);
    em.graph.nodes.at(-1)!.meta = { dxOfConv: g }; // lets a backend pass write it by phase (src/train/strided-dx-phases.ts)
    return dx;
  }
  if (form === 'polyphase') return polyphaseDx(em, g, dY, w);
  if (form === 'phases') return phasesDx(em, g, dY, w);
  if (form.startsWith('conv-flip') && g.strides.some((s) => s > 1)) throw new Error(`internal: the ${form} dX form needs stride 1`);
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
  const wf = transposeWeight(em, g, w, true, flipOf(form));
  const pads = [...e.map((x, i) => x - 1 - g.padB[i]!), ...e.map((x, i) => x - 1 - (g.padE[i]! - r[i]!))];
  const dx = em.op('Conv', [src, wf], { dilations: g.dil, group: g.group, pads, kernel_shape: g.k });
  em.graph.nodes.at(-1)!.meta = { flippedWeightOf: w }; // lets the NCHWc pass reorder W once, flip included
  return dx;
}

// ---------------------------------------------------------------- dW formulations

/**
 * 'conv-xt': one Conv of X (channels↔batch swapped) with dY as the kernel.
 * Otherwise im2col then a contraction over N·L: the im2col is a grouped Conv with a one-hot
 * kernel ('onehot-*') or one strided Slice per kernel tap ('slices-*'); the contraction is
 * one Gemm ('*-gemm', groups batched in a MatMul), a MatMul batched over N then a sum over N
 * ('*-matmul'), or, for depthwise convs only, Mul + ReduceSum ('*-mulsum').
 * 'gather-*': the im2col as one Gather of the padded X flattened over space ([N, C, Hp·Wp] →
 * [N, C, K, L], constant indices). 'conv-nc': for one-input-channel groups (depthwise, any
 * multiplier), one Conv of X as [1, N·C, H, W] with dY as [N·O, 1, OH, OW] for the kernel, group
 * N·C (no transposes: N and C are adjacent), then ReduceSum over N.
 * 'onehot-dy': the one-hot columns of dY instead of X, for stride 1 and dilation 1:
 * dW[o, c, t] = Σ_n,q X[n, c, q] · dY[n, o, q − t + pB], i.e. dY's taps read in reverse over X's
 * positions (pads k − 1 − pB before and k − 1 − pE after), then the per-sample products with X as
 * 'onehot-swapped' takes them. The columns are O·K channels instead of C·K: C/O times smaller where
 * a conv narrows (a LoRA A conv: O = r).
 */
export type DwForm =
  | 'conv-xt' | 'conv-nc' | 'onehot-gemm' | 'onehot-matmul' | 'onehot-mulsum' | 'slices-gemm' | 'slices-matmul' | 'slices-mulsum'
  | 'gather-matmul' | 'gather-mulsum' | 'taps-gemm' | 'onehot-swapped' | 'onehot-dy';

export const isDepthwise = (g: ConvGeom) => g.group === g.C && g.O === g.C;

export function dwApplies(g: ConvGeom, form: DwForm): boolean {
  if (form.endsWith('-mulsum')) return isDepthwise(g);
  if (form === 'taps-gemm' || form === 'onehot-swapped') return g.group === 1;
  if (form === 'onehot-dy') {
    return g.group === 1 && !isPointwise(g) && g.strides.every((s) => s === 1) && g.dil.every((d) => d === 1)
      && g.k.every((k, i) => g.padB[i]! <= k - 1 && g.padE[i]! <= k - 1);
  }
  if (form === 'conv-nc') return g.group === g.C;
  return true;
}

export const isPointwise = (g: ConvGeom) => g.k.every((k) => k === 1) && g.padB.every((p) => p === 0) && g.padE.every((p) => p === 0);

/**
 * im2col of X: [N, C·K, outSp...] with channel c·K + t holding input channel c at kernel tap t.
 * 'onehot': one grouped Conv with a one-hot kernel; 'slices': Pad once, then one strided Slice
 * per tap. A pointwise (1x1, unpadded) conv needs none: X itself, or a strided Slice of it.
 */
export function im2col(em: Emitter, g: ConvGeom, x: string, how: 'onehot' | 'slices' | 'gather'): string {
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
  if (how === 'gather') {
    const xp = padX(em, g, x);
    const pSp = g.inSp.map((h, i) => h + g.padB[i]! + g.padE[i]!);
    const L = prod(g.outSp), idx = new Array<number>(K * L);
    // idx[t·L + p] = flat padded position of output position p at tap t.
    for (let t = 0; t < K; t++) {
      const tap = unflat(t, g.k);
      for (let p = 0; p < L; p++) {
        const o = unflat(p, g.outSp);
        let f = 0;
        for (let i = 0; i < g.nd; i++) f = f * pSp[i]! + o[i]! * g.strides[i]! + tap[i]! * g.dil[i]!;
        idx[t * L + p] = f;
      }
    }
    const flat = em.reshape(xp, [g.N, g.C, prod(pSp)]);
    const cols = em.op('Gather', [flat, em.constant(i64([K, L], idx), 'im2col_index')], { axis: 2 }); // [N, C, K, L]
    return em.reshape(cols, [g.N, g.C * K, ...g.outSp]);
  }
  const taps = tapSlices(em, g, x).map((t) => em.unsqueeze(t, [2]));
  const cat = em.op('Concat', taps, { axis: 2 }); // [N, C, K, outSp...]
  return em.reshape(cat, [g.N, g.C * K, ...g.outSp]);
}

/** Row-major multi-index of flat index f in a box of extents `dims`. */
function unflat(f: number, dims: number[]): number[] {
  const out: number[] = [];
  for (let i = dims.length - 1; i >= 0; i--) { out[i] = f % dims[i]!; f = Math.floor(f / dims[i]!); }
  return out;
}

/** X with the conv's pads applied (X itself when unpadded). */
function padX(em: Emitter, g: ConvGeom, x: string): string {
  if (g.padB.some((p) => p > 0) || g.padE.some((p) => p > 0)) return em.op('Pad', [x, em.ints([0, 0, ...g.padB, 0, 0, ...g.padE])]);
  return x;
}

/** One strided Slice of the padded X per kernel tap (row-major over the kernel dims): [N, C, outSp...] each. */
function tapSlices(em: Emitter, g: ConvGeom, x: string): string[] {
  const K = prod(g.k);
  const axes = range(g.nd, 2);
  const xp = padX(em, g, x);
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
  if (form === 'conv-nc') {
    // dW[o, 0, t] = Σ_n Σ_p X[n, c(o), p·s + t·d − pB] dY[n, o, p]: per (n, c) group one input
    // channel and O/C kernels dY[n, o]; the Conv sums over p, a ReduceSum over n.
    const xs = em.reshape(x, [1, g.N * g.C, ...g.inSp]);
    const ks = em.reshape(dY, [g.N * g.O, 1, ...g.outSp]);
    let r = em.op('Conv', [xs, ks], { group: g.N * g.C, strides: g.dil, dilations: g.strides, pads: [...g.padB, ...g.padE], kernel_shape: g.outSp });
    if (rest(g).some((r0, i) => r0 >= g.dil[i]!)) r = em.op('Slice', [r, em.ints(g.k.map(() => 0)), em.ints(g.k), em.ints(range(g.nd, 2))]);
    return em.reshape(em.reduce('ReduceSum', em.reshape(r, [g.N, g.O, ...g.k]), [0], false), [g.O, 1, ...g.k]);
  }
  if (form === 'taps-gemm') {
    // Tap by tap, one Gemm over N·L each: dW[:, :, t] = dY [O, N·L] · slice_t(X)ᵀ [N·L, C]. X and dY
    // are transposed to channels-first ([C, N, sp], [O, N, sp]: one copy of each) so that every tap's
    // strided Slice of the padded X is already the [C, N·L] operand; nothing K times larger than X is
    // transposed, and no one-hot Conv builds the columns.
    const perm = [1, 0, ...range(g.nd, 2)];
    const dy2 = em.reshape(em.transpose(dY, perm), [g.O, g.N * L]);
    const per = tapSlices(em, g, em.transpose(x, perm)).map((t) => em.unsqueeze(em.op('Gemm', [dy2, em.reshape(t, [g.C, g.N * L])], { transB: 1 }), [2]));
    return em.reshape(per.length === 1 ? per[0]! : em.op('Concat', per, { axis: 2 }), [g.O, g.C, ...g.k]);
  }
  if (form === 'onehot-dy') {
    const Lx = prod(g.inSp);
    const oh = new Float32Array(g.O * K * K);
    for (let o = 0; o < g.O; o++) for (let t = 0; t < K; t++) oh[(o * K + t) * K + (K - 1 - t)] = 1; // taps reversed
    const wk = em.constant(f32([g.O * K, 1, ...g.k], oh), 'im2col_dy_onehot');
    const pads = [...g.k.map((k, i) => k - 1 - g.padB[i]!), ...g.k.map((k, i) => k - 1 - g.padE[i]!)];
    const cols = em.op('Conv', [dY, wk], { group: g.O, kernel_shape: g.k, pads }); // [N, O·K, inSp...]
    const m = em.op('MatMul', [em.reshape(cols, [g.N, g.O * K, Lx]), em.transpose(em.reshape(x, [g.N, g.C, Lx]), [0, 2, 1])]); // [N, O·K, C]
    const r = em.reduce('ReduceSum', m, [0], false);
    return em.reshape(em.transpose(em.reshape(r, [g.O, K, g.C]), [0, 2, 1]), [g.O, g.C, ...g.k]);
  }
  if (form === 'slices-mulsum') {
    // Depthwise, tap by tap: dW[c, t] = Σ_n,p slice_t(X)[n, c, p] dY[n, c, p].
    const sums = tapSlices(em, g, x).map((t) => em.reduce('ReduceSum', em.mul(t, dY), [0, ...range(g.nd, 2)], false));
    const cat = em.op('Concat', sums.map((s) => em.unsqueeze(s, [1])), { axis: 1 }); // [C, K]
    return em.reshape(cat, [g.O, 1, ...g.k]);
  }
  const cols = im2col(em, g, x, form.startsWith('slices') ? 'slices' : form.startsWith('gather') ? 'gather' : 'onehot'); // [N, C·K, outSp]
  if (form === 'onehot-mulsum' || form === 'gather-mulsum') {
    const c4 = em.reshape(cols, [g.N, g.C, K, L]);
    const d4 = em.reshape(dY, [g.N, g.C, 1, L]);
    return em.reshape(em.reduce('ReduceSum', em.mul(c4, d4), [0, 3], false), [g.O, 1, ...g.k]);
  }
  if (form === 'onehot-swapped') {
    // MatMul(cols [N, C·K, L], dYᵀ [N, L, O]) then the sum over N: the transposed operand is dY, not the K-times-larger columns.
    const m = em.op('MatMul', [em.reshape(cols, [g.N, g.C * K, L]), em.transpose(em.reshape(dY, [g.N, g.O, L]), [0, 2, 1])]);
    return em.reshape(em.transpose(em.reduce('ReduceSum', m, [0], false), [1, 0]), [g.O, g.C, ...g.k]);
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
//   Per-phase Convs were measured again on the depthwise stride-2 layers of MobileNetV2 at N = 16
//   with the weight a constant (Tent), where those Convs get the NCHWc kernels and ConvTranspose
//   does not (bench/results/conv-grad-forms-depthwise-dx-baked.md, load average ≈ 20, p25 ratio to
//   ConvTranspose): 'phases' 1.72 at 96ch 112²→56², 1.79 at 144ch 56²→28², 1.70 at 192ch
//   28²→14², 1.36 at 576ch 14²→7²; 'polyphase' 1.39–1.94. ConvTranspose stays in the portable
//   graph. Session 26: for a dense (group 1) conv, 'phases' with the interleave by two inner
//   Concats instead of DepthToSpace, its Convs on the blocked kernels (a fed weight's through
//   src/onnx/nchwc.ts), made whole Tent steps 0.92–0.97× and full steps 0.95–0.97× on
//   onnxruntime-node (and Tent 1.02–1.03× on onnxruntime-web's wasm), so a Node-only pass writes
//   it in the session's copy: src/train/strided-dx-phases.ts.
// Flipping the fed weight for the stride-1 dX ('wflip' rows of
//   bench/results/conv-grad-forms-flip.md, ResNet-18 3×3 layers, load average ≈ 20): the C↔O
//   Transpose followed by a MatMul with the k²×k² tap-reversal matrix ('conv-flip-matmul') beats
//   onnxruntime's Slice with negative steps, which copies element by element: p25 ratio 0.48 at
//   512×512×3×3 (N=64, 2×2), 0.77 at 512 (N=16, 7×7), 0.73 at 256, 0.80 at 256 (4×4), 0.66 at
//   128, 0.63–0.65 at 64 channels; a Gather of whole tap planes between two Transposes won only
//   on the 64-channel weights (0.65, 0.88) and lost on the larger ones (1.03–2.95). The whole dX (flip + Conv) ratio was 0.45–1.02 (the Conv dominates and
//   scatters under that load). With the weight a constant onnxruntime folds all three flips alike
//   (the optimized graph is ReorderInput, Conv, ReorderOutput: bench --set flip prints it).
//   The MatMul is exact (each output is one weight times 1 plus zeros) unless a weight is ±Inf or
//   NaN, which then also spreads NaN to the other taps of its kernel.
//
// Few output positions (N·OH·OW < 256: batch 2 at 64×64 from ResNet's third stage on), session 31:
//   the products are small and the copies of a weight-sized tensor each step cost more than they
//   save. A fed dense weight's flip for the stride-1 dX (a Transpose, the reversal MatMul and a
//   Reshape over O·C·k² values; a constant's onnxruntime folds) goes: ConvTranspose reads W as it
//   is. (Grouped weights keep the flip: they are small, and onnxruntime's grouped ConvTranspose is
//   slow: with it Xception-41, MobileOne-S0, EfficientNet-B0 and ConvNeXt-atto lost 5–8 % at batch 8.) And
//   the taps dW form ('taps-gemm', K Gemms of [O, C] then a Concat that interleaves them into
//   [O, C, K]) gives way to one Gemm over the one-hot columns, which are small there. Full steps
//   of 30 timm CNNs at 64×64, these rules / before, alternating in one process at 2 threads
//   (bench/step-switches.ts; bench/results/conv-few-positions-s31-b{2,8}.md): batch 2 median
//   0.82 (0.69–0.93, every one faster), batch 8 median 0.95 (0.86–1.02). Either change alone gave
//   0.81–0.97 (dX) and 0.85–0.99 (dW) at batch 2. Batch 64 at 64×64 has ≥ 256 positions
//   everywhere, so nothing changes there; Tent and LoRA steps (constant weights, no dW) neither.
/**
 * Output positions (N·OH·OW) below which a conv's weight-sized copies per step cost more than they
 * save (see above); benches set 0 to compare. The Node-only blocked-kernel pass has its own bound,
 * measured the same way and also 256 (MIN_BLOCKED_POSITIONS, src/onnx/nchwc.ts).
 */
export const weightCopies = { minPositions: 256 };
const positions = (g: ConvGeom) => g.N * prod(g.outSp);

// Per backend (RuntimeBackend.faults): the flipped Conv has the forward's groups with C/group outputs
// each, so where the backend gets that grouped Conv wrong ConvTranspose is taken; where ConvTranspose
// is wrong with unequal begin and end pads (WebGPU), 'convtranspose-sympads' makes them equal.
export function pickDx(g: ConvGeom, faults: BackendFaults = runtimeFaults(), fedWeight = false): DxForm {
  const flipPays = !fedWeight || g.group > 1 || positions(g) >= weightCopies.minPositions;
  if (flipPays && dxApplies(g, 'conv-flip-matmul') && !faults.groupedConv?.(g.group, g.C / g.group)) return 'conv-flip-matmul';
  const p = transposePads(g, false)!;
  if (faults.convTransposeUnequalPads && p.padE.some((e, i) => e !== g.padB[i]) && dxApplies(g, 'convtranspose-sympads')) return 'convtranspose-sympads';
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
// Stride 1, groups 1 (session 6, 2026-12-02): no im2col at all, one Gemm per tap over N·L on the
//   channels-first X ('taps-gemm'): new/old at 1 intra-op thread, ms medians of 22 interleaved runs,
//   N = 64, load average 3–5 (ratios only; bench/conv-dw-taps.ts): 3x3 32ch 28x28 0.70–0.73, 64ch
//   14x14 0.59–0.64, 128ch 7x7 (against onehot-gemm) 0.65–0.72; at 2 threads 0.75, 0.67, 0.55. With
//   few input channels each tap's Gemm is nearly a matrix-vector product and it loses (28x28 → 32ch:
//   C = 1 4–11×, C = 3 2.5–3.8×, C = 8 1.10–1.13×; C = 16 0.75–0.78×), so it needs C ≥ 16. At
//   stride 2 it ties or loses (32→64 28x28: 0.98–1.2), so stride 2 keeps the one-hot im2col. Taps
//   as contiguous runs of the row-padded, flattened X (dY zero-padded to the same width) lost to it
//   (1.05–1.23). The CNN's RMT step (three branches, every parameter) went 0.87
//   (bench/continual/deep-forms.ts --tag dwtaps-steps).
//
// Depthwise (one input channel per group), bench/results/conv-grad-forms-depthwise-dw.md (N = 16,
// MobileNetV2 / EfficientNet-B0 layers; p25 of 8 interleaved rounds, machine under load average
// ≈ 20 from other jobs, so ratios only): 'conv-nc', one Conv of X as [1, N·C, H, W] with dY as
// its kernel, wins where the one-hot im2col wastes most (k² MACs per column entry, 25 for 5×5)
// or the per-sample products are short (L = OH·OW ≤ 196): conv-nc / onehot-matmul = 0.62 at 5×5
// s1 240ch 28², 0.56 at 5×5 s1 480ch 14², 0.69 at 5×5 s2 144ch 56²→28², 0.57 at 3×3 960ch 7²,
// 0.68 at 3×3 s2 576ch 14²→7², 0.87 at 3×3 384ch 14². It loses where L is large with 3×3: 1.66
// at 3×3 144ch 56², 1.52 at 32ch 112², 1.14 at s2 144ch 56²→28² (onehot-matmul kept there).
// Shifted products (one Slice per tap, Mul, ReduceSum over N and space: 'slices-mulsum') lost
// everywhere (1.0–2.9× onehot-matmul), as did the Gather im2col (2.6–4.7×, measured on the two
// 112² layers, first run in conv-grad-forms-summary.md) and Mul + ReduceSum over the one-hot columns (1.05–1.7×).
/** Whether stride-1 dense convs take the tap-by-tap Gemm dW ('taps-gemm'); benches switch it off to compare. */
export const dwTaps = { current: true };
/**
 * Dense convs with ≥ 64 output positions take 'onehot-swapped' (session 25): MatMul(cols
 * [N, C·K, L], dYᵀ [N, L, O]), the sum over N, one small Transpose; where the taps form would
 * apply (it builds no K-times-larger columns) only while the columns stay within maxColumnBytes.
 * Full steps, this rule / the forms before, alternating in one process at 2 threads
 * (bench/step-forms.ts --form swapped --config full, and a scratch A/B on the real-model bench's
 * exports): ESPCN 0.75–0.76, fast-neural-style 0.89–0.94, ResNet-18 64 0.97–0.98, ResNet-18 224
 * 0.99; CycleGAN, MODNet, Real-ESRGAN, U²-Net, ConvNeXt V2, the 3-D U-Net, BiT 0.95–0.99 and YOLOv8
 * 1.00–1.03 (measured without the cap). Without the cap cnn28 was 0.92–0.95 but its peak RSS rose
 * from 291–301 to 349–356 MB (its 32-channel 28×28 columns are 58 MB); with a 32 MB cap 329 MB and
 * 1.00; with 16 MB, 307 MB. On every layer (L < 64 too) ResNet-18 64 was 1.37: at 4×4 and 2×2 the
 * per-sample products are too short. Session 26 raised the cap from 16 to 128 MB: full steps 0.94
 * (cnn28) and 0.93 (ResNet-18 64) at 64 MB (`bench/step-forms.ts --form swapped-64mb --config
 * full`), and peak RSS, one child process each (bench/foreign.ts --child, two rounds): cnn28
 * 347–355 against 311–313 MB (PyTorch's full step: 437), ResNet-18 64 511–517 against 558–601
 * (PyTorch 603), ResNet-18 224 at batch 16 916–920 (128 MB and over: its 56² layers' 115 MB
 * columns) against 1027–1103 at 16–64 MB, 1211–1261 against 1261–1374 ms. The taps form's own
 * copies (X transposed and padded, a slice per tap) weigh more there than the columns; the cap
 * stays for larger batches, where the columns grow past what the taps hold.
 */
export const dwSwapped = { current: true, maxColumnBytes: 128 * 2 ** 20 };

/**
 * Whether narrowing stride-1 convs (O < C) take their columns from dY ('onehot-dy', session 32);
 * benches switch it off to compare. Alone, against 'onehot-swapped' (2 threads, medians of 15,
 * tmp bench): O = 8 (a LoRA A conv) 0.14–0.31 of the time on [64, 32, 28, 28], [64, 64, 14, 14],
 * [16, 64, 56, 56] and [16, 256, 14, 14]; O = C/2 0.64–0.73; O = C the same (not taken).
 */
export const dwDyColumns = { current: true };

//
// Per backend (RuntimeBackend.faults, issue 14): a form the backend gets wrong is not emitted there.
// Where a grouped Conv is wrong (onnx/webgpu-faults.ts) the one-hot im2col (C groups of K
// outputs) and 'conv-nc' (N·C groups of O/C outputs) are out; where a Concat may take fewer inputs
// than the K taps, so are 'taps-gemm' and the per-tap Slice im2col. What is left for the im2col is
// the per-tap Slices when their Concat fits, else one Gather ('gather-matmul': no grouped Conv, no
// Concat). Same numbers (the equality tests above cover every form); elsewhere nothing changes.
export function pickDw(g: ConvGeom, faults: BackendFaults = runtimeFaults()): DwForm {
  const K = prod(g.k);
  const bad = (group: number, outs: number) => faults.groupedConv?.(group, outs) === true;
  const tapsFit = K <= (faults.maxConcatInputs ?? Infinity);
  const tapsWin = dwTaps.current && g.group === 1 && g.C >= 16 && K > 1 && g.strides.every((s) => s === 1) && tapsFit && positions(g) >= weightCopies.minPositions;
  const colsBytes = 4 * g.N * g.C * K * prod(g.outSp);
  if (dwDyColumns.current && g.O < g.C && prod(g.outSp) >= 64 && dwApplies(g, 'onehot-dy') && !bad(g.O, K) && 4 * g.N * g.O * K * prod(g.inSp) <= dwSwapped.maxColumnBytes) return 'onehot-dy';
  if (dwSwapped.current && g.group === 1 && prod(g.outSp) >= 64 && !isPointwise(g) && !bad(g.C, K) && (!tapsWin || colsBytes <= dwSwapped.maxColumnBytes)) return 'onehot-swapped';
  if (g.group > 1 && g.group === g.C && (K >= 25 || prod(g.outSp) <= 196) && !bad(g.N * g.C, g.O / g.C)) return 'conv-nc';
  if (tapsWin) return 'taps-gemm';
  if (bad(g.C, K) && !isPointwise(g)) return tapsFit ? (g.group === 1 && prod(g.outSp) <= 64 ? 'slices-gemm' : 'slices-matmul') : 'gather-matmul';
  return g.group === 1 && prod(g.outSp) <= 64 ? 'onehot-gemm' : 'onehot-matmul';
}

registerRules({
  Conv(ctx: GradContext, node, [dY], needs) {
    const em = ctx.em;
    if (ctx.opset < 11) throw new Error(`the Conv gradient needs opset ≥ 11 (Slice and Pad with inputs), the model has opset ${ctx.opset}`);
    const [x, w, b] = node.inputs as [string, string, string | undefined];
    const g = convGeom(node, ctx.shape(x), ctx.shape(w), ctx.shape(node.outputs[0]!));
    const dX = needs[0] ? convDx(em, g, dY!, w, pickDx(g, runtimeFaults(), !ctx.constant(w))) : null;
    const dW = needs[1] ? convDw(em, g, x, dY!, pickDw(g)) : null;
    const dB = b && needs[2] ? em.reduce('ReduceSum', dY!, [0, ...range(g.nd, 2)], false) : null;
    return [dX, dW, dB];
  },
});
