// Shared parts of the mean-teacher methods (CoTTA, RMT): an exponential-moving-average teacher
// with its own copy of the adapted parameters, inference with BatchNorm on batch statistics
// (both papers' code deep-copies the student after configuring it, so teacher and anchor
// normalise with the statistics of the batch they see), and the consistency losses, which read
// the teacher's logits as a graph input.
import type { RefitModel } from '../model.ts';
import type { Tensor } from '../onnx/tensor.ts';
import { signatureOf, signatureKey } from '../onnx/shapes.ts';
import type { LossSpec, LossContext } from '../train/loss-spec.ts';
import { batchStatModel } from './bn-adapt.ts';

/** Runs a model with BatchNorm on batch statistics, one compiled variant per input signature. */
export class BatchStatRunner {
  private variants = new Map<string, Promise<RefitModel>>();

  /** `fed`: parameters read live from `model` on every run (so they may change without a rebuild). */
  constructor(readonly model: RefitModel, private readonly fed: string[] = []) {}

  async run(x: Tensor, outputs: string[]): Promise<Record<string, Tensor>> {
    const feeds = { [this.model.inputs[0]!.name]: x };
    const key = signatureKey(signatureOf(feeds));
    let v = this.variants.get(key);
    if (!v) {
      v = batchStatModel(this.model, feeds, 0);
      v.catch(() => this.variants.delete(key));
      this.variants.set(key, v);
    }
    return (await v).run(feeds, { outputs, feedParams: this.fed });
  }

  async release(): Promise<void> {
    const vs = [...this.variants.values()];
    this.variants.clear();
    for (const v of vs) await (await v.catch(() => null))?.release();
  }
}

/**
 * The teacher: a private copy of the model whose `params` follow the student by
 * θ_t ← m·θ_t + (1 − m)·θ_s. Parameters outside `params` never differ from the source.
 */
export class EmaTeacher {
  readonly model: RefitModel;
  readonly runner: BatchStatRunner;
  private readonly live: Map<string, Float32Array>;

  constructor(source: RefitModel, readonly params: string[]) {
    // Copies only the parameters it follows; the rest stay shared with the source (read-only).
    this.model = source.clone({ copy: params });
    this.model.own(params);
    this.live = new Map(params.map((p) => [p, this.model.param(p).data as Float32Array]));
    this.runner = new BatchStatRunner(this.model, params);
  }

  get values(): ReadonlyMap<string, Float32Array> {
    return this.live;
  }

  /** θ_t ← m·θ_t + (1 − m)·θ_s, in float32 as PyTorch's `m * ema + (1 - m) * param`. */
  update(student: ReadonlyMap<string, Float32Array>, momentum: number): void {
    const a = Math.fround(momentum), b = Math.fround(1 - momentum);
    for (const [p, t] of this.live) {
      const s = student.get(p)!;
      for (let i = 0; i < t.length; i++) t[i] = Math.fround(a * t[i]!) + Math.fround(b * s[i]!);
    }
  }

  set(values: ReadonlyMap<string, Float32Array> | ((p: string) => Float32Array)): void {
    for (const [p, t] of this.live) t.set(typeof values === 'function' ? values(p) : values.get(p)!);
  }

  run(x: Tensor, outputs: string[]): Promise<Record<string, Tensor>> {
    return this.runner.run(x, outputs);
  }

  release(): Promise<void> {
    return this.runner.release();
  }
}

export const TEACHER_LOGITS = 'teacher_logits';

function teacherTerms(ctx: LossContext, student: string, teacher: string) {
  const em = ctx.em;
  const s = ctx.shape(student);
  if (s.length !== 2) throw new Error(`loss expects '${student}' to be [batch, classes] logits, got shape [${s}]`);
  const t = ctx.input(teacher);
  return {
    n: s[0]!,
    pt: em.op('Softmax', [t], { axis: -1 }),
    logpt: em.op('LogSoftmax', [t], { axis: -1 }),
    ps: (x: string) => em.op('Softmax', [x], { axis: -1 }),
    logps: (x: string) => em.op('LogSoftmax', [x], { axis: -1 }),
  };
}

const rowSum = (ctx: LossContext, x: string) => ctx.em.reduce('ReduceSum', x, [-1], false);
const batchMean = (ctx: LossContext, perSample: string, n: number) => ctx.em.div(ctx.em.reduce('ReduceSum', perSample, [0], false), ctx.em.scalar(n));

/**
 * CoTTA's consistency loss, mean over the batch of −Σ_c softmax(teacher)_c · log_softmax(student)_c
 * (the code's `softmax_entropy(x, x_ema)`); the teacher's logits are the input `teacher_logits`.
 */
export function teacherCrossEntropy(student: string, teacher = TEACHER_LOGITS): LossSpec {
  return {
    describe: `softCrossEntropy(${student}, softmax(${teacher}))`,
    reads: [student],
    inputs: [{ name: teacher, dtype: 'float32', shape: (s) => s(student) }],
    build(ctx) {
      const { n, pt, logps } = teacherTerms(ctx, student, teacher);
      return batchMean(ctx, ctx.em.neg(rowSum(ctx, ctx.em.mul(pt, logps(student)))), n);
    },
  };
}

/**
 * RMT's symmetric cross-entropy against the teacher, averaged over the given student outputs
 * (one per view): for each view x, −½·Σ softmax(t)·log_softmax(x) − ½·Σ softmax(x)·log_softmax(t),
 * the views weighted equally (the code's `symmetric_entropy(x, x_aug, x_ema)` for two views,
 * `softmax_entropy(x, x_ema)` for one); mean over the batch.
 */
export function teacherSymmetricCrossEntropy(students: string[], teacher = TEACHER_LOGITS): LossSpec {
  return {
    describe: `symmetricCrossEntropy([${students.join(', ')}], ${teacher})`,
    reads: students,
    inputs: [{ name: teacher, dtype: 'float32', shape: (s) => s(students[0]!) }],
    build(ctx) {
      return symmetricTerm(ctx, students, teacher);
    },
  };
}

export function symmetricTerm(ctx: LossContext, students: string[], teacher: string): string {
  const em = ctx.em;
  const { n, pt, logpt, ps, logps } = teacherTerms(ctx, students[0]!, teacher);
  const w = 0.5 / students.length;
  const terms = students.flatMap((x) => [em.mul(pt, logps(x)), em.mul(ps(x), logpt)]);
  const per = em.mul(rowSum(ctx, em.sum(terms)), em.scalar(-w));
  return batchMean(ctx, per, n);
}
