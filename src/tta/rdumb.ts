// RDumb (Press, Schneider, Kümmerer & Bethge, NeurIPS 2023, "RDumb: A simple approach that
// questions our progress in continual test-time adaptation"), following the paper's code
// (github.com/oripress/CCC, models/rdumb.py): ETA, i.e. EATA without the Fisher regulariser
// (entropy filter E < 0.4·ln C, redundancy filter |cos(p, p̄)| < 0.05, loss E·1/exp(E − E0),
// SGD momentum 0.9), and a reset of the model, the optimizer and p̄ to the source state every
// T = 1000 batches: the code resets at the start of forward when total_steps % 1000 == 0, so
// batches 0…999 adapt from the source and batch 1000 is the first one after the reset.
//
// Implemented as ./eata.ts without fisherData plus the counter. Deviations (docs/tta.md): the
// learning rate follows refit's EATA rule (0.00025 for batch ≥ 32 as the code's fixed 0.00025,
// scaled below 32 as SAR's main.py); the counter restarts on reset() (the code never resets it).
import { z } from 'zod';
import type { RefitModel } from '../model.ts';
import type { Tensor } from '../onnx/tensor.ts';
import { EATA, eataSchema } from './eata.ts';
import { parseOptions, metaNumber } from './common.ts';
import type { Adapter, AdaptResult, AdapterState } from './types.ts';

export const RDUMB_DEFAULTS = {
  /** T: batches between resets (the code's `total_steps % 1000`). */
  resetEvery: 1000,
} as const;

export const rdumbSchema = eataSchema
  .omit({ fisherData: true, fisherSize: true, fisherBatchSize: true, fisherAlpha: true })
  .extend({ resetEvery: z.number().int().positive().default(RDUMB_DEFAULTS.resetEvery) });
export type RdumbOptions = z.input<typeof rdumbSchema>;

export class RDumb implements Adapter {
  readonly name = 'rdumb';
  /** The ETA adapter that does the adaptation. */
  readonly eta: EATA;
  readonly resetEvery: number;
  /** Batches seen since creation (or the last reset()): the code's total_steps. */
  batches = 0;
  /** Periodic resets so far. */
  periodicResets = 0;

  constructor(model: RefitModel, options: RdumbOptions = {}) {
    const { resetEvery, ...rest } = parseOptions('rdumb', rdumbSchema, options);
    this.resetEvery = resetEvery;
    this.eta = new EATA(model, rest);
  }

  get model(): RefitModel { return this.eta.model; }
  get trainable(): string[] { return this.eta.trainable; }

  async predict(x: Tensor): Promise<AdaptResult> {
    let periodic = 0;
    if (this.batches > 0 && this.batches % this.resetEvery === 0) {
      // The reset of the code: model and optimizer back to the source, p̄ = None.
      this.eta.reset();
      this.periodicResets++;
      periodic = 1;
    }
    const r = await this.eta.predict(x);
    this.batches++;
    r.info.extra = { ...r.info.extra, periodicReset: periodic, sinceReset: ((this.batches - 1) % this.resetEvery) + 1 };
    return r;
  }

  reset(): void {
    this.eta.reset();
    this.batches = 0;
  }

  async save(): Promise<AdapterState> {
    const s = await this.eta.save();
    return { ...s, method: this.name, meta: { ...s.meta, rdumbBatches: this.batches, rdumbResets: this.periodicResets } };
  }

  async load(state: AdapterState): Promise<void> {
    if (!state || typeof state !== 'object') throw new Error(`rdumb.load: state must be an object from save(), got ${typeof state}`);
    if (state.method !== this.name) throw new Error(`rdumb.load: state was saved by '${String(state.method)}', not 'rdumb'`);
    const batches = metaNumber(state, 'rdumbBatches', 'rdumb') ?? 0;
    const resets = metaNumber(state, 'rdumbResets', 'rdumb') ?? 0;
    await this.eta.load({ ...state, method: 'eata' });
    this.batches = batches;
    this.periodicResets = resets;
  }

  release(): Promise<void> {
    return this.eta.release();
  }
}
