// Test-time adaptation methods behind one interface.
import type { RefitModel } from '../model.ts';
import type { Adapter } from './types.ts';
import { Source } from './source.ts';
import { BNAdapt, type BNAdaptOptions } from './bn-adapt.ts';

export type { Adapter, AdaptResult, AdaptInfo } from './types.ts';
export { Source } from './source.ts';
export { BNAdapt, batchStatModel, hasBatchNorm } from './bn-adapt.ts';

const FACTORIES: Record<string, (model: RefitModel, opts: Record<string, unknown>) => Adapter> = {
  source: (m, o) => new Source(m, o as { logits?: string }),
  'bn-adapt': (m, o) => new BNAdapt(m, o as BNAdaptOptions),
};

export const METHODS = Object.keys(FACTORIES);

/** Create an adapter by name; an unknown name lists the known ones. */
export function createAdapter(model: RefitModel, method: string, opts: Record<string, unknown> = {}): Adapter {
  const f = FACTORIES[method];
  if (!f) throw new Error(`unknown adaptation method '${method}'; known methods: ${METHODS.join(', ')}`);
  return f(model, opts);
}
