// Delayed labels: predictions wait in a bounded buffer (what is needed to learn from them:
// the input, the embedding, the prediction) until their label arrives or they expire.
// Unknown, expired and invalid labels are counted, never fatal (issue 11, part 4).
import type { InputRow } from './input-rows.ts';

export interface PendingSample {
  id: string;
  /** The sample's input values or token ids (one row of the batch). */
  input: InputRow;
  /** Its embedding, where the model has one (for the error memory). */
  embedding?: Float32Array;
  /** Predicted class probabilities at prediction time. */
  probs: Float32Array;
  predicted: number;
  /** Batch counter when it was predicted. */
  batch: number;
}

export interface LabelledSample extends PendingSample {
  label: number;
}

export interface FeedbackReport {
  accepted: number;
  unknown: number;
  expired: number;
  invalid: number;
  /** One line per rejected label, for the caller's log (capped). */
  messages: string[];
}

export interface FeedbackCounters { accepted: number; unknown: number; expired: number; invalid: number }

export class FeedbackBuffer {
  private pending = new Map<string, PendingSample>();
  /** Ids that expired recently, to tell "expired" from "never seen" (bounded like the buffer). */
  private expiredIds = new Map<string, number>();
  readonly totals: FeedbackCounters = { accepted: 0, unknown: 0, expired: 0, invalid: 0 };

  constructor(readonly capacity: number, readonly classes: number, readonly maxAgeBatches = Infinity) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`FeedbackBuffer: capacity must be a positive integer, got ${capacity}`);
  }

  get size(): number {
    return this.pending.size;
  }

  /** Remember a prediction; the oldest leave (expire) when the buffer is full. */
  add(s: PendingSample): void {
    if (this.pending.has(s.id)) throw new Error(`prediction id '${s.id}' is already waiting for its label; ids must be unique`);
    this.pending.set(s.id, s);
    while (this.pending.size > this.capacity) this.expire(this.pending.keys().next().value!);
  }

  /** Expire predictions older than maxAgeBatches at batch `now`. */
  age(now: number): void {
    for (const [id, s] of this.pending) {
      if (now - s.batch <= this.maxAgeBatches) break; // insertion order = batch order
      this.expire(id);
    }
  }

  private expire(id: string): void {
    this.pending.delete(id);
    this.expiredIds.set(id, 1);
    while (this.expiredIds.size > 4 * this.capacity) this.expiredIds.delete(this.expiredIds.keys().next().value!);
  }

  /** Match labels to waiting predictions; returns the labelled samples and what was rejected. */
  resolve(ids: readonly string[], labels: ArrayLike<number>): { samples: LabelledSample[]; report: FeedbackReport } {
    if (ids.length !== labels.length) throw new Error(`feedback: ${ids.length} ids but ${labels.length} labels`);
    const report: FeedbackReport = { accepted: 0, unknown: 0, expired: 0, invalid: 0, messages: [] };
    const note = (m: string) => { if (report.messages.length < 20) report.messages.push(m); };
    const samples: LabelledSample[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = String(ids[i]), y = labels[i]!;
      const s = this.pending.get(id);
      if (!s) {
        if (this.expiredIds.has(id)) { report.expired++; note(`label for '${id}' arrived after its prediction expired`); }
        else { report.unknown++; note(`no prediction with id '${id}'`); }
        continue;
      }
      if (!Number.isInteger(y) || y < 0 || y >= this.classes) {
        report.invalid++;
        note(`label ${y} for '${id}' is not a class index in 0..${this.classes - 1}`);
        continue;
      }
      this.pending.delete(id);
      samples.push({ ...s, label: y });
      report.accepted++;
    }
    for (const k of ['accepted', 'unknown', 'expired', 'invalid'] as const) this.totals[k] += report[k];
    return { samples, report };
  }

  state(): { pending: PendingSample[]; expired: string[]; totals: FeedbackCounters } {
    return { pending: [...this.pending.values()], expired: [...this.expiredIds.keys()], totals: { ...this.totals } };
  }

  load(s: { pending: PendingSample[]; expired: string[]; totals: FeedbackCounters }): void {
    this.pending = new Map(s.pending.map((p) => [p.id, p]));
    this.expiredIds = new Map(s.expired.map((id) => [id, 1]));
    Object.assign(this.totals, s.totals);
  }
}
