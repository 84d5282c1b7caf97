// What an adapter costs: trainable parameters (and their share of the base model), optimizer
// state, and the size of its saved files.
import { parameterCandidates } from '../train/params.ts';
import type { PeftModel } from './peft-model.ts';
import { adapterFiles } from './files.ts';

export interface Accounting {
  trainableParams: number;
  baseParams: number;
  /** 100 · trainable / base */
  trainablePercent: number;
  /** Bytes of optimizer state for the trainable tensors (float32 slots). */
  optimizerStateBytes: number;
  /** adapter_model.safetensors + adapter_config.json, in bytes. */
  adapterFileBytes: number;
}

/** Float32 slots per parameter: Adam/AdamW keep two moments, SGD with momentum one buffer, plain SGD none. */
const SLOTS = { adam: 2, adamw: 2, 'sgd-momentum': 1, sgd: 0 } as const;

export function accounting(model: PeftModel, name?: string, opts: { optimizer?: keyof typeof SLOTS } = {}): Accounting {
  const names = name === undefined ? model.adapterNames() : [name];
  const trainable = model.trainableNames(name);
  const trainableParams = trainable.reduce((a, n) => a + model.param(n).data.length, 0);
  const g = model.origin.graph;
  const baseParams = parameterCandidates(g).reduce((a, n) => a + g.initializers.get(n)!.data.length, 0);
  const adapterFileBytes = names.reduce((a, n) => { const f = adapterFiles(model, n); return a + f.weights.byteLength + new TextEncoder().encode(f.config).byteLength; }, 0);
  return {
    trainableParams, baseParams, trainablePercent: (100 * trainableParams) / baseParams,
    optimizerStateBytes: trainableParams * 4 * SLOTS[opts.optimizer ?? 'adamw'], adapterFileBytes,
  };
}
