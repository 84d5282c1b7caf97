// RMT (Döbler, Marsden & Yang, CVPR 2023, "Robust Mean Teacher for Continual and Gradual
// Test-Time Adaptation"), following the paper's code (github.com/mariodoebler/test-time-adaptation,
// classification/methods/rmt.py). Per test batch x:
//   1. teacher logits t on x (EMA teacher, BatchNorm on batch statistics);
//   2. one compiled step with three forward passes of the student sharing its parameters (each
//      with its own batch statistics): x, an augmented view a(x) (CoTTA's augmentations,
//      ./augment.ts), and a labelled batch of the source set;
//      loss = λ_trg·SCE + λ_cont·contrastive + λ_src·CE_src, where
//        SCE = mean over the batch of ¼·Σ_{v ∈ {x, a(x)}} [−Σ softmax(t)·log_softmax(s_v) − Σ softmax(s_v)·log_softmax(t)],
//        contrastive = SupCon without labels (temperature 0.1, "all" mode) over the views
//          [nearest source prototype of f(x) (cosine), f(x), f(a(x))] of every test sample,
//          projected by a 2-layer MLP (D → 128 → 128, ReLU, trained with the model),
//        CE_src = cross-entropy of the student on the source batch (source replay);
//      one Adam step (lr 1e-3, β = (0.9, 0.999));
//   3. teacher update θ_t ← 0.999·θ_t + 0.001·θ_s;
//   4. prediction: student logits + teacher logits (before the updates).
// Before the first batch (as the code's __init__): class prototypes = mean source-model feature
// per class over the source set; then a warm-up of ⌊warmupSamples / source batch⌋ steps on source
// batches (SCE between student and teacher, learning rate rising linearly to lr, EMA after each
// step). reset() and episodic mode go back to the state after the warm-up, as the code's
// copy_model_and_optimizer after warm-up does.
//
// The source set (`sourceData`, `sourceLabels`; refit ships 2000 Fashion-MNIST training images,
// see ./source-data.ts) feeds the prototypes, the warm-up and the replay. Without it RMT runs as
// its source-free variant: no warm-up, no contrastive term (it needs source prototypes), no
// replay; only the SCE self-training, as the code with λ_src = λ_cont = 0 and no warm-up.
//
// Deviations (docs/tta.md): the adapted parameters default to the normalization affine plus the
// projector (the code trains every model parameter; pass `params` to choose); the source batch
// size defaults to the first test batch's size (the code: the test batch size); sampling of the
// source batches uses refit's seeded generator.
// Outside the paper, off by default: `updateEvery` (a step on every k-th batch only) and
// `addLabelled` (labelled stream samples in the replay), for the continual controller.
import { z } from 'zod';
import { RefitModel as Model, type RefitModel } from '../model.ts';
import type { Tensor } from '../onnx/tensor.ts';
import { f32, i64 } from '../onnx/tensor.ts';
import type { OptimizerState } from '../train/optim/index.ts';
import type { TrainStep } from '../train/train-step.ts';
import type { LossContext, LossSpec } from '../train/loss-spec.ts';
import { Rng, hashSeed } from '../data/random.ts';
import { commonOptions, parseOptions, normAffineParams, allFinite, metaNumber, stateTensor, type AdaptOutcome, tensorSchema, PaperAdamAdapter, requireFloatInput } from './common.ts';
import { EmaTeacher, BatchStatRunner, teacherSymmetricCrossEntropy, symmetricTerm, TEACHER_LOGITS } from './mean-teacher.ts';
import { augmentBatch } from './augment.ts';
import { multiBranch, branchName } from './branches.ts';
import { classCount } from './heads.ts';
import { Emitter } from '../onnx/emitter.ts';
import { opsetVersion } from '../onnx/ir.ts';
import type { AugmentFn } from './cotta.ts';
import type { AdapterState } from './types.ts';

/** Defaults of the paper's code (conf.py and cfgs/cifar10_c/rmt.yaml). */
export const RMT_DEFAULTS = {
  lr: 1e-3,
  betas: [0.9, 0.999] as const,
  /** M_TEACHER.MOMENTUM */
  emaMomentum: 0.999,
  /** RMT.LAMBDA_CE_TRG, RMT.LAMBDA_CONT, RMT.LAMBDA_CE_SRC */
  lambdaTrg: 1,
  lambdaCont: 1,
  lambdaSrc: 1,
  /** CONTRAST.TEMPERATURE (base temperature the same) and CONTRAST.PROJECTION_DIM */
  temperature: 0.1,
  projectionDim: 128,
  /** RMT.NUM_SAMPLES_WARM_UP */
  warmupSamples: 50000,
} as const;

export const labelsSchema = z.custom<ArrayLike<number>>((v) => v instanceof Uint8Array || v instanceof Int32Array || (Array.isArray(v) && v.every((x) => Number.isInteger(x))), 'expected integer labels (Uint8Array, Int32Array or number[])');

export const rmtSchema = z.object({
  ...commonOptions,
  lr: z.number().positive().default(RMT_DEFAULTS.lr),
  betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).default([...RMT_DEFAULTS.betas]),
  /** Model parameters to adapt (default: normalization affine); the projector is always trained. */
  params: z.array(z.string()).min(1).optional(),
  emaMomentum: z.number().min(0).max(1).default(RMT_DEFAULTS.emaMomentum),
  lambdaTrg: z.number().min(0).default(RMT_DEFAULTS.lambdaTrg),
  lambdaCont: z.number().min(0).default(RMT_DEFAULTS.lambdaCont),
  lambdaSrc: z.number().min(0).default(RMT_DEFAULTS.lambdaSrc),
  temperature: z.number().positive().default(RMT_DEFAULTS.temperature),
  projectionDim: z.number().int().positive().default(RMT_DEFAULTS.projectionDim),
  warmupSamples: z.number().int().min(0).default(RMT_DEFAULTS.warmupSamples),
  /** Called after each warm-up step with the source samples done and the warm-up's total (the CLI prints progress). */
  onWarmup: z.custom<(done: number, total: number) => void>((v) => typeof v === 'function', 'expected a function (done, total) => void').optional(),
  /** Labelled in-distribution images [M, ...] and their labels: prototypes, warm-up and replay. */
  sourceData: tensorSchema.optional(),
  sourceLabels: labelsSchema.optional(),
  /** Source batch size (default: the first test batch's size). */
  sourceBatchSize: z.number().int().positive().optional(),
  /** Penultimate-feature output for the contrastive term (default 'features'). */
  features: z.string().optional(),
  /** Replace the augmentation of the test view: (x, dims, rng, k = 0) → augmented x. */
  augment: z.custom<AugmentFn>((v) => typeof v === 'function', 'expected a function (x, dims, rng, k) => Float32Array').optional(),
  /**
   * Take the update step on every k-th batch only; the batches between are predicted the same
   * way (student + teacher, batch statistics) without a step. A deviation for a compute budget
   * (the code steps on every batch, k = 1): a step costs several times a batch without one. @default 1
   */
  updateEvery: z.number().int().positive().default(1),
  /**
   * Labelled target samples (`addLabelled`): the largest share of each replay batch they fill.
   * A refit addition (RMT's replay is source-only). @default 0.25
   */
  labelledShare: z.number().min(0).max(1).default(0.25),
  /**
   * Replay cycles through the newest `labelledRecent` labelled samples only (1 to
   * LABELLED_CAPACITY; small values favour the current domain). A refit addition. @default LABELLED_CAPACITY
   */
  labelledRecent: z.number().int().positive().optional(),
  /**
   * Weight of a labelled target row's cross-entropy in the replay term, relative to a source
   * row's (λ_src·Σ_rows w·CE / b): their own supervised term in the same branch, without another
   * forward pass. A refit addition. @default 1
   */
  labelledWeight: z.number().min(0).default(1),
});
export type RmtOptions = z.input<typeof rmtSchema>;

/** Labelled target samples kept for replay (the newest). */
export const LABELLED_CAPACITY = 512;
const AUG = '__aug';
const SRC = '__src';
const SRC_LABELS = 'src_labels';
const SRC_WEIGHTS = 'src_weights';
export const PROJECTOR = ['rmt.projector.0.weight', 'rmt.projector.0.bias', 'rmt.projector.2.weight', 'rmt.projector.2.bias'] as const;

interface Prepared { step: TrainStep; classes: number; prototypes: Float32Array | null }
interface Snapshot { params: Map<string, Float32Array>; teacher: Map<string, Float32Array>; opt: OptimizerState | undefined; srcEpoch: number; srcPos: number }

export class RMT extends PaperAdamAdapter<z.output<typeof rmtSchema>> {
  readonly name = 'rmt';
  readonly teacher: EmaTeacher;
  /** Model parameters the teacher follows (the trainables minus the projector). */
  readonly modelParams: string[];
  private readonly features: string;
  private readonly plain: RefitModel;
  private readonly source_: { x: Float32Array; y: Int32Array; m: number; per: number; dims: number[] } | null;
  private readonly useCont: boolean;
  private readonly useSrc: boolean;
  private prepared: Promise<Prepared> | undefined;
  /** The source prototypes once computed (or restored: a state carries them, so a restored RMT skips that pass over the source set). */
  private prototypes: Float32Array | null = null;
  /** State after the warm-up: where reset() returns. */
  private warm: Snapshot | null = null;
  private warmedUp = false;
  private srcBatch: number | undefined;
  /** Source sampling position: epoch (reshuffled each) and index within it. */
  private srcEpoch = 0;
  private srcPos = 0;
  private draws = 0;
  /** Labelled target samples (`addLabelled`), oldest first, at most LABELLED_CAPACITY; and where the replay cycle is. */
  private labelled: { x: Float32Array; y: number }[] = [];
  private labelledPos = 0;
  /** Batches adapted on since the last reset (`updateEvery` counts them). */
  private batchesSeen = 0;
  private studentRunner: BatchStatRunner | undefined;
  /** Warm-up steps taken. */
  warmupSteps = 0;
  /**
   * With `keepFeatures`, each predicted batch's teacher features (the `features` output, [N, D])
   * are kept in `lastFeatures`: an embedding for the continual controller's error memory. A refit
   * addition; it adds an output to the teacher's forward pass and changes no number.
   */
  keepFeatures = false;
  lastFeatures: Tensor | undefined;

  /** The teacher's outputs for x: logits, and features when kept. */
  private async teacherRun(x: Tensor): Promise<Tensor> {
    const r = await this.teacher.run(x, this.keepFeatures ? [this.logits, this.features] : [this.logits]);
    this.lastFeatures = this.keepFeatures ? r[this.features] : undefined;
    return r[this.logits]!;
  }

  constructor(model: RefitModel, options: RmtOptions = {}) {
    requireFloatInput('rmt', model, 'augments its input images');
    const o = parseOptions('rmt', rmtSchema, options);
    const features = o.features ?? 'features';
    const hasSource = !!o.sourceData;
    const useCont = hasSource && o.lambdaCont > 0;
    let D = 0;
    if (useCont) {
      const f = model.outputs.find((v) => v.name === features);
      if (!f) throw new Error(`rmt: the contrastive term reads the penultimate features, and the model has no output '${features}' (outputs: ${model.outputs.map((v) => v.name).join(', ')}); use model.withFeatures() (the input of the model's linear head, as 'features'), pass 'features' naming another output, or set lambdaCont: 0`);
      const d = f.shape?.[f.shape.length - 1];
      if (f.shape?.length !== 2 || typeof d !== 'number') throw new Error(`rmt: features output '${features}' must have a static shape [batch, D], got ${JSON.stringify(f.shape)}`);
      D = d;
    }
    super(model, o, (m) => {
      const base = o.params ?? normAffineParams('rmt', m);
      if (!useCont) return base;
      // The projector (nn.Linear defaults: U(±1/√fan_in) for weight and bias), stored [in, out] for MatMul.
      const rng = Rng.xoshiro(hashSeed(o.seed, 0x9e0));
      const P = o.projectionDim;
      const lin = (inF: number, outF: number, w: string, b: string) => {
        const bound = 1 / Math.sqrt(inF);
        m.ir.graph.initializers.set(w, f32([inF, outF], Float32Array.from({ length: inF * outF }, () => rng.uniform(-bound, bound))));
        m.ir.graph.initializers.set(b, f32([outF], Float32Array.from({ length: outF }, () => rng.uniform(-bound, bound))));
      };
      lin(D, P, PROJECTOR[0], PROJECTOR[1]);
      lin(P, P, PROJECTOR[2], PROJECTOR[3]);
      return [...base, ...PROJECTOR];
    });
    this.features = features;
    this.useCont = useCont;
    this.useSrc = hasSource && o.lambdaSrc > 0;
    this.modelParams = this.trainable.filter((p) => !(PROJECTOR as readonly string[]).includes(p));
    // The student without the projector (for the warm-up step and the teacher): shares the parameter tensors.
    this.plain = withoutProjector(this.model);
    this.teacher = new EmaTeacher(this.plain, this.modelParams);
    this.source_ = null;
    if (o.sourceData) {
      const d = o.sourceData.dims;
      const m = d[0] ?? 0;
      if (d.length === 0 || m === 0) throw new Error('rmt: sourceData is empty; pass in-distribution images [M, ...] with M ≥ 1');
      const inShape = model.inputs[0]!.shape;
      if (inShape && (inShape.length !== d.length || inShape.some((s, i) => i > 0 && typeof s === 'number' && s !== d[i]))) throw new Error(`rmt: sourceData has shape [${d.join(', ')}], the model expects [${inShape.join(', ')}]`);
      const bad = allFinite(o.sourceData.data as Float32Array);
      if (bad >= 0) throw new Error(`rmt: sourceData has a non-finite value at element ${bad}`);
      if (!o.sourceLabels) throw new Error('rmt: sourceData needs sourceLabels (the class of each image: prototypes and source replay use them)');
      if (o.sourceLabels.length !== m) throw new Error(`rmt: ${o.sourceLabels.length} sourceLabels for ${m} sourceData images`);
      const y = Int32Array.from(o.sourceLabels as ArrayLike<number>);
      if (y.some((v) => v < 0)) throw new Error('rmt: sourceLabels must be non-negative class indices');
      this.source_ = { x: o.sourceData.data as Float32Array, y, m, per: o.sourceData.data.length / m, dims: d.slice(1) };
    } else if (o.sourceLabels) {
      throw new Error('rmt: sourceLabels given without sourceData');
    }
  }

  private get input(): string {
    return this.model.inputs[0]!.name;
  }

  /** The next source batch (shuffled epochs over the source set, seeded). */
  private nextSource(b: number): { x: Tensor; y: Int32Array } {
    const s = this.source_!;
    const x = new Float32Array(b * s.per);
    const y = new Int32Array(b);
    for (let j = 0; j < b; j++) {
      if (this.srcPos >= s.m) { this.srcEpoch++; this.srcPos = 0; }
      const perm = this.permutation(this.srcEpoch);
      const id = perm[this.srcPos++]!;
      x.set(s.x.subarray(id * s.per, (id + 1) * s.per), j * s.per);
      y[j] = s.y[id]!;
    }
    return { x: f32([b, ...s.dims], x), y };
  }

  /**
   * A labelled sample of the target stream (a delayed label, say) joins the source replay: up
   * to a quarter of each replay batch cycles through these samples. A refit addition for the
   * continual controller's feedback; RMT's replay is source-only. Needs `sourceData`.
   */
  addLabelled(x: Float32Array, label: number): void {
    const s = this.source_;
    if (!s) throw new Error('rmt.addLabelled: labelled samples join the source replay, and this RMT has no sourceData');
    if (x.length !== s.per) throw new Error(`rmt.addLabelled: a sample has ${s.per} values, got ${x.length}`);
    if (!(Number.isInteger(label) && label >= 0)) throw new Error(`rmt.addLabelled: the label must be a class index ≥ 0, got ${label}`);
    const bad = allFinite(x);
    if (bad >= 0) throw new Error(`rmt.addLabelled: value ${bad} of the sample is not finite`);
    this.labelled.push({ x: x.slice(), y: label });
    if (this.labelled.length > LABELLED_CAPACITY) this.labelled.shift();
  }

  /**
   * Rows 0..k of a replay batch replaced by labelled target samples (k ≤ labelledShare of the
   * batch), cycling through the newest `labelledRecent`; returns k.
   */
  private mixLabelled(src: { x: Tensor; y: Int32Array }): number {
    const b = src.y.length, k = Math.min(Math.floor(b * this.opts.labelledShare), this.labelled.length);
    const per = this.source_!.per, xd = src.x.data as Float32Array;
    const w = Math.min(this.labelled.length, this.opts.labelledRecent ?? LABELLED_CAPACITY), off = this.labelled.length - w;
    for (let j = 0; j < k; j++) {
      const l = this.labelled[off + (this.labelledPos++ % w)]!;
      xd.set(l.x, j * per);
      src.y[j] = l.y;
    }
    return k;
  }

  private permCache: { epoch: number; perm: Uint32Array } | null = null;
  private permutation(epoch: number): Uint32Array {
    if (this.permCache?.epoch !== epoch) this.permCache = { epoch, perm: Rng.xoshiro(hashSeed(this.opts.seed, 0x5c, epoch)).permutation(this.source_!.m) };
    return this.permCache.perm;
  }

  private prepare(x: Tensor): Promise<Prepared> {
    this.prepared ??= (async () => {
      const n = x.dims[0]!;
      this.srcBatch ??= this.opts.sourceBatchSize ?? n;
      const classes = await classCount(this.plain, this.logits, x);
      if (this.source_) {
        const maxLabel = this.source_.y.reduce((a, v) => Math.max(a, v), 0);
        if (maxLabel >= classes) throw new Error(`rmt: sourceLabels has label ${maxLabel}, the model has ${classes} classes`);
      }
      const prototypes = this.useCont ? (this.prototypes ??= await this.computePrototypes(classes)) : null;
      if (this.source_ && !this.warmedUp) await this.warmup();
      const suffixes = ['', AUG, ...(this.useSrc ? [SRC] : [])];
      const branched = multiBranch(this.model, suffixes);
      if (prototypes) appendProjection(branched, this.features, branchName(this.features, AUG), prototypes);
      const step = branched.compileTrainStep({ trainable: this.trainable, loss: this.loss(prototypes !== null), outputs: [this.logits], batchNorm: 'train', session: this.sessionOptions });
      return { step, classes, prototypes };
    })();
    this.prepared.catch(() => { this.prepared = undefined; });
    return this.prepared;
  }

  /** Class means of the source model's features (batch statistics, in source-batch-sized chunks, as the code's loader). */
  private async computePrototypes(classes: number): Promise<Float32Array> {
    const s = this.source_!;
    const runner = new BatchStatRunner(this.source);
    const bs = this.srcBatch!;
    let D = 0;
    let sum = new Float64Array(0);
    const count = new Int32Array(classes);
    try {
      for (let start = 0; start < s.m; start += bs) {
        const b = Math.min(bs, s.m - start);
        const out = await runner.run(f32([b, ...s.dims], s.x.subarray(start * s.per, (start + b) * s.per)), [this.features]);
        const f = out[this.features]!;
        D = f.dims[1]!;
        if (sum.length === 0) sum = new Float64Array(classes * D);
        const fd = f.data as Float32Array;
        for (let i = 0; i < b; i++) {
          const c = s.y[start + i]!;
          count[c]!++;
          for (let d = 0; d < D; d++) sum[c * D + d]! += fd[i * D + d]!;
        }
      }
    } finally {
      await runner.release();
    }
    // Classes absent from the source set get no prototype (the code would produce NaN means).
    const present = [...count.keys()].filter((c) => count[c]! > 0);
    const P = new Float32Array(present.length * D);
    present.forEach((c, k) => { for (let d = 0; d < D; d++) P[k * D + d] = sum[c * D + d]! / count[c]!; });
    return P;
  }

  /** The mean-teacher warm-up on source batches (the code's warmup()). */
  private async warmup(): Promise<void> {
    const bs = this.srcBatch!;
    const steps = Math.floor(this.opts.warmupSamples / bs);
    if (steps > 0) {
      const step = this.plain.compileTrainStep({ trainable: this.modelParams, loss: teacherSymmetricCrossEntropy([this.logits]), batchNorm: 'train', session: this.sessionOptions });
      const opt = this.optimizer(bs);
      try {
        for (let i = 0; i < steps; i++) {
          opt.lr = (this.opts.lr * (i + 1)) / steps;
          const { x } = this.nextSource(bs);
          const t = (await this.teacher.run(x, [this.logits]))[this.logits]!;
          const r = await step.run({ [this.input]: x, [TEACHER_LOGITS]: t });
          if (this.applyStep(r, bs)) this.teacher.update(this.views, this.opts.emaMomentum);
          this.warmupSteps++;
          this.opts.onWarmup?.((i + 1) * bs, steps * bs);
        }
      } finally {
        opt.lr = this.opts.lr;
        await step.release();
      }
    }
    this.warmedUp = true;
    this.warm = {
      params: new Map([...this.views].map(([p, v]) => [p, v.slice()])),
      teacher: new Map([...this.teacher.values].map(([p, v]) => [p, v.slice()])),
      opt: this.optimizerState(),
      srcEpoch: this.srcEpoch,
      srcPos: this.srcPos,
    };
  }

  private loss(contrastive: boolean): LossSpec {
    const o = this.opts;
    const logits = this.logits;
    const useSrc = this.useSrc;
    // Per-row replay weights only when labelled rows weigh differently (else the graph is RMT's).
    const weightedRows = useSrc && o.labelledWeight !== 1;
    const reads = [logits, branchName(logits, AUG), ...(contrastive ? [PROJECTED] : []), ...(useSrc ? [branchName(logits, SRC)] : [])];
    return {
      describe: `rmt(λ_trg·SCE${contrastive ? ' + λ_cont·contrastive' : ''}${useSrc ? ' + λ_src·CE_src' : ''})`,
      reads,
      inputs: [
        { name: TEACHER_LOGITS, dtype: 'float32', shape: (s) => s(logits) },
        ...(useSrc ? [{ name: SRC_LABELS, dtype: 'int64' as const, shape: (s: (t: string) => number[]) => [s(branchName(logits, SRC))[0]!] }] : []),
        ...(weightedRows ? [{ name: SRC_WEIGHTS, dtype: 'float32' as const, shape: (s: (t: string) => number[]) => [s(branchName(logits, SRC))[0]!, 1] }] : []),
      ],
      build: (ctx) => {
        const em = ctx.em;
        const terms: string[] = [];
        const weighted = (t: string, w: number) => terms.push(w === 1 ? t : em.mul(t, em.scalar(w)));
        if (o.lambdaTrg > 0) weighted(symmetricTerm(ctx, [logits, branchName(logits, AUG)], TEACHER_LOGITS), o.lambdaTrg);
        if (contrastive) weighted(supConTerm(ctx, PROJECTED, o.temperature), o.lambdaCont);
        if (useSrc) {
          const ls = branchName(logits, SRC);
          const [b, C] = ctx.shape(ls) as [number, number];
          const onehot = em.op('OneHot', [ctx.input(SRC_LABELS), em.constant(i64([], [C])), em.constant(f32([2], [0, 1]))], { axis: -1 });
          const picked = em.mul(onehot, em.op('LogSoftmax', [ls], { axis: -1 }));
          const ll = em.reduce('ReduceSum', weightedRows ? em.mul(picked, ctx.input(SRC_WEIGHTS)) : picked, [0, 1], false);
          weighted(em.div(em.neg(ll), em.scalar(b)), o.lambdaSrc);
        }
        return terms.length === 0 ? em.scalar(0) : em.sum(terms);
      },
    };
  }

  protected async adapt(x: Tensor): Promise<AdaptOutcome> {
    const { step, classes } = await this.prepare(x);
    const n = x.dims[0]!;
    if (this.batchesSeen++ % this.opts.updateEvery !== 0) return this.predictOnly(x, classes);
    const rng = Rng.xoshiro(hashSeed(this.opts.seed, 0x3a7, this.draws++));
    const t = await this.teacherRun(x);
    const xa = this.opts.augment ? this.opts.augment(x.data as Float32Array, x.dims, rng, 0) : augmentBatch(x.data as Float32Array, x.dims, rng);
    if (!(xa instanceof Float32Array) || xa.length !== x.data.length || allFinite(xa) >= 0) throw new Error(`rmt: the augmented view must be a finite Float32Array of ${x.data.length} values`);
    const feeds: Record<string, Tensor> = { [this.input]: x, [branchName(this.input, AUG)]: f32([...x.dims], xa), [TEACHER_LOGITS]: t };
    if (this.useSrc) {
      const s = this.nextSource(this.srcBatch!);
      const k = this.labelled.length ? this.mixLabelled(s) : 0;
      feeds[branchName(this.input, SRC)] = s.x;
      feeds[SRC_LABELS] = i64([s.y.length], Array.from(s.y));
      if (this.opts.labelledWeight !== 1) feeds[SRC_WEIGHTS] = f32([s.y.length, 1], Float32Array.from(s.y, (_, j) => (j < k ? this.opts.labelledWeight : 1)));
    }
    const r = await step.run(feeds);
    const student = r.outputs[this.logits]!.data as Float32Array;
    const updated = this.applyStep(r, n);
    if (updated) this.teacher.update(this.views, this.opts.emaMomentum);
    const td = t.data as Float32Array;
    return {
      logits: f32([n, classes], Float32Array.from(student, (v, i) => v + td[i]!)),
      used: updated ? n : 0,
      loss: r.loss,
      extra: { contrastive: this.useCont ? 1 : 0, replay: this.useSrc ? this.srcBatch! : 0, warmupSteps: this.warmupSteps },
    };
  }

  /** Whether the one-time set-up (prototypes, warm-up, compiled step) has run or is running: ready() would do nothing new. */
  get isPrepared(): boolean {
    return this.prepared !== undefined;
  }

  /**
   * Do now what the first batch would otherwise wait for: the source prototypes, the warm-up on
   * the source set and the compiled step. `sample` is a batch of the size the stream will have
   * (its values are not used for learning). Changes nothing the first batch would not.
   */
  async ready(sample: Tensor): Promise<void> {
    await this.prepare(sample);
  }

  /**
   * Student + teacher logits (their sum, as predict's) without any step or state change: for a
   * caller that decides itself when to adapt (the continual controller below its top level).
   */
  async infer(x: Tensor): Promise<Tensor> {
    const { classes } = await this.prepare(x);
    return (await this.predictOnly(x, classes)).logits;
  }

  /** Student + teacher logits without a step (the batches between updates, `updateEvery` > 1). */
  private async predictOnly(x: Tensor, classes: number): Promise<AdaptOutcome> {
    this.studentRunner ??= new BatchStatRunner(this.plain, this.modelParams);
    const s = (await this.studentRunner.run(x, [this.logits]))[this.logits]!.data as Float32Array;
    const t = (await this.teacherRun(x)).data as Float32Array;
    return { logits: f32([x.dims[0]!, classes], Float32Array.from(s, (v, i) => v + t[i]!)), used: 0, extra: { contrastive: this.useCont ? 1 : 0, replay: 0, warmupSteps: this.warmupSteps } };
  }

  protected override restoreSource(): void {
    super.restoreSource();
    if (this.warm) {
      for (const [p, v] of this.warm.params) this.views.get(p)!.set(v);
      this.model.touch(this.trainable);
      this.restoreOptimizer(this.warm.opt, this.srcBatch ?? 1);
    }
  }

  protected override resetMethodState(): void {
    // Back to the teacher after the warm-up (or the source before it), as the code's reset().
    // refit also restarts the random streams and the source sampling where the warm-up left
    // them, so a reset adapter repeats its first batches exactly.
    this.teacher?.set(this.warm ? this.warm.teacher : (p) => this.sourceValue(p));
    this.draws = 0;
    this.batchesSeen = 0;
    this.srcEpoch = this.warm?.srcEpoch ?? 0;
    this.srcPos = this.warm?.srcPos ?? 0;
  }

  protected override saveExtra(tensors: Record<string, Float32Array>, meta: AdapterState['meta']): void {
    for (const [p, v] of this.teacher.values) tensors[`teacher.${p}`] = v.slice();
    meta.draws = this.draws;
    meta.batchesSeen = this.batchesSeen;
    meta.labelledPos = this.labelledPos;
    if (this.labelled.length) {
      const per = this.source_!.per;
      const x = new Float32Array(this.labelled.length * per);
      this.labelled.forEach((l, i) => x.set(l.x, i * per));
      tensors['labelled.x'] = x;
      tensors['labelled.y'] = Float32Array.from(this.labelled, (l) => l.y);
    }
    meta.srcEpoch = this.srcEpoch;
    meta.srcPos = this.srcPos;
    meta.srcBatch = this.srcBatch ?? null;
    meta.warmupSteps = this.warmupSteps;
    meta.warmedUp = this.warmedUp;
    if (this.prototypes) tensors.prototypes = this.prototypes.slice();
    if (this.warm) {
      meta.warmSrcEpoch = this.warm.srcEpoch;
      meta.warmSrcPos = this.warm.srcPos;
      for (const [p, v] of this.warm.params) tensors[`warm.param.${p}`] = v.slice();
      for (const [p, v] of this.warm.teacher) tensors[`warm.teacher.${p}`] = v.slice();
      if (this.warm.opt) {
        const { buffers, ...rest } = this.warm.opt;
        meta.warmOptimizer = JSON.stringify(rest);
        for (const [p, slots] of Object.entries(buffers)) for (const [k, v] of Object.entries(slots)) tensors[`warm.opt.${k}.${p}`] = v.slice();
      }
    }
  }

  protected override loadExtra(state: AdapterState): () => void {
    const len = (p: string) => this.model.param(p).data.length;
    const teacher = new Map(this.modelParams.map((p) => [p, stateTensor(state, `teacher.${p}`, len(p), 'rmt').slice()]));
    for (const [p, v] of teacher) if (allFinite(v) >= 0) throw new Error(`rmt.load: teacher parameter '${p}' is not finite`);
    const num = (k: string) => metaNumber(state, k, 'rmt');
    const warmedUp = state.meta.warmedUp === true;
    let warm: Snapshot | null = null;
    if (warmedUp && `warm.param.${this.trainable[0]}` in state.tensors) {
      const params = new Map(this.trainable.map((p) => [p, stateTensor(state, `warm.param.${p}`, len(p), 'rmt').slice()]));
      const wt = new Map(this.modelParams.map((p) => [p, stateTensor(state, `warm.teacher.${p}`, len(p), 'rmt').slice()]));
      let opt: OptimizerState | undefined;
      if (typeof state.meta.warmOptimizer === 'string') {
        const rest = JSON.parse(state.meta.warmOptimizer) as Omit<OptimizerState, 'buffers'>;
        const buffers: OptimizerState['buffers'] = {};
        for (const k of Object.keys(state.tensors)) {
          const m = /^warm\.opt\.([^.]+)\.(.+)$/.exec(k);
          if (m) (buffers[m[2]!] ??= {})[m[1]!] = state.tensors[k]!.slice();
        }
        opt = { ...rest, buffers };
      }
      warm = { params, teacher: wt, opt, srcEpoch: metaNumber(state, 'warmSrcEpoch', 'rmt') ?? 0, srcPos: metaNumber(state, 'warmSrcPos', 'rmt') ?? 0 };
    }
    const draws = num('draws') ?? 0, batchesSeen = num('batchesSeen') ?? draws, srcEpoch = num('srcEpoch') ?? 0, srcPos = num('srcPos') ?? 0, warmupSteps = num('warmupSteps') ?? 0;
    const srcBatch = num('srcBatch') ?? undefined;
    const labelled: { x: Float32Array; y: number }[] = [];
    const ly = state.tensors['labelled.y'], lx = state.tensors['labelled.x'];
    if (ly || lx) {
      const per = this.source_?.per ?? 0;
      if (!ly || !lx || per === 0 || lx.length !== ly.length * per || ly.some((v) => !(Number.isInteger(v) && v >= 0))) throw new Error('rmt.load: the labelled replay samples are inconsistent (labelled.x, labelled.y)');
      for (let i = 0; i < ly.length; i++) labelled.push({ x: lx.slice(i * per, (i + 1) * per), y: ly[i]! });
    }
    const labelledPos = num('labelledPos') ?? 0;
    const prototypes = state.tensors.prototypes?.slice() ?? null;
    if (prototypes && (prototypes.length === 0 || allFinite(prototypes) >= 0)) throw new Error('rmt.load: the source prototypes are empty or not finite');
    return () => {
      if (prototypes) this.prototypes = prototypes;
      this.teacher.set(teacher);
      Object.assign(this, { draws, batchesSeen, srcEpoch, srcPos, warmupSteps, warmedUp, warm, labelled, labelledPos });
      if (srcBatch !== undefined) this.srcBatch = srcBatch;
    };
  }

  override async release(): Promise<void> {
    const p = this.prepared;
    this.prepared = undefined;
    if (p) await (await p.catch(() => null))?.step.release();
    await this.teacher.release();
    await this.studentRunner?.release();
    await super.release();
  }
}

function withoutProjector(m: RefitModel): RefitModel {
  const inits = new Map(m.ir.graph.initializers);
  for (const p of PROJECTOR) inits.delete(p);
  return new Model({ ...m.ir, graph: { ...m.ir.graph, initializers: inits } }, m.sessionOptions);
}

export const PROJECTED = 'rmt.projected';

/**
 * Appends to the (branched) forward graph RMT's projected contrastive views, output
 * `rmt.projected` [3n, P]: for each test sample the nearest source prototype of f (cosine
 * similarity; no gradient, as the code's torch.no_grad block), f and f_aug, in the order of the
 * code's cat(unbind(features, 1)) (all prototypes, then all f, then all f_aug), through the
 * projector MLP (Linear, ReLU, Linear), L2-normalised (F.normalize). In the forward graph, not
 * the loss, so that every initializer of the forward graph is used.
 */
function appendProjection(model: RefitModel, f: string, fAug: string, prototypes: Float32Array): void {
  const g = model.ir.graph;
  const em = new Emitter(g, opsetVersion(model.ir));
  const D = (g.initializers.get(PROJECTOR[0])!.dims[0])!;
  const K = prototypes.length / D;
  // argmax_k f·P_k/‖P_k‖ is the cosine argmax (‖f‖ does not change it).
  const PnT = new Float32Array(D * K);
  for (let k = 0; k < K; k++) {
    let s = 0;
    for (let d = 0; d < D; d++) s += prototypes[k * D + d]! ** 2;
    const inv = 1 / Math.max(Math.sqrt(s), 1e-8);
    for (let d = 0; d < D; d++) PnT[d * K + k] = prototypes[k * D + d]! * inv;
  }
  const idx = em.op('ArgMax', [em.op('MatMul', [f, em.constant(f32([D, K], PnT), 'rmt_protos_t')])], { axis: 1, keepdims: 0 });
  const nearest = em.op('Gather', [em.constant(f32([K, D], prototypes), 'rmt_protos'), idx], { axis: 0 });
  const views = em.op('Concat', [nearest, f, fAug], { axis: 0 });
  const h = em.op('Relu', [em.add(em.op('MatMul', [views, PROJECTOR[0]]), PROJECTOR[1])]);
  const z = em.add(em.op('MatMul', [h, PROJECTOR[2]]), PROJECTOR[3]);
  const norm = em.op('Max', [em.op('Sqrt', [em.reduce('ReduceSum', em.mul(z, z), [-1], true)]), em.scalar(1e-12)]);
  em.reserve(PROJECTED);
  g.nodes.push({ name: em.fresh('rmt_projected'), opType: 'Div', domain: '', inputs: [z, norm], outputs: [PROJECTED], attrs: {} });
  g.outputs.push({ name: PROJECTED, dtype: 'float32', shape: null });
}

/**
 * RMT's contrastive loss (SupCon without labels, contrast mode 'all', temperature = base
 * temperature) on the normalised views z [3n, P]: for each view the positives are the other two
 * views of the same sample; mean over the 3n views of −mean log p(positive).
 */
function supConTerm(ctx: LossContext, zn: string, temperature: number): string {
  const em = ctx.em;
  const m = ctx.shape(zn)[0]!;
  const n = m / 3;
  const S = em.div(em.op('MatMul', [zn, em.transpose(zn, [1, 0])]), em.scalar(temperature));
  const offDiag = new Float32Array(m * m).fill(1);
  const pos = new Float32Array(m * m);
  for (let i = 0; i < m; i++) {
    offDiag[i * m + i] = 0;
    for (let j = 0; j < m; j++) if (i !== j && i % n === j % n) pos[i * m + j] = 1;
  }
  // log_prob = S − log Σ_{j≠i} exp(S_ij) (the code subtracts the row maximum first; log_prob does not change).
  const lse = em.op('Log', [em.reduce('ReduceSum', em.mul(em.op('Exp', [S]), em.constant(f32([m, m], offDiag), 'rmt_offdiag')), [-1], true)]);
  const logProb = em.sub(S, lse);
  const meanPos = em.div(em.reduce('ReduceSum', em.mul(logProb, em.constant(f32([m, m], pos), 'rmt_pos')), [-1], false), em.scalar(2));
  return em.neg(em.div(em.reduce('ReduceSum', meanPos, [0], false), em.scalar(m)));
}
