// A convolution with constant weights on a tiny image is a dense linear map: on ResNet-18's
// layer4 at 64×64 input ([N, 512, 2, 2], 3×3 pad 1) 5 of each output's 9 taps read padding, and
// the convolution kernel (blocked or not) runs 4 outputs per channel at a time. There the step
// (whose frozen convs are constants, as in Tent/EATA/SAR) writes the conv as
// Reshape [N, C·H·W] → MatMul with a constant [C·H·W, C'·H'·W'] matrix → Reshape (+ bias), and
// its input gradient follows as a Gemm reading the same constant transposed (transB: no copy).
// bench/tiny-conv-dense.ts, alternating in one process: [64, 512, 2, 2] 512 out 0.21× the Conv's
// time; [64, 256, 4, 4] 1.94× (more multiply-adds than the conv), so the form is used only where
// the matrix has no more entries than the conv has multiply-adds per sample (C'·H'·W' · C·k²),
// and at most 16 MB (tinyConvDense). It costs memory: the matrix, 16 MB for a 512-channel 2×2
// layer (the conv kernel is 9 MB).
//
// A trained weight (a full step; a LoRA A conv) is fed each step, so its matrix is built in the
// step every step (fedDenseMatrixNodes), from 64 output positions (FED_MIN_POSITIONS). On
// ResNet-18's layer4 at 64×64 the fed weight's blocked Conv took 12 ms per call at batch 64, forward
// and input gradient alike (1.2 G multiply-adds, most on padding), plus the weight's reorders:
// the full step went 535–550 → 460–466 ms, peak RSS unchanged (bench/foreign.ts --child, session 32).
//
// The shapes come from a static propagation through the ops image models are made of
// (src/onnx/static-shapes.ts); a conv whose input shape it cannot tell is left as it is.
import type { Graph, Model, Node } from '../onnx/ir.ts';
import { attrInt, attrInts, attrString, isDefaultDomain as isDefault } from '../onnx/ir.ts';
import { f32, i64, type Tensor } from '../onnx/tensor.ts';
import type { InputSignature } from '../onnx/shapes.ts';
import { staticShapes } from '../onnx/static-shapes.ts';

/**
 * On by default; tests and bench/step-forms.ts switch it off to compare. `maxRatio`: the most
 * matrix entries per conv multiply-add (per sample) where the dense form is used. `fed`: also for
 * trained weights (fedDenseMatrixNodes), where the matrix is built from the weight every step.
 */
export const tinyConvDense: { current: boolean; fed: boolean; maxRatio: number; maxBytes: number; matrix: 'graph' | 'js' } = { current: true, fed: true, maxRatio: 1, maxBytes: 16 * 2 ** 20, matrix: 'graph' };

/**
 * A trained weight's matrix is built every step, a cost that does not shrink with the batch: the
 * dense form pays from 64 output positions (batch 16 on a 2×2 image). ResNet-18 64's full step,
 * fed dense / Conv (tmp A/B, alternating in one process): batch 8 (32 positions) 1.06, 16: 0.92,
 * 32: 0.79, 64: 0.83.
 */
const FED_MIN_POSITIONS = 64;

/** The dense [C·H·W, C'·H'·W'] matrix of a 2-D group-1 convolution (y = x · M per sample). */
export function denseConvMatrix(w: Tensor, inDims: number[], outDims: number[], node: Node): Float32Array {
  const [C, H, W] = inDims as [number, number, number];
  const [Co, Ho, Wo] = outDims as [number, number, number];
  const [, , kh, kw] = w.dims as [number, number, number, number];
  const s = attrInts(node, 'strides', [1, 1]), d = attrInts(node, 'dilations', [1, 1]);
  const p = attrString(node, 'auto_pad', 'NOTSET') === 'VALID' ? [0, 0, 0, 0] : attrInts(node, 'pads', [0, 0, 0, 0]);
  const wd = w.data as Float32Array;
  const O = Co * Ho * Wo, HoWo = Ho * Wo;
  // The weight as [ci, a, b, co] so that the innermost loop (over co) reads it contiguously.
  const wt = new Float32Array(wd.length);
  for (let co = 0; co < Co; co++) for (let ci = 0; ci < C; ci++) for (let a = 0; a < kh; a++) for (let b = 0; b < kw; b++) {
    wt[((ci * kh + a) * kw + b) * Co + co] = wd[((co * C + ci) * kh + a) * kw + b]!;
  }
  const m = new Float32Array(C * H * W * O);
  for (let ci = 0; ci < C; ci++) for (let a = 0; a < kh; a++) for (let b = 0; b < kw; b++) {
    const wBase = ((ci * kh + a) * kw + b) * Co;
    for (let oh = 0; oh < Ho; oh++) {
      const ih = oh * s[0]! + a * d[0]! - p[0]!;
      if (ih < 0 || ih >= H) continue;
      for (let ow = 0; ow < Wo; ow++) {
        const iw = ow * s[1]! + b * d[1]! - p[1]!;
        if (iw < 0 || iw >= W) continue;
        const row = ((ci * H + ih) * W + iw) * O + oh * Wo + ow;
        for (let co = 0; co < Co; co++) m[row + co * HoWo] += wt[wBase + co]!;
      }
    }
  }
  return m;
}

/**
 * Where the matrix (`tinyConvDense.matrix`): 'graph' builds it in the step graph from the conv
 * weight (gathers of its taps, which onnxruntime constant-folds), so refit holds no JS copy: 48 MB
 * on ResNet-18's layer4 at 64×64 (memory pass 2, docs/speed.md); 'js' bakes denseConvMatrix's.
 * Both give the same matrix: every entry is one weight or zero.
 *
 * The graph form: M[(ci, ih, iw), (co, oh, ow)] = W[co, ci, a, b] with ih = oh·s + a·d − p (and
 * the same for b), zero where no tap fits. W's taps are flattened and padded with one zero tap,
 * one Gather by an [H, W, H', W'] table of flat tap indices (the zero tap where none fits) spreads
 * them, and a Transpose and a Reshape lay the result out as [C·H·W, C'·H'·W']. onnxruntime keeps
 * every folded intermediate until its folding pass ends, so the chain is kept short: this form
 * (Reshape, Pad, Gather, Transpose, Reshape) peaked ~50 MB lower at ResNet-18 64's Tent session
 * creation, and 10–20 MB lower at its first run, than a 4×4 Pad and one Gather per kernel axis
 * (memory pass 2, docs/speed.md).
 */
function denseMatrixNodes(node: Node, w: string, wDims: number[], inDims: number[], outDims: number[], add: (opType: string, inputs: string[], attrs?: Node['attrs']) => string, constant: (base: string, t: Tensor) => string): string {
  const [C, H, W] = inDims as [number, number, number];
  const [Co, Ho, Wo] = outDims as [number, number, number];
  const k = wDims.slice(2) as [number, number];
  const K = k[0] * k[1];
  // One table over (ih, iw, oh, ow): the flat tap a·kw + b, or K (the zero tap) where none fits.
  const table = tapTable(node, k, inDims, outDims);
  const flat = add('Reshape', [w, constant(`${w}_dense_taps_shape`, i64([3], [Co, C, K]))]);
  const padded = add('Pad', [flat, constant(`${w}_dense_pads`, i64([6], [0, 0, 0, 0, 0, 1]))]); // [Co, C, K + 1]
  const both = add('Gather', [padded, constant(`${w}_dense_taps`, i64([H, W, Ho, Wo], table))], { axis: { kind: 'int', value: 2 } }); // [Co, C, H, W, Ho, Wo]
  const laid = add('Transpose', [both], { perm: { kind: 'ints', value: [1, 2, 3, 0, 4, 5] } }); // [C, H, W, Co, Ho, Wo]
  return add('Reshape', [laid, constant(`${w}_dense_shape`, i64([2], [C * H * W, Co * Ho * Wo]))]);
}

/**
 * The dense matrix of a trained (fed) weight, built in the step graph every step in a form whose
 * gradient is two MatMuls and a Transpose: the weight as [C, K, C'] (one Transpose), then one
 * MatMul by a constant 0/1 selection S [H·W·H'·W', K] (S[(i, o), t] = 1 where tap t joins input
 * position i to output position o) gives [C, H·W·H'·W', C'], i.e. rows (ci, i) and columns
 * (o, co) of the matrix. Its gradient is Sᵀ times the matrix's gradient, then the Transpose back:
 * no scatter. The columns are position-major, so the product comes out as [N, H'·W', C'] and
 * takes one activation-sized Transpose to NCHW. Every entry is one weight or zero, as in the
 * constant form (denseMatrixNodes).
 */
function fedDenseMatrixNodes(node: Node, w: string, wDims: number[], inDims: number[], outDims: number[], add: (opType: string, inputs: string[], attrs?: Node['attrs']) => string, constant: (base: string, t: Tensor) => string): string {
  const [C, H, W] = inDims as [number, number, number];
  const [Co, Ho, Wo] = outDims as [number, number, number];
  const k = wDims.slice(2) as [number, number];
  const K = k[0] * k[1];
  const table = tapTable(node, k, inDims, outDims);
  const sel = new Float32Array(table.length * K);
  table.forEach((t, j) => { if (t < K) sel[j * K + t] = 1; });
  const flat = add('Reshape', [w, constant(`${w}_dense_taps_shape`, i64([3], [Co, C, K]))]);
  const taps = add('Transpose', [flat], { perm: { kind: 'ints', value: [1, 2, 0] } }); // [C, K, Co]
  const spread = add('MatMul', [constant(`${w}_dense_select`, f32([table.length, K], sel)), taps]); // [C, H·W·H'·W', Co]
  return add('Reshape', [spread, constant(`${w}_dense_shape`, i64([2], [C * H * W, Ho * Wo * Co]))]);
}

/** Per (ih, iw, oh, ow): the flat tap a·kw + b that joins them, or K = kh·kw where none does. */
function tapTable(node: Node, k: [number, number], inDims: number[], outDims: number[]): number[] {
  const [, H, W] = inDims as [number, number, number];
  const [, Ho, Wo] = outDims as [number, number, number];
  const s = attrInts(node, 'strides', [1, 1]), d = attrInts(node, 'dilations', [1, 1]);
  const p = attrString(node, 'auto_pad', 'NOTSET') === 'VALID' ? [0, 0, 0, 0] : attrInts(node, 'pads', [0, 0, 0, 0]);
  const tap = (axis: 0 | 1, i: number, o: number) => {
    const off = i - o * s[axis]! + p[axis]!;
    const a = off / d[axis]!;
    return off >= 0 && Number.isInteger(a) && a < k[axis]! ? a : -1;
  };
  const K = k[0] * k[1];
  const table: number[] = [];
  for (let ih = 0; ih < H; ih++) for (let iw = 0; iw < W; iw++) for (let oh = 0; oh < Ho; oh++) for (let ow = 0; ow < Wo; ow++) {
    const a = tap(0, ih, oh), b = tap(1, iw, ow);
    table.push(a < 0 || b < 0 ? K : a * k[1] + b);
  }
  return table;
}

/** Why a conv keeps its form, or null when it becomes the dense MatMul. */
function keep(n: Node, g: Graph, sh: Map<string, number[]>, frozen: (t: string) => boolean): string | null {
  if (!isDefault(n) || n.opType !== 'Conv') return 'not a Conv';
  const w = g.initializers.get(n.inputs[1] ?? '');
  if (!w || (!frozen(n.inputs[1]!) && !tinyConvDense.fed) || w.dtype !== 'float32' || w.dims.length !== 4) return 'weight not a float32 4-D initializer (frozen, or trained where tinyConvDense.fed)';
  if (attrInt(n, 'group', 1) !== 1) return 'grouped';
  const b = n.inputs[2];
  if (b && !g.initializers.has(b)) return 'computed bias';
  const x = sh.get(n.inputs[0]!), y = sh.get(n.outputs[0]!);
  if (!x || !y) return 'shape unknown';
  const I = x[1]! * x[2]! * x[3]!, O = y[1]! * y[2]! * y[3]!;
  const macs = O * w.dims[1]! * w.dims[2]! * w.dims[3]!;
  // Strictly fewer: a 1×1 conv on a 1×1 image (an SE block's) is already the product, nothing to save.
  if (I * O >= tinyConvDense.maxRatio * macs) return `dense ${I}×${O} is not below the conv's ${macs} multiply-adds per sample`;
  const positions = x[0]! * y[2]! * y[3]!;
  if (!frozen(n.inputs[1]!) && positions < FED_MIN_POSITIONS) return `trained weight over ${positions} output positions (< ${FED_MIN_POSITIONS}): building the matrix costs more than it saves`;
  if (I * O * 4 > tinyConvDense.maxBytes) return `dense matrix ${(I * O * 4 / 2 ** 20).toFixed(1)} MB > ${tinyConvDense.maxBytes / 2 ** 20} MB`;
  return null;
}

/**
 * `model` with each qualifying convolution written as the dense MatMul (a copy; `model` is not
 * changed), or `model` itself when none qualifies. `frozen(name)`: the initializer is baked in the
 * step (not trained, not fed). `assumed`: each rewritten conv's input and the shape its matrix was
 * built for, from the static propagation, for the caller to hold against a probe.
 */
export function denseTinyConvs(model: Model, sig: InputSignature, frozen: (t: string) => boolean): { model: Model; rewritten: string[]; assumed: Map<string, number[]> } {
  if (!tinyConvDense.current) return { model, rewritten: [], assumed: new Map() };
  const g = model.graph;
  const sh = staticShapes(g, sig);
  const chosen = g.nodes.filter((n) => keep(n, g, sh, frozen) === null);
  if (!chosen.length) return { model, rewritten: [], assumed: new Map() };
  const inits = new Map(g.initializers);
  const nodes: Node[] = [];
  const names = new Set([...g.initializers.keys(), ...g.nodes.flatMap((n) => [...n.inputs, ...n.outputs])]);
  const fresh = (base: string) => { let k = base, i = 0; while (names.has(k)) k = `${base}_${++i}`; names.add(k); return k; };
  for (const n of g.nodes) {
    if (!chosen.includes(n)) { nodes.push(n); continue; }
    const [x, wName, b] = n.inputs as [string, string, string | undefined];
    const xd = sh.get(x)!, yd = sh.get(n.outputs[0]!)!;
    const I = xd[1]! * xd[2]! * xd[3]!, O = yd[1]! * yd[2]! * yd[3]!;
    let mName = fresh(`${n.name || wName}_dense`);
    const add = (opType: string, inputs: string[], attrs: Node['attrs'] = {}) => {
      const out = fresh(`${mName}_${opType.toLowerCase()}`);
      nodes.push({ name: fresh(`${out}_node`), opType, domain: '', inputs, outputs: [out], attrs });
      return out;
    };
    const constant = (base: string, t: Tensor) => { const k = fresh(base); inits.set(k, t); return k; };
    const fed = !frozen(wName);
    if (fed) mName = fedDenseMatrixNodes(n, wName, g.initializers.get(wName)!.dims, xd.slice(1), yd.slice(1), add, constant);
    else if (tinyConvDense.matrix === 'js') inits.set(mName, f32([I, O], denseConvMatrix(g.initializers.get(wName)!, xd.slice(1), yd.slice(1), n)));
    else mName = denseMatrixNodes(n, wName, g.initializers.get(wName)!.dims, xd.slice(1), yd.slice(1), add, constant);
    const sIn = fresh(`${mName}_in_shape`), sOut = fresh(`${mName}_out_shape`);
    inits.set(sIn, i64([2], [-1, I]));
    inits.set(sOut, i64([4], [-1, yd[1]!, yd[2]!, yd[3]!]));
    const xf = fresh(`${mName}_x`);
    let yf = fresh(`${mName}_y`);
    const out = n.outputs[0]!;
    nodes.push({ name: fresh(`${n.name}_flatten`), opType: 'Reshape', domain: '', inputs: [x, sIn], outputs: [xf], attrs: {} });
    nodes.push({ name: fresh(`${n.name}_dense`), opType: 'MatMul', domain: '', inputs: [xf, mName], outputs: [yf], attrs: {} });
    // The fed form's columns are (position, channel): [N, H'·W', C'] to [N, C', H'·W'].
    if (fed) yf = add('Transpose', [add('Reshape', [yf, constant(`${mName}_pos_shape`, i64([3], [-1, yd[2]! * yd[3]!, yd[1]!]))])], { perm: { kind: 'ints', value: [0, 2, 1] } });
    if (b) {
      const y4 = fresh(`${mName}_y4`), bShape = fresh(`${mName}_bias_shape`), b4 = fresh(`${mName}_bias4`);
      inits.set(bShape, i64([4], [1, yd[1]!, 1, 1]));
      nodes.push({ name: fresh(`${n.name}_unflatten`), opType: 'Reshape', domain: '', inputs: [yf, sOut], outputs: [y4], attrs: {} });
      nodes.push({ name: fresh(`${n.name}_bias_view`), opType: 'Reshape', domain: '', inputs: [b, bShape], outputs: [b4], attrs: {} });
      nodes.push({ name: fresh(`${n.name}_bias`), opType: 'Add', domain: '', inputs: [y4, b4], outputs: [out], attrs: {} });
    } else {
      nodes.push({ name: fresh(`${n.name}_unflatten`), opType: 'Reshape', domain: '', inputs: [yf, sOut], outputs: [out], attrs: {} });
    }
  }
  // Weights no node reads any more leave the copy (the model keeps them).
  const read = new Set(nodes.flatMap((n) => n.inputs));
  for (const n of chosen) if (!read.has(n.inputs[1]!)) inits.delete(n.inputs[1]!);
  // The input shapes the matrices were built for: the step's probe checks them (TrainStep.compile).
  const assumed = new Map(chosen.map((n) => [n.inputs[0]!, sh.get(n.inputs[0]!)!]));
  return { model: { ...model, graph: { ...g, nodes, initializers: inits } }, rewritten: chosen.map((n) => n.name), assumed };
}
