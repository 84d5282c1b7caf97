// Reading a CTC model's frame logits in JavaScript: greedy decoding (the most likely class per
// frame, repeats merged, blanks dropped: what transformers.js's wav2vec 2.0 pipeline does), the
// edit distance that label error rates count, and the CTC loss of one row (for evaluation, where
// no training step runs; the step's loss is ./ctc-loss.ts).

/** The labels greedy decoding reads from one row's frame scores [frames, classes] (row-major). */
export function ctcGreedyDecode(scores: ArrayLike<number>, frames: number, classes: number, blank = 0): number[] {
  const out: number[] = [];
  let prev = -1;
  for (let t = 0; t < frames; t++) {
    let best = 0;
    for (let c = 1; c < classes; c++) if (scores[t * classes + c]! > scores[t * classes + best]!) best = c;
    if (best !== prev && best !== blank) out.push(best);
    prev = best;
  }
  return out;
}

/** Levenshtein distance: insertions, deletions and substitutions that turn `a` into `b`. */
export function editDistance(a: readonly number[], b: readonly number[]): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) next[j] = Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    row = next;
  }
  return row[b.length]!;
}

/** −log p(labels | one row's logits [frames, classes]) under CTC, in float64; +∞ when no alignment exists. */
export function ctcRowLoss(logits: ArrayLike<number>, frames: number, classes: number, labels: readonly number[], blank = 0): number {
  const L = 2 * labels.length + 1;
  const ext = Array.from({ length: L }, (_, s) => (s % 2 === 0 ? blank : labels[(s - 1) / 2]!));
  const logp = new Float64Array(classes);
  const lse = (a: number, b: number) => (a === -Infinity ? b : b === -Infinity ? a : Math.max(a, b) + Math.log1p(Math.exp(-Math.abs(a - b))));
  let alpha = new Float64Array(L).fill(-Infinity);
  for (let t = 0; t < frames; t++) {
    let max = -Infinity;
    for (let c = 0; c < classes; c++) max = Math.max(max, logits[t * classes + c]!);
    let z = 0;
    for (let c = 0; c < classes; c++) z += Math.exp(logits[t * classes + c]! - max);
    for (let c = 0; c < classes; c++) logp[c] = logits[t * classes + c]! - max - Math.log(z);
    const next = new Float64Array(L).fill(-Infinity);
    for (let s = 0; s < L; s++) {
      let a = t === 0 ? (s < 2 ? 0 : -Infinity) : alpha[s]!;
      if (t > 0 && s >= 1) a = lse(a, alpha[s - 1]!);
      if (t > 0 && s >= 2 && ext[s] !== blank && ext[s] !== ext[s - 2]) a = lse(a, alpha[s - 2]!);
      next[s] = a + logp[ext[s]!]!;
    }
    alpha = next;
  }
  return -(L > 1 ? lse(alpha[L - 1]!, alpha[L - 2]!) : alpha[0]!);
}
