// The controller's options, checked when it is made. Without this a misspelt option ('lrr') was
// ignored, a value out of range (maxLevel 7, lame 'yes') ran as something else, and a bad
// `deep.rmt` option surfaced only when the stream first reached level 3, perhaps hours in.
// The schema only validates: the controller keeps the options object it was given.
import { z } from 'zod';
import { parseOptions, tensorSchema } from '../tta/common.ts';
import { rmtSchema, labelsSchema as labels } from '../tta/rmt.ts';
import type { ControllerOptions } from './controller.ts';

const fraction = z.number().min(0).max(1);
const count = z.number().int().min(1);
/** A threshold on a normalised spread in [0, 1]; above 1 it always holds. */
const threshold = z.number().finite().min(0);
const vector = z.array(z.number().finite()).min(1);

/** `tta.inputStats(images[, labels])`: per channel mean and within-sample std, optionally per class. */
const inputStats = z.object({
  mean: vector,
  sampleStd: vector,
  classes: z.array(z.object({ mean: vector, sampleStd: vector })).optional(),
});

const errorMemory = z.object({
  capacity: count.optional(),
  k: count.optional(),
  temperature: z.number().positive().optional(),
  minSimilarity: z.number().min(-1).max(1).optional(),
  strength: z.number().finite().min(0).optional(),
}).strict();

/** RMT's own options less those the deep learner sets itself. */
const deepRmt = rmtSchema.omit({ sourceData: true, sourceLabels: true, params: true, updateEvery: true }).strict();

export const controllerOptionsSchema = z.object({
  // The fast and slow learners (fast-slow.ts).
  logits: z.string().min(1).optional(),
  embedding: z.string().min(1).optional(),
  params: z.array(z.string()).min(1).optional(),
  lr: z.number().finite().min(0).optional(),
  momentum: z.number().min(0).lt(1).optional(),
  decay: fraction.optional(),
  restore: z.object({ probability: fraction.optional(), seed: z.number().int().optional() }).strict().optional(),
  anchor: z.object({ strength: z.number().finite().min(0), importance: z.instanceof(Map).optional() }).strict().optional(),
  objective: z.enum(['entropy', 'teacher']).optional(),
  // The controller (controller.ts).
  patience: count.optional(),
  priorCorrection: z.union([z.boolean(), z.enum(['batch', 'auto'])], { error: "expected true, false, 'batch' or 'auto'" }).optional(),
  priorThreshold: threshold.optional(),
  holdBelowSpread: threshold.optional(),
  debias: z.object({ similarity: z.number().min(-1).max(1), alpha: z.number().finite().min(0).optional() }).strict().optional(),
  lame: z.union([z.boolean(), z.literal('auto')], { error: "expected true, false or 'auto'" }).optional(),
  lameThreshold: threshold.optional(),
  ensemble: z.enum(['max', 'fast']).optional(),
  stableBatches: count.optional(),
  entropyTolerance: z.number().finite().positive().optional(),
  collapseFraction: fraction.optional(),
  warmupBatches: count.optional(),
  maxLevel: z.union([z.literal(0), z.literal(1), z.literal(2), z.literal(3)], { error: 'expected 0, 1, 2 or 3' }).optional(),
  budgets: z.object({ maxUpdateMs: z.number().positive().optional(), maxTrainableParams: z.number().int().min(0).optional() }).strict().optional(),
  feedback: z.object({ capacity: count.optional(), maxAgeBatches: count.optional(), replayCapacity: count.optional(), minBatch: count.optional(), minNew: count.optional() }).strict().optional(),
  errorMemory: z.union([z.boolean(), errorMemory], { error: 'expected true, false or { capacity, k, temperature, minSimilarity, strength }' }).optional(),
  deep: z.object({
    sourceData: tensorSchema,
    sourceLabels: labels,
    params: z.union([z.literal('all'), z.literal('norm'), z.array(z.string()).min(1)], { error: "expected 'all', 'norm' or parameter names" }).optional(),
    updateEvery: count.optional(),
    embedding: z.boolean().optional(),
    rmt: deepRmt.optional(),
  }).strict().optional(),
  inputAlign: inputStats.optional(),
  padToken: z.number().int().min(0).optional(),
  seed: z.number().int().optional(),
});

/** Throws `continual: option '…': …` (or `unknown option '…' (known options: …)`) for options the controller cannot run. */
export function checkControllerOptions(options: ControllerOptions): void {
  parseOptions('continual', controllerOptionsSchema, options);
  const d = options.deep;
  if (d && d.sourceData.dims[0] !== d.sourceLabels.length) {
    throw new Error(`continual: option 'deep': ${d.sourceData.dims[0]} source images but ${d.sourceLabels.length} source labels`);
  }
}
