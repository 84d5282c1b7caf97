// Label-prior re-estimation (Saerens, Latinne & Decaestecker, Neural Computation 2002): under
// label shift p(x|y) stays and p(y) moves, so posteriors are reweighted by the ratio of the new
// to the source prior, with the new prior estimated by EM on the unlabelled batch. refit keeps an
// exponential moving average of the per-batch estimates so that small batches do not whip it
// around (a deviation from the paper's one-shot EM over a whole test set).

export interface PriorCorrectionOptions {
  /** EM iterations per batch. @default 10 */
  iterations?: number;
  /** Weight of the newest batch's estimate in the moving prior. @default 0.1 */
  momentum?: number;
  /** The source prior. @default uniform */
  sourcePrior?: ArrayLike<number>;
}

export class PriorCorrection {
  readonly prior: Float64Array;
  private readonly source: Float64Array;

  constructor(readonly classes: number, readonly options: PriorCorrectionOptions = {}) {
    this.source = options.sourcePrior ? Float64Array.from(options.sourcePrior) : new Float64Array(classes).fill(1 / classes);
    if (this.source.length !== classes) throw new Error(`PriorCorrection: source prior has ${this.source.length} classes, expected ${classes}`);
    this.prior = this.source.slice();
  }

  /** Reweight probabilities [n, C] in place by the current prior, after updating it with EM on them. */
  correct(probs: Float32Array, n: number): void {
    const C = this.classes;
    const est = this.source.slice();
    const adjusted = new Float64Array(C);
    for (let it = 0; it < (this.options.iterations ?? 10); it++) {
      const next = new Float64Array(C);
      for (let i = 0; i < n; i++) {
        let z = 0;
        for (let c = 0; c < C; c++) z += (adjusted[c] = (probs[i * C + c]! * est[c]!) / this.source[c]!);
        for (let c = 0; c < C; c++) next[c]! += adjusted[c]! / (z || 1);
      }
      for (let c = 0; c < C; c++) est[c] = next[c]! / n;
    }
    const m = this.options.momentum ?? 0.1;
    for (let c = 0; c < C; c++) this.prior[c] = (1 - m) * this.prior[c]! + m * est[c]!;
    for (let i = 0; i < n; i++) {
      let z = 0;
      for (let c = 0; c < C; c++) z += (adjusted[c] = (probs[i * C + c]! * this.prior[c]!) / this.source[c]!);
      for (let c = 0; c < C; c++) probs[i * C + c] = adjusted[c]! / (z || 1);
    }
  }

  reset(): void {
    this.prior.set(this.source);
  }
}
