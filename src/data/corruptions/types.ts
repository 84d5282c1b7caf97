import type { Rng } from '../random.ts';

export const SEVERITIES = [1, 2, 3, 4, 5] as const;
export type Severity = (typeof SEVERITIES)[number];

/** One parameter of a corruption, with its value at severities 1..5 (for the docs table). */
export interface ParamRow {
  name: string;
  values: readonly [string | number, string | number, string | number, string | number, string | number];
}

export interface CorruptionContext {
  /** Number of images. */
  n: number;
  h: number;
  w: number;
  severity: Severity;
  /** A fresh generator for image i (seeded from the call's seed, the type, the severity and the image id). */
  rngFor(i: number): Rng;
}

export interface CorruptionDef {
  name: string;
  family: 'noise' | 'blur' | 'weather' | 'digital';
  /** False when the output does not depend on the seed. */
  random: boolean;
  /** Parameters per severity, as documented in docs/corruptions.md. */
  params: ParamRow[];
  /** Where the parameters come from and how refit adapts them (one line, for the docs table). */
  basis: string;
  /**
   * Write the corrupted images into dst. src and dst hold ctx.n images of h*w floats in [0, 1];
   * they never alias. Implementations must leave dst in [0, 1].
   */
  apply(src: Float32Array, dst: Float32Array, ctx: CorruptionContext): void;
}

/** Pick the value for a severity out of a 5-tuple. */
export function at<T>(values: readonly T[], severity: Severity): T {
  return values[severity - 1]!;
}

/** Column j of a per-severity parameter table, as a ParamRow's values. */
export function col(rows: readonly (readonly (string | number)[])[], j: number): ParamRow['values'] {
  if (rows.length !== 5) throw new Error(`col: expected 5 severities, got ${rows.length}`);
  return rows.map((r) => r[j]!) as unknown as ParamRow['values'];
}
