// Test-time adaptation methods behind one interface.
import type { RefitModel } from '../model.ts';
import type { Adapter } from './types.ts';
import { Source } from './source.ts';
import { BNAdapt, type BNAdaptOptions } from './bn-adapt.ts';
import { Tent } from './tent.ts';
import { EATA } from './eata.ts';
import { SAR } from './sar.ts';
import { LAME } from './lame.ts';
import { T3A } from './t3a.ts';
import { CoTTA } from './cotta.ts';
import { RMT } from './rmt.ts';
import { RDumb } from './rdumb.ts';
import { ROID } from './roid.ts';
import { RoTTA } from './rotta.ts';
import { ActMAD } from './actmad.ts';
import { DynamicEval } from './dynamic-eval.ts';
import { z } from 'zod';
import { parseOptions } from './common.ts';
import { InputAligned, type InputStats } from './input-align.ts';

export type { Adapter, AdaptResult, AdaptInfo, AdapterState } from './types.ts';
export { Source } from './source.ts';
export { BNAdapt, batchStatModel, hasBatchNorm } from './bn-adapt.ts';
export { Tent, TENT_DEFAULTS, type TentOptions } from './tent.ts';
export { EATA, EATA_DEFAULTS, type EataOptions } from './eata.ts';
export { SAR, SAR_DEFAULTS, type SarOptions } from './sar.ts';
export { LAME, LAME_DEFAULTS, lameSolve, type LameOptions } from './lame.ts';
export { T3A, T3A_DEFAULTS, type T3AOptions } from './t3a.ts';
export { CoTTA, COTTA_DEFAULTS, type CottaOptions } from './cotta.ts';
export { RMT, RMT_DEFAULTS, type RmtOptions } from './rmt.ts';
export { RDumb, RDUMB_DEFAULTS, type RdumbOptions } from './rdumb.ts';
export { ROID, ROID_DEFAULTS, type RoidOptions } from './roid.ts';
export { RoTTA, ROTTA_DEFAULTS, type RottaOptions } from './rotta.ts';
export { ActMAD, ACTMAD_DEFAULTS, actmadLoss, type ActmadOptions } from './actmad.ts';
export { DynamicEval, DYNAMIC_EVAL_DEFAULTS, type DynamicEvalOptions } from './dynamic-eval.ts';
export { alignInput, alignInputDetailed, inputStats, InputAligned, CLASS_MIX_MARGIN, type InputStats } from './input-align.ts';
export { loadSourceSet, sourceDataOptions, type SourceSet } from './source-data.ts';
export { runStream, type StreamScore } from './run-stream.ts';

const FACTORIES: Record<string, (model: RefitModel, opts: Record<string, unknown>) => Adapter> = {
  source: (m, o) => new Source(m, parseOptions('source', z.object({ logits: z.string().optional() }), o)),
  'bn-adapt': (m, o) => new BNAdapt(m, parseOptions('bn-adapt', z.object({ prior: z.number().min(0).optional(), logits: z.string().optional() }), o) as BNAdaptOptions),
  tent: (m, o) => new Tent(m, o),
  eata: (m, o) => new EATA(m, o),
  sar: (m, o) => new SAR(m, o),
  cotta: (m, o) => new CoTTA(m, o),
  rmt: (m, o) => new RMT(m, o),
  rdumb: (m, o) => new RDumb(m, o),
  roid: (m, o) => new ROID(m, o),
  rotta: (m, o) => new RoTTA(m, o),
  actmad: (m, o) => new ActMAD(m, o as never),
  lame: (m, o) => new LAME(m, o),
  t3a: (m, o) => new T3A(m, o),
  'dynamic-eval': (m, o) => new DynamicEval(m, o),
};

export const METHODS = Object.keys(FACTORIES);
/** Methods for language models ([batch, sequence, vocabulary] logits); the others adapt classifiers. */
export const LANGUAGE_MODEL_METHODS = ['dynamic-eval'];
export const CLASSIFIER_METHODS = METHODS.filter((m) => !LANGUAGE_MODEL_METHODS.includes(m));

/**
 * Create an adapter by name; an unknown name lists the known ones, an unknown option names the known options.
 * `inputAlign: { mean, std }` (any method; see ./input-align.ts) standardises every batch's input
 * to those source statistics before the method sees it.
 */
export function createAdapter(model: RefitModel, method: string, opts: Record<string, unknown> = {}): Adapter {
  const f = Object.hasOwn(FACTORIES, method) ? FACTORIES[method] : undefined;
  if (!f) throw new Error(`unknown adaptation method '${method}'; known methods: ${METHODS.join(', ')}`);
  const { inputAlign, ...rest } = opts;
  if (inputAlign === undefined) return f(model, rest);
  return new InputAligned(f(model, rest), inputAlign as InputStats);
}
