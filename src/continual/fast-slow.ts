// Fast and slow learners (LAE: Gao et al., ICCV 2023, "A Unified Continual Learning Framework
// with General Parameter-Efficient Tuning"). A fast copy of the adapted parameters learns online
// (entropy minimisation on unlabelled batches, cross-entropy on labelled feedback); a slow copy
// accumulates it by momentum, slow ← m·slow + (1 − m)·fast (LAE's "accumulation", timm's
// ModelEmaV2 with decay 0.9999 in LAE's code); inference ensembles the two experts by the
// element-wise maximum of their softmax outputs (LAE's main.py), whose argmax is the prediction
// of the more confident expert for each sample.
//
// Options from other papers, each off by default: stochastic restore toward the source (CoTTA:
// each element reset with probability p), and a Fisher/L2 anchor to the source values (EATA's
// regulariser, `losses.anchorPenalty`).
//
// Deviation from LAE: LAE's PET modules are adapters or prompts trained offline per task; here
// the adapted parameters are by default the normalization layers' affine parameters (Tent's
// choice for test-time adaptation) and training is online, one step per batch.
import type { RefitModel } from '../model.ts';
import type { Tensor } from '../onnx/tensor.ts';
import { f32, i64 } from '../onnx/tensor.ts';
import { signatureOf, signatureKey } from '../onnx/shapes.ts';
import { softmaxEntropy, crossEntropy, anchorPenalty, combine, symmetricCrossEntropy } from '../train/losses.ts';
import type { LossSpec } from '../train/loss-spec.ts';
import type { TrainStep, StepResult } from '../train/train-step.ts';
import { sgd, type Optimizer, type OptimizerState } from '../train/optim/index.ts';
import { normAffineParams, hasBatchNormLayers, softmaxRows, allFinite } from '../tta/common.ts';
import { batchStatModel } from '../tta/bn-adapt.ts';
import { Rng } from '../util/rng.ts';

/** LAE's EMA decay for the offline (slow) PET module (main.py: ema_decay = 0.9999). */
export const LAE_EMA_DECAY = 0.9999;
/** CoTTA's stochastic restore probability (cfg.COTTA.RST = 0.01). */
export const COTTA_RESTORE_PROBABILITY = 0.01;

export interface FastSlowOptions {
  /** Output holding class scores. @default the model's last output */
  logits?: string;
  /** An [N, D] tensor returned with each step (for the error memory and shift signals). */
  embedding?: string;
  /** Parameters the learners adapt. @default every normalization layer's scale and bias */
  params?: string[];
  /** Fast learner: SGD learning rate and momentum. @default 0.00025 (Tent's, batch 64), 0.9 */
  lr?: number;
  momentum?: number;
  /** Slow learner's momentum m. @default LAE_EMA_DECAY */
  decay?: number;
  /** Stochastic restore toward the source after each fast update (CoTTA). */
  restore?: { probability?: number; seed?: number };
  /** L2 (or Fisher-weighted) pull of the fast parameters toward their source values. */
  anchor?: { strength: number; importance?: Map<string, Float32Array> };
  /**
   * The fast learner's unlabelled objective: 'entropy' (Tent) or 'teacher', the symmetric
   * cross-entropy to the slow learner's predictions on the same batch (RMT's mean-teacher term,
   * Döbler et al. 2023, without its augmentation, contrastive and replay terms). @default 'entropy'
   */
  objective?: 'entropy' | 'teacher';
}

export interface FastSlowOutput {
  /** Ensembled class probabilities [N, C] (element-wise max of the two experts, not renormalised). */
  probs: Float32Array;
  fastLogits: Tensor;
  slowLogits: Tensor;
  embedding?: Tensor;
  /** The fast learner's loss on this batch, before its update. */
  loss?: number;
  updated: boolean;
}

export interface FastSlowState {
  fast: Record<string, Float32Array>;
  slow: Record<string, Float32Array>;
  optimizer?: OptimizerState;
  rng?: ReturnType<Rng['state']>;
  steps: number;
  skipped: number;
}

export class FastSlowLearner {
  readonly fast: RefitModel;
  readonly slow: RefitModel;
  readonly params: string[];
  readonly logits: string;
  readonly classes: number;
  readonly decay: number;
  private readonly batchStats: boolean;
  private readonly source = new Map<string, Float32Array>();
  private readonly unlabelled: TrainStep;
  /** The 'teacher' objective's step (fed the slow learner's probabilities as 'teacher_probs'). */
  private readonly teacherStep?: TrainStep;
  /** Labelled steps in both BatchNorm modes: a step must normalise as the prediction it trains does. */
  private readonly labelled: TrainStep;
  private readonly labelledSourceStats: TrainStep;
  private opt: Optimizer;
  private rng?: Rng;
  private slowVariants = new Map<string, Promise<RefitModel>>();
  private fastVariants = new Map<string, Promise<RefitModel>>();
  steps = 0;
  skipped = 0;

  constructor(model: RefitModel, readonly options: FastSlowOptions = {}) {
    this.fast = model.clone();
    this.slow = model.clone();
    const outs = model.outputs.map((o) => o.name);
    this.logits = options.logits ?? outs[outs.length - 1]!;
    if (!outs.includes(this.logits)) throw new Error(`fast-slow: the model has no output '${this.logits}' (outputs: ${outs.join(', ')})`);
    const shape = model.outputs.find((o) => o.name === this.logits)!.shape;
    const c = shape?.length === 2 ? shape[1] : undefined;
    if (typeof c !== 'number') throw new Error(`fast-slow: output '${this.logits}' must be [N, classes] with a fixed class count, got ${shape ? `[${shape.join(', ')}]` : 'an unknown shape'}`);
    this.classes = c;
    this.params = options.params ?? normAffineParams('fast-slow', this.fast);
    for (const p of this.params) this.source.set(p, (model.param(p).data as Float32Array).slice());
    this.decay = options.decay ?? LAE_EMA_DECAY;
    if (!(this.decay >= 0 && this.decay <= 1)) throw new Error(`fast-slow: decay must be in [0, 1], got ${this.decay}`);
    this.batchStats = hasBatchNormLayers(model);
    if (options.restore) this.rng = new Rng(options.restore.seed ?? 0);
    const outputs = [this.logits, ...(options.embedding ? [options.embedding] : [])];
    const withAnchor = (l: LossSpec): LossSpec =>
      options.anchor ? combine([{ loss: l }, { loss: anchorPenalty({ anchors: this.source, importance: options.anchor.importance, strength: options.anchor.strength }) }]) : l;
    const bn = this.batchStats ? 'train' : 'eval';
    this.unlabelled = this.fast.compileTrainStep({ trainable: this.params, loss: withAnchor(softmaxEntropy({ logits: this.logits })), outputs, batchNorm: bn });
    const objective = options.objective ?? 'entropy';
    if (objective !== 'entropy' && objective !== 'teacher') throw new Error(`fast-slow: objective must be 'entropy' or 'teacher', got '${String(objective)}'`);
    if (objective === 'teacher') this.teacherStep = this.fast.compileTrainStep({ trainable: this.params, loss: withAnchor(symmetricCrossEntropy({ logits: this.logits, teacher: 'teacher_probs' })), outputs, batchNorm: bn });
    this.labelled = this.fast.compileTrainStep({ trainable: this.params, loss: withAnchor(crossEntropy({ logits: this.logits, labels: 'y' })), outputs: [this.logits], batchNorm: bn });
    this.labelledSourceStats = this.fast.compileTrainStep({ trainable: this.params, loss: withAnchor(crossEntropy({ logits: this.logits, labels: 'y' })), outputs: [this.logits], batchNorm: 'eval' });
    this.opt = this.makeOptimizer();
  }

  private makeOptimizer(): Optimizer {
    return sgd({ lr: this.options.lr ?? 0.00025, momentum: this.options.momentum ?? 0.9 });
  }

  private views(m: RefitModel): Map<string, Float32Array> {
    return new Map(this.params.map((p) => [p, m.param(p).data as Float32Array]));
  }

  /** Forward through one learner, with batch statistics where the model has BatchNorm. */
  private async infer(which: 'fast' | 'slow', x: Tensor, outputs: string[], batchStats: boolean): Promise<Record<string, Tensor>> {
    const model = which === 'fast' ? this.fast : this.slow;
    const feeds = { [model.inputs[0]!.name]: x };
    if (!this.batchStats || !batchStats) return model.run(feeds, { outputs, feedParams: this.params });
    const cache = which === 'fast' ? this.fastVariants : this.slowVariants;
    const key = signatureKey(signatureOf(feeds));
    let v = cache.get(key);
    if (!v) {
      // The variant shares the learner's parameter arrays; they are fed each run, so updates need no rebuild.
      v = batchStatModel(model, feeds);
      cache.set(key, v);
    }
    return (await v).run(feeds, { outputs, feedParams: this.params });
  }

  /** A step's result is usable only if the loss and every gradient are finite. */
  private usable(r: StepResult): boolean {
    return Number.isFinite(r.loss) && !r.nonFiniteGrad;
  }

  private applyFast(r: StepResult): boolean {
    if (!this.usable(r)) { this.skipped++; return false; }
    this.opt.step(this.views(this.fast), r.grads, { gradsFinite: true });
    if (this.rng) this.stochasticRestore();
    this.fast.touch(this.params);
    this.steps++;
    return true;
  }

  private stochasticRestore(): void {
    const p = this.options.restore?.probability ?? COTTA_RESTORE_PROBABILITY;
    for (const [name, src] of this.source) {
      const w = this.fast.param(name).data as Float32Array;
      for (let i = 0; i < w.length; i++) if (this.rng!.uniform() < p) w[i] = src[i]!;
    }
  }

  /** slow ← m·slow + (1 − m)·fast. */
  consolidate(m = this.decay): void {
    for (const p of this.params) {
      const s = this.slow.param(p).data as Float32Array, f = this.fast.param(p).data as Float32Array;
      for (let i = 0; i < s.length; i++) s[i] = m * s[i]! + (1 - m) * f[i]!;
    }
    this.slow.touch(this.params);
  }

  /**
   * Predict a batch with both experts; with `update`, the fast learner also takes one entropy
   * step (its prediction is the pre-update forward, as in Tent), and with `consolidate` the slow
   * learner then accumulates it. Without `update`, `batchStats: false` predicts with the running
   * (source) statistics of BatchNorm layers instead of the batch's (default true).
   */
  async process(x: Tensor, opts: { update?: boolean; consolidate?: boolean; batchStats?: boolean } = {}): Promise<FastSlowOutput> {
    const batchStats = opts.update || opts.batchStats !== false;
    const outputs = [this.logits, ...(this.options.embedding ? [this.options.embedding] : [])];
    let fastOut: Record<string, Tensor>;
    let loss: number | undefined;
    let updated = false;
    // The teacher objective needs the slow learner's prediction before the fast step.
    let slowOut: Record<string, Tensor> | undefined;
    if (opts.update && this.teacherStep) {
      slowOut = await this.infer('slow', x, [this.logits], batchStats);
      const t = softmaxRows(slowOut[this.logits]!.data as Float32Array, this.classes);
      const r = await this.teacherStep.run({ [this.fast.inputs[0]!.name]: x, teacher_probs: f32([x.dims[0]!, this.classes], Float32Array.from(t)) });
      fastOut = r.outputs;
      loss = r.loss;
      updated = this.applyFast(r);
      if (updated && opts.consolidate) this.consolidate();
    } else if (opts.update) {
      const r = await this.unlabelled.run({ [this.fast.inputs[0]!.name]: x });
      fastOut = r.outputs;
      loss = r.loss;
      updated = this.applyFast(r);
      if (updated && opts.consolidate) this.consolidate();
    } else fastOut = await this.infer('fast', x, outputs, batchStats);
    slowOut ??= await this.infer('slow', x, [this.logits], batchStats);
    const fastLogits = fastOut[this.logits]!, slowLogits = slowOut[this.logits]!;
    const pf = softmaxRows(fastLogits.data as Float32Array, this.classes), ps = softmaxRows(slowLogits.data as Float32Array, this.classes);
    const probs = new Float32Array(pf.length);
    for (let i = 0; i < pf.length; i++) probs[i] = Math.max(pf[i]!, ps[i]!);
    const out: FastSlowOutput = { probs, fastLogits, slowLogits, updated };
    if (loss !== undefined) out.loss = loss;
    const e = this.options.embedding ? fastOut[this.options.embedding] : undefined;
    if (e) out.embedding = e;
    return out;
  }

  /**
   * One cross-entropy step of the fast learner on labelled inputs [N, …]. `batchStats` (default
   * true) normalises BatchNorm layers with the batch's statistics (N ≥ 2), false with the running
   * ones: use the mode the learner predicts with, or the step fits the wrong normalisation.
   */
  async learn(x: Tensor, labels: ArrayLike<number>, opts: { consolidate?: boolean; batchStats?: boolean } = {}): Promise<{ loss: number; updated: boolean }> {
    const n = x.dims[0]!;
    if (labels.length !== n) throw new Error(`fast-slow.learn: ${n} inputs but ${labels.length} labels`);
    const batchStats = opts.batchStats !== false;
    if (this.batchStats && batchStats && n < 2) throw new Error('fast-slow.learn: a BatchNorm model needs at least 2 labelled samples per step (batch statistics)');
    const step = batchStats ? this.labelled : this.labelledSourceStats;
    const r = await step.run({ [this.fast.inputs[0]!.name]: x, y: i64([n], Array.from(labels)) });
    const updated = this.applyFast(r);
    if (updated && opts.consolidate) this.consolidate();
    return { loss: r.loss, updated };
  }

  /** Fast (and optionally slow) back to the source values, with a fresh optimizer. */
  reset(which: 'fast' | 'both' = 'fast'): void {
    const targets = which === 'both' ? [this.fast, this.slow] : [this.fast];
    for (const m of targets) {
      for (const [p, v] of this.source) (m.param(p).data as Float32Array).set(v);
      m.touch(this.params);
    }
    this.opt = this.makeOptimizer();
  }

  /** Copy the slow learner's values into the fast one (a rollback to what has been consolidated). */
  resetFastToSlow(): void {
    for (const p of this.params) (this.fast.param(p).data as Float32Array).set(this.slow.param(p).data as Float32Array);
    this.fast.touch(this.params);
    this.opt = this.makeOptimizer();
  }

  state(): FastSlowState {
    const grab = (m: RefitModel) => Object.fromEntries(this.params.map((p) => [p, (m.param(p).data as Float32Array).slice()]));
    const s: FastSlowState = { fast: grab(this.fast), slow: grab(this.slow), steps: this.steps, skipped: this.skipped };
    if (this.steps > 0) s.optimizer = this.opt.state();
    if (this.rng) s.rng = this.rng.state();
    return s;
  }

  /** Restore a state from `state()`; everything is validated before anything changes. */
  load(s: FastSlowState): void {
    for (const which of ['fast', 'slow'] as const) {
      for (const p of this.params) {
        const v = s[which]?.[p];
        const want = this.fast.param(p).data.length;
        if (!(v instanceof Float32Array) || v.length !== want) throw new Error(`fast-slow.load: ${which} parameter '${p}' is missing or has the wrong size (another model?)`);
        if (allFinite(v) >= 0) throw new Error(`fast-slow.load: ${which} parameter '${p}' has a non-finite value`);
      }
    }
    const opt = this.makeOptimizer();
    if (s.optimizer) opt.loadState(s.optimizer, this.views(this.fast));
    for (const which of ['fast', 'slow'] as const) {
      const m = which === 'fast' ? this.fast : this.slow;
      for (const p of this.params) (m.param(p).data as Float32Array).set(s[which][p]!);
      m.touch(this.params);
    }
    this.opt = opt;
    if (this.rng && s.rng) this.rng.setState(s.rng);
    this.steps = s.steps;
    this.skipped = s.skipped;
  }

  async release(): Promise<void> {
    await Promise.all([this.unlabelled.release(), this.teacherStep?.release(), this.labelled.release(), this.labelledSourceStats.release(), this.fast.release(), this.slow.release()]);
    for (const v of [...this.fastVariants.values(), ...this.slowVariants.values()]) await (await v).release();
  }
}
