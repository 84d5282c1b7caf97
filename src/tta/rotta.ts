// RoTTA (Yuan, Xie & Li, CVPR 2023, "Robust Test-Time Adaptation in Dynamic Scenarios"), following
// the paper's code (github.com/BIT-DA/RoTTA, core/adapter/rotta.py, core/utils/memory.py,
// core/utils/bn_layers.py, core/configs/defaults.py). Every BatchNorm layer of student and
// teacher is a robust BN (./robust-bn.ts: global statistics, updated by EMA α = 0.05 in train
// mode, used alone in eval mode). Per test batch:
//   1. prediction: the teacher in eval mode (global statistics); p = softmax, pseudo-label =
//      argmax p, uncertainty = −Σ p·log(p + 1e-6);
//   2. each sample in turn enters the CSTU memory bank (./memory-bank.ts, capacity 64,
//      λ_t = λ_u = 1); after every 64th sample of the stream (UPDATE_FREQUENCY), an update:
//      the bank's M samples, their normalised ages a; teacher logits on them in train mode
//      (updating the teacher's RBN statistics); the student on a strong augmentation of them in
//      train mode (updating the student's RBN statistics);
//      loss = mean_i w_i·(−Σ softmax(teacher_i)·log_softmax(student_i)), w = exp(−a)/(1 + exp(−a));
//      one Adam step (lr 1e-3, β = (0.9, 0.999), no weight decay); then the teacher's parameters
//      θ_t ← (1 − ν)·θ_t + ν·θ_s, ν = 0.001.
// The adapted parameters are the BatchNorm layers' affine parameters (configure_model).
//
// Deviations (docs/tta.md): a model without BatchNorm (the ViT) has no RBN; RoTTA then adapts its
// LayerNorm/GroupNorm affine parameters with the rest of the method unchanged (the code supports
// BatchNorm models only). The strong augmentation is CoTTA's set (./augment.ts; the code's
// get_tta_transforms is the same set, plus saturation and hue jitter on RGB images), one draw per
// update batch as torchvision's batch transforms. The softmax and entropy of step 1 are taken in
// float64 from the float32 logits (the code: float32), a 1e-7 difference only a tie between bank
// scores could notice. A non-finite loss or gradient takes no step (`info.skipped`; the code would
// write NaN). Audited line by line against the code: docs/tta.md, "RoTTA against its reference
// code" (no deviation in the method; on the short label-i.i.d. benchmark stream the robust BN's
// statistics, α = 0.05 per 64 samples, lag behind each corruption: the measurement is there).
import { z } from 'zod';
import type { RefitModel } from '../model.ts';
import type { Tensor } from '../onnx/tensor.ts';
import { f32 } from '../onnx/tensor.ts';
import type { TrainStep } from '../train/train-step.ts';
import type { LossSpec } from '../train/loss-spec.ts';
import { Rng, hashSeed } from '../data/random.ts';
import { commonOptions, parseOptions, normAffineParams, softmaxRows, allFinite, metaNumber, stateTensor, type AdaptOutcome, PaperAdamAdapter, requireFloatInput } from './common.ts';
import { TEACHER_LOGITS } from './mean-teacher.ts';
import { augmentBatch } from './augment.ts';
import { CSTU, timelinessWeight } from './memory-bank.ts';
import { robustBnModel, rbnLayers, rbnName, RBN_ALPHA, type RbnLayer } from './robust-bn.ts';
import type { AugmentFn } from './cotta.ts';
import type { AdapterState } from './types.ts';

/** Defaults of the paper's code (core/configs/defaults.py). */
export const ROTTA_DEFAULTS = {
  lr: 1e-3,
  betas: [0.9, 0.999] as const,
  /** ADAPTER.RoTTA.MEMORY_SIZE */
  capacity: 64,
  /** ADAPTER.RoTTA.UPDATE_FREQUENCY (samples between updates) */
  updateEvery: 64,
  /** ADAPTER.RoTTA.NU: θ_t ← (1 − ν)·θ_t + ν·θ_s */
  nu: 0.001,
  /** ADAPTER.RoTTA.ALPHA: RBN statistics momentum */
  alpha: 0.05,
  /** ADAPTER.RoTTA.LAMBDA_T, LAMBDA_U */
  lambdaT: 1,
  lambdaU: 1,
} as const;

export const rottaSchema = z.object({
  ...commonOptions,
  lr: z.number().positive().default(ROTTA_DEFAULTS.lr),
  betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).default([...ROTTA_DEFAULTS.betas]),
  /** Parameters to adapt (default: BatchNorm affine; LayerNorm/GroupNorm affine on models without BatchNorm). */
  params: z.array(z.string()).min(1).optional(),
  capacity: z.number().int().positive().default(ROTTA_DEFAULTS.capacity),
  updateEvery: z.number().int().positive().default(ROTTA_DEFAULTS.updateEvery),
  nu: z.number().min(0).max(1).default(ROTTA_DEFAULTS.nu),
  alpha: z.number().min(0).max(1).default(ROTTA_DEFAULTS.alpha),
  lambdaT: z.number().min(0).default(ROTTA_DEFAULTS.lambdaT),
  lambdaU: z.number().min(0).default(ROTTA_DEFAULTS.lambdaU),
  /** Replace the strong augmentation: (x, dims, rng, k = 0) → augmented x. */
  augment: z.custom<AugmentFn>((v) => typeof v === 'function', 'expected a function (x, dims, rng, k) => Float32Array').optional(),
});
export type RottaOptions = z.input<typeof rottaSchema>;

export const ROTTA_WEIGHTS = 'rotta.weights';

/** Global RBN statistics of one network: mean and variance per BatchNorm layer. */
type Stats = { mean: Float32Array; variance: Float32Array }[];

interface Prepared { student: RefitModel; teacher: RefitModel; step: TrainStep; classes: number }

export class RoTTA extends PaperAdamAdapter<z.output<typeof rottaSchema>> {
  readonly name = 'rotta';
  readonly layers: RbnLayer[];
  /** The teacher's private copy of the model (its trainables follow the student by EMA). */
  private readonly teacherCopy: RefitModel;
  private readonly teacherLive: Map<string, Float32Array>;
  private prepared: Promise<Prepared> | undefined;
  studentStats: Stats;
  teacherStats: Stats;
  bank: CSTU | null = null;
  /** Samples seen (the code's current_instance). */
  seen = 0;
  /** Model updates so far. */
  updates = 0;
  private draws = 0;

  constructor(model: RefitModel, options: RottaOptions = {}) {
    requireFloatInput('rotta', model, 'augments its input images');
    const o = parseOptions('rotta', rottaSchema, options);
    super(model, o, (m) => {
      if (o.params) return o.params;
      const bn = new Set(m.ir.graph.nodes.filter((n) => n.opType === 'BatchNormalization').flatMap((n) => n.inputs.slice(1, 3)));
      const all = normAffineParams('rotta', m);
      return bn.size > 0 ? all.filter((p) => bn.has(p)) : all;
    });
    this.layers = rbnLayers(this.model);
    this.teacherCopy = this.model.clone();
    this.teacherLive = new Map(this.trainable.map((p) => [p, this.teacherCopy.param(p).data as Float32Array]));
    this.studentStats = this.sourceStats();
    this.teacherStats = this.sourceStats();
  }

  private sourceStats(): Stats {
    return this.layers.map((l) => ({ mean: (this.source.param(l.mean).data as Float32Array).slice(), variance: (this.source.param(l.variance).data as Float32Array).slice() }));
  }

  private get input(): string {
    return this.model.inputs[0]!.name;
  }

  private prepare(x: Tensor): Promise<Prepared> {
    this.prepared ??= (async () => {
      const ex = { [this.input]: x };
      const student = this.layers.length ? await robustBnModel(this.model, ex) : this.model;
      const teacher = this.layers.length ? await robustBnModel(this.teacherCopy, ex) : this.teacherCopy;
      const outs = [this.logits, ...this.layers.flatMap((_, k) => [rbnName('mean_out', k), rbnName('var_out', k)])];
      const step = student.compileTrainStep({ trainable: this.trainable, loss: weightedTeacherCrossEntropy(this.logits), outputs: outs, batchNorm: 'eval', session: this.sessionOptions });
      const l = (await teacher.run(this.statFeeds(ex, this.teacherStats, 0), { outputs: [this.logits], feedParams: this.trainable }))[this.logits]!;
      return { student, teacher, step, classes: l.dims[1]! };
    })();
    this.prepared.catch(() => { this.prepared = undefined; });
    return this.prepared;
  }

  private statFeeds(feeds: Record<string, Tensor>, stats: Stats, alpha: number): Record<string, Tensor> {
    if (this.layers.length === 0) return feeds;
    const out: Record<string, Tensor> = { ...feeds, [RBN_ALPHA]: f32([], [alpha]) };
    stats.forEach((s, k) => { out[rbnName('mean', k)] = f32([s.mean.length], s.mean); out[rbnName('var', k)] = f32([s.variance.length], s.variance); });
    return out;
  }

  /** Store the statistics a train-mode run returned (the RBN buffers' in-place update). */
  private takeStats(out: Record<string, Tensor>, stats: Stats): void {
    stats.forEach((s, k) => {
      s.mean.set(out[rbnName('mean_out', k)]!.data as Float32Array);
      s.variance.set(out[rbnName('var_out', k)]!.data as Float32Array);
    });
  }

  private teacherOutputs(): string[] {
    return [this.logits, ...this.layers.flatMap((_, k) => [rbnName('mean_out', k), rbnName('var_out', k)])];
  }

  protected async adapt(x: Tensor): Promise<AdaptOutcome> {
    const p = await this.prepare(x);
    const n = x.dims[0]!;
    const C = p.classes;
    // 1. Teacher prediction in eval mode.
    const out = (await p.teacher.run(this.statFeeds({ [this.input]: x }, this.teacherStats, 0), { outputs: [this.logits], feedParams: this.trainable }))[this.logits]!;
    const probs = softmaxRows(out.data as Float32Array, C);
    this.bank ??= new CSTU(this.opts.capacity, C, this.opts.lambdaT, this.opts.lambdaU);
    const per = x.data.length / n;
    let loss = NaN, used = 0, added = 0;
    // 2. Memory bank, and an update after every `updateEvery` samples.
    for (let i = 0; i < n; i++) {
      let arg = 0, ent = 0;
      for (let c = 0; c < C; c++) {
        const q = probs[i * C + c]!;
        if (q > probs[i * C + arg]!) arg = c;
        ent -= q * Math.log(q + 1e-6);
      }
      if (this.bank.add((x.data as Float32Array).slice(i * per, (i + 1) * per), arg, ent)) added++;
      this.seen++;
      if (this.seen % this.opts.updateEvery === 0) {
        const r = await this.update(p, x.dims.slice(1));
        if (r.used > 0) { loss = r.loss; used = r.used; }
      }
    }
    return { logits: out, used, loss, extra: { memory: this.bank.occupancy(), added, updates: this.updates } };
  }

  private async update(p: Prepared, sampleDims: number[]): Promise<{ loss: number; used: number }> {
    const { data, ages } = this.bank!.memory();
    let loss = NaN, used = 0;
    if (data.length > 0) {
      const M = data.length, per = data[0]!.length;
      const sup = new Float32Array(M * per);
      data.forEach((d, i) => sup.set(d, i * per));
      const dims = [M, ...sampleDims];
      const rng = Rng.xoshiro(hashSeed(this.opts.seed, 0x2077a, this.draws++));
      const strong = this.opts.augment ? this.opts.augment(sup, dims, rng, 0) : augmentBatch(sup, dims, rng);
      if (!(strong instanceof Float32Array) || strong.length !== sup.length) throw new Error(`rotta: the augment function must return a Float32Array of ${sup.length} values, got ${strong instanceof Float32Array ? strong.length + ' values' : typeof strong}`);
      const bad = allFinite(strong);
      if (bad >= 0) throw new Error(`rotta: the augmented memory batch has a non-finite value at element ${bad}`);
      // Teacher in train mode on the memory (its RBN statistics move), no gradient.
      const t = await p.teacher.run(this.statFeeds({ [this.input]: f32(dims, sup) }, this.teacherStats, this.opts.alpha), { outputs: this.teacherOutputs(), feedParams: this.trainable });
      this.takeStats(t, this.teacherStats);
      const w = Float32Array.from(ages, timelinessWeight);
      const r = await p.step.run(this.statFeeds({ [this.input]: f32(dims, strong), [TEACHER_LOGITS]: t[this.logits]!, [ROTTA_WEIGHTS]: f32([M], w) }, this.studentStats, this.opts.alpha));
      // The student's RBN statistics move in its forward pass, whatever happens to the step.
      if (this.layers.length) this.takeStats(r.outputs, this.studentStats);
      loss = r.loss;
      if (this.applyStep(r, M)) used = M;
    }
    // Teacher EMA (always, as update_ema_variables), in float32 as torch.
    const a = Math.fround(1 - this.opts.nu), b = Math.fround(this.opts.nu);
    for (const [name, tv] of this.teacherLive) {
      const s = this.views.get(name)!;
      for (let i = 0; i < tv.length; i++) tv[i] = Math.fround(a * tv[i]!) + Math.fround(b * s[i]!);
    }
    this.updates++;
    return { loss, used };
  }

  /** The teacher's adapted parameters (live arrays). */
  get teacherValues(): ReadonlyMap<string, Float32Array> {
    return this.teacherLive;
  }

  protected override resetMethodState(): void {
    for (const [name, tv] of this.teacherLive ?? []) tv.set(this.sourceValue(name));
    if (this.layers) { this.studentStats = this.sourceStats(); this.teacherStats = this.sourceStats(); }
    this.bank?.clear();
    this.seen = 0;
    this.draws = 0;
  }

  protected override saveExtra(tensors: Record<string, Float32Array>, meta: AdapterState['meta']): void {
    for (const [name, v] of this.teacherLive) tensors[`teacher.${name}`] = v.slice();
    this.studentStats.forEach((s, k) => { tensors[`student.mean.${k}`] = s.mean.slice(); tensors[`student.var.${k}`] = s.variance.slice(); });
    this.teacherStats.forEach((s, k) => { tensors[`teacher.mean.${k}`] = s.mean.slice(); tensors[`teacher.var.${k}`] = s.variance.slice(); });
    if (this.bank) {
      const items = this.bank.data.flatMap((l, c) => l.map((it) => ({ ...it, c })));
      const per = items[0]?.data.length ?? 0;
      const data = new Float32Array(items.length * per);
      items.forEach((it, i) => data.set(it.data, i * per));
      tensors['memory.data'] = data;
      // Class, age and uncertainty per item (uncertainty in float32: the only rounding in a round trip).
      tensors['memory.class'] = Float32Array.from(items, (it) => it.c);
      tensors['memory.age'] = Float32Array.from(items, (it) => it.age);
      tensors['memory.uncertainty'] = Float32Array.from(items, (it) => it.uncertainty);
      meta.classes = this.bank.numClass;
    }
    meta.seen = this.seen;
    meta.updates = this.updates;
    meta.draws = this.draws;
  }

  protected override loadExtra(state: AdapterState): () => void {
    const teacher = new Map<string, Float32Array>();
    for (const p of this.trainable) {
      const v = stateTensor(state, `teacher.${p}`, this.model.param(p).data.length, 'rotta');
      if (allFinite(v) >= 0) throw new Error(`rotta.load: teacher parameter '${p}' is not finite`);
      teacher.set(p, v);
    }
    const stats = (who: 'student' | 'teacher'): Stats => this.layers.map((l, k) => ({
      mean: stateTensor(state, `${who}.mean.${k}`, l.channels, 'rotta').slice(),
      variance: stateTensor(state, `${who}.var.${k}`, l.channels, 'rotta').slice(),
    }));
    const ss = stats('student'), ts = stats('teacher');
    const classes = metaNumber(state, 'classes', 'rotta');
    let bank: CSTU | null = null;
    if (classes !== null) {
      bank = new CSTU(this.opts.capacity, classes, this.opts.lambdaT, this.opts.lambdaU);
      const cls = state.tensors['memory.class'], age = state.tensors['memory.age'], unc = state.tensors['memory.uncertainty'], data = state.tensors['memory.data'];
      if (!(cls instanceof Float32Array) || !(age instanceof Float32Array) || !(unc instanceof Float32Array) || !(data instanceof Float32Array) || age.length !== cls.length || unc.length !== cls.length || (cls.length > 0 && data.length % cls.length !== 0)) {
        throw new Error('rotta.load: the memory bank (memory.data, memory.class, memory.age, memory.uncertainty) is missing or inconsistent');
      }
      const per = cls.length ? data.length / cls.length : 0;
      for (let i = 0; i < cls.length; i++) {
        const c = cls[i]!;
        if (!Number.isInteger(c) || c < 0 || c >= classes) throw new Error(`rotta.load: memory item ${i} has class ${c}, expected 0…${classes - 1}`);
        bank.data[c]!.push({ data: data.slice(i * per, (i + 1) * per), age: age[i]!, uncertainty: unc[i]! });
      }
    }
    const seen = metaNumber(state, 'seen', 'rotta') ?? 0, updates = metaNumber(state, 'updates', 'rotta') ?? 0, draws = metaNumber(state, 'draws', 'rotta') ?? 0;
    return () => {
      for (const [p, v] of teacher) this.teacherLive.get(p)!.set(v);
      this.studentStats = ss; this.teacherStats = ts;
      this.bank = bank; this.seen = seen; this.updates = updates; this.draws = draws;
    };
  }

  override async release(): Promise<void> {
    const p = this.prepared;
    this.prepared = undefined;
    const r = p ? await p.catch(() => null) : null;
    if (r) {
      await r.step.release();
      if (r.student !== this.model) await r.student.release();
      await r.teacher.release();
    }
    await this.teacherCopy.release();
    await super.release();
  }
}

/** RoTTA's loss: mean_i w_i·(−Σ softmax(teacher_i)·log_softmax(student_i)), w the input `rotta.weights`. */
export function weightedTeacherCrossEntropy(student: string, teacher = TEACHER_LOGITS): LossSpec {
  return {
    describe: `timelinessWeighted(softCrossEntropy(${student}, softmax(${teacher})))`,
    reads: [student],
    inputs: [
      { name: teacher, dtype: 'float32', shape: (s) => s(student) },
      { name: ROTTA_WEIGHTS, dtype: 'float32', shape: (s) => [s(student)[0]!] },
    ],
    build(ctx) {
      const em = ctx.em;
      const [n] = ctx.shape(student) as [number, number];
      const pt = em.op('Softmax', [ctx.input(teacher)], { axis: -1 });
      const ce = em.neg(em.reduce('ReduceSum', em.mul(pt, em.op('LogSoftmax', [student], { axis: -1 })), [-1], false));
      return em.div(em.reduce('ReduceSum', em.mul(ce, ctx.input(ROTTA_WEIGHTS)), [0], false), em.scalar(n));
    },
  };
}
