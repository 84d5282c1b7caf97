// The two-sample Kolmogorov–Smirnov test as scipy.stats.ks_2samp computes it by default
// (two-sided, method 'auto' → exact for these sizes), for equal sample sizes: KSWIN compares
// two samples of `statSize` values each.

/** KS statistic D = max |F1 − F2| over the pooled values (right-continuous ECDFs, ties handled). */
export function ksStatistic(a: readonly number[], b: readonly number[]): number {
  const x = [...a].sort((p, q) => p - q), y = [...b].sort((p, q) => p - q);
  let i = 0, j = 0, d = 0;
  while (i < x.length && j < y.length) {
    const v = Math.min(x[i]!, y[j]!);
    while (i < x.length && x[i]! <= v) i++;
    while (j < y.length && y[j]! <= v) j++;
    d = Math.max(d, Math.abs(i / x.length - j / y.length));
  }
  return d;
}

/**
 * Exact two-sided p-value for equal sizes n: P(D ≥ h/n), scipy's `_compute_prob_outside_square`.
 * Returns the rounded statistic too, as scipy does (D is snapped to a multiple of 1/n).
 */
export function ksTwoSampleEqual(a: readonly number[], b: readonly number[]): { statistic: number; pValue: number } {
  const n = a.length;
  if (b.length !== n) throw new Error(`ksTwoSampleEqual needs equal sizes, got ${n} and ${b.length}`);
  const h = Math.round(ksStatistic(a, b) * n);
  const d = h / n;
  if (h === 0) return { statistic: d, pValue: 1 };
  let P = 0;
  for (let k = Math.floor(n / h); k >= 0; k--) {
    let p1 = 1;
    for (let j = 0; j < h; j++) p1 = ((n - k * h - j) * p1) / (n + k * h + j + 1);
    P = p1 * (1 - P);
  }
  return { statistic: d, pValue: Math.min(1, Math.max(0, 2 * P)) };
}
