// ROID's prior correction (Marsden, Döbler & Yang, WACV 2024; the code's `use_prior_correction`):
// the batch's label prior is the mean prediction, smoothed towards uniform by
// s = max(1/n, 1/C) / max(prior), prior' = (prior + s) / (1 + s·C). A batch whose predictions
// spread over every class gets a near-uniform prior' (almost no change); a batch that one or two
// classes dominate, as under temporally correlated labels, is pulled further towards them.

/** The smoothed batch prior [C] of probabilities `q` [n, C]. */
export function smoothedBatchPrior(q: ArrayLike<number>, n: number, C: number): Float32Array {
  const prior = new Float64Array(C);
  for (let i = 0; i < n; i++) for (let c = 0; c < C; c++) prior[c]! += q[i * C + c]! / n;
  let pmax = 0;
  for (let c = 0; c < C; c++) pmax = Math.max(pmax, prior[c]!);
  const s = Math.max(1 / n, 1 / C) / pmax;
  return Float32Array.from(prior, (v) => (v + s) / (1 + s * C));
}
