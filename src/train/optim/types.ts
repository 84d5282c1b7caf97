/**
 * Shared types for refit's optimizers.
 *
 * Trainable tensors live in TypeScript as flat Float32Arrays keyed by parameter
 * name; gradients come back from the compiled train step the same way.
 */

/** Parameters or gradients: a Map or a plain record from name to flat Float32Array. */
export type TensorMap = ReadonlyMap<string, Float32Array> | Readonly<Record<string, Float32Array>>;

/** A learning-rate schedule: optimizer step index (0-based) → multiplier of the base lr. */
export type Schedule = (step: number) => number;

/**
 * Selects parameters for a param group: a regex tested against the name, a list
 * of exact names (or one name), or a predicate.
 */
export type ParamMatcher = RegExp | string | readonly string[] | ((name: string) => boolean);

/** Per-group overrides on top of an optimizer's default hyperparameters. */
export type ParamGroup<H> = Partial<H> & {
  /** Which parameters this group holds. The first matching group wins. */
  params: ParamMatcher;
  /**
   * Extra multiplier on this group's lr (e.g. LoRA+ gives B a larger lr than A).
   * Effective lr = (group lr ?? default lr) × lrScale × schedule(step).
   */
  lrScale?: number;
  /** Optional label, shown in `describe()` and in the saved state's hyper. */
  name?: string;
};

/** Options every optimizer accepts besides its own hyperparameters. */
export interface CommonOptions<H> {
  /** Param groups with their own hyperparameters; unmatched params use the defaults. */
  groups?: readonly ParamGroup<H>[];
  /** lr multiplier as a function of the step index; `step()` advances it. Default: constant 1. */
  schedule?: Schedule;
}

/**
 * Saved optimizer state. Everything but `buffers` is plain JSON; `buffers` holds
 * Float32Arrays so it round-trips through a binary file without loss (see
 * `encodeOptimizerState` / `decodeOptimizerState`).
 */
export interface OptimizerState {
  /** Format version of this object. */
  version: 1;
  /** Optimizer kind: 'sgd' | 'adam' | 'adamw'. `loadState` refuses another kind. */
  kind: string;
  /** Hyperparameters at save time (defaults and group overrides), for inspection. */
  hyper: Record<string, unknown>;
  /** Number of `step()` calls so far; the schedule position. */
  step: number;
  /** Per-parameter update counts (a parameter without a grad in a step is not counted). */
  paramSteps: Record<string, number>;
  /** Per-parameter slots, e.g. { 'w': { expAvg, expAvgSq } }. */
  buffers: Record<string, Record<string, Float32Array>>;
}

/** Options of one `Optimizer.step`. */
export interface OptimizerStepOptions {
  /**
   * The caller has already found every gradient finite (TrainStep.run's `nonFiniteGrad` is null),
   * so the optimizer does not scan them again; lengths are still checked. A non-finite gradient
   * passed with this set reaches the parameters.
   */
  gradsFinite?: boolean;
}

/** What every refit optimizer offers. */
export interface Optimizer {
  /** 'sgd' | 'adam' | 'adamw' */
  readonly kind: string;
  /**
   * Updates `params` in place from `grads`. Parameters without a grad are
   * skipped; grads without a parameter are ignored. All grads are checked
   * (finite, right length) before any parameter changes, so a bad grad throws
   * and leaves params and state untouched. Advances the schedule by one step.
   */
  step(params: TensorMap, grads: TensorMap, options?: OptimizerStepOptions): void;
  /** Default base lr (before lrScale and schedule). Groups with their own lr keep it. */
  lr: number;
  /** Number of completed `step()` calls. */
  readonly stepCount: number;
  /** Current schedule multiplier, schedule(stepCount). */
  lrMultiplier(): number;
  /** lr the next step uses for `name` (or for unmatched params when omitted). */
  currentLr(name?: string): number;
  /** Snapshot of the state. Buffers are copies; later steps do not change the snapshot. */
  state(): OptimizerState;
  /**
   * Restores a snapshot from `state()` (buffers are copied). Throws if the kind
   * differs, slots are missing or unknown, or buffer lengths disagree with each
   * other or — when `params` is given — with the parameters. Hyperparameters are
   * not loaded: they come from the constructor. On error nothing is changed.
   */
  loadState(state: OptimizerState, params?: TensorMap): void;
}
