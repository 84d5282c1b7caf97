// A TTA adapter's state (AdapterState: Float32Arrays, optimizer buffers, scalars) as one
// safetensors blob for the registry's tenant-state table: every Float32Array becomes a tensor,
// the rest JSON in the metadata, with the model's fingerprint so another model's state is refused.
// (The continual controller has its own format: src/continual/checkpoint.ts.)
import { parseSafetensors, serializeSafetensors } from '../io/safetensors.ts';
import type { Tensor } from '../onnx/tensor.ts';
import type { RefitModel } from '../model.ts';
import type { AdapterState } from '../tta/types.ts';
import { modelFingerprint } from '../continual/checkpoint.ts';

const FORMAT = 'refit.tta.state/1';

export function encodeAdapterState(model: RefitModel, state: AdapterState): Uint8Array {
  const tensors = new Map<string, Tensor>();
  const json = JSON.stringify(state, (_k, v) => {
    if (v instanceof Float32Array) {
      const key = `t${tensors.size}`;
      tensors.set(key, { dtype: 'float32', dims: [v.length], data: v });
      return { $tensor: key };
    }
    if (ArrayBuffer.isView(v)) throw new Error(`tenant state: a ${v.constructor.name} cannot be stored (only Float32Array)`);
    return v;
  });
  return serializeSafetensors(tensors, { format: FORMAT, model: modelFingerprint(model), state: json });
}

export function decodeAdapterState(model: RefitModel, bytes: Uint8Array, what = 'tenant state'): AdapterState {
  const file = parseSafetensors(bytes, what);
  if (file.metadata.format !== FORMAT) throw new Error(`${what} is not a refit TTA state (format '${file.metadata.format ?? 'none'}')`);
  const want = modelFingerprint(model);
  if (file.metadata.model !== want) throw new Error(`${what} belongs to another model (fingerprint ${file.metadata.model}, this model ${want})`);
  return JSON.parse(file.metadata.state!, (_k, v) => {
    if (v && typeof v === 'object' && typeof v.$tensor === 'string') {
      const t = file.tensors.get(v.$tensor);
      if (!t) throw new Error(`${what}: tensor '${v.$tensor}' is missing`);
      // A copy: the parsed tensor views the blob's buffer, which the registry may reuse.
      return (t.data as Float32Array).slice();
    }
    return v;
  }) as AdapterState;
}
