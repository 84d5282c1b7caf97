// Normalisation layers: BatchNormalization (inference form), LayerNormalization,
// InstanceNormalization and GroupNormalization.
//
// BatchNorm in *training* mode reaches them only as the node src/train/batchnorm-train.ts
// lowers it to (flagged meta.batchStatistics): batchStatisticsGrad takes the whole gradient
// through the batch moments there. A training-mode node from a model is refused.
// The decomposed LayerNorm that exporters emit (ReduceMean, Sub, Pow, Sqrt, Div, ...) also
// needs no rule here: it differentiates through the primitive rules.
import { attrFloat, attrInt, type Node } from '../../onnx/ir.ts';
import { ONNX_DTYPE, tensor, f32, type DType } from '../../onnx/tensor.ts';
import { registerRules, type GradContext } from '../rule.ts';
import type { Emitter } from '../../onnx/emitter.ts';

const range = (a: number, b: number) => Array.from({ length: Math.max(0, b - a) }, (_, i) => a + i);

/** 1 / sqrt(v + eps). */
function invStd(ctx: GradContext, v: string, eps: number, dtype: DType): string {
  const em = ctx.em;
  return em.op('Reciprocal', [em.op('Sqrt', [em.add(v, scalarOf(ctx, eps, dtype))])]);
}

/** A scalar constant of the given float dtype (em.scalar is float32 only). */
function scalarOf(ctx: GradContext, v: number, dtype: DType): string {
  if (dtype === 'float32') return ctx.em.scalar(v);
  if (dtype === 'float64') return ctx.em.constant(tensor('float64', [], [v]), 'scalar');
  // float16 and others: build in float32 and cast once (ORT folds it).
  return ctx.em.op('Cast', [ctx.em.scalar(v)], { to: ONNX_DTYPE[dtype] });
}

/**
 * The shared core of every normalisation gradient. With x̂ = (x − μ)·r normalised over
 * `axes` (N elements each) and g = ∂L/∂x̂:
 *   ∂L/∂x = r · (g − mean(g) − x̂ · mean(g · x̂))
 */
function normInputGrad(ctx: GradContext, g: string, xhat: string, r: string, axes: number[]): string {
  const em = ctx.em;
  const meanG = em.reduce('ReduceMean', g, axes, true);
  const meanGX = em.reduce('ReduceMean', em.mul(g, xhat), axes, true);
  return em.mul(r, em.sub(em.sub(g, meanG), em.mul(xhat, meanGX)));
}

/** Mean and 1/sqrt(var + eps) over `axes` (keepdims), and x̂, recomputed from x. */
function recomputeStats(ctx: GradContext, x: string, axes: number[], eps: number, dtype: DType) {
  const em = ctx.em;
  const mean = em.reduce('ReduceMean', x, axes, true);
  const centered = em.sub(x, mean);
  const variance = em.reduce('ReduceMean', em.mul(centered, centered), axes, true);
  const r = invStd(ctx, variance, eps, dtype);
  return { mean, r, xhat: em.mul(centered, r) };
}

/** Per-channel [C] tensor reshaped to broadcast over an N×C×… input of rank `rank`. */
function perChannel(ctx: GradContext, t: string, C: number, rank: number): string {
  return ctx.em.reshape(t, [1, C, ...Array<number>(rank - 2).fill(1)]);
}

function checkRank(node: Node, dims: number[], min: number): void {
  if (dims.length < min) throw new Error(`${node.opType} input '${node.inputs[0]}' has shape [${dims}], expected rank ≥ ${min} (N × C × …)`);
}

/** What both BatchNorm gradients need: inputs, per-channel axes and 1/√(var + eps) as [C]. */
function bnParts(ctx: GradContext, node: Node) {
  const [x, scale, , mean, variance] = node.inputs as [string, string, string, string, string];
  const dims = ctx.shape(x);
  checkRank(node, dims, 2);
  const others = range(0, dims.length).filter((a) => a !== 1);
  const r = invStd(ctx, variance, attrFloat(node, 'epsilon', 1e-5), ctx.dtype(x));
  return { x, scale, mean, dims, C: dims[1]!, rank: dims.length, others, r };
}

/**
 * How batchStatisticsGrad writes the batch-statistics gradient. All are standard ops and agree
 * within float32 rounding (test/autodiff/bn-grad-forms.test.ts pins them against each other):
 * - sumGX, the per-channel Σ g·x: 'mul-reduce' materialises g·x and reduces it; 'diag-matmul'
 *   takes it from the diagonals of a batched MatMul of g against xᵀ over blocks of `block`
 *   channels ([N, C/k, k, HW] × [N, C/k, HW, k]; onnxruntime fuses the transpose into FusedMatMul),
 *   reading g and x once with no activation-sized temporary, at k× the multiply-adds.
 * - dX = a·g + b·x + c: 'mul-add' is Mul, Mul, Add, Add; 'bn-affine' writes b·x + c as an
 *   inference BatchNormalization (mean 0, variance 1, epsilon 0: exactly x·b + c, one pass) and
 *   adds a·g to it.
 */
export interface BnGradForm { sumGX: 'mul-reduce' | 'diag-matmul'; block?: number; dX: 'mul-add' | 'bn-affine' }
export const OLD_BN_GRAD_FORM: BnGradForm = { sumGX: 'mul-reduce', dX: 'mul-add' };
/** 'auto' = pickBnGradForm; tests and bench/bn-forms.ts set a form to compare. */
export const bnGradForm: { current: 'auto' | BnGradForm } = { current: 'auto' };

/**
 * The form chosen for an input of shape `dims`: Σ g·x by Mul + ReduceSum (as before: the same
 * numbers), dX with the BatchNormalization affine. bench/bn-forms.ts on the BN layers of cnn28,
 * ResNet-18 and MobileNetV2 (bench/results/bn-forms.md; a 2-core machine shared with other jobs,
 * so judged on process CPU time first): the bn-affine dX took 0.82–0.91× the CPU time of the
 * Mul/Add form (median wall 0.65–0.99×), in this and two earlier runs. The diag-matmul Σ g·x
 * saved a further 0–8% at best, not consistently across runs, and adds float32 error (1e-6
 * relative where |mean| = 2·std), so it is not used.
 */
export function pickBnGradForm(_dims: number[]): BnGradForm {
  return { sumGX: 'mul-reduce', dX: 'bn-affine' };
}

export interface BatchStatGradInputs { x: string; g: string; scale: string; mean: string; variance: string; eps: number; dims: number[] }

/**
 * The gradient of y = scale·(x − μ)·r + β with μ, σ² the batch moments of x over every axis but 1
 * (r = 1/√(σ² + eps), n elements per channel, sums over them):
 *   dB = Σ g,  dScale = r·(Σ g·x − μ·Σ g),
 *   dX = a·g + b·x + c,  a = scale·r,  b = −a·r·dScale/n,  c = −a·dB/n − b·μ
 * (the usual r·scale·(g − mean(g) − x̂·mean(g·x̂)), rearranged so x̂ is never materialised).
 */
export function emitBatchStatisticsGrad(em: Emitter, p: BatchStatGradInputs, want: { dX: boolean }, form: BnGradForm) {
  const { x, g, scale, dims } = p;
  const C = dims[1]!, rank = dims.length;
  const start = em.graph.nodes.length;
  // The mean through one Identity (onnxruntime drops it), tagged with the nodes that read x: they
  // read the two only as x − mean (see meta.shiftInvariant).
  const mean = em.op('Identity', [p.mean]);
  em.graph.nodes[em.graph.nodes.length - 1]!.meta = { shiftInvariant: { x, centre: true } };
  const others = range(0, rank).filter((a) => a !== 1);
  const n = others.reduce((q, a) => q * dims[a]!, 1);
  const pc = (t: string) => em.reshape(t, [1, C, ...Array<number>(rank - 2).fill(1)]);
  const r = em.op('Reciprocal', [em.op('Sqrt', [em.add(p.variance, em.scalar(p.eps))])]);
  const dB = em.reduce('ReduceSum', g, others, false);
  const sumGX = form.sumGX === 'diag-matmul' ? diagSumGX(em, g, x, dims, form.block ?? 16) : em.reduce('ReduceSum', em.mul(g, x), others, false);
  const dScale = em.mul(r, em.sub(sumGX, em.mul(mean, dB)));
  let dX: string | null = null;
  if (want.dX) {
    const a = em.mul(scale, r);
    const b = em.neg(em.mul(em.mul(a, r), em.mul(dScale, em.scalar(1 / n))));
    const c = em.sub(em.neg(em.mul(a, em.mul(dB, em.scalar(1 / n)))), em.mul(b, mean));
    if (form.dX === 'bn-affine') {
      const zeros = em.constant(f32([C], new Float32Array(C)), 'bn_zeros');
      const ones = em.constant(f32([C], new Float32Array(C).fill(1)), 'bn_ones');
      const bx = em.fresh('bn_affine');
      em.graph.nodes.push({ name: em.fresh('bn_affine_node'), opType: 'BatchNormalization', domain: '', inputs: [x, b, c, zeros, ones], outputs: [bx], attrs: { epsilon: { kind: 'float', value: 0 } } });
      dX = em.add(em.mul(g, pc(a)), bx);
      em.graph.nodes[em.graph.nodes.length - 1]!.meta = { bnAffineDx: { x, g, a, b, c } };
    } else {
      dX = em.add(em.mul(g, pc(a)), em.add(em.mul(x, pc(b)), pc(c)));
    }
  }
  for (const k of em.graph.nodes.slice(start)) if (k.inputs.includes(x)) k.meta = { ...k.meta, shiftInvariant: { x } };
  return { dX, dScale, dB };
}

/** Σ g·x per channel from the diagonals of per-block g·xᵀ products (see BnGradForm). */
function diagSumGX(em: Emitter, g: string, x: string, dims: number[], k: number): string {
  const N = dims[0]!, C = dims[1]!, S = dims.slice(2).reduce((q, d) => q * d, 1);
  const blocks = [N, C / k, k, S];
  const prod = em.op('MatMul', [em.reshape(g, blocks), em.transpose(em.reshape(x, blocks), [0, 1, 3, 2])]); // [N, C/k, k, k]
  const diag = em.op('Slice', [em.reshape(prod, [N, C / k, k * k]), em.ints([0]), em.ints([k * k]), em.ints([2]), em.ints([k + 1])]);
  return em.reshape(em.reduce('ReduceSum', diag, [0], false), [C]);
}

/** A BatchNormalization node in training mode (running-statistic outputs present). */
export function isTrainingModeBN(node: Node): boolean {
  return attrInt(node, 'training_mode', 0) !== 0 || node.outputs.slice(1).some(Boolean);
}

/**
 * BatchNorm fed with its own batch statistics (training mode, lowered by batchnorm-train.ts):
 * mean μ and variance σ² are functions of X, so the whole gradient is taken here and none is
 * passed to the statistics. Two node forms: an inference node fed the moments (inputs 3, 4), or a
 * training-mode node with zero running inputs and momentum 0 whose outputs 1, 2 are the moments.
 */
function batchStatisticsGrad(ctx: GradContext, node: Node, dOut: (string | null)[], needs: boolean[]): (string | null)[] {
  const [x, scale] = node.inputs as [string, string];
  const dims = ctx.shape(x);
  checkRank(node, dims, 2);
  const training = isTrainingModeBN(node);
  if (training && attrFloat(node, 'momentum', 0.9) !== 0) {
    throw new Error(`BatchNormalization node '${node.name}': the batch-statistics gradient reads the batch moments from its running outputs, which needs momentum 0, got ${attrFloat(node, 'momentum', 0.9)}`);
  }
  const [mean, variance] = training ? [node.outputs[1]!, node.outputs[2]!] : [node.inputs[3]!, node.inputs[4]!];
  // Refit's lowering only reads the moments outputs for the running-statistic updates, which
  // are never differentiated; a gradient arriving there would be a graph it did not build.
  if (dOut.slice(1).some(Boolean)) throw new Error(`BatchNormalization node '${node.name}': a gradient reaches its batch-moment outputs [${node.outputs.slice(1).filter(Boolean)}]; only gradients of Y are supported`);
  const g = dOut[0];
  if (!g) return [null, null, null, null, null];
  const eps = attrFloat(node, 'epsilon', 1e-5);
  const form = bnGradForm.current === 'auto' ? pickBnGradForm(dims) : bnGradForm.current;
  const { dX, dScale, dB } = emitBatchStatisticsGrad(ctx.em, { x, g, scale, mean, variance, eps, dims }, { dX: needs[0]! }, form);
  return [dX, needs[1] ? dScale : null, needs[2] ? dB : null, null, null];
}

registerRules({
  /**
   * Inference form: Y = (X − mean) / sqrt(var + eps) · scale + B with the running statistics
   * (opsets 9–15; opset 14/15 `training_mode` must be 0). Gradients to X, scale and B; the
   * running statistics are not parameters in the usual sense, but if a caller does train
   * them their exact gradients are returned too.
   */
  BatchNormalization(ctx, node, dOut, needs) {
    const dY = dOut[0];
    if (node.meta?.batchStatistics) return batchStatisticsGrad(ctx, node, dOut, needs);
    if (attrInt(node, 'training_mode', 0) !== 0) {
      throw new Error(`training_mode=1 BatchNormalization is not differentiated directly; compile the step with batchNorm: 'train' (it lowers the node to primitive ops)`);
    }
    if (node.outputs.slice(1).some(Boolean)) {
      throw new Error(`BatchNormalization with running-statistic outputs [${node.outputs.slice(1).filter(Boolean)}] is a training-mode node; compile the step with batchNorm: 'train'`);
    }
    const em = ctx.em;
    const { x, scale, mean, C, rank, others, r } = bnParts(ctx, node);
    const g = dY!;
    const out: (string | null)[] = [null, null, null, null, null];
    if (needs[0]) out[0] = em.mul(g, perChannel(ctx, em.mul(scale, r), C, rank));
    const wantStats = needs[3] || needs[4];
    let dB: string | null = null, dScaleRaw: string | null = null; // dScaleRaw = Σ g·(x − mean)
    if (needs[2] || needs[3]) dB = em.reduce('ReduceSum', g, others, false);
    if (needs[1] || needs[4]) {
      const centered = em.sub(x, perChannel(ctx, mean, C, rank));
      dScaleRaw = em.reduce('ReduceSum', em.mul(g, centered), others, false);
    }
    if (needs[1]) out[1] = em.mul(dScaleRaw!, r);
    if (needs[2]) out[2] = dB;
    if (wantStats) {
      const sr = em.mul(scale, r);
      if (needs[3]) out[3] = em.neg(em.mul(dB!, sr));
      // ∂/∂var of (x − m)·(var + eps)^−½ is −½ (x − m) r³.
      if (needs[4]) out[4] = em.mul(em.mul(dScaleRaw!, em.mul(sr, em.mul(r, r))), scalarOf(ctx, -0.5, ctx.dtype(x)));
    }
    return out;
  },

  /**
   * Opset 17 LayerNormalization over axes [axis, rank). Choice: the rule adds the node's
   * optional Mean and InvStdDev outputs when they are absent (names from em.fresh) instead
   * of recomputing them with reductions — onnxruntime computes both anyway, so the backward
   * pass reuses them for free. Their shapes are never read from ctx.shape (the node was
   * probed without them): they are reshaped to the statically known [d0..d_{axis−1}, 1, …, 1].
   * Gradients flowing into Mean and InvStdDev (when a model consumes them) are included.
   */
  LayerNormalization(ctx, node, dOut, needs) {
    const em = ctx.em;
    const [x, scale, bias] = node.inputs as [string, string, string | undefined];
    const y = node.outputs[0]!;
    const dims = ctx.shape(x);
    const rank = dims.length;
    let axis = attrInt(node, 'axis', -1);
    if (axis < 0) axis += rank;
    if (axis < 0 || axis >= rank) throw new Error(`LayerNormalization axis ${attrInt(node, 'axis', -1)} is out of range for input '${x}' of shape [${dims}]`);
    const axes = range(axis, rank);
    const N = axes.reduce((p, a) => p * dims[a]!, 1);
    const statShape = dims.map((d, i) => (i < axis ? d : 1));
    const xType = ctx.dtype(x);

    // Reuse (or add) the forward node's Mean and InvStdDev outputs.
    while (node.outputs.length < 3) node.outputs.push('');
    if (!node.outputs[1]) node.outputs[1] = em.fresh(`${node.name}_mean`);
    if (!node.outputs[2]) node.outputs[2] = em.fresh(`${node.name}_invstd`);
    const stat = (t: string) => {
      // Mean/InvStdDev are in stash_type precision (float32 by default).
      const s = xType === 'float32' && attrInt(node, 'stash_type', 1) === 1 ? t : em.op('Cast', [t], { to: ONNX_DTYPE[xType] });
      return em.reshape(s, statShape);
    };
    const mean = stat(node.outputs[1]!), r = stat(node.outputs[2]!);
    const xhat = em.mul(em.sub(x, mean), r);

    const [dY, dMean, dInvStd] = dOut;
    const out: (string | null)[] = [null, null, null];
    if (dY && needs[1]) out[1] = ctx.unbroadcast(em.mul(dY, xhat), ctx.shape(y), ctx.shape(scale));
    if (dY && bias && needs[2]) out[2] = ctx.unbroadcast(dY, ctx.shape(y), ctx.shape(bias));
    if (needs[0]) {
      const terms: string[] = [];
      if (dY) terms.push(normInputGrad(ctx, em.mul(dY, scale), xhat, r, axes));
      // ∂μ/∂x = 1/N ; ∂r/∂x = −r² x̂ / N.
      if (dMean) terms.push(em.op('Expand', [em.mul(em.reshape(dMean, statShape), scalarOf(ctx, 1 / N, xType)), em.ints(dims)]));
      if (dInvStd) {
        const k = em.mul(em.mul(em.reshape(dInvStd, statShape), em.mul(r, r)), scalarOf(ctx, -1 / N, xType));
        terms.push(em.mul(k, xhat));
      }
      out[0] = terms.length ? em.sum(terms) : null;
    }
    return out;
  },

  /** Per-sample, per-channel normalisation over the spatial axes; statistics recomputed. */
  InstanceNormalization(ctx, node, [dY], needs) {
    const em = ctx.em;
    const [x, scale] = node.inputs as [string, string, string];
    const eps = attrFloat(node, 'epsilon', 1e-5);
    const dims = ctx.shape(x);
    checkRank(node, dims, 3);
    const C = dims[1]!, rank = dims.length;
    const spatial = range(2, rank), others = range(0, rank).filter((a) => a !== 1);
    const { r, xhat } = recomputeStats(ctx, x, spatial, eps, ctx.dtype(x));
    const out: (string | null)[] = [null, null, null];
    if (needs[0]) out[0] = normInputGrad(ctx, em.mul(dY!, perChannel(ctx, scale, C, rank)), xhat, r, spatial);
    if (needs[1]) out[1] = em.reduce('ReduceSum', em.mul(dY!, xhat), others, false);
    if (needs[2]) out[2] = em.reduce('ReduceSum', dY!, others, false);
    return out;
  },

  /**
   * GroupNormalization: statistics per sample and group of C/G channels. Opset 21 has
   * per-channel scale/bias [C]; the deprecated opset 18 form has per-group [G]. The form is
   * read from the scale's shape (they coincide when G = C).
   */
  GroupNormalization(ctx, node, [dY], needs) {
    const em = ctx.em;
    const [x, scale] = node.inputs as [string, string, string];
    const eps = attrFloat(node, 'epsilon', 1e-5);
    const G = attrInt(node, 'num_groups');
    const dims = ctx.shape(x);
    checkRank(node, dims, 2);
    const C = dims[1]!, rank = dims.length;
    if (G === undefined || G <= 0 || C % G !== 0) throw new Error(`GroupNormalization num_groups=${G} must divide the ${C} channels of '${x}' (shape [${dims}])`);
    const nScale = ctx.shape(scale).reduce((p, d) => p * d, 1);
    const perGroup = nScale === G && G !== C;
    if (!perGroup && nScale !== C) throw new Error(`GroupNormalization scale '${scale}' has ${nScale} elements, expected ${C} (channels) or ${G} (groups)`);
    const gShape = [dims[0]!, G, -1];
    const { r, xhat } = recomputeStats(ctx, em.reshape(x, gShape), [2], eps, ctx.dtype(x)); // grouped view [N, G, M]
    const out: (string | null)[] = [null, null, null];
    const others = range(0, rank).filter((a) => a !== 1);
    if (perGroup) {
      const g3 = em.reshape(dY!, gShape);
      if (needs[0]) out[0] = em.reshape(normInputGrad(ctx, em.mul(g3, em.reshape(scale, [1, G, 1])), xhat, r, [2]), dims);
      if (needs[1]) out[1] = em.reduce('ReduceSum', em.mul(g3, xhat), [0, 2], false);
      if (needs[2]) out[2] = em.reduce('ReduceSum', g3, [0, 2], false);
    } else {
      if (needs[0]) {
        const gx = em.reshape(em.mul(dY!, perChannel(ctx, scale, C, rank)), gShape);
        out[0] = em.reshape(normInputGrad(ctx, gx, xhat, r, [2]), dims);
      }
      if (needs[1]) out[1] = em.reduce('ReduceSum', em.mul(dY!, em.reshape(xhat, dims)), others, false);
      if (needs[2]) out[2] = em.reduce('ReduceSum', dY!, others, false);
    }
    return out;
  },
});
