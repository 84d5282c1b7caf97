// Shared parts of the output-only methods (LAME, T3A): they read the source model's logits and
// penultimate features and never change a parameter.
import type { RefitModel } from '../model.ts';
import type { Tensor } from '../onnx/tensor.ts';
import { defaultLogits } from './types.ts';

export function resolveOutputs(method: string, model: RefitModel, logits?: string, features?: string): { logits: string; features: string } {
  const names = model.outputs.map((o) => o.name);
  const l = logits ?? defaultLogits(model.outputs);
  const f = features ?? 'features';
  if (!names.includes(l)) throw new Error(`${method}: the model has no output '${l}' (outputs: ${names.join(', ')})`);
  if (!names.includes(f)) {
    throw new Error(`${method} reads the penultimate features, and the model has no output '${f}' (outputs: ${names.join(', ')}). Use model.withFeatures(), which adds the input of the model's linear head as 'features' (refit's own models have it), or pass the 'features' option naming another output`);
  }
  return { logits: l, features: f };
}

export async function logitsAndFeatures(model: RefitModel, x: Tensor, names: { logits: string; features: string }): Promise<{ logits: Float32Array; features: Float32Array; C: number; D: number; n: number }> {
  const out = await model.run({ [model.inputs[0]!.name]: x }, { outputs: [names.logits, names.features] });
  const L = out[names.logits]!, F = out[names.features]!;
  const n = x.dims[0]!;
  if (L.dims.length !== 2) throw new Error(`output '${names.logits}' must be [batch, classes], got [${L.dims}]`);
  if (F.dims.length !== 2) throw new Error(`features output '${names.features}' must be [batch, D], got [${F.dims}]`);
  return { logits: L.data as Float32Array, features: F.data as Float32Array, C: L.dims[1]!, D: F.dims[1]!, n };
}
