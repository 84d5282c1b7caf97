// The controller's level-3 learner when it has a labelled in-distribution set: RMT (Döbler,
// Marsden & Yang, CVPR 2023: a mean teacher with source replay and a contrastive term to source
// prototypes) over every trainable parameter, as RMT's code trains them, instead of the
// normalization-affine EMA of the fast learner.
//
// Why: on the CNN's continual validation stream (Fashion-MNIST training images, 1000 per
// corruption; bench/continual/one.ts, trials in bench/results/continual-tuned-cnn.json) entropy
// steps on the normalization parameters stay within 0.2 point of BN-adapt (21.66 % against
// 21.81 %), while RMT over every parameter reaches 19.35 %. Its step costs several times Tent's,
// so it runs on every `updateEvery`-th batch (the batches between are predicted by student and
// teacher without a step), within the controller's budget of 2× Tent's ms per batch. The default,
// 5, is the CNN's validated choice under that budget (session 10: every 4th batch was 0.04–0.33
// point better on the validation streams and cost 2.08× Tent, every 5th 1.89×); the ViT's tuned
// options take 4 (1.79×).
//
// Deviations from RMT, written down: the step is taken on every k-th batch only (RMT: every
// batch); the warm-up is one pass over the given set (the code: 50000 samples); the returned
// scores are the mean of student and teacher logits (the code sums them: same argmax, but the
// controller's entropy signals need the scale of one model's logits); delayed labels join the
// replay (RMT.addLabelled). It returns no embedding unless asked (`embedding`), so by default
// LAME and the error memory, which need one, do not correct its predictions.
import type { RefitModel } from '../model.ts';
import type { Tensor } from '../onnx/tensor.ts';
import { f32 } from '../onnx/tensor.ts';
import { RMT, RMT_DEFAULTS, type RmtOptions } from '../tta/rmt.ts';
import { normAffineParams } from '../tta/common.ts';
import { FeaturesError } from '../onnx/penultimate.ts';
import type { AdapterState } from '../tta/types.ts';

export interface DeepLearnerOptions {
  /** Labelled in-distribution images [M, ...] (RMT's warm-up, replay and prototypes). */
  sourceData: Tensor;
  sourceLabels: ArrayLike<number>;
  /**
   * Parameters RMT adapts: 'all' (every trainable parameter, RMT's code), 'norm' (the normalization
   * layers' scales and shifts, RMT's paper default for its TTA setting) or names. @default 'all'
   */
  params?: 'all' | 'norm' | string[];
  /** Take RMT's step on every k-th batch at level 3. @default DEEP_UPDATE_EVERY */
  updateEvery?: number;
  /**
   * Return the teacher's penultimate features as the batch's embedding (`embedding`), so that the
   * controller's error memory (and LAME) can correct the deep learner's predictions. A refit
   * addition; the predictions themselves do not change. @default false
   */
  embedding?: boolean;
  /** Further RMT options (lr, lambdas, seed, labelled replay, …). */
  rmt?: Omit<RmtOptions, 'sourceData' | 'sourceLabels' | 'params' | 'updateEvery'>;
}

/** The parameters the deep learner adapts: `params`, or every trainable parameter by default. */
export function deepLearnerParams(model: RefitModel, o: Pick<DeepLearnerOptions, 'params'>): string[] {
  if (o.params === 'norm') return normAffineParams('continual deep learner (deep.params \'norm\')', model);
  return o.params === undefined || o.params === 'all' ? model.parameterNames('all') : o.params;
}

/**
 * The model the deep learner's RMT adapts. RMT's contrastive term reads the penultimate features
 * (an output named 'features'); a model exported with only its logits gets the input of its linear
 * head as that output (model.withFeatures()). The controller calls this when it is built, so a
 * model without a usable head is refused then, not when level 3 is first reached mid-stream.
 */
export function deepLearnerModel(model: RefitModel, o: Pick<DeepLearnerOptions, 'rmt'>, logits?: string): RefitModel {
  const contrastive = (o.rmt?.lambdaCont ?? RMT_DEFAULTS.lambdaCont) > 0;
  const name = o.rmt?.features ?? 'features';
  if (!contrastive || model.outputs.some((v) => v.name === name)) return model;
  try {
    return model.withFeatures({ ...(logits ? { logits } : {}), name });
  } catch (e) {
    throw new Error(`continual deep learner (level 3, RMT): its contrastive term reads the penultimate features, and ${e instanceof FeaturesError ? e.reason : (e as Error).message}; or pass deep.rmt.lambdaCont: 0`);
  }
}

/** RMT's step every 5th batch: the CNN's choice on the validation streams under the 2× Tent budget (docs/continual.md). */
export const DEEP_UPDATE_EVERY = 5;

export class DeepLearner {
  private rmt: RMT;

  constructor(readonly model: RefitModel, readonly options: DeepLearnerOptions) {
    this.rmt = this.create();
  }

  private create(): RMT {
    const o = this.options;
    const params = deepLearnerParams(this.model, o);
    if (params.length === 0) throw new Error('continual deep learner: the model has no trainable parameters');
    const rmt = new RMT(this.model, {
      warmupSamples: o.sourceData.dims[0] ?? 0,
      ...o.rmt,
      sourceData: o.sourceData,
      sourceLabels: o.sourceLabels,
      params,
      updateEvery: o.updateEvery ?? DEEP_UPDATE_EVERY,
    });
    rmt.keepFeatures = o.embedding === true;
    return rmt;
  }

  /** The last predicted batch's embedding [N, D] (the teacher's features), with the `embedding` option. */
  get embedding(): Tensor | undefined {
    return this.rmt.lastFeatures;
  }

  /**
   * Predict the batch (mean of student and teacher logits); with `adapt`, step on every k-th
   * batch. Without, nothing changes (the controller below level 3 keeps what was learned).
   */
  async predict(x: Tensor, adapt = true): Promise<Tensor> {
    const logits = adapt ? (await this.rmt.predict(x)).logits : await this.rmt.infer(x);
    return f32([...logits.dims], Float32Array.from(logits.data as Float32Array, (v) => v / 2));
  }

  /** RMT's prototypes, warm-up and compiled step, now instead of on the first adapted batch (RMT.ready). */
  ready(sample: Tensor): Promise<void> {
    return this.rmt.ready(sample);
  }

  /** Whether ready() has run (or is running), here or on the first adapted batch. */
  get isReady(): boolean {
    return this.rmt.isPrepared;
  }

  /** A labelled sample of the stream (delayed feedback) joins RMT's replay (see RMT.addLabelled). */
  addLabelled(x: Float32Array, label: number): void {
    this.rmt.addLabelled(x, label);
  }

  state(): AdapterState {
    return this.rmt.snapshot();
  }

  /** Restore `state()`; validated before anything changes (throws on another model's state). */
  load(s: AdapterState): void {
    this.rmt.restore(s);
  }

  /** Back to the state after the warm-up (RMT's reset). */
  reset(): void {
    this.rmt.reset();
  }

  release(): Promise<void> {
    return this.rmt.release();
  }
}
