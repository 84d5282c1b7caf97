// An error memory in the spirit of ReLoop2 (Cao et al., KDD 2023): embeddings of recently
// mispredicted samples are stored with their residual (one-hot label − predicted probabilities);
// a new sample's prediction is corrected at once, before any gradient step, by the
// similarity-weighted residuals of its nearest stored errors. A ring buffer keeps it fresh.
//
// Deviations from the paper (which compensates regression/CTR scores): for classification the
// compensated probabilities are clipped at 0 and renormalised; similarity is cosine between
// embeddings centred by a running mean of every embedding the memory has seen (post-ReLU
// features are all non-negative, so uncentred cosines are high between unrelated samples).

export interface ErrorMemoryOptions {
  /** Stored errors (oldest overwritten). @default 512 */
  capacity?: number;
  /** Neighbours consulted. @default 8 */
  k?: number;
  /** Softmax temperature over cosine similarities. @default 0.05 */
  temperature?: number;
  /** Only neighbours at least this similar count. @default 0.8 */
  minSimilarity?: number;
  /** Compensation strength λ. @default 1 */
  strength?: number;
}

export const ERROR_MEMORY_DEFAULTS: Required<ErrorMemoryOptions> = { capacity: 512, k: 8, temperature: 0.05, minSimilarity: 0.8, strength: 1 };

export class ErrorMemory {
  readonly options: Required<ErrorMemoryOptions>;
  private keys: Float32Array;
  private residuals: Float32Array;
  private next = 0;
  size = 0;
  /** Running mean of the embeddings seen (stored errors and corrected batches). */
  private centre: Float64Array;
  private seen = 0;

  constructor(readonly dim: number, readonly classes: number, options: ErrorMemoryOptions = {}) {
    this.options = { ...ERROR_MEMORY_DEFAULTS, ...options };
    this.keys = new Float32Array(this.options.capacity * dim);
    this.residuals = new Float32Array(this.options.capacity * classes);
    this.centre = new Float64Array(dim);
  }

  private observe(e: ArrayLike<number>, offset: number): void {
    this.seen++;
    for (let t = 0; t < this.dim; t++) this.centre[t]! += (e[offset + t]! - this.centre[t]!) / this.seen;
  }

  /** Store a mispredicted sample (its embedding, predicted probabilities and true label). */
  add(embedding: Float32Array, probs: ArrayLike<number>, label: number): void {
    if (embedding.length !== this.dim) throw new Error(`ErrorMemory: embedding has ${embedding.length} values, expected ${this.dim}`);
    this.observe(embedding, 0);
    let norm = 0;
    for (let t = 0; t < this.dim; t++) norm += (embedding[t]! - this.centre[t]!) ** 2;
    norm = Math.sqrt(norm) || 1;
    const slot = this.next;
    for (let t = 0; t < this.dim; t++) this.keys[slot * this.dim + t] = (embedding[t]! - this.centre[t]!) / norm;
    for (let c = 0; c < this.classes; c++) this.residuals[slot * this.classes + c] = (c === label ? 1 : 0) - probs[c]!;
    this.next = (this.next + 1) % this.options.capacity;
    this.size = Math.min(this.size + 1, this.options.capacity);
  }

  /**
   * Correct a batch of probabilities [n, classes] in place from embeddings [n, dim]; returns how
   * many samples had a close enough neighbour to be corrected.
   */
  correct(probs: Float32Array, embeddings: Float32Array, n: number): number {
    for (let i = 0; i < n; i++) this.observe(embeddings, i * this.dim);
    if (this.size === 0) return 0;
    const { k, temperature, minSimilarity, strength } = this.options;
    let corrected = 0;
    const sims = new Float32Array(this.size);
    for (let i = 0; i < n; i++) {
      let norm = 0;
      for (let t = 0; t < this.dim; t++) norm += (embeddings[i * this.dim + t]! - this.centre[t]!) ** 2;
      norm = Math.sqrt(norm) || 1;
      for (let j = 0; j < this.size; j++) {
        let s = 0;
        for (let t = 0; t < this.dim; t++) s += this.keys[j * this.dim + t]! * (embeddings[i * this.dim + t]! - this.centre[t]!);
        sims[j] = s / norm;
      }
      const order = [...sims.keys()].filter((j) => sims[j]! >= minSimilarity).sort((a, b) => sims[b]! - sims[a]!).slice(0, k);
      if (order.length === 0) continue;
      const w = order.map((j) => Math.exp((sims[j]! - sims[order[0]!]!) / temperature));
      const wsum = w.reduce((a, b) => a + b, 0);
      let total = 0;
      for (let c = 0; c < this.classes; c++) {
        let comp = 0;
        order.forEach((j, q) => { comp += (w[q]! / wsum) * this.residuals[j * this.classes + c]!; });
        const v = Math.max(0, probs[i * this.classes + c]! + strength * comp);
        probs[i * this.classes + c] = v;
        total += v;
      }
      for (let c = 0; c < this.classes; c++) probs[i * this.classes + c] = total > 0 ? probs[i * this.classes + c]! / total : 1 / this.classes;
      corrected++;
    }
    return corrected;
  }

  state(): { keys: Float32Array; residuals: Float32Array; next: number; size: number; centre: number[]; seen: number } {
    return { keys: this.keys.slice(), residuals: this.residuals.slice(), next: this.next, size: this.size, centre: [...this.centre], seen: this.seen };
  }

  load(s: ReturnType<ErrorMemory['state']>): void {
    if (s.keys.length !== this.keys.length || s.residuals.length !== this.residuals.length || s.centre?.length !== this.dim) throw new Error('ErrorMemory.load: the state was saved with another capacity, embedding size or class count');
    this.keys.set(s.keys);
    this.residuals.set(s.residuals);
    this.centre.set(s.centre);
    this.next = s.next;
    this.size = s.size;
    this.seen = s.seen;
  }
}
