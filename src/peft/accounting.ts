// What an adapter costs: trainable parameters (and their share of the base model), optimizer
// state, and the size of its saved files.
import type { Graph } from '../onnx/ir.ts';
import { parameterCandidates } from '../train/params.ts';
import { findSites } from './sites.ts';
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

/**
 * Weight values the base holds quantized, which are not float parameters but are the model's size:
 * every quantized layer's dIn · dOut (int8, 4-bit) and a low-bit embedding table's rows · columns.
 */
export function quantizedValues(g: Graph): number {
  let n = findSites(g).filter((s) => s.quant).reduce((a, s) => a + (s.dIn / (s.group ?? 1)) * s.dOut * (s.kernel ?? []).reduce((k, v) => k * v, 1), 0);
  for (const node of g.nodes) {
    const data = node.opType === 'GatherBlockQuantized' ? g.initializers.get(node.inputs[0] ?? '') : undefined;
    if (data) n += data.data.length * (8 / (node.attrs.bits?.kind === 'int' ? node.attrs.bits.value : 4));
  }
  return n;
}

/** Float32 slots per parameter: Adam/AdamW keep two moments, SGD with momentum one buffer, plain SGD none. */
const SLOTS = { adam: 2, adamw: 2, 'sgd-momentum': 1, sgd: 0 } as const;

export function accounting(model: PeftModel, name?: string, opts: { optimizer?: keyof typeof SLOTS } = {}): Accounting {
  const names = name === undefined ? model.adapterNames() : [name];
  const trainable = model.trainableNames(name);
  const trainableParams = trainable.reduce((a, n) => a + model.param(n).data.length, 0);
  const g = model.origin.graph;
  const baseParams = parameterCandidates(g).reduce((a, n) => a + g.initializers.get(n)!.data.length, 0) + quantizedValues(g);
  const adapterFileBytes = names.reduce((a, n) => { const f = adapterFiles(model, n); return a + f.weights.byteLength + new TextEncoder().encode(f.config).byteLength; }, 0);
  return {
    trainableParams, baseParams, trainablePercent: (100 * trainableParams) / baseParams,
    optimizerStateBytes: trainableParams * 4 * SLOTS[opts.optimizer ?? 'adamw'], adapterFileBytes,
  };
}
