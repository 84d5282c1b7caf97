// Aggregation of device adapters into one fleet adapter (issue 15, cloud side).
// - 'fedavg': Σ (nᵢ/N)·θᵢ per tensor, weighted by each device's sample count (McMahan et al.
//   2017). On LoRA files this averages A and B separately, as federated LoRA does (the product
//   of averages is not the average of products; use 'ties' for an exact ΔW-space merge).
// - 'ties': TIES-merging (Yadav et al. 2023) of the task vectors, from src/peft/combine.ts:
//   LoRA adapters go through combineAdapters (ΔW space, SVD back to rank r); adapters that own
//   copies of base tensors (norm-affine, BitFit) merge θᵢ − θ_base with peft's `ties` and add
//   the base back. Source weights are K·nᵢ/N (mean 1), so equal sample counts give plain TIES.
import type { RefitModel } from '../model.ts';
import { parseSafetensors, serializeSafetensors } from '../io/safetensors.ts';
import { formatShape, type Tensor } from '../onnx/tensor.ts';
import { adapterFiles, withAdapterFiles, parseAdapterConfig, WEIGHTS_FILE, REFIT_ADAPTER_KEY, REFIT_METHOD_KEY, type AdapterFiles } from '../peft/files.ts';
import { PeftModel } from '../peft/peft-model.ts';
import { combineAdapters, ties } from '../peft/combine.ts';
import { mat } from '../peft/linalg.ts';
import { FleetError } from './types.ts';

export interface AggregateInput {
  files: AdapterFiles;
  /** Samples the adapter was consolidated from (its FedAvg weight); a positive integer. */
  samples: number;
}

export interface AggregateOptions {
  /** @default 'fedavg' */
  method?: 'fedavg' | 'ties';
  /** The base model: required by 'ties' (task vectors are differences from it). */
  base?: RefitModel;
  /** Fraction of each task vector TIES keeps (by magnitude, per tensor). @default 0.5 */
  density?: number;
  /** Adapter name recorded in the result's metadata. @default the first input's */
  name?: string;
}

interface Parsed { tensors: Map<string, Tensor>; metadata: Record<string, string>; config: Record<string, unknown> }

/** Merge device adapters into one; every input is checked first, and errors name the input, tensor and shapes. */
export function aggregate(inputs: AggregateInput[], o: AggregateOptions = {}): AdapterFiles {
  if (!Array.isArray(inputs) || inputs.length === 0) throw new FleetError('aggregate: no adapters given');
  const method = o.method ?? 'fedavg';
  if (method !== 'fedavg' && method !== 'ties') throw new FleetError(`aggregate: unknown method '${String(method)}' (known: fedavg, ties)`);
  inputs.forEach((x, i) => {
    if (!(Number.isInteger(x?.samples) && x.samples > 0)) throw new FleetError(`aggregate: input ${i} has sample count ${String(x?.samples)}; each adapter needs a positive integer count (an adapter from no samples carries no information: leave it out)`);
  });
  const parsed = inputs.map((x, i) => parse(x.files, i));
  const first = parsed[0]!;
  const type = String(first.config.peft_type);
  const keys = [...first.tensors.keys()].sort();
  parsed.forEach((p, i) => {
    if (String(p.config.peft_type) !== type) throw new FleetError(`aggregate: input ${i} is a ${String(p.config.peft_type)} adapter, input 0 a ${type} adapter; only adapters of one kind can be merged`);
    const ks = [...p.tensors.keys()].sort();
    const missing = keys.filter((k) => !p.tensors.has(k)), extra = ks.filter((k) => !first.tensors.has(k));
    if (missing.length || extra.length) throw new FleetError(`aggregate: input ${i}'s tensors differ from input 0's${missing.length ? `; missing ${missing.slice(0, 4).join(', ')}` : ''}${extra.length ? `; extra ${extra.slice(0, 4).join(', ')}` : ''}`);
    for (const k of keys) {
      const a = first.tensors.get(k)!, b = p.tensors.get(k)!;
      if (b.dtype !== 'float32') throw new FleetError(`aggregate: input ${i}'s tensor '${k}' is ${b.dtype}, expected float32`);
      if (a.dims.join() !== b.dims.join()) throw new FleetError(`aggregate: input ${i}'s tensor '${k}' has shape ${formatShape(b.dims)}, input 0's ${formatShape(a.dims)}`);
    }
  });
  const total = inputs.reduce((a, x) => a + x.samples, 0);
  const weights = inputs.map((x) => x.samples / total);
  const name = o.name ?? first.metadata[REFIT_ADAPTER_KEY] ?? 'fleet';

  if (method === 'ties') {
    if (!o.base) throw new FleetError('aggregate: TIES merges task vectors (differences from the base model): pass options.base');
    const density = o.density ?? 0.5;
    if (!(density > 0 && density <= 1)) throw new FleetError(`aggregate: density must be in (0, 1], got ${density}`);
    const K = inputs.length;
    if (type === 'LORA') {
      let m = PeftModel.from(o.base);
      inputs.forEach((x, i) => { m = withAdapterFiles(m, `fleet_src${i}`, x.files); });
      const merged = combineAdapters(m, name, { method: 'ties', density, adapters: Object.fromEntries(weights.map((w, i) => [`fleet_src${i}`, K * w])) });
      return adapterFiles(merged, name);
    }
    if (type !== 'NORM_AFFINE' && type !== 'BITFIT') throw new FleetError(`aggregate: TIES is implemented for LORA, NORM_AFFINE and BITFIT adapters, not ${type}`);
    const out = new Map<string, Tensor>();
    for (const k of keys) {
      const param = k.replace(/^base_model\.model\./, '');
      let base: Float32Array;
      try { base = o.base.param(param).data as Float32Array; } catch { throw new FleetError(`aggregate: tensor '${k}' names '${param}', which the base model does not have`); }
      const dims = first.tensors.get(k)!.dims;
      if (base.length !== dims.reduce((a, d) => a * d, 1)) throw new FleetError(`aggregate: tensor '${k}' has shape ${formatShape(dims)}, the base model's '${param}' ${formatShape(o.base.param(param).dims)}`);
      const deltas = parsed.map((p, i) => {
        const v = p.tensors.get(k)!.data as Float32Array;
        return mat(1, v.length, Float64Array.from(v, (x, j) => K * weights[i]! * (x - base[j]!)));
      });
      const t = ties(deltas, density);
      out.set(k, { dtype: 'float32', dims: [...dims], data: Float32Array.from(t.data, (d, j) => base[j]! + d) });
    }
    return write(out, first, name);
  }

  const out = new Map<string, Tensor>();
  for (const k of keys) {
    const dims = first.tensors.get(k)!.dims;
    const acc = new Float64Array(first.tensors.get(k)!.data.length);
    parsed.forEach((p, i) => {
      const v = p.tensors.get(k)!.data as Float32Array;
      for (let j = 0; j < v.length; j++) acc[j]! += weights[i]! * v[j]!;
    });
    out.set(k, { dtype: 'float32', dims: [...dims], data: Float32Array.from(acc) });
  }
  return write(out, first, name);
}

function parse(f: AdapterFiles, i: number): Parsed {
  if (!f || !(f.weights instanceof Uint8Array) || typeof f.config !== 'string') throw new FleetError(`aggregate: input ${i} needs files { weights: Uint8Array, config: string }`);
  try {
    const { tensors, metadata } = parseSafetensors(f.weights, WEIGHTS_FILE);
    const config = parseAdapterConfig(f.config);
    for (const [k, t] of tensors) {
      const d = t.data as Float32Array;
      for (let j = 0; j < d.length; j++) if (!Number.isFinite(d[j]!)) throw new Error(`tensor '${k}' has a non-finite value (${d[j]}) at ${j}`);
    }
    return { tensors, metadata, config };
  } catch (e) {
    throw new FleetError(`aggregate: input ${i}: ${(e as Error).message}`);
  }
}

function write(tensors: Map<string, Tensor>, first: Parsed, name: string): AdapterFiles {
  const meta: Record<string, string> = { format: 'pt', [REFIT_ADAPTER_KEY]: name };
  if (first.metadata[REFIT_METHOD_KEY]) meta[REFIT_METHOD_KEY] = first.metadata[REFIT_METHOD_KEY];
  return { weights: serializeSafetensors(tensors, meta), config: `${JSON.stringify(first.config, null, 2)}\n` };
}
