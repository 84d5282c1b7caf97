// A reservoir of labelled samples for replay (Vitter's Algorithm R over the feedback stream),
// so the fast learner can revisit old labels without keeping them all.
import type { Rng } from '../util/rng.ts';
import { ItemReservoir } from '../util/item-reservoir.ts';

export interface ReplayItem { input: Float32Array; label: number }
export interface ReplayState { items: ReplayItem[]; seen: number; rng: ReturnType<Rng['state']> }

export class ReplayBuffer extends ItemReservoir<ReplayItem> {
  constructor(capacity: number, seed = 0) {
    super(capacity, seed, 'ReplayBuffer');
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
