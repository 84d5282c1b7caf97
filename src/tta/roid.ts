// ROID (Marsden, Döbler & Yang, WACV 2024, "Universal Test-time Adaptation through Weight
// Ensembling, Diversity Weighting, and Prior Correction"), following the paper's code
// (github.com/mariodoebler/test-time-adaptation, classification/methods/roid.py). Per batch x of n:
//   1. forward (normalization layers on batch statistics; the code sets track_running_stats =
//      False), logits z, p = softmax(z);
//   2. weights (no gradient): div = 1 − cos(p̄, p_i) min-max normalised over the batch;
//      mask_i = div_i < mean(div); cert = −entropy(z_i) min-max normalised;
//      w = exp(div·cert / T), T = 1/3, w = 0 on the mask; then p̄ ← 0.9·p̄ + 0.1·mean_i p_i
//      (p̄ starts uniform);
//   3. loss = Σ_i w_i·SLR(z_i)/n + Σ_{i ∉ mask} w_i·SCE(z̃_i, z_i)/n, where
//      SLR(z) = −Σ_c q_c·log(q_c/(1 − q_c) + 1e-5), q = clamp(softmax(z), 0, 0.99) (soft likelihood ratio),
//      z̃ = the model on an augmented view of the unmasked samples (their own batch statistics),
//      SCE(z̃, z) = −½·Σ softmax(z)·log_softmax(z̃) − ½·Σ softmax(z̃)·log_softmax(z), gradients
//      through both (the code does not detach z);
//   4. one Adam step (lr 1e-3, β = (0.9, 0.999), no weight decay: cfgs/cifar10_c/roid.yaml);
//   5. weight ensembling: θ ← 0.99·θ + 0.01·θ_source, after every step;
//   6. prior correction of the returned output: prior = mean_i p_i,
//      s = max(1/n, 1/C)/max(prior), prior' = (prior + s)/(1 + s·C), output = z·prior'
//      (the code multiplies the logits by the smoothed prior, and so does refit).
// The parameters are the normalization layers' affine parameters (the code's collect_params).
//
// Deviations (docs/tta.md): refit computes the weights from a forward-only pass and then runs the
// training step (the same numbers in two runs: the weights must be known before the step graph
// runs, as they select the augmented view's samples); the divisor is the batch's size (the code:
// the configured batch size, the same except for a short last batch); the augmented view uses
// CoTTA's augmentations (./augment.ts, the code: its non-CoTTA "reflect" set); one compiled step
// per count of unmasked samples (the view's batch size). A batch whose weights are not finite
// (every sample equally diverse, e.g. n = 1: 0/0 in the min-max normalisation) takes no step.
import { z } from 'zod';
import type { RefitModel } from '../model.ts';
import type { Tensor } from '../onnx/tensor.ts';
import { f32, i64 } from '../onnx/tensor.ts';
import type { TrainStep } from '../train/train-step.ts';
import type { LossContext, LossSpec } from '../train/loss-spec.ts';
import { Rng, hashSeed } from '../data/random.ts';
import { commonOptions, parseOptions, normAffineParams, softmaxRows, allFinite, metaNumber, type AdaptOutcome, PaperAdamAdapter, requireFloatInput } from './common.ts';
import { BatchStatRunner } from './mean-teacher.ts';
import { augmentBatch } from './augment.ts';
import { multiBranch, branchName } from './branches.ts';
import type { AugmentFn } from './cotta.ts';
import type { AdapterState } from './types.ts';
import { smoothedBatchPrior } from './batch-prior.ts';

/** Defaults of the paper's code (conf.py's _C.ROID and cfgs/cifar10_c/roid.yaml). */
export const ROID_DEFAULTS = {
  lr: 1e-3,
  betas: [0.9, 0.999] as const,
  /** ROID.MOMENTUM_SRC: θ ← m·θ + (1 − m)·θ_source. */
  momentumSrc: 0.99,
  /** ROID.MOMENTUM_PROBS: p̄ ← m·p̄ + (1 − m)·mean p. */
  momentumProbs: 0.9,
  /** ROID.TEMPERATURE. */
  temperature: 1 / 3,
  /** SoftLikelihoodRatio(clip = 0.99, eps = 1e-5). */
  slrClip: 0.99,
  slrEps: 1e-5,
} as const;

export const roidSchema = z.object({
  ...commonOptions,
  lr: z.number().positive().default(ROID_DEFAULTS.lr),
  betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).default([...ROID_DEFAULTS.betas]),
  params: z.array(z.string()).min(1).optional(),
  momentumSrc: z.number().min(0).max(1).default(ROID_DEFAULTS.momentumSrc),
  momentumProbs: z.number().min(0).max(1).default(ROID_DEFAULTS.momentumProbs),
  temperature: z.number().positive().default(ROID_DEFAULTS.temperature),
  /** ROID.USE_WEIGHTING, USE_CONSISTENCY, USE_PRIOR_CORRECTION (all on in the paper). */
  weighting: z.boolean().default(true),
  consistency: z.boolean().default(true),
  priorCorrection: z.boolean().default(true),
  /** Replace the augmentation of the consistency view: (x, dims, rng, k = 0) → augmented x. */
  augment: z.custom<AugmentFn>((v) => typeof v === 'function', 'expected a function (x, dims, rng, k) => Float32Array').optional(),
});
export type RoidOptions = z.input<typeof roidSchema>;

const AUG = '__aug';
export const ROID_W = 'roid.w';
export const ROID_KEEP = 'roid.keep';
export const ROID_WK = 'roid.wk';

export class ROID extends PaperAdamAdapter<z.output<typeof roidSchema>> {
  readonly name = 'roid';
  private readonly branched: RefitModel;
  private readonly plain: RefitModel;
  /** Forward-only runner (batch statistics, trainables fed live). */
  private readonly runner: BatchStatRunner;
  private steps_ = new Map<boolean, TrainStep>();
  /** p̄: moving average of the batches' mean probabilities (null: uniform, not yet sized). */
  private pbar: Float32Array | null = null;
  private draws = 0;

  constructor(model: RefitModel, options: RoidOptions = {}) {
    requireFloatInput('roid', model, 'augments its input images');
    const o = parseOptions('roid', roidSchema, options);
    super(model, o, (m) => o.params ?? normAffineParams('roid', m));
    this.plain = this.model;
    this.branched = multiBranch(this.model, ['', AUG]);
    this.runner = new BatchStatRunner(this.model, this.trainable);
  }

  /** The moving-average probability vector p̄ (a copy), or null before the first batch. */
  get movingProbs(): Float32Array | null {
    return this.pbar ? this.pbar.slice() : null;
  }

  private step(withView: boolean): TrainStep {
    let s = this.steps_.get(withView);
    if (!s) {
      const m = withView ? this.branched : this.plain;
      s = m.compileTrainStep({ trainable: this.trainable, loss: roidLoss(this.logits, withView ? branchName(this.logits, AUG) : null), outputs: [this.logits], batchNorm: 'train', session: this.sessionOptions });
      this.steps_.set(withView, s);
    }
    return s;
  }

  protected async adapt(x: Tensor): Promise<AdaptOutcome> {
    const n = x.dims[0]!;
    const input = this.model.inputs[0]!.name;
    const o = this.opts;
    // 1–2. Forward and the weights (no gradient).
    const z0 = (await this.runner.run(x, [this.logits]))[this.logits]!;
    const C = z0.dims[1]!;
    const p = softmaxRows(z0.data as Float32Array, C);
    this.pbar ??= new Float32Array(C).fill(1 / C);
    const w = new Float32Array(n).fill(1);
    const masked = new Uint8Array(n);
    if (o.weighting) {
      const div = new Float64Array(n), cert = new Float64Array(n);
      let pn = 0;
      for (let c = 0; c < C; c++) pn += this.pbar[c]! ** 2;
      for (let i = 0; i < n; i++) {
        let dot = 0, qn = 0, ent = 0;
        for (let c = 0; c < C; c++) {
          const q = p[i * C + c]!;
          dot += this.pbar[c]! * q; qn += q * q;
          if (q > 0) ent -= q * Math.log(q);
        }
        div[i] = 1 - dot / Math.max(Math.sqrt(pn * qn), 1e-8);
        cert[i] = -ent;
      }
      minMax(div); minMax(cert);
      let mean = 0;
      for (let i = 0; i < n; i++) mean += div[i]! / n;
      for (let i = 0; i < n; i++) {
        masked[i] = div[i]! < mean ? 1 : 0;
        w[i] = masked[i] ? 0 : Math.exp((div[i]! * cert[i]!) / o.temperature);
      }
      const mp = o.momentumProbs;
      for (let c = 0; c < C; c++) {
        let m = 0;
        for (let i = 0; i < n; i++) m += p[i * C + c]!;
        this.pbar[c] = mp * this.pbar[c]! + (1 - mp) * (m / n);
      }
    }
    const keep: number[] = [];
    for (let i = 0; i < n; i++) if (!masked[i]) keep.push(i);
    // 3–4. The step (skipped when the weights are not finite or nothing is kept).
    let loss = NaN, updated = false;
    let logits = z0;
    if (allFinite(w) < 0 && keep.length > 0) {
      const feeds: Record<string, Tensor> = { [input]: x, [ROID_W]: f32([n], w) };
      const view = o.consistency;
      if (view) {
        const per = x.data.length / n;
        const sub = new Float32Array(keep.length * per);
        keep.forEach((i, k) => sub.set((x.data as Float32Array).subarray(i * per, (i + 1) * per), k * per));
        const dims = [keep.length, ...x.dims.slice(1)];
        const rng = Rng.xoshiro(hashSeed(o.seed, 0x401d, this.draws++));
        const xa = o.augment ? o.augment(sub, dims, rng, 0) : augmentBatch(sub, dims, rng);
        if (!(xa instanceof Float32Array) || xa.length !== sub.length) throw new Error(`roid: the augment function must return a Float32Array of ${sub.length} values, got ${xa instanceof Float32Array ? xa.length + ' values' : typeof xa}`);
        feeds[branchName(input, AUG)] = f32(dims, xa);
        feeds[ROID_KEEP] = i64([keep.length], keep);
        feeds[ROID_WK] = f32([keep.length], keep.map((i) => w[i]!));
      }
      const r = await this.step(view).run(feeds);
      loss = r.loss;
      logits = r.outputs[this.logits]!;
      updated = this.applyStep(r, n);
    } else {
      this.skipped++;
    }
    // 5. Weight ensembling with the source (every batch, as the code), in float32 as torch.
    const a = Math.fround(o.momentumSrc), b = Math.fround(1 - o.momentumSrc);
    if (o.momentumSrc < 1) {
      for (const [name, v] of this.views) {
        const src = this.sourceValue(name);
        for (let i = 0; i < v.length; i++) v[i] = Math.fround(a * v[i]!) + Math.fround(b * src[i]!);
      }
      this.model.touch(this.trainable);
    }
    // 6. Prior correction of the output.
    let out = logits;
    if (o.priorCorrection) {
      const sp = smoothedBatchPrior(softmaxRows(logits.data as Float32Array, C), n, C);
      const l = logits.data as Float32Array;
      out = f32([n, C], Float32Array.from(l, (v, k) => v * sp[k % C]!));
    }
    return { logits: out, used: updated ? keep.length : 0, usedIndices: Int32Array.from(updated ? keep : []), loss, extra: { kept: keep.length, meanWeight: keep.length ? keep.reduce((s, i) => s + w[i]!, 0) / keep.length : 0 } };
  }

  protected override resetMethodState(): void {
    this.pbar = null;
    this.draws = 0;
  }

  protected override saveExtra(tensors: Record<string, Float32Array>, meta: AdapterState['meta']): void {
    if (this.pbar) tensors.pbar = this.pbar.slice();
    meta.draws = this.draws;
  }

  protected override loadExtra(state: AdapterState): () => void {
    const pb = state.tensors.pbar;
    if (pb !== undefined && (!(pb instanceof Float32Array) || allFinite(pb) >= 0)) throw new Error('roid.load: pbar must be a finite Float32Array');
    const draws = metaNumber(state, 'draws', 'roid') ?? 0;
    return () => { this.pbar = pb ? pb.slice() : null; this.draws = draws; };
  }

  override async release(): Promise<void> {
    for (const s of this.steps_.values()) await s.release();
    this.steps_.clear();
    await this.runner.release();
    await super.release();
  }
}

/** (v − min)/(max − min) in place (NaN when all are equal, as torch). */
function minMax(v: Float64Array): void {
  let lo = Infinity, hi = -Infinity;
  for (const x of v) { lo = Math.min(lo, x); hi = Math.max(hi, x); }
  for (let i = 0; i < v.length; i++) v[i] = (v[i]! - lo) / (hi - lo);
}

/**
 * ROID's loss: Σ_i w_i·SLR(z_i)/n, plus with a view Σ_k wk_k·SCE(z̃_k, z_{keep_k})/n.
 * `w` [n], `keep` (int64) [K] and `wk` [K] are inputs; `view` is the augmented branch's logits [K, C].
 */
export function roidLoss(logits: string, view: string | null): LossSpec {
  return {
    describe: `roid(SLR(${logits})${view ? ` + SCE(${view}, ${logits})` : ''})`,
    reads: view ? [logits, view] : [logits],
    inputs: [
      { name: ROID_W, dtype: 'float32', shape: (s) => [s(logits)[0]!] },
      ...(view ? [
        { name: ROID_KEEP, dtype: 'int64' as const, shape: (s: (t: string) => number[]) => [s(view)[0]!] },
        { name: ROID_WK, dtype: 'float32' as const, shape: (s: (t: string) => number[]) => [s(view)[0]!] },
      ] : []),
    ],
    build(ctx: LossContext) {
      const em = ctx.em;
      const [n] = ctx.shape(logits) as [number, number];
      const rowSum = (t: string) => em.reduce('ReduceSum', t, [-1], false);
      const q = em.op('Clip', [em.op('Softmax', [logits], { axis: -1 }), em.scalar(0), em.scalar(ROID_DEFAULTS.slrClip)]);
      const ratio = em.add(em.div(q, em.sub(em.scalar(1), q)), em.scalar(ROID_DEFAULTS.slrEps));
      const slr = em.neg(rowSum(em.mul(q, em.op('Log', [ratio]))));
      let total = em.reduce('ReduceSum', em.mul(slr, ctx.input(ROID_W)), [0], false);
      if (view) {
        const zk = em.op('Gather', [logits, ctx.input(ROID_KEEP)], { axis: 0 });
        const ls = (t: string) => em.op('LogSoftmax', [t], { axis: -1 });
        const sm = (t: string) => em.op('Softmax', [t], { axis: -1 });
        const sce = em.mul(rowSum(em.add(em.mul(sm(zk), ls(view)), em.mul(sm(view), ls(zk)))), em.scalar(-0.5));
        total = em.add(total, em.reduce('ReduceSum', em.mul(sce, ctx.input(ROID_WK)), [0], false));
      }
      return em.div(total, em.scalar(n));
    },
  };
}
