// A reservoir of labelled samples for replay (Vitter's Algorithm R over the feedback stream),
// so the fast learner can revisit old labels without keeping them all.
import { Rng } from '../util/rng.ts';

export interface ReplayItem { input: Float32Array; label: number }
export interface ReplayState { items: ReplayItem[]; seen: number; rng: ReturnType<Rng['state']> }

export class ReplayBuffer {
  private items: ReplayItem[] = [];
  seen = 0;
  private rng: Rng;

  constructor(readonly capacity: number, readonly seed = 0) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`ReplayBuffer: capacity must be a positive integer, got ${capacity}`);
    this.rng = new Rng(seed);
  }

  get size(): number {
    return this.items.length;
  }

  add(item: ReplayItem): void {
    this.seen++;
    if (this.items.length < this.capacity) this.items.push(item);
    else {
      const j = this.rng.int(this.seen);
      if (j < this.capacity) this.items[j] = item;
    }
  }

  /** Up to n distinct items drawn uniformly (seeded). */
  draw(n: number): ReplayItem[] {
    const idx = [...this.items.keys()];
    const out: ReplayItem[] = [];
    for (let i = 0; i < Math.min(n, idx.length); i++) {
      const j = i + this.rng.int(idx.length - i);
      [idx[i], idx[j]] = [idx[j]!, idx[i]!];
      out.push(this.items[idx[i]!]!);
    }
    return out;
  }

  state(): ReplayState {
    return { items: this.items.map((x) => ({ input: x.input.slice(), label: x.label })), seen: this.seen, rng: this.rng.state() };
  }

  load(s: ReplayState): void {
    this.items = s.items.map((x) => ({ input: x.input.slice(), label: x.label }));
    this.seen = s.seen;
    this.rng.setState(s.rng);
  }
}
