// A seeded reservoir of items (Vitter's Algorithm R): a uniform sample of everything added since
// the last clear(), in bounded memory, and seeded draws of distinct items from it. The continual
// controller's and the fleet's replay (../continual/replay.ts) and the fleet device's uniform
// upload share (../fleet/device.ts) are built on it.
import { Rng } from './rng.ts';

export class ItemReservoir<T> {
  protected items: T[] = [];
  /** Items added (since the last clear()). */
  seen = 0;
  protected rng: Rng;

  constructor(readonly capacity: number, readonly seed = 0, name = 'ItemReservoir') {
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`${name}: capacity must be a positive integer, got ${capacity}`);
    this.rng = new Rng(seed);
  }

  get size(): number {
    return this.items.length;
  }

  add(item: T): void {
    this.seen++;
    if (this.items.length < this.capacity) this.items.push(item);
    else {
      const j = this.rng.int(this.seen);
      if (j < this.capacity) this.items[j] = item;
    }
  }

  /** Up to n distinct items drawn uniformly (seeded). */
  draw(n: number): T[] {
    const idx = [...this.items.keys()];
    const out: T[] = [];
    for (let i = 0; i < Math.min(n, idx.length); i++) {
      const j = i + this.rng.int(idx.length - i);
      [idx[i], idx[j]] = [idx[j]!, idx[i]!];
      out.push(this.items[idx[i]!]!);
    }
    return out;
  }

  /** Empty it; the generator goes on. */
  clear(): void {
    this.items = [];
    this.seen = 0;
  }
}
