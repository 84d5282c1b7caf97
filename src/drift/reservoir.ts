// A seeded reservoir sample of fixed-size rows (Vitter's Algorithm R): a uniform sample of
// everything offered so far, in bounded memory.
import { Rng } from '../util/rng.ts';

export class Reservoir {
  readonly rows: Float32Array;
  /** Rows held (≤ capacity). */
  size = 0;
  /** Rows offered so far. */
  seen = 0;
  private rng: Rng;

  constructor(readonly capacity: number, readonly dim: number, readonly seed = 0) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`Reservoir: capacity must be a positive integer, got ${capacity}`);
    if (!Number.isInteger(dim) || dim < 1) throw new Error(`Reservoir: dim must be a positive integer, got ${dim}`);
    this.rows = new Float32Array(capacity * dim);
    this.rng = new Rng(seed);
  }

  /** Offer n rows (n·dim values). */
  offer(x: ArrayLike<number>, n: number): void {
    if (x.length !== n * this.dim) throw new Error(`Reservoir.offer: expected ${n}×${this.dim} values, got ${x.length}`);
    for (let i = 0; i < n; i++) {
      this.seen++;
      const slot = this.size < this.capacity ? this.size++ : this.rng.int(this.seen);
      if (slot < this.capacity) for (let t = 0; t < this.dim; t++) this.rows[slot * this.dim + t] = x[i * this.dim + t]!;
    }
  }

  /** The rows held, as one [size, dim] array (a copy). */
  sample(): Float32Array {
    return this.rows.slice(0, this.size * this.dim);
  }
}
