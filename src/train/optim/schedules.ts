/**
 * Learning-rate schedules. A schedule maps the optimizer step index (0 for the
 * first `step()` call) to a multiplier of the base lr, like the lambda of
 * torch.optim.lr_scheduler.LambdaLR with `scheduler.step()` after every
 * `optimizer.step()`.
 */
import type { Schedule } from './types.ts';

export type { Schedule };

/** Multiplier 1 (or `value`) forever. */
export function constant(value = 1): Schedule {
  checkNonNegative('constant', 'value', value);
  return () => value;
}

export interface WarmupCosineOptions {
  /** Steps of linear warmup: step s < warmupSteps gets (s + 1) / warmupSteps. 0 for none. */
  warmupSteps: number;
  /** Step at which the cosine reaches its minimum; later steps stay there. */
  totalSteps: number;
  /** Final multiplier, as a fraction of the base lr. Default 0. */
  minLrRatio?: number;
}

/**
 * Linear warmup, then cosine decay to `minLrRatio`:
 *
 *     s < W:  (s + 1) / W
 *     s ≥ W:  r + (1 − r) · ½(1 + cos(π · min(1, (s − W) / max(1, T − W))))
 *
 * The warmup never wastes a step at lr 0 (unlike a s / W ramp) and reaches 1 at
 * step W − 1; the decay starts at 1 at step W and reaches r at step T.
 */
export function warmupCosine(options: WarmupCosineOptions): Schedule {
  const { warmupSteps: W, totalSteps: T } = options;
  const r = options.minLrRatio ?? 0;
  checkInteger('warmupCosine', 'warmupSteps', W);
  checkInteger('warmupCosine', 'totalSteps', T);
  if (W > T) throw new Error(`warmupCosine: warmupSteps (${W}) must not exceed totalSteps (${T})`);
  if (!(r >= 0 && r <= 1)) throw new Error(`warmupCosine: minLrRatio must be in [0, 1], got ${r}`);
  const span = Math.max(1, T - W);
  return (s) => {
    if (s < W) return (s + 1) / W;
    const progress = Math.min(1, Math.max(0, (s - W) / span));
    return r + (1 - r) * 0.5 * (1 + Math.cos(Math.PI * progress));
  };
}

export interface StepDecayOptions {
  /** Multiply by `gamma` every `stepSize` steps. */
  stepSize: number;
  /** Decay factor. Default 0.1. */
  gamma?: number;
}

/** gamma^floor(s / stepSize), as torch.optim.lr_scheduler.StepLR. */
export function stepDecay(options: StepDecayOptions): Schedule {
  const { stepSize } = options;
  const gamma = options.gamma ?? 0.1;
  checkInteger('stepDecay', 'stepSize', stepSize);
  if (stepSize < 1) throw new Error(`stepDecay: stepSize must be ≥ 1, got ${stepSize}`);
  checkNonNegative('stepDecay', 'gamma', gamma);
  return (s) => gamma ** Math.floor(s / stepSize);
}

function checkInteger(fn: string, key: string, v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new Error(`${fn}: ${key} must be an integer ≥ 0, got ${v}`);
}

function checkNonNegative(fn: string, key: string, v: number): void {
  if (!Number.isFinite(v) || v < 0) throw new Error(`${fn}: ${key} must be a finite number ≥ 0, got ${v}`);
}
