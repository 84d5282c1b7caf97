// KSWIN: Kolmogorov–Smirnov windowing (Raab et al., Neurocomputing 2020), as River's `drift.KSWIN`.
import { type DriftDetector, type DriftSignal, type DetectorState, checkFinite, checkState } from './types.ts';
import { PythonRandom } from './python-random.ts';
import { ksTwoSampleEqual } from './ks-test.ts';

/** River's defaults (River's seed defaults to none, i.e. unseeded; refit always seeds, 0 by default). */
export const KSWIN_DEFAULTS = { alpha: 0.005, windowSize: 100, statSize: 30, seed: 0 };

export type KswinConfig = typeof KSWIN_DEFAULTS;

/**
 * Keeps the last `windowSize` values; once full, compares the newest `statSize` values with
 * `statSize` values drawn at random from the older part using a two-sample KS test, and alarms
 * when p ≤ α and D > 0.1. Random draws use CPython's generator with River's calls, so a seed
 * gives River's alarm indices. Resets (window, generator) on the update after an alarm.
 *
 * @example
 * const k = new Kswin({ seed: 42 });
 * for (const [i, x] of stream.entries()) if (k.update(x).drift) console.log(`change at ${i}`);
 */
export class Kswin implements DriftDetector {
  readonly kind = 'kswin';
  readonly config: KswinConfig;
  private window: number[] = [];
  private rng!: PythonRandom;
  pValue = 0;
  drift = false;
  readonly warning = false;

  constructor(config: Partial<KswinConfig> = {}, initialWindow?: readonly number[]) {
    this.config = { ...KSWIN_DEFAULTS, ...config };
    const { alpha, windowSize, statSize } = this.config;
    if (!(alpha >= 0 && alpha <= 1)) throw new Error(`kswin: alpha must be in [0, 1], got ${alpha}`);
    if (windowSize < 2 * statSize) throw new Error(`kswin: windowSize (${windowSize}) must be at least 2 × statSize (${statSize}) so both samples have statSize values`);
    this.reset();
    if (initialWindow) this.window = initialWindow.slice(-windowSize);
  }

  reset(): void {
    this.window = [];
    this.rng = new PythonRandom(this.config.seed);
    this.pValue = 0;
    this.drift = false;
  }

  update(x: number): DriftSignal {
    checkFinite(this.kind, x);
    if (this.drift) this.reset();
    const { windowSize, statSize, alpha } = this.config;
    this.window.push(x);
    if (this.window.length > windowSize) this.window.shift();
    if (this.window.length >= windowSize) {
      const reference = this.rng.sampleRange(windowSize - statSize, statSize).map((r) => this.window[r]!);
      const recent = this.window.slice(windowSize - statSize);
      const { statistic, pValue } = ksTwoSampleEqual(reference, recent);
      this.pValue = pValue;
      this.drift = pValue <= alpha && statistic > 0.1;
      if (this.drift) this.window = recent;
    } else this.drift = false;
    return { drift: this.drift, warning: false };
  }

  state(): DetectorState {
    return { kind: this.kind, config: { ...this.config }, window: [...this.window], rng: this.rng.getState(), pValue: this.pValue, drift: this.drift };
  }

  static fromState(s: DetectorState): Kswin {
    checkState('kswin', s);
    const d = new Kswin(s.config as Partial<KswinConfig>);
    d.window = [...(s.window as number[])];
    d.rng.setState(s.rng as { mt: number[]; index: number });
    d.pValue = s.pValue as number;
    d.drift = s.drift as boolean;
    return d;
  }
}
