// EDDM: early drift detection method (Baena-García et al. 2006), as River's `drift.binary.EDDM`.
import { type DriftDetector, type DriftSignal, type DetectorState, checkState } from './types.ts';
import { RunningVar } from './stats.ts';
import { checkBit } from './binary.ts';

/** River's defaults. */
export const EDDM_DEFAULTS = { warmStart: 30, alpha: 0.95, beta: 0.9 };

export type EddmConfig = typeof EDDM_DEFAULTS;

/**
 * Watches the distance between consecutive errors in a 0/1 error stream: when the mean distance
 * plus two standard deviations falls below β (drift) or α (warning) of its maximum, errors are
 * coming closer together. Like River, the warning flag only changes on errors after the warm start.
 *
 * @example
 * const eddm = new Eddm();
 * for (const [i, wrong] of errors.entries()) if (eddm.update(wrong).drift) console.log(`drift at ${i}`);
 */
export class Eddm implements DriftDetector {
  readonly kind = 'eddm';
  readonly config: EddmConfig;
  private distances = new RunningVar();
  private n = 0;
  private lastError = 0;
  private nErrors = 0;
  private p2sMax = -1;
  drift = false;
  warning = false;

  constructor(config: Partial<EddmConfig> = {}) {
    this.config = { ...EDDM_DEFAULTS, ...config };
    if (this.config.alpha < this.config.beta) throw new Error(`eddm: alpha (${this.config.alpha}) must be ≥ beta (${this.config.beta})`);
  }

  reset(): void {
    this.distances = new RunningVar();
    this.n = this.lastError = this.nErrors = 0;
    this.p2sMax = -1;
    this.drift = this.warning = false;
  }

  update(x: number): DriftSignal {
    checkBit(this.kind, x);
    if (this.drift) this.reset();
    this.n += 1;
    if (x === 1) {
      this.nErrors += 1;
      this.distances.update(this.n - this.lastError);
      if (this.n > this.config.warmStart) {
        const p2s = this.distances.m.mean + 2 * Math.sqrt(this.distances.get());
        if (p2s > this.p2sMax) this.p2sMax = p2s;
        else if (this.nErrors > this.config.warmStart) {
          const level = p2s / this.p2sMax;
          if (level < this.config.beta) this.drift = true;
          else this.warning = level < this.config.alpha;
        }
      }
      this.lastError = this.n;
    }
    return { drift: this.drift, warning: this.warning };
  }

  state(): DetectorState {
    const v = this.distances;
    return { kind: this.kind, config: { ...this.config }, vn: v.m.n, vmean: v.m.mean, vs: v.s, n: this.n, lastError: this.lastError, nErrors: this.nErrors, p2sMax: this.p2sMax, drift: this.drift, warning: this.warning };
  }

  static fromState(s: DetectorState): Eddm {
    checkState('eddm', s);
    const d = new Eddm(s.config as Partial<EddmConfig>);
    d.distances.m.n = s.vn as number;
    d.distances.m.mean = s.vmean as number;
    d.distances.s = s.vs as number;
    Object.assign(d, { n: s.n, lastError: s.lastError, nErrors: s.nErrors, p2sMax: s.p2sMax, drift: s.drift, warning: s.warning });
    return d;
  }
}
