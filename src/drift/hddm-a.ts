// HDDM-A: drift detection with Hoeffding's bounds and an average test (Frías-Blanco et al.,
// TKDE 2015), as River's `drift.binary.HDDMA` (itself from MOA).
import { type DriftDetector, type DriftSignal, type DetectorState, checkState } from './types.ts';
import { RunningMean } from './stats.ts';
import { checkBit } from './binary.ts';

/** River's defaults. */
export const HDDM_A_DEFAULTS = { driftConfidence: 0.001, warningConfidence: 0.005, twoSidedTest: false };

export type HddmAConfig = typeof HDDM_A_DEFAULTS;

/**
 * Compares the mean of the whole stream with the mean up to a cut point chosen where the
 * Hoeffding bound of the prefix mean was lowest (highest for decreases); alarms when the
 * difference exceeds the bound at the drift (warning) confidence. Resets after an alarm.
 *
 * @example
 * const h = new HddmA();
 * for (const [i, wrong] of errors.entries()) if (h.update(wrong).drift) console.log(`drift at ${i}`);
 */
export class HddmA implements DriftDetector {
  readonly kind = 'hddm-a';
  readonly config: HddmAConfig;
  private xMin = new RunningMean();
  private xMax = new RunningMean();
  private z = new RunningMean();
  drift = false;
  warning = false;

  constructor(config: Partial<HddmAConfig> = {}) {
    this.config = { ...HDDM_A_DEFAULTS, ...config };
  }

  reset(): void {
    this.xMin = new RunningMean();
    this.xMax = new RunningMean();
    this.z = new RunningMean();
    this.drift = this.warning = false;
  }

  private bound(n: number): number {
    return Math.sqrt((1 / (2 * n)) * Math.log(1 / this.config.driftConfidence));
  }

  update(x: number): DriftSignal {
    checkBit(this.kind, x);
    if (this.drift) this.reset();
    this.z.update(x);
    if (this.xMin.n === 0) this.xMin = this.z.clone();
    if (this.xMax.n === 0) this.xMax = this.z.clone();
    const epsZ = this.bound(this.z.n);
    if (this.xMin.mean + this.bound(this.xMin.n) >= this.z.mean + epsZ) this.xMin = this.z.clone();
    if (this.xMax.mean - this.bound(this.xMax.n) <= this.z.mean - epsZ) this.xMax = this.z.clone();
    const { driftConfidence: dc, warningConfidence: wc } = this.config;
    if (this.changed(this.xMin, dc, 1)) {
      this.warning = false;
      this.drift = true;
    } else {
      this.warning = this.changed(this.xMin, wc, 1);
      this.drift = false;
    }
    if (this.config.twoSidedTest) {
      if (this.changed(this.xMax, dc, -1)) this.drift = true;
      else if (this.changed(this.xMax, wc, -1)) this.warning = true;
    }
    return { drift: this.drift, warning: this.warning };
  }

  /** Has the global mean moved up (sign 1) or down (−1) from the cut point by more than the bound? */
  private changed(cut: RunningMean, confidence: number, sign: 1 | -1): boolean {
    if (cut.n === this.z.n) return false;
    const m = ((this.z.n - cut.n) / cut.n) * (1 / this.z.n);
    const eps = Math.sqrt((m / 2) * Math.log(2 / confidence));
    return sign * (this.z.mean - cut.mean) >= eps;
  }

  state(): DetectorState {
    const m = (r: RunningMean) => ({ n: r.n, mean: r.mean });
    return { kind: this.kind, config: { ...this.config }, xMin: m(this.xMin), xMax: m(this.xMax), z: m(this.z), drift: this.drift, warning: this.warning };
  }

  static fromState(s: DetectorState): HddmA {
    checkState('hddm-a', s);
    const d = new HddmA(s.config as Partial<HddmAConfig>);
    type M = { n: number; mean: number };
    d.xMin = RunningMean.from(s.xMin as M);
    d.xMax = RunningMean.from(s.xMax as M);
    d.z = RunningMean.from(s.z as M);
    d.drift = s.drift as boolean;
    d.warning = s.warning as boolean;
    return d;
  }
}
