// Page-Hinkley test (Page 1954), as River's `drift.PageHinkley` implements it: a CUSUM of
// deviations from the running mean, with a forgetting factor, one- or two-sided.
import { type DriftDetector, type DriftSignal, type DetectorState, checkFinite, checkState } from './types.ts';
import { RunningMean } from './stats.ts';

/** River's defaults. */
export const PAGE_HINKLEY_DEFAULTS = { minInstances: 30, delta: 0.005, threshold: 50, alpha: 1 - 0.0001, mode: 'both' as 'up' | 'down' | 'both' };

export type PageHinkleyConfig = typeof PAGE_HINKLEY_DEFAULTS;

/**
 * Alarms when the cumulative deviation from the running mean rises (mode 'up'), falls ('down')
 * or either ('both') by more than `threshold` from its extreme. Resets itself after an alarm.
 * No warning zone. River's initial maximum of the decrease sum is −1, not −∞; kept for exactness.
 *
 * @example
 * const ph = new PageHinkley({ threshold: 20 });
 * for (const [i, x] of stream.entries()) if (ph.update(x).drift) console.log(`change at ${i}`);
 */
export class PageHinkley implements DriftDetector {
  readonly kind = 'page-hinkley';
  readonly config: PageHinkleyConfig;
  private mean = new RunningMean();
  private sumIncrease = 0;
  private sumDecrease = 0;
  private minIncrease = Infinity;
  private maxDecrease = -1;
  drift = false;
  readonly warning = false;

  constructor(config: Partial<PageHinkleyConfig> = {}) {
    this.config = { ...PAGE_HINKLEY_DEFAULTS, ...config };
    if (!['up', 'down', 'both'].includes(this.config.mode)) throw new Error(`page-hinkley: mode must be 'up', 'down' or 'both', got '${this.config.mode}'`);
  }

  reset(): void {
    this.mean = new RunningMean();
    this.sumIncrease = 0;
    this.sumDecrease = 0;
    this.minIncrease = Infinity;
    this.maxDecrease = -1;
    this.drift = false;
  }

  update(x: number): DriftSignal {
    checkFinite(this.kind, x);
    if (this.drift) this.reset();
    this.mean.update(x);
    const dev = x - this.mean.mean;
    const { alpha, delta, threshold, mode } = this.config;
    this.sumIncrease = alpha * this.sumIncrease + dev - delta;
    this.sumDecrease = alpha * this.sumDecrease + dev + delta;
    if (this.sumIncrease < this.minIncrease) this.minIncrease = this.sumIncrease;
    if (this.sumDecrease > this.maxDecrease) this.maxDecrease = this.sumDecrease;
    if (this.mean.n >= this.config.minInstances) {
      const up = this.sumIncrease - this.minIncrease > threshold;
      const down = this.maxDecrease - this.sumDecrease > threshold;
      this.drift = mode === 'up' ? up : mode === 'down' ? down : up || down;
    }
    return { drift: this.drift, warning: false };
  }

  state(): DetectorState {
    return {
      kind: this.kind, config: { ...this.config }, n: this.mean.n, mean: this.mean.mean,
      sumIncrease: this.sumIncrease, sumDecrease: this.sumDecrease, minIncrease: this.minIncrease, maxDecrease: this.maxDecrease, drift: this.drift,
    };
  }

  static fromState(s: DetectorState): PageHinkley {
    checkState('page-hinkley', s);
    const d = new PageHinkley(s.config as Partial<PageHinkleyConfig>);
    d.mean = RunningMean.from(s as unknown as { n: number; mean: number });
    // JSON turns ±Infinity into null: the initial minimum is +∞.
    Object.assign(d, { sumIncrease: s.sumIncrease, sumDecrease: s.sumDecrease, minIncrease: s.minIncrease ?? Infinity, maxDecrease: s.maxDecrease, drift: s.drift });
    return d;
  }
}
