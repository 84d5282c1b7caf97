// One file for the whole continual state: a safetensors container whose tensors are every
// Float32Array in the state and whose metadata holds the rest as JSON, plus a fingerprint of the
// model it belongs to. Browser-safe (bytes in, bytes out); checkpoint-node.ts writes files.
import type { RefitModel } from '../model.ts';
import { parseSafetensors, serializeSafetensors } from '../io/safetensors.ts';
import type { Tensor } from '../onnx/tensor.ts';
import type { ControllerState } from './controller.ts';

const FORMAT = 'refit.continual.checkpoint/1';

/** Names, shapes and a sample of values of every initializer: tells one model from another. */
export function modelFingerprint(model: RefitModel): string {
  let h = 0x811c9dc5;
  const mix = (v: number) => { h = Math.imul(h ^ (v >>> 0), 0x01000193) >>> 0; };
  for (const [name, t] of [...model.ir.graph.initializers].sort(([a], [b]) => (a < b ? -1 : 1))) {
    for (let i = 0; i < name.length; i++) mix(name.charCodeAt(i));
    for (const d of t.dims) mix(d);
    const data = t.data as ArrayLike<number | bigint>;
    const step = Math.max(1, Math.floor(data.length / 16));
    for (let i = 0; i < data.length; i += step) mix(Math.round(Number(data[i]) * 1e6));
  }
  return h.toString(16).padStart(8, '0');
}

export function encodeCheckpoint(model: RefitModel, state: ControllerState): Uint8Array {
  const tensors = new Map<string, Tensor>();
  const json = JSON.stringify(state, function (_k, v) {
    if (v instanceof Float32Array) {
      const key = `t${tensors.size}`;
      tensors.set(key, { dtype: 'float32', dims: [v.length], data: v });
      return { $tensor: key };
    }
    return v;
  });
  return serializeSafetensors(tensors, { format: FORMAT, model: modelFingerprint(model), state: json });
}

export function decodeCheckpoint(model: RefitModel, bytes: Uint8Array, what = 'checkpoint'): ControllerState {
  const file = parseSafetensors(bytes, what); // a truncated file fails here, naming the sizes
  if (file.metadata.format !== FORMAT) throw new Error(`${what} is not a refit continual checkpoint (format '${file.metadata.format ?? 'none'}')`);
  const want = modelFingerprint(model);
  if (file.metadata.model !== want) throw new Error(`${what} belongs to another model (fingerprint ${file.metadata.model}, this model ${want})`);
  return JSON.parse(file.metadata.state!, (_k, v) => {
    if (v && typeof v === 'object' && typeof v.$tensor === 'string') {
      const t = file.tensors.get(v.$tensor);
      if (!t) throw new Error(`${what}: tensor '${v.$tensor}' is missing`);
      return t.data as Float32Array;
    }
    return v;
  }) as ControllerState;
}
