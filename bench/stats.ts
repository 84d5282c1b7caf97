// Small statistics the benchmarks share (medians, quantiles, relative differences).

/** Linear-interpolated quantile q ∈ [0, 1] of xs. */
export function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  const pos = (s.length - 1) * q, lo = Math.floor(pos), hi = Math.ceil(pos);
  return s[lo]! + (s[hi]! - s[lo]!) * (pos - lo);
}

/** The median of xs (the mean of the middle two for an even count). */
export function median(xs: number[]): number {
  return quantile(xs, 0.5);
}

/** max |a − ref| / max |ref| (the reference's scale floored at 1e-12). */
export function relDiff(a: Float32Array, ref: Float32Array): number {
  let d = 0, m = 0;
  for (let i = 0; i < ref.length; i++) { d = Math.max(d, Math.abs(a[i]! - ref[i]!)); m = Math.max(m, Math.abs(ref[i]!)); }
  return d / Math.max(m, 1e-12);
}
