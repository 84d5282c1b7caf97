// Scoring a detector on a stream with known change points: detection delay and false alarms.
import type { DriftDetector } from './types.ts';
import { Rng } from '../util/rng.ts';

export interface DriftScore {
  /** Samples from the first change point to the first alarm at or after it; null when missed. */
  delay: number | null;
  /** Alarms before the first change point. */
  falseAlarms: number;
  /** Samples before the first change point (to turn false alarms into a rate). */
  preChange: number;
  /** Every alarm index. */
  alarms: number[];
}

/** Feed `stream` to `detector`; `change` is the index of the first value after the change. */
export function scoreDetector(detector: DriftDetector, stream: ArrayLike<number>, change: number): DriftScore {
  const alarms: number[] = [];
  for (let i = 0; i < stream.length; i++) if (detector.update(stream[i]!).drift) alarms.push(i);
  const first = alarms.find((a) => a >= change);
  return { delay: first === undefined ? null : first - change, falseAlarms: alarms.filter((a) => a < change).length, preChange: change, alarms };
}

export interface SyntheticStream {
  values: Float64Array;
  change: number;
}

/**
 * Seeded test streams. `kind`: 'mean' (Gaussian, mean `from` → `to`, σ `sigma`) or 'bernoulli'
 * (error rate `from` → `to`); `ramp` > 0 makes the change gradual over that many samples.
 */
export function syntheticStream(opts: { kind: 'mean' | 'bernoulli'; length: number; change: number; from: number; to: number; ramp?: number; sigma?: number; seed: number }): SyntheticStream {
  const rng = new Rng(opts.seed);
  const values = new Float64Array(opts.length);
  const ramp = opts.ramp ?? 0;
  for (let i = 0; i < opts.length; i++) {
    const t = i < opts.change ? 0 : ramp > 0 ? Math.min(1, (i - opts.change + 1) / ramp) : 1;
    const level = opts.from + t * (opts.to - opts.from);
    values[i] = opts.kind === 'mean' ? level + (opts.sigma ?? 1) * rng.normal() : rng.uniform() < level ? 1 : 0;
  }
  return { values, change: opts.change };
}
