// Streaming drift detectors, one per file, all behind `DriftDetector` (update → {drift, warning}).
import type { DetectorState, DriftDetector } from './types.ts';
import { Adwin } from './adwin.ts';
import { PageHinkley } from './page-hinkley.ts';
import { Ddm } from './ddm.ts';
import { Eddm } from './eddm.ts';
import { Kswin } from './kswin.ts';
import { HddmA } from './hddm-a.ts';
import { HddmW } from './hddm-w.ts';

export type { DriftDetector, DriftSignal, DetectorState } from './types.ts';
export { Adwin, ADWIN_DEFAULTS } from './adwin.ts';
export { PageHinkley, PAGE_HINKLEY_DEFAULTS } from './page-hinkley.ts';
export { Ddm, DDM_DEFAULTS } from './ddm.ts';
export { Eddm, EDDM_DEFAULTS } from './eddm.ts';
export { Kswin, KSWIN_DEFAULTS } from './kswin.ts';
export { HddmA, HDDM_A_DEFAULTS } from './hddm-a.ts';
export { HddmW, HDDM_W_DEFAULTS } from './hddm-w.ts';
export { PythonRandom } from './python-random.ts';

const RESTORE: Record<string, (s: DetectorState) => DriftDetector> = {
  adwin: Adwin.fromState, 'page-hinkley': PageHinkley.fromState, ddm: Ddm.fromState, eddm: Eddm.fromState,
  kswin: Kswin.fromState, 'hddm-a': HddmA.fromState, 'hddm-w': HddmW.fromState,
};

/** Rebuild any detector from `detector.state()` (after a JSON round trip, too). */
export function restoreDetector(s: DetectorState): DriftDetector {
  const f = s && RESTORE[s.kind];
  if (!f) throw new Error(`unknown drift detector kind '${s?.kind}'; known: ${Object.keys(RESTORE).join(', ')}`);
  return f(s);
}

/** Every detector kind, for benchmarks and UIs. */
export const DETECTOR_KINDS = Object.keys(RESTORE);
export { predictionStats, channelStats, gaussianSymmetricKl, mmd2, medianDistance, type PredictionStats, type ChannelStats } from './signals.ts';
export { ShiftMonitor, type ShiftSignals, type ShiftMonitorOptions } from './shift-monitor.ts';
export { Reservoir } from './reservoir.ts';
export { scoreDetector, syntheticStream, type DriftScore } from './evaluate.ts';
