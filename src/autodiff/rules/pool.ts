// Pooling: MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool (1-D, 2-D, 3-D), and MaxUnpool.
//
// MaxPool routes each output gradient to the input its window picked. Where ScatterElements
// can do the routing (disjoint windows, or opset ≥ 16 for reduction 'add'), the rule asks the
// forward node for its optional Indices output, adding it when absent; otherwise it recomputes
// the first ArgMax of each window (see MaxPoolGradForm and pickMaxPoolForm).
// Ties: onnxruntime's Indices hold the first maximum in window scan order (row-major over the
// kernel taps; padding never wins), and ArgMax picks the first maximum too, so every form and
// GlobalMaxPool send a tied window's whole gradient to its first maximal input, as PyTorch does;
// gradients are never split between ties.
// Needs opset ≥ 11 (ScatterElements, Pad with its pads as an input).
import { windowGeom, kext, transposePads, type WindowGeom } from './window.ts';
import { attrInt, attrInts, type Node } from '../../onnx/ir.ts';
import type { Emitter } from '../../onnx/emitter.ts';
import { f32, i64 } from '../../onnx/tensor.ts';
import { registerRules, type GradContext } from '../rule.ts';
import { runtimeFaults, type BackendFaults } from '../../onnx/runtime.ts';

/** Static geometry of one pooling node; pads resolved from auto_pad. */
export type PoolGeom = WindowGeom;

const prod = (xs: number[]) => xs.reduce((a, b) => a * b, 1);
const range = (n: number, from = 0) => Array.from({ length: n }, (_, i) => i + from);

export function poolGeom(node: Node, x: number[], y: number[]): PoolGeom {
  const nd = x.length - 2;
  if (nd < 1) throw new Error(`input has shape [${x}], expected rank ≥ 3 (N, C, spatial...)`);
  const k = attrInts(node, 'kernel_shape');
  if (!k || k.length !== nd) throw new Error(`kernel_shape is [${k ?? ''}], expected ${nd} values for input [${x}]`);
  return windowGeom(node, x, y, k);
}


/**
 * col2im: sum [M, K, outSp...] values (one channel per window tap, or K = 1 for one value per
 * window) back into [M, 1, inSp...] by the pooling geometry, as a ConvTranspose with the given
 * [K, 1, k...] kernel. Its pads and output_padding make the output exactly inSp, ceil mode too.
 */
function col2im(em: Emitter, g: PoolGeom, cols: string, channels: number, kernel: Float32Array): string {
  // Where ConvTranspose is wrong with unequal begin and end pads (WebGPU, onnx/webgpu-faults.ts),
  // equal pads with the same output where that is possible (window.ts transposePads).
  const { padE, outPad } = (runtimeFaults().convTransposeUnequalPads && transposePads(g, true)) || transposePads(g, false)!;
  const w = em.constant(f32([channels, 1, ...g.k], kernel), 'col2im_kernel');
  const attrs: Record<string, number[]> = { strides: g.strides, dilations: g.dil, pads: [...g.padB, ...padE], kernel_shape: g.k };
  if (outPad.some((p) => p > 0)) attrs.output_padding = outPad;
  return em.op('ConvTranspose', [cols, w], attrs);
}

/** Whether no input element lies in two windows (then a scatter needs no accumulation). */
const disjointWindows = (g: PoolGeom) => g.strides.every((s, i) => s >= kext(g)[i]!);

/**
 * 'scatter': ScatterElements of dY into zeros at the forward node's Indices (windows must be
 * disjoint, so no index repeats); 'scatter-add': the same with reduction 'add' (opset ≥ 16);
 * 'onehot-argmax': no Indices; im2col of X (padded with the lowest float) by a Conv with a one-hot
 * kernel, the first ArgMax of each window, and the routed dY summed back through a ConvTranspose
 * (col2im); any geometry and opset.
 */
export type MaxPoolGradForm = 'scatter' | 'scatter-add' | 'onehot-argmax';

export const maxPoolFormNeedsIndices = (f: MaxPoolGradForm) => f !== 'onehot-argmax';

export function maxPoolFormApplies(g: PoolGeom, f: MaxPoolGradForm, opset: number): boolean {
  if (f === 'scatter') return disjointWindows(g);
  if (f === 'scatter-add') return opset >= 16;
  return true;
}

/**
 * Measured by bench/conv-grad-forms.ts (the forward MaxPool and its gradient in one graph, N=64,
 * 2 threads; ms p25 of 40-50 interleaved runs, five runs on the shared 2-core machine):
 *   2x2 stride 2, 32×28×28:        scatter-add 9.4-18.2, scatter 13.2-32.1, onehot-argmax 13.7-32.0
 *   3x3 stride 2 pad 1, 64×28×28:  scatter-add 25.0-42.4, onehot-argmax 27.6-89.8
 * scatter-add was the fastest in every run (a col2im of the Indices, Mod and Equal against a table
 * of tap positions then a ConvTranspose, was the slowest and was dropped). The Indices forms pay
 * mostly in the forward MaxPool, which onnxruntime runs several times slower when it also writes
 * Indices; the argmax form pays in its im2col Conv and col2im ConvTranspose.
 * ResNet-18's stem MaxPool (3x3 stride 2 pad 1; bench/activation-forms.ts, forward + gradient,
 * kernel time over onehot-argmax at opset 13, as the torchvision exports): [16,64,112,112]
 * scatter-add 0.67 (needs opset ≥ 16), Indices + one overwrite-scatter per phase of disjoint
 * windows (valid at opset 11) 1.05; [64,64,32,32] 0.63 and 0.88. The per-phase scatter pays the
 * Indices forward (4-5× the plain MaxPool in a profile) and was not kept; OneHot in place of Equal + Cast,
 * and a ScatterElements into the [M, K, L] taps in place of the routing Mul, were slower too.
 */
// Per backend (RuntimeBackend.faults): where MaxPool's Indices output fails to run (onnxruntime-web's
// WebGPU provider, onnx/webgpu-faults.ts), 'onehot-argmax' is taken at every opset. Its one-hot
// im2col is a Conv of one group (M·C planes of one channel, K outputs), which WebGPU computes right
// (the grouped-Conv fault is about group > 1).
export function pickMaxPoolForm(g: PoolGeom, opset: number, faults: BackendFaults = runtimeFaults()): MaxPoolGradForm {
  if (faults.maxPoolIndices) return 'onehot-argmax';
  if (opset >= 16) return 'scatter-add';
  return disjointWindows(g) ? 'scatter' : 'onehot-argmax';
}

/**
 * dY routed to the first maximum along axis 1 of `blocks` [M, K, L] (window taps on axis 1):
 * [M, K, L] with dY [M, 1, L] where the tap is the window's ArgMax, zeros elsewhere.
 */
function routeToArgmax(em: Emitter, blocks: string, K: number, dY: string): string {
  const am = em.op('ArgMax', [blocks], { axis: 1, keepdims: 1 }); // [M, 1, L], first maximum on ties
  const hit = em.op('Equal', [am, em.constant(i64([K, 1], range(K)), 'tap_ids')]);
  return em.mul(em.op('Cast', [hit], { to: 1 }), dY);
}

/** MaxPool input gradient; `indices` (flat, row-major over [N, C, inSp...]) for the forms that read them. */
export function maxPoolDx(em: Emitter, g: PoolGeom, x: string, dY: string, indices: string | null, form: MaxPoolGradForm): string {
  const xShape = [g.N, g.C, ...g.inSp];
  const total = prod(xShape);
  const K = prod(g.k), L = prod(g.outSp), M = g.N * g.C;
  const eye = () => {
    const e = new Float32Array(K * K);
    for (let t = 0; t < K; t++) e[t * K + t] = 1;
    return e;
  };
  if (form === 'scatter' || form === 'scatter-add') {
    // The zeros come from the run's own Indices (i − i = 0, exact for integers), not from a
    // ConstantOfShape: onnxruntime folds that into an initializer the session keeps for its whole
    // life (16 MB on ResNet-18 at 64×64 batch 64, 51 MB at 224 batch 16: docs/speed.md, session 6);
    // built at run time they exist only while this gradient is formed, at the end of the backward.
    const flat = em.reshape(indices!, [-1]);
    const first = em.op('Slice', [flat, em.ints([0]), em.ints([1])]);
    const zero = em.op('Cast', [em.op('Sub', [first, first])], { to: 1 });
    const zeros = em.op('Expand', [zero, em.ints([total])]);
    const attrs: Record<string, number | string> = form === 'scatter-add' ? { axis: 0, reduction: 'add' } : { axis: 0 };
    const s = em.op('ScatterElements', [zeros, flat, em.reshape(dY, [-1])], attrs);
    return em.reshape(s, xShape);
  }
  // im2col of X padded with the lowest float (an exact 0·pad in the one-hot conv, unlike -inf),
  // far enough for ceil-mode windows that overhang; then ArgMax per window and col2im.
  const e = kext(g);
  const endPad = g.inSp.map((h, i) => Math.max(g.padE[i]!, (g.outSp[i]! - 1) * g.strides[i]! + e[i]! - g.padB[i]! - h));
  const xp = em.op('Pad', [x, em.ints([0, 0, ...g.padB, 0, 0, ...endPad]), em.constant(f32([], [-3.4028234663852886e38]), 'lowest')]);
  const padded = g.inSp.map((h, i) => h + g.padB[i]! + endPad[i]!);
  const wk = em.constant(f32([K, 1, ...g.k], eye()), 'im2col_onehot');
  const cols = em.op('Conv', [em.reshape(xp, [M, 1, ...padded]), wk], { strides: g.strides, dilations: g.dil, kernel_shape: g.k }); // [M, K, outSp]
  const r = routeToArgmax(em, em.reshape(cols, [M, K, L]), K, em.reshape(dY, [M, 1, L]));
  return em.reshape(col2im(em, g, em.reshape(r, [M, K, ...g.outSp]), K, eye()), xShape);
}

/** The flat row-major indices of a MaxPool node, adding the Indices output when it is absent. */
function maxPoolIndices(ctx: GradContext, node: Node, g: PoolGeom): string {
  const em = ctx.em;
  const existing = node.outputs[1];
  if (!existing) {
    // The forward node did not expose Indices, so no one reads them: ask for row-major ones.
    const name = em.fresh(`${node.name || 'maxpool'}_indices`);
    node.outputs[1] = name;
    if (node.attrs.storage_order) node.attrs = { ...node.attrs, storage_order: { kind: 'int', value: 0 } };
    return name;
  }
  if (attrInt(node, 'storage_order', 0) === 0) return existing;
  if (g.nd !== 2) throw new Error(`storage_order 1 with ${g.nd} spatial dims is not supported`);
  // Column-major within each [H, W] plane: idx = base + w·H + h → base + h·W + w.
  const [H, W] = g.inSp as [number, number];
  const plane = em.constant(i64([], [H * W]), 'plane');
  const base = em.sub(existing, em.op('Mod', [existing, plane]));
  const within = em.op('Mod', [existing, plane]);
  const h = em.op('Mod', [within, em.constant(i64([], [H]), 'H')]);
  const w = em.op('Div', [within, em.constant(i64([], [H]), 'H')]);
  return em.add(base, em.add(em.mul(h, em.constant(i64([], [W]), 'W')), w));
}

export function averagePoolDivisors(g: PoolGeom, countIncludePad: boolean): Float32Array {
  // onnxruntime (and PyTorch): a window counts the cells inside [-pB, in + pE) when pads are
  // included, else those inside [0, in); ceil-mode windows are clipped likewise.
  const L = prod(g.outSp);
  const out = new Float32Array(L);
  const pos = new Array<number>(g.nd);
  for (let p = 0; p < L; p++) {
    let q = p;
    for (let i = g.nd - 1; i >= 0; i--) { pos[i] = q % g.outSp[i]!; q = Math.floor(q / g.outSp[i]!); }
    let count = 1;
    for (let i = 0; i < g.nd; i++) {
      const lo = countIncludePad ? -g.padB[i]! : 0, hi = countIncludePad ? g.inSp[i]! + g.padE[i]! : g.inSp[i]!;
      let c = 0;
      for (let t = 0; t < g.k[i]!; t++) {
        const h = pos[i]! * g.strides[i]! + t * g.dil[i]! - g.padB[i]!;
        if (h >= lo && h < hi) c++;
      }
      count *= c;
    }
    out[p] = count;
  }
  return out;
}

/**
 * AveragePool input gradient: dY over each window's count, spread back over the window by a
 * ConvTranspose with an all-ones kernel (col2im), for any geometry. For tiling windows (2x2
 * stride 2) broadcasting dY over each block with Expand was measured too and was several times
 * slower: onnxruntime's Expand and Transpose copy element by element when the inner dim is tiny.
 */
export function averagePoolDx(em: Emitter, g: PoolGeom, dY: string, countIncludePad: boolean): string {
  const div = averagePoolDivisors(g, countIncludePad);
  const uniform = div.every((d) => d === div[0]);
  const scaled = uniform
    ? em.mul(dY, em.scalar(1 / div[0]!))
    : em.mul(dY, em.constant(f32(g.outSp, div.map((d) => (d > 0 ? 1 / d : 0))), 'avgpool_inv_count'));
  const dx = col2im(em, g, em.reshape(scaled, [g.N * g.C, 1, ...g.outSp]), 1, new Float32Array(prod(g.k)).fill(1));
  return em.reshape(dx, [g.N, g.C, ...g.inSp]);
}

registerRules({
  MaxPool(ctx, node, [dY]) {
    if (!dY) return [null];
    if (ctx.opset < 11) throw new Error(`the MaxPool gradient needs opset ≥ 11, the model has opset ${ctx.opset}`);
    const x = node.inputs[0]!;
    const g = poolGeom(node, ctx.shape(x), ctx.shape(node.outputs[0]!));
    const form = pickMaxPoolForm(g, ctx.opset);
    const idx = maxPoolFormNeedsIndices(form) ? maxPoolIndices(ctx, node, g) : null;
    return [maxPoolDx(ctx.em, g, x, dY, idx, form)];
  },
  AveragePool(ctx, node, [dY]) {
    const x = node.inputs[0]!;
    const g = poolGeom(node, ctx.shape(x), ctx.shape(node.outputs[0]!));
    return [averagePoolDx(ctx.em, g, dY!, attrInt(node, 'count_include_pad', 0) === 1)];
  },
  GlobalAveragePool(ctx, node, [dY]) {
    const xs = ctx.shape(node.inputs[0]!);
    const em = ctx.em;
    return [em.op('Expand', [em.mul(dY!, em.scalar(1 / prod(xs.slice(2)))), em.ints(xs)])];
  },
  MaxUnpool(ctx, node, [dY], needs) {
    // y is zeros with x[k] at flat position indices[k] of the whole output (MaxPool's Indices,
    // SegNet's decoder), so dX[k] = dY.flat[indices[k]]; the indices and output_shape carry none.
    const em = ctx.em;
    const [x, indices] = node.inputs as [string, string];
    const dx = needs[0] ? em.reshape(em.op('Gather', [em.reshape(dY!, [-1]), em.reshape(indices, [-1])], { axis: 0 }), ctx.shape(x)) : null;
    return node.inputs.map((_, i) => (i === 0 ? dx : null));
  },
  GlobalMaxPool(ctx, node, [dY]) {
    const em = ctx.em;
    const x = node.inputs[0]!;
    const xs = ctx.shape(x);
    const M = xs[0]! * xs[1]!, L = prod(xs.slice(2));
    const arg = em.op('ArgMax', [em.reshape(x, [M, L])], { axis: 1, keepdims: 1 }); // first maximum
    const hit = em.op('Equal', [arg, em.constant(i64([1, L], range(L)), 'positions')]);
    return [em.reshape(em.op('Where', [hit, em.reshape(dY!, [M, 1]), em.scalar(0)]), xs)];
  },
});
