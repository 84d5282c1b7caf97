// ADWIN: adaptive windowing (Bifet & Gavaldà, SDM 2007), as River's `drift.ADWIN` implements it.
import { type DriftDetector, type DriftSignal, type DetectorState, checkFinite, checkState } from './types.ts';

/** River's defaults. */
export const ADWIN_DEFAULTS = { delta: 0.002, clock: 32, maxBuckets: 5, minWindowLength: 5, gracePeriod: 10, cuts: 'river' as 'river' | 'every-bucket' };

export type AdwinConfig = typeof ADWIN_DEFAULTS;

/** One row of the exponential histogram: up to maxBuckets + 1 buckets of size 2^row, oldest first. */
interface Row { totals: number[]; variances: number[] }

/**
 * ADWIN keeps a window of recent values in an exponential histogram and drops its older part
 * whenever two sub-windows have means that differ by more than a Hoeffding-style bound.
 * Every `clock` values it checks the cuts at bucket boundaries. No warning zone.
 *
 * Matches River (adwin.py, adwin_c.pyx) including its quirks: with `cuts: 'river'` (default)
 * the newest bucket of each row is never a cut point, and since the scan still counts it in the
 * newer sub-window, that sub-window always holds the newest bucket of every row: on long windows
 * this delays detection (bench/results/drift.md). `cuts: 'every-bucket'` scans every bucket
 * boundary as MOA's ADWIN and the paper do (and gives different alarm indices from River). Also: 2/3 in the bound is a true division, and the update after an alarm starts
 * from an empty window (after the alarm, `width` still shows the shrunk window until then).
 *
 * @example
 * const adwin = new Adwin();
 * for (const [i, x] of stream.entries()) if (adwin.update(x).drift) console.log(`change at ${i}, window ${adwin.width}`);
 */
export class Adwin implements DriftDetector {
  readonly kind = 'adwin';
  readonly config: AdwinConfig;
  private rows: Row[] = [];
  private total = 0;
  private variance = 0;
  /** Number of values in the window. */
  width = 0;
  private tick = 0;
  nDetections = 0;
  drift = false;
  readonly warning = false;

  constructor(config: Partial<AdwinConfig> = {}) {
    this.config = { ...ADWIN_DEFAULTS, ...config };
    if (this.config.cuts !== 'river' && this.config.cuts !== 'every-bucket') throw new Error(`adwin: cuts must be 'river' or 'every-bucket', got '${this.config.cuts}'`);
    if (!(this.config.delta > 0 && this.config.delta < 1)) throw new Error(`adwin: delta must be in (0, 1), got ${this.config.delta}`);
    if (this.config.clock < 1 || this.config.maxBuckets < 1) throw new Error('adwin: clock and maxBuckets must be ≥ 1');
    this.reset();
  }

  reset(): void {
    this.rows = [{ totals: [], variances: [] }];
    this.total = 0;
    this.variance = 0;
    this.width = 0;
    this.tick = 0;
    this.nDetections = 0;
    this.drift = false;
  }

  /** Mean of the current window. */
  get estimation(): number {
    return this.width === 0 ? 0 : this.total / this.width;
  }

  update(x: number): DriftSignal {
    checkFinite(this.kind, x);
    // River (≥ 0.15) starts a fresh window on the update after an alarm.
    if (this.drift) this.reset();
    this.insert(x);
    this.drift = this.detect();
    return { drift: this.drift, warning: false };
  }

  private insert(x: number): void {
    const row0 = this.rows[0]!;
    row0.totals.push(x);
    row0.variances.push(0);
    this.width += 1;
    if (this.width > 1) {
      const d = x - this.total / (this.width - 1);
      this.variance += ((this.width - 1) * d * d) / this.width;
    }
    this.total += x;
    this.compress();
  }

  /** Merge the two oldest buckets of a row that overflowed into one bucket of the next row. */
  private compress(): void {
    const max = this.config.maxBuckets;
    for (let idx = 0; idx < this.rows.length; idx++) {
      const row = this.rows[idx]!;
      if (row.totals.length !== max + 1) break;
      if (idx + 1 === this.rows.length) this.rows.push({ totals: [], variances: [] });
      const next = this.rows[idx + 1]!;
      const n = 2 ** idx;
      const mu1 = row.totals[0]! / n, mu2 = row.totals[1]! / n;
      const temp = (n * n * (mu1 - mu2) * (mu1 - mu2)) / (n + n);
      next.totals.push(row.totals[0]! + row.totals[1]!);
      next.variances.push(row.variances[0]! + row.variances[1]! + temp);
      row.totals.splice(0, 2);
      row.variances.splice(0, 2);
      if (next.totals.length <= max) break;
    }
  }

  /** Drop the oldest bucket; returns its size. */
  private deleteOldest(): number {
    const last = this.rows.length - 1;
    const row = this.rows[last]!;
    const n = 2 ** last;
    const u = row.totals[0]!, v = row.variances[0]!;
    this.width -= n;
    this.total -= u;
    const muWindow = this.total / this.width;
    const mu = u / n;
    this.variance -= v + (n * this.width * (mu - muWindow) * (mu - muWindow)) / (n + this.width);
    row.totals.shift();
    row.variances.shift();
    if (row.totals.length === 0) this.rows.pop();
    return n;
  }

  private detect(): boolean {
    let change = false;
    this.tick += 1;
    if (this.tick % this.config.clock !== 0 || this.width <= this.config.gracePeriod) {
      if (change) this.nDetections += 1;
      return change;
    }
    const minLen = this.config.minWindowLength;
    let reduce = true;
    while (reduce) {
      reduce = false;
      let exit = false;
      let n0 = 0, n1 = this.width, u0 = 0, u1 = this.total;
      for (let idx = this.rows.length - 1; idx >= 0 && !exit; idx--) {
        const row = this.rows[idx]!;
        const size = 2 ** idx;
        // River iterates range(current_idx - 1): the newest bucket of a row is skipped.
        const last = this.config.cuts === 'river' ? row.totals.length - 1 : row.totals.length;
        for (let k = 0; k < last; k++) {
          n0 += size;
          n1 -= size;
          u0 += row.totals[k]!;
          u1 -= row.totals[k]!;
          // MOA stops at the newest bucket: W1 would be empty.
          if (idx === 0 && k === row.totals.length - 1) { exit = true; break; }
          const deltaMean = u0 / n0 - u1 / n1;
          if (n1 >= minLen && n0 >= minLen && this.cutDiffers(n0, n1, deltaMean)) {
            reduce = true;
            change = true;
            if (this.width > 0) {
              n0 -= this.deleteOldest();
              exit = true;
              break;
            }
          }
        }
      }
    }
    if (change) this.nDetections += 1;
    return change;
  }

  private cutDiffers(n0: number, n1: number, deltaMean: number): boolean {
    const minLen = this.config.minWindowLength;
    const deltaPrime = Math.log((2 * Math.log(this.width)) / this.config.delta);
    const mRecip = 1 / (n0 - minLen + 1) + 1 / (n1 - minLen + 1);
    const eps = Math.sqrt(2 * mRecip * (this.variance / this.width) * deltaPrime) + (2 / 3) * deltaPrime * mRecip;
    return Math.abs(deltaMean) > eps;
  }

  state(): DetectorState {
    return {
      kind: this.kind, config: { ...this.config },
      rows: this.rows.map((r) => ({ totals: [...r.totals], variances: [...r.variances] })),
      total: this.total, variance: this.variance, width: this.width, tick: this.tick, nDetections: this.nDetections, drift: this.drift,
    };
  }

  static fromState(s: DetectorState): Adwin {
    checkState('adwin', s);
    const d = new Adwin(s.config as Partial<AdwinConfig>);
    d.rows = (s.rows as Row[]).map((r) => ({ totals: [...r.totals], variances: [...r.variances] }));
    Object.assign(d, { total: s.total, variance: s.variance, width: s.width, tick: s.tick, nDetections: s.nDetections, drift: s.drift });
    return d;
  }
}
