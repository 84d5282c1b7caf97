// The one interface every drift detector implements.

/** What one update reports. `warning` is always false for detectors without a warning zone. */
export interface DriftSignal {
  drift: boolean;
  warning: boolean;
}

/** A detector's whole state as plain JSON: `restoreDetector(state)` continues exactly where it was. */
export interface DetectorState {
  kind: string;
  config: Record<string, unknown>;
  [key: string]: unknown;
}

export interface DriftDetector {
  readonly kind: string;
  /** Feed one value; returns whether this value raised a drift alarm or sits in the warning zone. */
  update(x: number): DriftSignal;
  /** Forget everything seen so far (the configuration stays). */
  reset(): void;
  state(): DetectorState;
  readonly drift: boolean;
  readonly warning: boolean;
}

/** Reject NaN/Inf before they poison a detector's running sums (they never recover from one). */
export function checkFinite(kind: string, x: number): void {
  if (!Number.isFinite(x)) throw new Error(`${kind}: input must be a finite number, got ${x}`);
}

export function checkState(kind: string, s: DetectorState): void {
  if (!s || s.kind !== kind) throw new Error(`cannot restore ${kind} from a state of kind '${s?.kind}'`);
}
