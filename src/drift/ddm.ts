// DDM: drift detection method (Gama et al., SBIA 2004), as River's `drift.binary.DDM`.
import { type DriftDetector, type DriftSignal, type DetectorState, checkState } from './types.ts';
import { RunningMean } from './stats.ts';
import { checkBit } from './binary.ts';

/** River's defaults. */
export const DDM_DEFAULTS = { warmStart: 30, warningThreshold: 2, driftThreshold: 3 };

export type DdmConfig = typeof DDM_DEFAULTS;

/**
 * Watches a 0/1 error stream (1 = error). Keeps the error rate p and its binomial standard
 * deviation s, remembers them where p + s was lowest, and warns/alarms when p + s exceeds
 * p_min + 2·s_min / p_min + 3·s_min. Resets itself on the update after an alarm.
 *
 * @example
 * const ddm = new Ddm();
 * for (const [i, wrong] of errors.entries()) { const s = ddm.update(wrong); if (s.drift) console.log(`drift at ${i}`); }
 */
export class Ddm implements DriftDetector {
  readonly kind = 'ddm';
  readonly config: DdmConfig;
  private p = new RunningMean();
  private pMin = Infinity;
  private sMin = Infinity;
  private psMin = Infinity;
  drift = false;
  warning = false;

  constructor(config: Partial<DdmConfig> = {}) {
    this.config = { ...DDM_DEFAULTS, ...config };
  }

  reset(): void {
    this.p = new RunningMean();
    this.pMin = this.sMin = this.psMin = Infinity;
    this.drift = this.warning = false;
  }

  update(x: number): DriftSignal {
    checkBit(this.kind, x);
    if (this.drift) this.reset();
    this.p.update(x);
    const p = this.p.mean, n = this.p.n;
    const s = Math.sqrt((p * (1 - p)) / n);
    if (n > this.config.warmStart) {
      if (p + s <= this.psMin) {
        this.pMin = p;
        this.sMin = s;
        this.psMin = p + s;
      }
      this.warning = p + s > this.pMin + this.config.warningThreshold * this.sMin;
      if (p + s > this.pMin + this.config.driftThreshold * this.sMin) {
        this.drift = true;
        this.warning = false;
      }
    }
    return { drift: this.drift, warning: this.warning };
  }

  state(): DetectorState {
    return { kind: this.kind, config: { ...this.config }, n: this.p.n, mean: this.p.mean, pMin: this.pMin, sMin: this.sMin, psMin: this.psMin, drift: this.drift, warning: this.warning };
  }

  static fromState(s: DetectorState): Ddm {
    checkState('ddm', s);
    const d = new Ddm(s.config as Partial<DdmConfig>);
    d.p = RunningMean.from(s as unknown as { n: number; mean: number });
    const inf = (v: unknown) => (v === null || v === undefined ? Infinity : (v as number));
    Object.assign(d, { pMin: inf(s.pMin), sMin: inf(s.sMin), psMin: inf(s.psMin), drift: s.drift, warning: s.warning });
    return d;
  }
}
