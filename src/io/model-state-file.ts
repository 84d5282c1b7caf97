// A model's adaptation state as one safetensors blob: every Float32Array in the state (and every
// BigInt64Array or Int32Array: a token model's ids) becomes a tensor, the rest is JSON in the
// metadata, next to a format tag and a fingerprint of the model, so a state from another model or
// of another kind is refused. Browser-safe (bytes in, bytes out).
// Used by the continual controller's checkpoints and the service's per-tenant TTA state.
import type { RefitModel } from '../model.ts';
import { parseSafetensors, serializeSafetensors } from './safetensors.ts';
import { inputArrayDtype, type Tensor } from '../onnx/tensor.ts';

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

/** `kind` names the state in errors ("refit continual checkpoint", "refit TTA state"). */
export interface StateFormat { tag: string; kind: string }

export function encodeModelState(model: RefitModel, state: unknown, format: StateFormat, what: string): Uint8Array {
  const tensors = new Map<string, Tensor>();
  const json = JSON.stringify(state, (_k, v) => {
    const dtype = inputArrayDtype(v);
    if (dtype) {
      const key = `t${tensors.size}`;
      tensors.set(key, { dtype, dims: [v.length], data: v });
      return { $tensor: key };
    }
    if (ArrayBuffer.isView(v)) throw new Error(`${what}: a ${v.constructor.name} cannot be stored (only Float32Array, and BigInt64Array or Int32Array token ids)`);
    return v;
  });
  return serializeSafetensors(tensors, { format: format.tag, model: modelFingerprint(model), state: json });
}

export function decodeModelState<T>(model: RefitModel, bytes: Uint8Array, format: StateFormat, what: string): T {
  const file = parseSafetensors(bytes, what); // a truncated file fails here, naming the sizes
  if (file.metadata.format !== format.tag) throw new Error(`${what} is not a ${format.kind} (format '${file.metadata.format ?? 'none'}')`);
  const want = modelFingerprint(model);
  if (file.metadata.model !== want) throw new Error(`${what} belongs to another model (fingerprint ${file.metadata.model}, this model ${want})`);
  return JSON.parse(file.metadata.state!, (_k, v) => {
    if (v && typeof v === 'object' && typeof v.$tensor === 'string') {
      const t = file.tensors.get(v.$tensor);
      if (!t) throw new Error(`${what}: tensor '${v.$tensor}' is missing`);
      // A copy: the parsed tensor views the blob's buffer, which its owner may reuse.
      return (t.data as Float32Array | BigInt64Array | Int32Array).slice();
    }
    return v;
  }) as T;
}
