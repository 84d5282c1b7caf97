// Normalisation layers: BatchNormalization (inference form), LayerNormalization,
// InstanceNormalization and GroupNormalization.
//
// BatchNorm in *training* mode never reaches these rules: compileTrainStep lowers it to
// primitive ops first (src/train/batchnorm-train.ts), and its gradient flows through those.
// The decomposed LayerNorm that exporters emit (ReduceMean, Sub, Pow, Sqrt, Div, ...) also
// needs no rule here: it differentiates through the primitive rules.
import { attrFloat, attrInt, type Node } from '../../onnx/ir.ts';
import { ONNX_DTYPE, tensor, type DType } from '../../onnx/tensor.ts';
import { registerRules, type GradContext } from '../rule.ts';

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
 * BatchNorm fed with its own batch statistics (training mode, lowered by batchnorm-train.ts):
 * mean μ and variance σ² are functions of X, so the whole gradient is taken here and none is
 * passed to the statistics. With r = 1/√(σ² + eps), n elements per channel and sums over them:
 *   dB = Σ g,  dScale = r·(Σ g·x − μ·Σ g),
 *   dX = a·g + b·x + c,  a = scale·r,  b = −a·r·dScale/n,  c = −a·dB/n − b·μ
 * (the usual r·scale·(g − mean(g) − x̂·mean(g·x̂)), rearranged so x̂ is never materialised).
 */
function batchStatisticsGrad(ctx: GradContext, node: Node, g: string, needs: boolean[]): (string | null)[] {
  const em = ctx.em;
  const { x, scale, mean, dims, C, rank, others, r } = bnParts(ctx, node);
  const n = others.reduce((p, a) => p * dims[a]!, 1);
  const dB = em.reduce('ReduceSum', g, others, false);
  const sumGX = em.reduce('ReduceSum', em.mul(g, x), others, false);
  const dScale = em.mul(r, em.sub(sumGX, em.mul(mean, dB)));
  let dX: string | null = null;
  if (needs[0]) {
    const a = em.mul(scale, r);
    const b = em.neg(em.mul(em.mul(a, r), em.mul(dScale, em.scalar(1 / n))));
    const c = em.sub(em.neg(em.mul(a, em.mul(dB, em.scalar(1 / n)))), em.mul(b, mean));
    dX = em.add(em.mul(g, perChannel(ctx, a, C, rank)), em.add(em.mul(x, perChannel(ctx, b, C, rank)), perChannel(ctx, c, C, rank)));
  }
  return [dX, needs[1] ? dScale : null, needs[2] ? dB : null, null, null];
}

registerRules({
  /**
   * Inference form: Y = (X − mean) / sqrt(var + eps) · scale + B with the running statistics
   * (opsets 9–15; opset 14/15 `training_mode` must be 0). Gradients to X, scale and B; the
   * running statistics are not parameters in the usual sense, but if a caller does train
   * them their exact gradients are returned too.
   */
  BatchNormalization(ctx, node, [dY], needs) {
    if (attrInt(node, 'training_mode', 0) !== 0) {
      throw new Error(`training_mode=1 BatchNormalization is not differentiated directly; compile the step with batchNorm: 'train' (it lowers the node to primitive ops)`);
    }
    if (node.outputs.slice(1).some(Boolean)) {
      throw new Error(`BatchNormalization with running-statistic outputs [${node.outputs.slice(1).filter(Boolean)}] is a training-mode node; compile the step with batchNorm: 'train'`);
    }
    if (node.meta?.batchStatistics) return batchStatisticsGrad(ctx, node, dY!, needs);
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
