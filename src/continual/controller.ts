// The escalation controller (issue 11, part 5): decides when, what and how much to adapt, and
// undoes a bad decision. It climbs one level only while the cheaper level fails to restore
// health, comes down when the stream is stable, and rolls back when adaptation collapses:
//
//   0 output correction (label-prior re-estimation, error memory)
//   1 normalization statistics (BatchNorm on batch statistics; no parameter changes)
//   2 fast-learner updates (entropy steps; labelled feedback steps at every level)
//   3 consolidation into the slow learner
//   4 rollback to the last good checkpoint (then back to level 1)
//
// Every decision is an event with its reason and the signal values behind it.
import type { RefitModel } from '../model.ts';
import type { Tensor } from '../onnx/tensor.ts';
import { FastSlowLearner, type FastSlowOptions, type FastSlowState } from './fast-slow.ts';
import { inputSpec, checkBatch, rowOf, batchOfRows, type InputSpec, type InputRow } from './input-rows.ts';
import { FeedbackBuffer, type FeedbackReport, type PendingSample } from './feedback.ts';
import { ReplayBuffer, type ReplayState } from './replay.ts';
import { ErrorMemory, type ErrorMemoryOptions } from './error-memory.ts';
import { DeepLearner, deepLearnerModel, deepLearnerParams, type DeepLearnerOptions } from './deep-learner.ts';
import type { AdapterState } from '../tta/types.ts';
import { PriorCorrection } from './prior-correction.ts';
import { Adwin } from '../drift/adwin.ts';
import { restoreDetector } from '../drift/index.ts';
import type { DetectorState, DriftDetector } from '../drift/types.ts';
import { predictionStats } from '../drift/signals.ts';
import { softmaxRows } from '../tta/common.ts';
import { lameSolve, LAME_DEFAULTS } from '../tta/lame.ts';
import { argmaxRows } from '../data/evaluate.ts';
import { smoothedBatchPrior } from '../tta/batch-prior.ts';
import { alignInput, alignInputDetailed, type InputStats } from '../tta/input-align.ts';
import { checkControllerOptions } from './options.ts';

export const LEVEL_NAMES = ['output-correction', 'norm-statistics', 'fast-updates', 'consolidation', 'rollback'] as const;
export type Level = 0 | 1 | 2 | 3 | 4;

export interface ControllerOptions extends Omit<FastSlowOptions, 'decay'> {
  /** Slow learner's momentum while consolidating. @default 0.99 (see docs: LAE's 0.9999 is for offline epochs) */
  decay?: number;
  /** Batches a level gets to restore health before the controller climbs (level 0 → 1 always after 1: it costs nothing). @default 3 */
  patience?: number;
  /**
   * Label-prior correction at every level, for label shift. true: EM re-estimation with a moving
   * prior (./prior-correction.ts; on the i.i.d. continual CNN stream it cost 2.4 points,
   * bench/continual.ts). 'batch': ROID's smoothed batch prior (src/tta/batch-prior.ts), applied
   * to the probabilities (ROID multiplies the logits by it), which leaves a batch whose
   * predictions cover every class almost unchanged. 'auto': 'batch' only on a batch whose
   * predicted labels are concentrated (normalised entropy of its mean prediction below
   * `priorThreshold`), as under temporally correlated labels. @default false
   */
  priorCorrection?: boolean | 'batch' | 'auto';
  /** 'auto' prior correction's threshold on the normalised entropy of the batch's mean prediction. @default 0.7 */
  priorThreshold?: number;
  /**
   * No adaptation step (fast learner or deep learner) on a batch that follows one whose predicted
   * labels were concentrated (normalised entropy of its mean prediction below this): under
   * temporally correlated labels such batches pull the model towards a few classes (ROID's
   * diversity weighting answers the same problem inside its loss). The batch is still predicted,
   * at the current level. Off when absent.
   */
  holdBelowSpread?: number;
  /**
   * Undo a persistent class bias of the model: each batch's probabilities are moved from the
   * batch's mean prediction m towards uniform, p' ∝ p·(1/C / m)^alpha (Saerens et al. 2002's prior
   * adjustment, with m as the model's current prior), but only when m is at least `similarity`
   * (cosine) like the moving average (momentum 0.8) of the previous batches' m: a model stuck on a
   * few classes predicts them batch after batch, while temporally correlated labels move from class
   * to class, where a concentrated m is the truth and the adjustment would hurt. A refit addition;
   * it changes only the output. Off when absent.
   */
  debias?: { similarity: number; alpha?: number };
  /**
   * LAME (Boudiaf et al. 2022) on the final probabilities, with the embedding's kNN affinity:
   * true on every batch, 'auto' only when the batch's predicted labels are concentrated
   * (normalised entropy of the batch's mean prediction below `lameThreshold`), the
   * temporally correlated label case where LAME is the method that gains. Needs `embedding`. @default false
   */
  lame?: boolean | 'auto';
  /**
   * 'auto' LAME's threshold on the normalised entropy of the batch's mean prediction, corrected for
   * the batch size (`sizeCorrectedSpread`: a mean over few samples is less spread even when their
   * labels are i.i.d.). @default 0.7
   */
  lameThreshold?: number;
  /** Which prediction to return: LAE's ensemble of fast and slow ('max') or the fast learner's alone. @default 'max' */
  ensemble?: 'max' | 'fast';
  /** Healthy batches before it comes down a level, and before a good checkpoint is taken. @default 20, 80 with `deep` */
  stableBatches?: number;
  /** A batch is unhealthy when its normalised entropy exceeds reference × this. @default 1.5 */
  entropyTolerance?: number;
  /** Collapse: normalised entropy below reference × this (adaptation made the model overconfident). @default 0.25 */
  collapseFraction?: number;
  /** Batches at the start whose entropy defines the reference (assumed close to the source). @default 5 */
  warmupBatches?: number;
  /** Highest level allowed. @default 3 */
  maxLevel?: 0 | 1 | 2 | 3;
  /**
   * Limits: an update (levels 2–3) slower than `maxUpdateMs` turns updates off; more trainable
   * parameters than `maxTrainableParams` in the fast learner turns them off from the start, and in
   * the deep learner keeps level 3 on the slow learner.
   */
  budgets?: { maxUpdateMs?: number; maxTrainableParams?: number };
  /**
   * Delayed labels: predictions kept waiting, and for how many batches (4096, 50); a labelled step
   * runs once `minNew` new labels (8) are waiting, filled up to `minBatch` (16) from the replay reservoir.
   */
  feedback?: { capacity?: number; maxAgeBatches?: number; replayCapacity?: number; minBatch?: number; minNew?: number };
  /**
   * The error memory's options, or true for its defaults. Off by default: with 1% delayed labels
   * it cost 0.6 point on the ViT stream and nothing measurable on the CNN (docs/continual.md).
   */
  errorMemory?: ErrorMemoryOptions | boolean;
  /**
   * A labelled in-distribution set turns level 3 into RMT over every trainable parameter
   * (./deep-learner.ts), stepping on every `updateEvery`-th batch, instead of the fast learner's
   * consolidation into the slow one. Built when level 3 is first reached, unless
   * `prepareDeepLearner` built it before the stream (its warm-up takes seconds to minutes).
   */
  deep?: DeepLearnerOptions;
  /**
   * Input alignment (../tta/input-align.ts): every batch, calibration batches included, is
   * moved per channel to these source statistics (`tta.inputStats` of in-distribution
   * inputs) before anything else sees it, at every level: it changes no parameter and is close to
   * the identity on in-distribution batches. With per-class statistics (`tta.inputStats(images,
   * labels)`) a channel whose moments some class mix explains is left as it came (the class-mix
   * gate, ../tta/class-mix.ts), so batches of a few classes are not 'corrected'. A refit addition.
   * Off when absent.
   */
  inputAlign?: InputStats;
  /**
   * A token model's pad token (the id `withTokenInputs` masks): labelled rows of different lengths
   * are padded with it into one batch, so batches may have any length. Without it every batch must
   * have the first one's length. Token models only.
   */
  padToken?: number;
  seed?: number;
}

export interface ControllerEvent {
  batch: number;
  kind: 'escalate' | 'deescalate' | 'rollback' | 'checkpoint' | 'drift' | 'budget' | 'collapse' | 'feedback';
  from?: Level;
  to?: Level;
  reason: string;
  signals: Record<string, number | boolean | null>;
}

export interface ControllerResult {
  /** Class probabilities [N, C] after every correction. */
  probs: Float32Array;
  predictions: Int32Array;
  ids: string[];
  /** The level this batch was predicted at (a batch that moves the controller from 0 to 1 is predicted at 1). */
  level: Level;
  /** Events raised by this batch. */
  events: ControllerEvent[];
  signals: BatchSignals;
  /** The fast learner's embedding [N, D] of the batch, when the `embedding` option names one. */
  embedding?: Float32Array;
}

export interface BatchSignals {
  /** Mean prediction entropy / log C. */
  entropy: number;
  confidence: number;
  reference: number | null;
  drift: boolean;
  errorDrift: boolean;
  collapsed: boolean;
  healthy: boolean;
  updateMs: number;
  /** Normalised entropy of the batch's mean prediction (low: the batch's labels are concentrated). */
  spread?: number;
  /** LAME corrected this batch's output. */
  lame?: boolean;
  /** The smoothed batch prior corrected this batch's output (priorCorrection 'batch' or 'auto'). */
  prior?: boolean;
  /** `debias` moved this batch's output towards uniform. */
  debiased?: boolean;
  /** With inputAlign: whether any channel of the batch was aligned (the class-mix gate may leave it as it came). */
  aligned?: boolean;
}

export interface ControllerState {
  format: 'refit.continual/1';
  learner: FastSlowState;
  good: FastSlowState | null;
  level: Level;
  batch: number;
  unhealthyRun: number;
  healthyRun: number;
  /** The previous batch's label spread (absent in states written before it existed: 1). */
  lastSpread?: number;
  /** debias: moving average of the batches' mean predictions (absent in older states: none). */
  meanAvg?: number[] | null;
  reference: number | null;
  warmup: number[];
  budgetCap: Level;
  entropyDetector: DetectorState;
  errorDetector: DetectorState;
  prior: number[];
  feedback: ReturnType<FeedbackBuffer['state']>;
  replay: ReplayState;
  errorMemory: (ReturnType<ErrorMemory['state']> & { dim: number }) | null;
  /** The level-3 deep learner's state and its last good state (absent without the `deep` option). */
  deep?: AdapterState | null;
  goodDeep?: AdapterState | null;
  labelled: { input: InputRow; label: number }[];
  /** A token model without padToken: the sequence length of its rows (absent for float inputs). */
  tokenLength?: number | null;
  events: ControllerEvent[];
}

export class ContinualController {
  readonly learner: FastSlowLearner;
  readonly options: ControllerOptions;
  private level: Level = 0;
  private batch = 0;
  private unhealthyRun = 0;
  private healthyRun = 0;
  /** The previous batch's normalised label spread (holdBelowSpread). */
  private lastSpread = 1;
  /** Moving average of the batches' mean predictions (debias). */
  private meanAvg: Float64Array | null = null;
  private reference: number | null = null;
  private warmup: number[] = [];
  private budgetCap: Level;
  private good: FastSlowState | null = null;
  private entropyDetector: DriftDetector = new Adwin();
  private errorDetector: DriftDetector = new Adwin();
  private prior: PriorCorrection;
  private fb: FeedbackBuffer;
  private replay: ReplayBuffer;
  private memory: ErrorMemory | null = null;
  private deep: DeepLearner | null = null;
  /** Whether the deep learner predicts: from the first batch at level 3 on (prepareDeepLearner builds it earlier, unused). */
  private deepActive = false;
  /** A prepared deep learner's state from another controller (useDeepLearnerState), loaded when it is built. */
  private deepStart: AdapterState | null = null;
  private setupMs = 0;
  /** options.deep, unless its parameters are over the budget (then level 3 is the slow learner's). */
  private readonly deepOptions: DeepLearnerOptions | undefined;
  /** The model the deep learner adapts: this one, with penultimate features added when it has none. */
  private readonly deepModel: RefitModel;
  private goodDeep: AdapterState | null = null;
  /** Labelled samples waiting for a batch big enough to learn from. */
  private labelled: { input: InputRow; label: number }[] = [];
  readonly events: ControllerEvent[] = [];
  private readonly input: InputSpec;
  /** A token model without padToken: the length every batch must have (the first batch's). */
  private tokenLength: number | null = null;

  constructor(readonly model: RefitModel, options: ControllerOptions = {}) {
    checkControllerOptions(options);
    this.options = options;
    this.learner = new FastSlowLearner(model, { ...options, decay: options.decay ?? 0.99 });
    const C = this.learner.classes;
    this.prior = new PriorCorrection(C);
    const f = options.feedback ?? {};
    this.fb = new FeedbackBuffer(f.capacity ?? 4096, C, f.maxAgeBatches ?? 50);
    this.replay = new ReplayBuffer(f.replayCapacity ?? 512, options.seed ?? 0);
    this.input = inputSpec(model, options.padToken);
    if (this.input.kind === 'tokens') {
      // Both transform images: alignment moves pixel statistics, RMT augments and replays images.
      const ids = `this model's input '${this.input.name}' is ${this.input.dtype} token ids`;
      if (options.inputAlign) throw new Error(`continual: inputAlign moves image channels to source statistics, and ${ids}; leave it out`);
      if (options.deep) throw new Error(`continual: the deep learner (level 3, RMT) augments its input images, and ${ids}; leave out \`deep\` (level 3 then consolidates the fast learner into the slow one)`);
    }
    const size = (names: readonly string[]) => names.reduce((a, p) => a + model.param(p).data.length, 0);
    const nParams = size(this.learner.params);
    const maxP = options.budgets?.maxTrainableParams;
    this.budgetCap = maxP !== undefined && nParams > maxP ? 1 : 3;
    if (this.budgetCap < 3) this.emit('budget', `${nParams} trainable parameters exceed the budget of ${maxP}: updates (levels 2–3) are off`, { trainable: nParams });
    this.deepOptions = options.deep;
    if (options.deep && maxP !== undefined && this.budgetCap === 3) {
      // The deep learner trains far more than the fast learner: the budget applies to it too.
      const nDeep = size(deepLearnerParams(model, options.deep));
      if (nDeep > maxP) {
        this.deepOptions = undefined;
        this.emit('budget', `the deep learner's ${nDeep} parameters exceed the budget of ${maxP}: level 3 consolidates into the slow learner instead`, { trainable: nDeep });
      }
    }
    this.deepModel = this.deepOptions ? deepLearnerModel(model, this.deepOptions, options.logits) : model;
  }

  get currentLevel(): Level {
    return this.level;
  }

  private emit(kind: ControllerEvent['kind'], reason: string, signals: ControllerEvent['signals'], move?: { from: Level; to: Level }): ControllerEvent {
    const e: ControllerEvent = { batch: this.batch, kind, reason, signals, ...(move ?? {}) };
    this.events.push(e);
    return e;
  }

  private get maxLevel(): Level {
    return Math.min(this.options.maxLevel ?? 3, this.budgetCap) as Level;
  }

  /**
   * Set the entropy reference from in-distribution batches (the source model's predictions),
   * instead of trusting the first `warmupBatches` of the stream to be unshifted.
   */
  async calibrate(batches: Tensor[]): Promise<number> {
    if (batches.length === 0) throw new Error('continual.calibrate: give at least one in-distribution batch');
    const C = this.learner.classes;
    let sum = 0;
    for (const b of batches) {
      const x = this.options.inputAlign ? alignInput(b, this.options.inputAlign) : b;
      const out = await this.learner.process(x, { update: false, batchStats: false });
      sum += predictionStats(out.fastLogits).entropy / Math.log(C);
    }
    return this.useReference(sum / batches.length);
  }

  /**
   * Take an entropy reference that `calibrate` computed on another controller of the same model
   * and options (they would compute the same one): a service calibrates once per model, not per tenant.
   */
  useReference(reference: number): number {
    if (!(Number.isFinite(reference) && reference >= 0)) throw new Error(`continual.useReference: the reference must be a finite normalised entropy ≥ 0, got ${reference}`);
    this.reference = reference;
    this.warmup = [];
    return reference;
  }

  /** Predict a batch, adapting as the current level allows; ids name the predictions for feedback. */
  async predict(input: Tensor, ids?: string[]): Promise<ControllerResult> {
    const n = input.dims[0]!;
    if (ids && ids.length !== n) throw new Error(`continual.predict: ${n} inputs but ${ids.length} ids`);
    checkBatch(this.input, input, this.tokenLength);
    if (this.input.kind === 'tokens' && this.input.padToken === undefined) this.tokenLength = input.dims[1]!;
    // Everything below (both learners, the buffers kept for feedback) sees the aligned batch.
    const al = this.options.inputAlign ? alignInputDetailed(input, this.options.inputAlign) : null;
    const x = al ? al.x : input;
    const first = this.events.length;
    const level = this.level;
    const t0 = performance.now();
    // Under correlated labels the batch after a concentrated one is predicted without a step.
    const hold = this.options.holdBelowSpread !== undefined && this.lastSpread < this.options.holdBelowSpread;
    // Once the deep learner has been in use, levels 1–2 predict with it without steps: what it learned is kept.
    let out = this.deepOptions && (level >= 3 || (level >= 1 && this.deepActive))
      ? await this.deepProcess(x, level >= 3 && !hold)
      : level >= 1
      ? await this.learner.process(x, { update: level >= 2 && !hold, consolidate: level >= 3 && !hold, batchStats: true })
      : await this.learner.process(x, { update: false, batchStats: false });
    const updateMs = level >= 2 ? performance.now() - t0 : 0;
    const signals = this.observe(out.fastLogits, n, updateMs);
    if (al) signals.aligned = al.aligned.some(Boolean);
    this.batch++;
    this.decide(signals);
    // Climbing from level 0 to 1 costs one forward pass and changes no parameter, so the batch
    // that showed the shift is predicted again with its own normalization statistics at once.
    let predictedAt: Level = level;
    if (level === 0 && this.level === 1) {
      out = this.deepActive ? await this.deepProcess(x, false) : await this.learner.process(x, { update: false, batchStats: true });
      predictedAt = 1;
    }
    const C = this.learner.classes;
    // Level 0's corrections apply at every level: cheap, and they never change parameters.
    const probs = this.options.ensemble === 'fast' ? Float32Array.from(softmaxRows(out.fastLogits.data as Float32Array, C)) : out.probs;
    normaliseRows(probs, n, C);
    const spread0 = labelSpread(probs, n, C);
    this.lastSpread = spread0;
    const pc = this.options.priorCorrection;
    if (pc === 'batch' || (pc === 'auto' && spread0 < (this.options.priorThreshold ?? 0.7))) {
      reweightRows(probs, n, C, smoothedBatchPrior(probs, n, C));
      signals.prior = true;
    } else if (pc === true) this.prior.correct(probs, n);
    if (this.options.debias) signals.debiased = this.debias(probs, n, C, this.options.debias);
    signals.spread = labelSpread(probs, n, C);
    if (out.embedding && (this.options.lame === true || (this.options.lame === 'auto' && sizeCorrectedSpread(signals.spread, n, C) < (this.options.lameThreshold ?? 0.7)))) {
      const emb = out.embedding.data as Float32Array;
      const { Y } = lameSolve(Float64Array.from(probs), emb, n, C, emb.length / n, LAME_DEFAULTS);
      probs.set(Y);
      signals.lame = true;
    }
    if (out.embedding && this.memory) this.memory.correct(probs, out.embedding.data as Float32Array, n);
    const predictions = argmaxRows(probs, C);
    const batchIds = ids ?? Array.from({ length: n }, (_, i) => `${this.batch - 1}:${i}`);
    // Labels that come back later train on the input the model saw (aligned, with inputAlign).
    const emb = out.embedding?.data as Float32Array | undefined;
    const d = emb ? emb.length / n : 0;
    for (let i = 0; i < n; i++) {
      const s: PendingSample = { id: batchIds[i]!, input: rowOf(x, i), probs: probs.slice(i * C, (i + 1) * C), predicted: predictions[i]!, batch: this.batch };
      if (emb) s.embedding = emb.slice(i * d, (i + 1) * d);
      this.fb.add(s);
    }
    this.fb.age(this.batch);
    const result: ControllerResult = { probs, predictions, ids: batchIds, level: predictedAt, events: this.events.slice(first), signals };
    if (emb) result.embedding = emb;
    return result;
  }

  /** `debias`: towards uniform when the batch's mean prediction is like the previous batches'. */
  private debias(probs: Float32Array, n: number, C: number, o: { similarity: number; alpha?: number }): boolean {
    const mean = new Float64Array(C);
    for (let i = 0; i < n; i++) for (let c = 0; c < C; c++) mean[c]! += probs[i * C + c]! / n;
    const avg = this.meanAvg;
    let sim = -1;
    if (avg) {
      let d = 0, na = 0, nb = 0;
      for (let c = 0; c < C; c++) { d += mean[c]! * avg[c]!; na += mean[c]! ** 2; nb += avg[c]! ** 2; }
      sim = d / Math.sqrt(na * nb);
    }
    this.meanAvg = avg ? avg.map((v, c) => 0.8 * v + 0.2 * mean[c]!) : mean;
    if (sim < o.similarity) return false;
    const a = o.alpha ?? 1;
    reweightRows(probs, n, C, Float64Array.from(mean, (v) => (1 / C / Math.max(v, 1e-6)) ** a));
    return true;
  }

  /** With a labelled in-distribution set: the deep learner predicts, and at level 3 adapts (every k-th batch). */
  private async deepProcess(x: Tensor, adapt: boolean): Promise<{ probs: Float32Array; fastLogits: Tensor; embedding?: Tensor }> {
    const deep = this.buildDeep();
    if (!this.deepActive) {
      this.deepActive = true;
      // Its one-time set-up (prototypes, warm-up, compiled step; nothing when prepared before),
      // timed apart so that stream scores do not count it as a batch's work.
      if (!deep.isReady) {
        const t0 = performance.now();
        await deep.ready(x);
        this.setupMs += performance.now() - t0;
      }
      // Labels that arrived before it was in use: the replay reservoir's samples.
      for (const r of this.replay.draw(this.replay.size)) deep.addLabelled(r.input as Float32Array, r.label);
    }
    const logits = await deep.predict(x, adapt);
    const embedding = deep.embedding; // only with deep.embedding: then the error memory acts at level 3
    return { probs: Float32Array.from(softmaxRows(logits.data as Float32Array, this.learner.classes)), fastLogits: logits, ...(embedding ? { embedding } : {}) };
  }

  private buildDeep(): DeepLearner {
    if (!this.deep) {
      const deep = new DeepLearner(this.deepModel, this.deepOptions!);
      try {
        if (this.deepStart) deep.load(this.deepStart); // warmed up elsewhere: its warm-up is skipped
      } catch (e) {
        void deep.release();
        throw e;
      }
      this.deep = deep;
    }
    return this.deep;
  }

  /**
   * Build the level-3 deep learner now: RMT's source prototypes, its warm-up on the in-distribution
   * set and its compiled step. Otherwise the batch that first reaches level 3 waits for all of it
   * (23 s on the shipped CNN, 49 s on torchvision's ResNet-18 at 28×28; docs/continual.md). It
   * still predicts only from level 3 on, so no prediction changes. `sample`: a batch of the
   * stream's size (its values are not learned from). Nothing to do without the `deep` option, over
   * the parameter budget, or once built.
   */
  async prepareDeepLearner(sample: Tensor): Promise<void> {
    if (!this.deepOptions || this.deepActive) return;
    await this.buildDeep().ready(this.options.inputAlign ? alignInput(sample, this.options.inputAlign) : sample);
  }

  /**
   * Milliseconds predict() has spent on one-time set-up since this controller was created: the
   * deep learner's, when level 3 first needed it and it was not prepared before (prepareDeepLearner).
   */
  get deepSetupMs(): number {
    return this.setupMs;
  }

  /**
   * The prepared, not yet used deep learner's state, for other controllers of the same model and
   * options (useDeepLearnerState): a service warms up once per model, not once per tenant. Null
   * when the controller has no deep learner (no `deep` option, or over the parameter budget).
   */
  preparedDeepLearnerState(): AdapterState | null {
    if (!this.deepOptions) return null;
    if (!this.deep || this.deepActive) throw new Error('continual.preparedDeepLearnerState: call prepareDeepLearner first, before the deep learner is in use');
    return this.deep.state();
  }

  /** Whether level 3 is a deep learner's (the `deep` option, within the parameter budget). */
  get hasDeepLearner(): boolean {
    return this.deepOptions !== undefined;
  }

  /**
   * Start the deep learner, when level 3 first needs it, from `preparedDeepLearnerState()` of
   * another controller of the same model and options, skipping its warm-up. A deep learner already
   * built (prepared, or loaded with a state that holds one) keeps its own.
   */
  useDeepLearnerState(state: AdapterState): void {
    if (!this.deepOptions) throw new Error('continual.useDeepLearnerState: this controller has no deep learner (no `deep` option, or over its parameter budget)');
    if (state?.method !== 'rmt') throw new Error(`continual.useDeepLearnerState: not a deep learner's state (method '${String(state?.method)}')`);
    this.deepStart = state;
  }

  private observe(logits: Tensor, n: number, updateMs: number): BatchSignals {
    const stats = predictionStats(logits);
    const entropy = stats.entropy / Math.log(this.learner.classes); // 0 = certain, 1 = uniform
    if (this.reference === null) {
      this.warmup.push(entropy);
      if (this.warmup.length >= (this.options.warmupBatches ?? 5)) this.reference = this.warmup.reduce((a, b) => a + b, 0) / this.warmup.length;
    }
    const drift = this.entropyDetector.update(entropy).drift;
    const ref = this.reference;
    const collapsed = ref !== null && this.level >= 2 && entropy < ref * (this.options.collapseFraction ?? 0.25);
    const elevated = ref !== null && entropy > ref * (this.options.entropyTolerance ?? 1.5);
    const healthy = !drift && !elevated && !collapsed && !this.pendingErrorDrift;
    const s: BatchSignals = { entropy, confidence: stats.confidence, reference: ref, drift, errorDrift: this.pendingErrorDrift, collapsed, healthy, updateMs };
    this.pendingErrorDrift = false;
    return s;
  }

  private pendingErrorDrift = false;

  private decide(s: BatchSignals): void {
    const sig = { entropy: s.entropy, reference: s.reference, confidence: s.confidence, drift: s.drift, errorDrift: s.errorDrift, updateMs: s.updateMs };
    if (s.drift) this.emit('drift', 'entropy detector (ADWIN) raised an alarm', sig);
    const maxMs = this.options.budgets?.maxUpdateMs;
    if (maxMs !== undefined && s.updateMs > maxMs && this.budgetCap > 1) {
      this.budgetCap = 1;
      this.emit('budget', `an update took ${s.updateMs.toFixed(1)} ms, over the budget of ${maxMs} ms: updates are off`, sig);
      if (this.level > 1) this.move(1, 'deescalate', 'update budget exceeded', sig);
    }
    if (s.collapsed) {
      this.emit('collapse', `entropy ${s.entropy.toFixed(3)} fell below ${(this.options.collapseFraction ?? 0.25)} × the reference ${s.reference!.toFixed(3)}`, sig);
      this.rollback(sig);
      return;
    }
    if (s.healthy) {
      this.unhealthyRun = 0;
      this.healthyRun++;
      // With the deep learner, coming down stops its steps: 80 on the validation stream (docs/continual.md).
      const stable = this.options.stableBatches ?? (this.deepOptions ? 80 : 20);
      if (this.healthyRun >= stable) {
        if (this.level >= 2) {
          this.good = this.learner.state();
          this.goodDeep = this.deepActive ? this.deep!.state() : null;
          this.emit('checkpoint', `${stable} healthy batches at level ${this.level}: saved as the last good state`, sig);
        }
        if (this.level > 0) this.move((this.level - 1) as Level, 'deescalate', `${stable} healthy batches`, sig);
        this.healthyRun = 0;
      }
      return;
    }
    this.healthyRun = 0;
    this.unhealthyRun++;
    const patience = this.level === 0 ? 1 : this.options.patience ?? 3;
    if (this.unhealthyRun >= patience && this.level < this.maxLevel) {
      const why = [s.drift && 'drift alarm', s.errorDrift && 'labelled error rising', s.reference !== null && s.entropy > s.reference * (this.options.entropyTolerance ?? 1.5) && 'entropy above tolerance'].filter(Boolean).join(', ');
      this.move((this.level + 1) as Level, 'escalate', `level ${this.level} did not restore health in ${this.unhealthyRun} batch${this.unhealthyRun === 1 ? "" : "es"} (${why})`, sig);
      this.unhealthyRun = 0;
    }
  }

  private move(to: Level, kind: 'escalate' | 'deescalate', reason: string, sig: ControllerEvent['signals']): void {
    const from = this.level;
    this.level = to;
    this.emit(kind, reason, sig, { from, to });
  }

  private rollback(sig: ControllerEvent['signals']): void {
    const from = this.level;
    if (this.good) this.learner.load(this.good);
    else this.learner.reset('both');
    if (this.deep && this.deepActive) {
      if (this.goodDeep) this.deep.load(this.goodDeep);
      else this.deep.reset();
    }
    this.entropyDetector.reset();
    this.level = 1;
    this.unhealthyRun = this.healthyRun = 0;
    this.emit('rollback', this.good ? 'restored the last good checkpoint' : 'no good checkpoint yet: back to the source', sig, { from, to: 1 });
  }

  /**
   * Labels for earlier predictions. Unknown, expired and invalid labels are counted in the
   * report, never fatal. Wrong predictions feed the error memory and the labelled-error
   * detector; labelled samples train the fast learner (with replay) in batches of `minBatch`.
   */
  async feedback(ids: readonly string[], labels: ArrayLike<number>): Promise<FeedbackReport> {
    const { samples, report } = this.fb.resolve(ids, labels);
    for (const s of samples) {
      const wrong = s.predicted !== s.label;
      if (this.errorDetector.update(wrong ? 1 : 0).drift) this.pendingErrorDrift = true;
      if (wrong && s.embedding) {
        const mem = this.options.errorMemory;
        this.memory ??= mem ? new ErrorMemory(s.embedding.length, this.learner.classes, mem === true ? {} : mem) : null;
        this.memory?.add(s.embedding, s.probs, s.label);
      }
      this.replay.add({ input: s.input, label: s.label });
      if (this.deepActive) this.deep!.addLabelled(s.input as Float32Array, s.label); // float inputs: token models have no deep learner
      this.labelled.push({ input: s.input, label: s.label });
    }
    if (report.accepted + report.unknown + report.expired + report.invalid > 0 && (report.unknown || report.expired || report.invalid)) {
      this.emit('feedback', `${report.unknown} unknown, ${report.expired} expired, ${report.invalid} invalid labels rejected`, { accepted: report.accepted, unknown: report.unknown, expired: report.expired, invalid: report.invalid });
    }
    const minBatch = this.options.feedback?.minBatch ?? 16;
    if (this.labelled.length >= Math.min(minBatch, this.options.feedback?.minNew ?? 8) && this.budgetCap >= 2) {
      const extra = this.replay.draw(Math.max(0, minBatch - this.labelled.length));
      const rows = [...this.labelled, ...extra];
      if (rows.length >= minBatch) {
        // Train in the normalisation the current level predicts with (level 0: source statistics).
        await this.learner.learn(batchOfRows(this.input, rows.map((r) => r.input)), rows.map((r) => r.label), { consolidate: this.level >= 3, batchStats: this.level >= 1 });
        this.labelled = [];
      }
    }
    return report;
  }

  /** The whole state as one object (tensors stay Float32Arrays): see checkpoint.ts for files. */
  state(): ControllerState {
    return {
      format: 'refit.continual/1',
      learner: this.learner.state(), good: this.good, level: this.level, batch: this.batch,
      unhealthyRun: this.unhealthyRun, healthyRun: this.healthyRun, lastSpread: this.lastSpread, meanAvg: this.meanAvg ? [...this.meanAvg] : null, reference: this.reference, warmup: [...this.warmup], budgetCap: this.budgetCap,
      entropyDetector: this.entropyDetector.state(), errorDetector: this.errorDetector.state(), prior: [...this.prior.prior],
      feedback: this.fb.state(), replay: this.replay.state(), errorMemory: this.memory ? { ...this.memory.state(), dim: this.memory.dim } : null,
      deep: this.deepActive ? this.deep!.state() : null, goodDeep: this.goodDeep,
      labelled: this.labelled.map((r) => ({ input: r.input.slice(), label: r.label })), ...(this.input.kind === 'tokens' ? { tokenLength: this.tokenLength } : {}), events: this.events.map((e) => ({ ...e })),
    };
  }

  /** Restore `state()`; everything is validated before anything changes. */
  load(s: ControllerState): void {
    if (!s || s.format !== 'refit.continual/1') throw new Error(`continual.load: not a refit continual state (format '${(s as { format?: string })?.format}')`);
    if (s.prior?.length !== this.learner.classes) throw new Error(`continual.load: the state has ${s.prior?.length} classes, this model ${this.learner.classes}`);
    const probe = new FastSlowLearner(this.model, { ...this.options, decay: this.options.decay ?? 0.99 });
    try {
      probe.load(s.learner); // throws on another model's parameters
      if (s.good) probe.load(s.good);
    } finally {
      void probe.release();
    }
    const entropy = restoreDetector(s.entropyDetector), error = restoreDetector(s.errorDetector);
    let deep: DeepLearner | null = null;
    if (s.deep || s.goodDeep) {
      if (!this.deepOptions) throw new Error(`continual.load: the state holds a deep learner (level 3 with an in-distribution set), and this controller has no \`deep\` option${this.options.deep ? ' within its parameter budget' : ''}`);
      deep = new DeepLearner(this.deepModel, this.deepOptions);
      try {
        if (s.goodDeep) deep.load(s.goodDeep); // throws on another model's state
        if (s.deep) deep.load(s.deep);
      } catch (e) {
        void deep.release();
        throw e;
      }
    }
    let memory: ErrorMemory | null = null;
    if (s.errorMemory) {
      const mem = this.options.errorMemory;
      memory = new ErrorMemory(s.errorMemory.dim, this.learner.classes, typeof mem === 'object' ? mem : {});
      memory.load(s.errorMemory);
    }
    // Validated: apply.
    this.learner.load(s.learner);
    this.good = s.good;
    Object.assign(this, { level: s.level, batch: s.batch, unhealthyRun: s.unhealthyRun, healthyRun: s.healthyRun, lastSpread: s.lastSpread ?? 1, meanAvg: s.meanAvg ? Float64Array.from(s.meanAvg) : null, reference: s.reference, warmup: [...s.warmup], budgetCap: s.budgetCap });
    this.entropyDetector = entropy;
    this.errorDetector = error;
    this.memory = memory;
    // A prepared deep learner not yet in use is as good as a new one: kept when the state has none.
    const kept = !deep && !this.deepActive ? this.deep : null;
    if (this.deep !== kept) void this.deep?.release();
    this.deep = deep ?? kept;
    this.deepActive = deep !== null;
    this.goodDeep = s.goodDeep ?? null;
    this.prior.prior.set(s.prior);
    this.fb.load(s.feedback);
    this.replay.load(s.replay);
    this.labelled = s.labelled.map((r) => ({ input: r.input.slice(), label: r.label }));
    this.tokenLength = s.tokenLength ?? null;
    this.events.length = 0;
    this.events.push(...s.events);
  }

  async release(): Promise<void> {
    await this.learner.release();
    await this.deep?.release();
  }
}

/**
 * A batch's label spread plus the Miller–Madow bias of an entropy estimated from n samples,
 * (C − 1)/(2n), in units of log C: 0.031 at n = 64, 0.122 at n = 16 for C = 10. Without it a
 * threshold chosen at batch 64 fires on most i.i.d. batches of 16 (session 10: LAME 'auto' at 0.9
 * cost the ViT's batch-16 stream 2.75 points).
 */
export function sizeCorrectedSpread(spread: number, n: number, C: number): number {
  return spread + (C - 1) / (2 * n * Math.log(C));
}

/** Entropy of the batch's mean prediction / log C. */
function labelSpread(p: Float32Array, n: number, C: number): number {
  const m = new Float64Array(C);
  for (let i = 0; i < n; i++) for (let c = 0; c < C; c++) m[c]! += p[i * C + c]! / n;
  let h = 0;
  for (let c = 0; c < C; c++) if (m[c]! > 0) h -= m[c]! * Math.log(m[c]!);
  return h / Math.log(C);
}

/** Probabilities [n, C] times per-class weights [C], each row renormalised (a prior adjustment). */
function reweightRows(p: Float32Array, n: number, C: number, w: ArrayLike<number>): void {
  for (let k = 0; k < p.length; k++) p[k]! *= w[k % C]!;
  normaliseRows(p, n, C);
}

function normaliseRows(p: Float32Array, n: number, C: number): void {
  for (let i = 0; i < n; i++) {
    let z = 0;
    for (let c = 0; c < C; c++) z += p[i * C + c]!;
    for (let c = 0; c < C; c++) p[i * C + c]! /= z || 1;
  }
}
