// The running statistics River's detectors are built on, with River's exact update formulas,
// so alarm indices match River's sample for sample.

/** River `stats.Mean`: incremental mean, n counts updates. */
export class RunningMean {
  n = 0;
  mean = 0;
  update(x: number): void {
    this.n += 1;
    this.mean += (1 / this.n) * (x - this.mean);
  }
  clone(): RunningMean {
    const c = new RunningMean();
    c.n = this.n;
    c.mean = this.mean;
    return c;
  }
  static from(s: { n: number; mean: number }): RunningMean {
    const c = new RunningMean();
    c.n = s.n;
    c.mean = s.mean;
    return c;
  }
}

/** River `stats.Var` (Welford, ddof 1): 0 until more than one value has been seen. */
export class RunningVar {
  readonly m = new RunningMean();
  s = 0;
  update(x: number): void {
    const old = this.m.mean;
    this.m.update(x);
    this.s += (x - old) * (x - this.m.mean);
  }
  get(): number {
    return this.m.n > 1 ? this.s / (this.m.n - 1) : 0;
  }
}

/**
 * River `stats.EWMean` (its Rust core): the first value seeds the mean. Like River, a mean that
 * is exactly 0 counts as unseeded, so the next value replaces it; on a 0/1 error stream that
 * starts with zeros, the first error sets the mean to 1. Kept on purpose: alarm indices then
 * match River's HDDM-W.
 */
export class EwMean {
  mean = 0;
  constructor(readonly alpha: number) {}
  update(x: number): void {
    this.mean = this.mean === 0 ? x : this.alpha * x + (1 - this.alpha) * this.mean;
  }
}
