// HDDM-W: drift detection with McDiarmid's bounds and an EWMA test (Frías-Blanco et al.,
// TKDE 2015), as River's `drift.binary.HDDMW` (itself from MOA).
import { type DriftDetector, type DriftSignal, type DetectorState, checkState } from './types.ts';
import { EwMean } from './stats.ts';
import { checkBit } from './binary.ts';

/** River's defaults. */
export const HDDM_W_DEFAULTS = { driftConfidence: 0.001, warningConfidence: 0.005, lambda: 0.05, twoSidedTest: false };

export type HddmWConfig = typeof HDDM_W_DEFAULTS;

/** An EWMA with its independent-bound condition (Σ weights²), River's `SampleInfo`. */
class Sample {
  ewma: EwMean;
  isInit = false;
  ibc = 1;
  constructor(readonly lambda: number) {
    this.ewma = new EwMean(lambda);
  }
  update(x: number): void {
    this.ewma.update(x);
    this.isInit = true;
    this.ibc = this.lambda * this.lambda + (1 - this.lambda) ** 2 * this.ibc;
  }
  clone(): Sample {
    const c = new Sample(this.lambda);
    c.ewma.mean = this.ewma.mean;
    c.isInit = this.isInit;
    c.ibc = this.ibc;
    return c;
  }
  toJSON() {
    return { mean: this.ewma.mean, isInit: this.isInit, ibc: this.ibc };
  }
  static from(lambda: number, s: { mean: number; isInit: boolean; ibc: number }): Sample {
    const c = new Sample(lambda);
    c.ewma.mean = s.mean;
    c.isInit = s.isInit;
    c.ibc = s.ibc;
    return c;
  }
}

/**
 * Splits the error stream's EWMA at the point where its McDiarmid upper (lower) bound was
 * lowest (highest) and alarms when the EWMA after the cut exceeds the one before by more than
 * the bound. The EWMA keeps River's seeding quirk (see EwMean). Resets after an alarm.
 *
 * @example
 * const h = new HddmW();
 * for (const [i, wrong] of errors.entries()) if (h.update(wrong).drift) console.log(`drift at ${i}`);
 */
export class HddmW implements DriftDetector {
  readonly kind = 'hddm-w';
  readonly config: HddmWConfig;
  private total!: Sample;
  private s1Decr!: Sample;
  private s1Incr!: Sample;
  private s2Decr!: Sample;
  private s2Incr!: Sample;
  private incrCut = Infinity;
  private decrCut = -Infinity;
  drift = false;
  warning = false;

  constructor(config: Partial<HddmWConfig> = {}) {
    this.config = { ...HDDM_W_DEFAULTS, ...config };
    if (!(this.config.lambda > 0 && this.config.lambda <= 1)) throw new Error(`hddm-w: lambda must be in (0, 1], got ${this.config.lambda}`);
    this.reset();
  }

  reset(): void {
    const l = this.config.lambda;
    this.total = new Sample(l);
    this.s1Decr = new Sample(l);
    this.s1Incr = new Sample(l);
    this.s2Decr = new Sample(l);
    this.s2Incr = new Sample(l);
    this.incrCut = Infinity;
    this.decrCut = -Infinity;
    this.drift = this.warning = false;
  }

  private bound(ibc: number, confidence: number): number {
    return Math.sqrt((ibc * Math.log(1 / confidence)) / 2);
  }

  private changed(s1: Sample, s2: Sample, confidence: number): boolean {
    if (!(s1.isInit && s2.isInit)) return false;
    return s2.ewma.mean - s1.ewma.mean > this.bound(s1.ibc + s2.ibc, confidence);
  }

  update(x: number): DriftSignal {
    checkBit(this.kind, x);
    if (this.drift) this.reset();
    const { driftConfidence: dc, warningConfidence: wc } = this.config;
    this.total.update(x);
    let eps = this.bound(this.total.ibc, dc);
    if (this.total.ewma.mean + eps < this.incrCut) {
      this.incrCut = this.total.ewma.mean + eps;
      this.s1Incr = this.total.clone();
      this.s2Incr = new Sample(this.config.lambda);
    } else this.s2Incr.update(x);
    if (this.changed(this.s1Incr, this.s2Incr, dc)) {
      this.warning = false;
      this.drift = true;
    } else {
      this.warning = this.changed(this.s1Incr, this.s2Incr, wc);
      this.drift = false;
    }
    eps = this.bound(this.total.ibc, dc);
    if (this.total.ewma.mean - eps > this.decrCut) {
      this.decrCut = this.total.ewma.mean - eps;
      this.s1Decr = this.total.clone();
      this.s2Decr = new Sample(this.config.lambda);
    } else this.s2Decr.update(x);
    if (this.config.twoSidedTest) {
      if (this.changed(this.s2Decr, this.s1Decr, dc)) this.drift = true;
      else if (this.changed(this.s2Decr, this.s1Decr, wc)) this.warning = true;
    }
    return { drift: this.drift, warning: this.warning };
  }

  state(): DetectorState {
    return {
      kind: this.kind, config: { ...this.config },
      total: this.total.toJSON(), s1Decr: this.s1Decr.toJSON(), s1Incr: this.s1Incr.toJSON(), s2Decr: this.s2Decr.toJSON(), s2Incr: this.s2Incr.toJSON(),
      incrCut: this.incrCut, decrCut: this.decrCut, drift: this.drift, warning: this.warning,
    };
  }

  static fromState(s: DetectorState): HddmW {
    checkState('hddm-w', s);
    const d = new HddmW(s.config as Partial<HddmWConfig>);
    const l = d.config.lambda;
    type S = { mean: number; isInit: boolean; ibc: number };
    d.total = Sample.from(l, s.total as S);
    d.s1Decr = Sample.from(l, s.s1Decr as S);
    d.s1Incr = Sample.from(l, s.s1Incr as S);
    d.s2Decr = Sample.from(l, s.s2Decr as S);
    d.s2Incr = Sample.from(l, s.s2Incr as S);
    d.incrCut = (s.incrCut as number | null) ?? Infinity;
    d.decrCut = (s.decrCut as number | null) ?? -Infinity;
    d.drift = s.drift as boolean;
    d.warning = s.warning as boolean;
    return d;
  }
}
