// A reservoir of labelled samples for replay (Vitter's Algorithm R over the feedback stream),
// so the fast learner can revisit old labels without keeping them all.
import type { Rng } from '../util/rng.ts';
import type { InputRow } from './input-rows.ts';
import { ItemReservoir } from '../util/item-reservoir.ts';

export interface ReplayItem<R extends InputRow = InputRow> { input: R; label: number }
export interface ReplayState<R extends InputRow = InputRow> { items: ReplayItem<R>[]; seen: number; rng: ReturnType<Rng['state']> }

export class ReplayBuffer<R extends InputRow = InputRow> extends ItemReservoir<ReplayItem<R>> {
  constructor(capacity: number, seed = 0) {
    super(capacity, seed, 'ReplayBuffer');
  }

  state(): ReplayState<R> {
    return { items: this.items.map((x) => ({ input: x.input.slice() as R, label: x.label })), seen: this.seen, rng: this.rng.state() };
  }

  load(s: ReplayState<R>): void {
    this.items = s.items.map((x) => ({ input: x.input.slice() as R, label: x.label }));
    this.seen = s.seen;
    this.rng.setState(s.rng);
  }
}
