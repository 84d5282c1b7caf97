// Losses as graph pieces. Each returns a LossSpec; per-sample losses take optional
// per-sample weights (masks are 0/1 weights), which test-time adaptation uses to select samples.
import type { Emitter } from '../onnx/emitter.ts';
import type { LossContext, LossInput, LossSpec } from './loss-spec.ts';

export { inBatchNegatives, type InBatchNegativesOptions } from './contrastive-loss.ts';
export { ctc, type CtcOptions } from './ctc-loss.ts';

export interface SampleWeighting {
  /** Name of a float [N] loss input holding per-sample weights (or a 0/1 mask). */
  weights?: string;
  /**
   * How the weighted per-sample losses are reduced: 'mean' divides by the batch size N
   * (PyTorch's `(w * l).mean()`), 'weighted' by the sum of the weights, 'sum' not at all.
   */
  reduction?: 'mean' | 'weighted' | 'sum';
}

const batchDim = (logits: string) => (shapeOf: (t: string) => number[]) => [shapeOf(logits)[0]!];

function weightInput(w: SampleWeighting, logits: string): LossInput[] {
  return w.weights ? [{ name: w.weights, dtype: 'float32', shape: batchDim(logits) }] : [];
}

/** Reduce per-sample losses [N] to a scalar, applying weights. */
function reduceSamples(ctx: LossContext, perSample: string, w: SampleWeighting): string {
  const em = ctx.em;
  let l = perSample;
  if (w.weights) l = em.mul(l, ctx.input(w.weights));
  const total = em.reduce('ReduceSum', l, [0], false);
  switch (w.reduction ?? 'mean') {
    case 'sum': return total;
    case 'mean': return em.div(total, em.scalar(ctx.shape(perSample)[0]!));
    case 'weighted': {
      if (!w.weights) return em.div(total, em.scalar(ctx.shape(perSample)[0]!));
      // max(sum w, tiny): an all-zero mask gives loss 0 instead of NaN.
      const denom = em.op('Max', [em.reduce('ReduceSum', ctx.input(w.weights), [0], false), em.scalar(1e-12)]);
      return em.div(total, denom);
    }
  }
}

function logSoftmax(em: Emitter, logits: string): string {
  return em.op('LogSoftmax', [logits], { axis: -1 });
}

function rowSum(em: Emitter, x: string): string {
  return em.reduce('ReduceSum', x, [-1], false);
}

function checkLogits(ctx: LossContext, logits: string): number {
  const s = ctx.shape(logits);
  if (s.length !== 2) throw new Error(`loss expects '${logits}' to be [batch, classes] logits, got shape [${s}]`);
  return s[1]!;
}

export interface CrossEntropyOptions extends SampleWeighting {
  /** [N, C] logits, or dense [N, C, d1, …] ones (a segmenter's per-pixel classes on axis 1, as PyTorch's F.cross_entropy takes them). */
  logits: string;
  /** Integer class labels [N] (default input name 'y'), [N, d1, …] for dense logits, or soft target probabilities [N, C] with `soft: true`. */
  labels?: string;
  soft?: boolean;
  labelSmoothing?: number;
  /** Dense logits: the label of positions that count for nothing (segmentation's 255 for "void"). Default -100, as PyTorch's. */
  ignoreIndex?: number;
}

/**
 * Cross-entropy, batch mean: PyTorch's F.cross_entropy. For dense [N, C, d1, …] logits the mean
 * runs over every position whose label is not `ignoreIndex` (a batch with none has loss 0); the
 * label's log-probability is gathered, never a one-hot of the classes.
 */
export function crossEntropy(o: CrossEntropyOptions): LossSpec {
  const labels = o.labels ?? 'y';
  const dense = (s: number[]) => s.length > 2;
  const inputs: LossInput[] = [
    o.soft
      ? { name: labels, dtype: 'float32', shape: (s) => s(o.logits) }
      : { name: labels, dtype: 'int64', shape: (s) => { const d = s(o.logits); return dense(d) ? [d[0]!, ...d.slice(2)] : [d[0]!]; } },
    ...weightInput(o, o.logits),
  ];
  return {
    describe: `crossEntropy(${o.logits}, ${labels})`,
    reads: [o.logits],
    inputs,
    build(ctx) {
      const em = ctx.em;
      if (dense(ctx.shape(o.logits))) return denseCrossEntropy(ctx, o, labels);
      const C = checkLogits(ctx, o.logits);
      let target = o.soft
        ? ctx.input(labels)
        : em.op('OneHot', [ctx.input(labels), em.constant({ dtype: 'int64', dims: [], data: new BigInt64Array([BigInt(C)]) }), em.constant({ dtype: 'float32', dims: [2], data: new Float32Array([0, 1]) })], { axis: -1 });
      if (o.labelSmoothing) {
        const e = o.labelSmoothing;
        target = em.add(em.mul(target, em.scalar(1 - e)), em.scalar(e / C));
      }
      const perSample = em.neg(rowSum(em, em.mul(target, logSoftmax(em, o.logits))));
      return reduceSamples(withShape(ctx, perSample, o.logits), perSample, o);
    },
  };
}

/** Cross-entropy over the classes on axis 1 at every position of [N, C, d1, …] logits, averaged over the labelled positions. */
function denseCrossEntropy(ctx: LossContext, o: CrossEntropyOptions, labels: string): string {
  const refused = [o.soft && 'soft targets', o.labelSmoothing && 'label smoothing', o.weights && 'per-sample weights'].filter(Boolean);
  if (refused.length) throw new Error(`crossEntropy on dense logits '${o.logits}' [${ctx.shape(o.logits)}] takes integer labels per position, without ${refused.join(', ')} (those are for [N, C] logits)`);
  const em = ctx.em;
  const ignore = o.ignoreIndex ?? -100;
  if (!Number.isInteger(ignore)) throw new Error(`crossEntropy: ignoreIndex must be an integer, got ${ignore}`);
  return labelledMeanNll(em, o.logits, ctx.input(labels), 1, ctx.shape(o.logits).length, ignore);
}

/**
 * −mean log-probability of each position's label, the classes on `axis` of `logits` (rank
 * `rank`), over the positions whose label is not `ignore` (0 when there are none). The label's
 * log-probability is gathered, never a one-hot of the classes.
 */
function labelledMeanNll(em: Emitter, logits: string, y: string, axis: number, rank: number, ignore: number): string {
  const int64 = (v: number) => em.constant({ dtype: 'int64', dims: [], data: new BigInt64Array([BigInt(v)]) });
  const valid = em.op('Not', [em.op('Equal', [y, int64(ignore)])]);
  // ignored positions gather class 0 and weigh 0 (an out-of-range index would fail the gather)
  const safe = em.unsqueeze(em.op('Where', [valid, y, int64(0)]), [axis]);
  const picked = em.squeeze(em.op('GatherElements', [em.op('LogSoftmax', [logits], { axis }), safe], { axis }), [axis]);
  const w = em.op('Cast', [valid], { to: 1 });
  const all = Array.from({ length: rank - 1 }, (_, i) => i);
  const total = em.reduce('ReduceSum', em.mul(picked, w), all, false);
  return em.neg(em.div(total, em.op('Max', [em.reduce('ReduceSum', w, all, false), em.scalar(1)])));
}

export interface TokenCrossEntropyOptions {
  /** Logits whose last axis holds the classes: a language model's [batch, sequence, vocab], or [batch, classes]. */
  logits: string;
  /** Integer labels shaped as the logits without their last axis (default input name 'y'). */
  labels?: string;
  /** The label of positions that have no target (padding, a prompt); they add nothing. Default -100, as PyTorch's. */
  ignoreIndex?: number;
}

/**
 * Cross-entropy at every position of [..., classes] logits (next-token prediction, token
 * classification), averaged over the positions whose label is not `ignoreIndex`: PyTorch's
 * `F.cross_entropy(logits.flatten(0, -2), labels.flatten(), ignore_index=-100)`. The label's
 * log-probability is gathered, never a one-hot of the vocabulary; a batch with no labelled
 * position has loss 0.
 */
export function tokenCrossEntropy(o: TokenCrossEntropyOptions): LossSpec {
  const labels = o.labels ?? 'y';
  const ignore = o.ignoreIndex ?? -100;
  if (!Number.isInteger(ignore)) throw new Error(`tokenCrossEntropy: ignoreIndex must be an integer, got ${ignore}`);
  return {
    describe: `tokenCrossEntropy(${o.logits}, ${labels})`,
    reads: [o.logits],
    inputs: [{ name: labels, dtype: 'int64', shape: (s) => s(o.logits).slice(0, -1) }],
    build(ctx) {
      const em = ctx.em;
      const s = ctx.shape(o.logits);
      if (s.length < 2) throw new Error(`tokenCrossEntropy expects '${o.logits}' to be [..., classes] logits, got shape [${s}]`);
      return labelledMeanNll(em, o.logits, ctx.input(labels), s.length - 1, s.length, ignore);
    },
  };
}

/**
 * Shannon entropy of softmax(logits) per sample: Tent's objective. Dense logits [batch, classes,
 * H, W, …] (segmentation; rank ≥ 4) give each position's entropy over the classes (axis 1),
 * averaged over the positions per sample: Tent's segmentation objective. Rank 3 is ambiguous
 * ([batch, classes, length] or a speech recogniser's [batch, frames, classes]) and needs
 * `classesLast: true` for the second: each frame's entropy over the last axis, averaged over the
 * frames per sample.
 */
export function softmaxEntropy(o: SampleWeighting & { logits: string; classesLast?: boolean }): LossSpec {
  return {
    describe: `softmaxEntropy(${o.logits})`,
    reads: [o.logits],
    inputs: weightInput(o, o.logits),
    build(ctx) {
      const em = ctx.em;
      const rank = ctx.shape(o.logits).length;
      if (rank === 3 && !o.classesLast) throw new Error(`softmaxEntropy: '${o.logits}' has shape [${ctx.shape(o.logits)}]: [batch, sequence, vocabulary] or [batch, classes, length] cannot be told apart; it takes [batch, classes] or image-shaped [batch, classes, H, W, …] logits, or [batch, frames, classes] with classesLast: true`);
      let perSample: string;
      if (rank === 3) {
        const logp = em.op('LogSoftmax', [o.logits], { axis: -1 });
        const p = em.op('Softmax', [o.logits], { axis: -1 });
        perSample = em.reduce('ReduceMean', em.neg(em.reduce('ReduceSum', em.mul(p, logp), [2], false)), [1], false);
      } else if (rank > 3) {
        const logp = em.op('LogSoftmax', [o.logits], { axis: 1 });
        const p = em.op('Softmax', [o.logits], { axis: 1 });
        const perPosition = em.neg(em.reduce('ReduceSum', em.mul(p, logp), [1], false));
        perSample = em.reduce('ReduceMean', perPosition, Array.from({ length: rank - 2 }, (_, i) => i + 1), false);
      } else {
        checkLogits(ctx, o.logits);
        const logp = logSoftmax(em, o.logits);
        const p = em.op('Softmax', [o.logits], { axis: -1 });
        perSample = em.neg(rowSum(em, em.mul(p, logp)));
      }
      return reduceSamples(withShape(ctx, perSample, o.logits), perSample, o);
    },
  };
}

/**
 * Symmetric cross-entropy between the student's logits and teacher probabilities (an input):
 * 0.5 * (CE(teacher → student) + CE(student → teacher)), as RMT (Döbler et al. 2023) uses.
 */
export function symmetricCrossEntropy(o: SampleWeighting & { logits: string; teacher?: string; alpha?: number; beta?: number }): LossSpec {
  const teacher = o.teacher ?? 'teacher_probs';
  const a = o.alpha ?? 0.5, b = o.beta ?? 0.5;
  return {
    describe: `symmetricCrossEntropy(${o.logits}, ${teacher})`,
    reads: [o.logits],
    inputs: [{ name: teacher, dtype: 'float32', shape: (s) => s(o.logits) }, ...weightInput(o, o.logits)],
    build(ctx) {
      const em = ctx.em;
      checkLogits(ctx, o.logits);
      const t = ctx.input(teacher);
      const logp = logSoftmax(em, o.logits);
      const p = em.op('Softmax', [o.logits], { axis: -1 });
      const logT = em.op('Log', [em.op('Max', [t, em.scalar(1e-12)])]);
      const ce1 = em.neg(rowSum(em, em.mul(t, logp)));
      const ce2 = em.neg(rowSum(em, em.mul(p, logT)));
      const perSample = em.add(em.mul(ce1, em.scalar(a)), em.mul(ce2, em.scalar(b)));
      return reduceSamples(withShape(ctx, perSample, o.logits), perSample, o);
    },
  };
}

/** KL(target ‖ softmax(logits)) with target probabilities as an input. */
export function klDivergence(o: SampleWeighting & { logits: string; target?: string }): LossSpec {
  const target = o.target ?? 'target_probs';
  return {
    describe: `klDivergence(${target} ‖ ${o.logits})`,
    reads: [o.logits],
    inputs: [{ name: target, dtype: 'float32', shape: (s) => s(o.logits) }, ...weightInput(o, o.logits)],
    build(ctx) {
      const em = ctx.em;
      checkLogits(ctx, o.logits);
      const t = ctx.input(target);
      const logT = em.op('Log', [em.op('Max', [t, em.scalar(1e-12)])]);
      const perSample = rowSum(em, em.mul(t, em.sub(logT, logSoftmax(em, o.logits))));
      return reduceSamples(withShape(ctx, perSample, o.logits), perSample, o);
    },
  };
}

/**
 * A loss that is the mean over every output of a sample of `el(output, target)` (elementwise, a
 * target input of the output's shape), then reduced over the samples with their weights.
 */
function elementwiseLoss(name: string, output: string, target: string, w: SampleWeighting, el: (em: Emitter, z: string, y: string) => string): LossSpec {
  return {
    describe: `${name}(${output}, ${target})`,
    reads: [output],
    inputs: [{ name: target, dtype: 'float32', shape: (s) => s(output) }, ...weightInput(w, output)],
    build(ctx) {
      const em = ctx.em;
      const s = ctx.shape(output);
      let perSample = el(em, output, ctx.input(target));
      if (s.length > 1) perSample = em.div(em.reduce('ReduceSum', perSample, s.slice(1).map((_, i) => i + 1), false), em.scalar(s.slice(1).reduce((a, b) => a * b, 1)));
      return reduceSamples(withShape(ctx, perSample, output), perSample, w);
    },
  };
}

/** Mean squared error between a model output and a target input of the same shape. */
export function mse(o: RegressionOptions): LossSpec {
  return elementwiseLoss('mse', o.output, o.target ?? 'target', o, (em, z, y) => {
    const d = em.sub(z, y);
    return em.mul(d, d);
  });
}

export interface RegressionOptions extends SampleWeighting {
  output: string;
  /** Float target of the output's shape (default input name 'target'). */
  target?: string;
}

/** Mean absolute error: PyTorch's F.l1_loss (mean). A zero difference has gradient 0 (sign(0), as PyTorch takes it). */
export function l1(o: RegressionOptions): LossSpec {
  return elementwiseLoss('l1', o.output, o.target ?? 'target', o, (em, z, y) => em.op('Abs', [em.sub(z, y)]));
}

/**
 * Smooth L1: PyTorch's F.smooth_l1_loss(z, y, beta) (mean): 0.5·d²/β where |d| < β, |d| − 0.5·β
 * elsewhere; β 0 is l1. Detectors' box regression (Faster R-CNN, SSD) trains with it.
 */
export function smoothL1(o: RegressionOptions & { beta?: number }): LossSpec {
  const beta = o.beta ?? 1;
  if (!(beta >= 0)) throw new Error(`smoothL1: beta must be ≥ 0, got ${o.beta}`);
  if (beta === 0) return l1(o);
  return elementwiseLoss('smoothL1', o.output, o.target ?? 'target', o, (em, z, y) => quadraticNearZero(em, em.sub(z, y), beta, 0.5 / beta, 1));
}

/**
 * Huber: PyTorch's F.huber_loss(z, y, delta) (mean): 0.5·d² where |d| < δ, δ·(|d| − 0.5·δ)
 * elsewhere (smoothL1 with β = δ, times δ).
 */
export function huber(o: RegressionOptions & { delta?: number }): LossSpec {
  const delta = o.delta ?? 1;
  if (!(delta > 0)) throw new Error(`huber: delta must be positive, got ${o.delta}`);
  return elementwiseLoss('huber', o.output, o.target ?? 'target', o, (em, z, y) => quadraticNearZero(em, em.sub(z, y), delta, 0.5, delta));
}

/** where(|d| < t, q·d², s·(|d| − t/2)); with q = s/(2t), as both callers pass, the pieces meet at |d| = t in value and slope. */
function quadraticNearZero(em: Emitter, d: string, t: number, q: number, s: number): string {
  const a = em.op('Abs', [d]);
  const near = em.mul(em.scalar(q), em.mul(d, d));
  const far = em.mul(em.scalar(s), em.sub(a, em.scalar(t / 2)));
  return em.op('Where', [em.op('Less', [a, em.scalar(t)]), near, far]);
}

export interface BinaryCrossEntropyOptions extends SampleWeighting {
  /** Logits of independent yes/no outputs, any shape [N, …] (a multi-label classifier, a mask decoder's masks). */
  logits?: string;
  /**
   * Or probabilities in [0, 1], for a model whose graph ends in its Sigmoid (a matting or
   * background-removal model such as U²-Net/IS-Net): PyTorch's `F.binary_cross_entropy`.
   */
  probabilities?: string;
  /** Float targets in [0, 1] of the output's shape (default input name 'target'). */
  target?: string;
  /** Weight of the positive term (PyTorch's pos_weight, one value for every output): > 1 favours recall. Logits only, as in PyTorch. */
  posWeight?: number;
}

/**
 * Binary cross-entropy, averaged over every output of a sample, then over the samples.
 *
 * On `logits`: PyTorch's `F.binary_cross_entropy_with_logits(z, y, pos_weight=p)` (mean). In the
 * stable form PyTorch computes, max(z, 0) − z·y + log(1 + e^(−|z|)); with p, (1 − y)·z + (1 + (p − 1)·y)·(log(1 + e^(−|z|)) + max(−z, 0)).
 *
 * On `probabilities`: PyTorch's `F.binary_cross_entropy(q, y)`, −(y·log q + (1 − y)·log(1 − q))
 * with each log clamped at −100 as PyTorch clamps it. Where the clamp holds (q or 1 − q below
 * e^−100, in float32 only exactly 0) refit's gradient is the clamped function's, 0; PyTorch's
 * backward uses (q − y) / max(q·(1 − q), 1e−12) there instead. Behind a Sigmoid both reach the
 * logits as 0, since the Sigmoid's own gradient q·(1 − q) is 0 at those q.
 */
export function binaryCrossEntropy(o: BinaryCrossEntropyOptions): LossSpec {
  const p = o.posWeight;
  if (p !== undefined && !(p > 0)) throw new Error(`binaryCrossEntropy: posWeight must be positive, got ${p}`);
  if ((o.logits === undefined) === (o.probabilities === undefined)) throw new Error('binaryCrossEntropy: give exactly one of logits and probabilities');
  if (o.probabilities !== undefined) {
    if (p !== undefined) throw new Error('binaryCrossEntropy: posWeight needs logits (PyTorch\'s binary_cross_entropy has none)');
    return elementwiseLoss('binaryCrossEntropy', o.probabilities, o.target ?? 'target', o, (em, q, y) =>
      em.neg(em.add(em.mul(y, clampedLog(em, q)), em.mul(em.sub(em.scalar(1), y), clampedLog(em, em.sub(em.scalar(1), q))))));
  }
  return elementwiseLoss('binaryCrossEntropy', o.logits!, o.target ?? 'target', o, (em, z, y) => {
    const softplusNegAbs = em.op('Softplus', [em.neg(em.op('Abs', [z]))]); // log(1 + e^(−|z|))
    if (p === undefined || p === 1) return em.add(em.sub(em.op('Relu', [z]), em.mul(z, y)), softplusNegAbs);
    return em.add(em.mul(em.sub(em.scalar(1), y), z), em.mul(em.add(em.scalar(1), em.mul(em.scalar(p - 1), y)), em.add(softplusNegAbs, em.op('Relu', [em.neg(z)]))));
  });
}

/** max(log q, −100), as PyTorch's binary_cross_entropy takes it; q = 0 reads −100 without a log(0) whose gradient would be NaN. */
function clampedLog(em: Emitter, q: string): string {
  const positive = em.op('Greater', [q, em.scalar(0)]);
  const logQ = em.op('Log', [em.op('Where', [positive, q, em.scalar(1)])]);
  return em.op('Where', [positive, em.op('Max', [logQ, em.scalar(-100)]), em.scalar(-100)]);
}

/**
 * Quadratic penalty pulling parameters toward anchor values: strength * Σ w (θ − θ0)².
 * With `importance` (e.g. a diagonal Fisher) the weights w are per element, as EWC and EATA use.
 */
export function anchorPenalty(o: { anchors: Map<string, Float32Array>; importance?: Map<string, Float32Array>; strength: number }): LossSpec {
  return {
    describe: o.importance ? 'fisherPenalty' : 'l2AnchorPenalty',
    reads: [],
    inputs: [],
    build(ctx) {
      const em = ctx.em;
      const terms: string[] = [];
      for (const [name, anchor] of o.anchors) {
        const dims = ctx.shape(name);
        const d = em.sub(name, em.constant({ dtype: 'float32', dims, data: anchor }, 'anchor'));
        let sq = em.mul(d, d);
        const imp = o.importance?.get(name);
        if (o.importance && !imp) throw new Error(`no importance weights given for parameter '${name}'`);
        if (imp) sq = em.mul(sq, em.constant({ dtype: 'float32', dims, data: imp }, 'importance'));
        terms.push(em.reduce('ReduceSum', sq, dims.map((_, i) => i), false));
      }
      if (terms.length === 0) return em.scalar(0);
      return em.mul(em.sum(terms), em.scalar(o.strength));
    },
  };
}

/** Weighted sum of losses: e.g. a task loss plus a regularizer. */
export function combine(parts: { loss: LossSpec; weight?: number }[]): LossSpec {
  const inputs = new Map<string, LossInput>();
  for (const p of parts) for (const i of p.loss.inputs) inputs.set(i.name, i);
  return {
    describe: parts.map((p) => `${p.weight ?? 1}·${p.loss.describe}`).join(' + '),
    reads: [...new Set(parts.flatMap((p) => p.loss.reads))],
    inputs: [...inputs.values()],
    build(ctx) {
      const em = ctx.em;
      const terms = parts.map((p) => {
        const l = p.loss.build(ctx);
        return p.weight === undefined || p.weight === 1 ? l : em.mul(l, em.scalar(p.weight));
      });
      return em.sum(terms);
    },
  };
}

/** Per-sample tensors derive their batch size from the logits they came from. */
function withShape(ctx: LossContext, perSample: string, from: string): LossContext {
  const n = ctx.shape(from)[0]!;
  return { ...ctx, shape: (t) => (t === perSample ? [n] : ctx.shape(t)) };
}
