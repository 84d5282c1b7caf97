// CoTTA (Wang et al., CVPR 2022, "Continual Test-Time Domain Adaptation"), following the paper's
// code (github.com/qinenergy/cotta, cifar/cotta.py, forward_and_adapt). Per batch x:
//   1. anchor confidence: the mean over the batch of max softmax of the *source* model (the code's
//      model_anchor, a frozen copy) on x;
//   2. teacher prediction: the EMA teacher's logits on x; if the anchor confidence is below the
//      threshold `ap`, the mean of the teacher's logits over N augmented copies of x instead
//      (augmentations: ./augment.ts);
//   3. student update: loss = mean over the batch of −Σ softmax(teacher)·log_softmax(student),
//      one optimizer step (Adam, lr 1e-3, β = (0.9, 0.999), the code's CIFAR-10-C setting);
//   4. teacher update: θ_t ← 0.999·θ_t + 0.001·θ_s;
//   5. stochastic restore: each element of each adapted parameter goes back to its source value
//      with probability p = 0.01.
// The prediction is the teacher's (step 2, before the teacher update), as the code returns
// outputs_ema. Student, teacher and anchor all normalise with the batch's statistics.
//
// Deviations (docs/tta.md): the adapted parameters default to the normalization affine (the
// code trains every parameter; pass `params` to choose); N = 32 augmentations as the code, but
// the augmented passes run only when they are used (the code always computes them). The
// threshold is the paper's p_th = (5% quantile of the source model's confidence on source
// images) − 0.05 when `thresholdData` (in-distribution images) is given, as refit demo and the
// benchmark do; otherwise the code's CIFAR-10-C value 0.92. Random numbers (augmentations, restore masks) come from refit's seeded
// generator, one stream per batch, so `save`/`load` reproduce a run exactly.
import { z } from 'zod';
import type { RefitModel } from '../model.ts';
import type { Tensor } from '../onnx/tensor.ts';
import { f32 } from '../onnx/tensor.ts';
import type { TrainStep } from '../train/train-step.ts';
import { Rng, hashSeed } from '../data/random.ts';
import { commonOptions, parseOptions, normAffineParams, softmaxRows, allFinite, metaNumber, stateTensor, type AdaptOutcome, tensorSchema, PaperAdamAdapter, requireFloatInput } from './common.ts';
import { EmaTeacher, BatchStatRunner, teacherCrossEntropy, TEACHER_LOGITS } from './mean-teacher.ts';
import { augmentBatch } from './augment.ts';
import type { AdapterState } from './types.ts';

/** Defaults of the paper's code (cfgs/cifar10/cotta.yaml and cotta.py). */
export const COTTA_DEFAULTS = {
  /** Adam learning rate (OPTIM.LR) and betas (OPTIM.BETA, 0.999). */
  lr: 1e-3,
  betas: [0.9, 0.999] as const,
  /** Teacher EMA momentum (OPTIM.MT). */
  emaMomentum: 0.999,
  /** Stochastic restore probability (OPTIM.RST). */
  restore: 0.01,
  /** Anchor-confidence threshold below which the teacher's prediction is augmentation-averaged (OPTIM.AP, CIFAR-10-C). */
  threshold: 0.92,
  /** The paper's rule for the threshold from source data: the 5% quantile of the source model's confidence, minus δ = 0.05. */
  thresholdQuantile: 0.05,
  thresholdMargin: 0.05,
  /** Augmented teacher passes (N = 32 in cotta.py). */
  augmentations: 32,
} as const;

export const cottaSchema = z.object({
  ...commonOptions,
  lr: z.number().positive().default(COTTA_DEFAULTS.lr),
  betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).default([...COTTA_DEFAULTS.betas]),
  params: z.array(z.string()).min(1).optional(),
  emaMomentum: z.number().min(0).max(1).default(COTTA_DEFAULTS.emaMomentum),
  restore: z.number().min(0).max(1).default(COTTA_DEFAULTS.restore),
  /**
   * Mean anchor confidence below which the teacher averages augmented passes; 0 never augments, > 1
   * always does. Default: from `thresholdData` by the paper's rule if given, else 0.92 (the code's CIFAR-10-C value).
   */
  threshold: z.number().min(0).optional(),
  /** In-distribution images [M, ...]: threshold = 5% quantile of the source model's max softmax on them − 0.05 (the paper's p_th). */
  thresholdData: tensorSchema.optional(),
  augmentations: z.number().int().positive().default(COTTA_DEFAULTS.augmentations),
  /** Replace the augmentations: (batch data, dims, rng, k) → augmented batch data of the same size (default: ./augment.ts). */
  augment: z.custom<AugmentFn>((v) => typeof v === 'function', 'expected a function (x, dims, rng, k) => Float32Array').optional(),
});
export type AugmentFn = (x: Float32Array, dims: readonly number[], rng: Rng, k: number) => Float32Array;
export type CottaOptions = z.input<typeof cottaSchema>;

export class CoTTA extends PaperAdamAdapter<z.output<typeof cottaSchema>> {
  readonly name = 'cotta';
  private readonly step: TrainStep;
  readonly teacher: EmaTeacher;
  private readonly anchor: BatchStatRunner;
  /** Batches adapted since creation: seeds each batch's random numbers. */
  private draws = 0;
  /** Elements restored to source so far. */
  restored = 0;

  constructor(model: RefitModel, options: CottaOptions = {}) {
    requireFloatInput('cotta', model, 'augments its input images');
    const o = parseOptions('cotta', cottaSchema, options);
    super(model, o, (m) => o.params ?? normAffineParams('cotta', m));
    this.step = this.model.compileTrainStep({
      trainable: this.trainable,
      loss: teacherCrossEntropy(this.logits),
      outputs: [this.logits],
      batchNorm: 'train',
      session: this.sessionOptions,
    });
    this.teacher = new EmaTeacher(this.model, this.trainable);
    this.anchor = new BatchStatRunner(this.source);
    if (o.thresholdData) {
      const d = o.thresholdData.dims;
      if (d.length === 0 || d[0] === 0) throw new Error('cotta: thresholdData is empty; pass in-distribution images [M, ...] with M ≥ 1');
      const bad = allFinite(o.thresholdData.data as Float32Array);
      if (bad >= 0) throw new Error(`cotta: thresholdData has a non-finite value at element ${bad}`);
    }
  }

  /** The anchor-confidence threshold in use (resolved on the first batch when it comes from thresholdData). */
  threshold: number | undefined;

  private async resolveThreshold(): Promise<number> {
    if (this.threshold !== undefined) return this.threshold;
    const data = this.opts.thresholdData;
    if (this.opts.threshold !== undefined || !data) return (this.threshold = this.opts.threshold ?? COTTA_DEFAULTS.threshold);
    // The paper's p_th: the source model as deployed (no adaptation) on source images, the 5% quantile of its confidence, minus 0.05.
    const per = data.data.length / data.dims[0]!;
    const confs: number[] = [];
    for (let s = 0; s < data.dims[0]!; s += 256) {
      const b = Math.min(256, data.dims[0]! - s);
      const l = (await this.source.run({ [this.source.inputs[0]!.name]: f32([b, ...data.dims.slice(1)], (data.data as Float32Array).subarray(s * per, (s + b) * per)) }, { outputs: [this.logits] }))[this.logits]!;
      const C = l.dims[1]!;
      const p = softmaxRows(l.data as Float32Array, C);
      for (let i = 0; i < b; i++) { let m = 0; for (let c = 0; c < C; c++) m = Math.max(m, p[i * C + c]!); confs.push(m); }
    }
    confs.sort((a, b) => a - b);
    const q = confs[Math.min(confs.length - 1, Math.floor(COTTA_DEFAULTS.thresholdQuantile * confs.length))]!;
    return (this.threshold = q - COTTA_DEFAULTS.thresholdMargin);
  }

  protected async adapt(x: Tensor): Promise<AdaptOutcome> {
    const n = x.dims[0]!;
    const rng = Rng.xoshiro(hashSeed(this.opts.seed, 0xc077a, this.draws++));
    // 1. Anchor confidence (source model, batch statistics).
    const a = (await this.anchor.run(x, [this.logits]))[this.logits]!;
    const C = a.dims[1]!;
    const pa = softmaxRows(a.data as Float32Array, C);
    let conf = 0;
    for (let i = 0; i < n; i++) { let m = 0; for (let c = 0; c < C; c++) m = Math.max(m, pa[i * C + c]!); conf += m / n; }
    // 2. Teacher prediction, augmentation-averaged when the anchor is unsure.
    const augmented = conf < (await this.resolveThreshold());
    let teacherLogits: Float32Array;
    if (augmented) {
      const N = this.opts.augmentations;
      const acc = new Float64Array(n * C);
      for (let k = 0; k < N; k++) {
        const xa = f32([...x.dims], this.augmentCopy(x, rng, k));
        const t = (await this.teacher.run(xa, [this.logits]))[this.logits]!.data as Float32Array;
        for (let i = 0; i < acc.length; i++) acc[i]! += t[i]!;
      }
      teacherLogits = Float32Array.from(acc, (v) => v / N);
    } else {
      teacherLogits = (await this.teacher.run(x, [this.logits]))[this.logits]!.data as Float32Array;
    }
    // 3. Student step on the consistency loss.
    const r = await this.step.run({ [this.model.inputs[0]!.name]: x, [TEACHER_LOGITS]: f32([n, C], teacherLogits) });
    const updated = this.applyStep(r, n);
    let restored = 0;
    if (updated) {
      // 4. Teacher EMA, 5. stochastic restore (after the teacher update, as the code).
      this.teacher.update(this.views, this.opts.emaMomentum);
      const p = this.opts.restore;
      if (p > 0) {
        for (const [name, v] of this.views) {
          const src = this.sourceValue(name);
          for (let i = 0; i < v.length; i++) if (rng.next() < p) { v[i] = src[i]!; restored++; }
        }
        this.model.touch(this.trainable);
        this.restored += restored;
      }
    }
    return {
      logits: f32([n, C], teacherLogits),
      used: updated ? n : 0,
      loss: r.loss,
      extra: { anchorConfidence: conf, threshold: this.threshold!, augmented: augmented ? this.opts.augmentations : 0, restored },
    };
  }

  private augmentCopy(x: Tensor, rng: Rng, k: number): Float32Array {
    const a = this.opts.augment ? this.opts.augment(x.data as Float32Array, x.dims, rng, k) : augmentBatch(x.data as Float32Array, x.dims, rng);
    if (!(a instanceof Float32Array) || a.length !== x.data.length) throw new Error(`cotta: the augment function must return a Float32Array of ${x.data.length} values, got ${a instanceof Float32Array ? a.length + ' values' : typeof a}`);
    const bad = allFinite(a);
    if (bad >= 0) throw new Error(`cotta: augmented copy ${k} has a non-finite value at element ${bad}`);
    return a;
  }

  protected override resetMethodState(): void {
    // The code's reset() copies the teacher (and anchor) afresh from the restored model. refit
    // also restarts the random streams, so a reset adapter repeats a fresh one exactly.
    this.teacher?.set((p) => this.sourceValue(p));
    this.draws = 0;
  }

  protected override saveExtra(tensors: Record<string, Float32Array>, meta: AdapterState['meta']): void {
    for (const [p, v] of this.teacher.values) tensors[`teacher.${p}`] = v.slice();
    meta.draws = this.draws;
    meta.restored = this.restored;
  }

  protected override loadExtra(state: AdapterState): () => void {
    const t = new Map<string, Float32Array>();
    for (const p of this.trainable) {
      const v = stateTensor(state, `teacher.${p}`, this.model.param(p).data.length, 'cotta');
      if (allFinite(v) >= 0) throw new Error(`cotta.load: teacher parameter '${p}' is not finite`);
      t.set(p, v);
    }
    const draws = metaNumber(state, 'draws', 'cotta') ?? 0;
    const restored = metaNumber(state, 'restored', 'cotta') ?? 0;
    return () => { this.teacher.set(t); this.draws = draws; this.restored = restored; };
  }

  override async release(): Promise<void> {
    await this.step.release();
    await this.teacher.release();
    await this.anchor.release();
    await super.release();
  }
}
