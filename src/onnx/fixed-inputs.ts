// Inputs fixed to one value. Silero VAD takes its sample rate as an input and branches on it with
// an If, which is not differentiated; with the rate fixed, the condition is a constant, and the
// branch taken replaces the If (src/onnx/inline-if.ts): adapters then find the branch's layers,
// and a step trains through it. The same holds for any mode flag a model takes as an input.
import type { RefitModel } from '../model.ts';
import type { Tensor } from './tensor.ts';
import { inlineConstantIfs } from './inline-if.ts';

/**
 * A sharing clone of `model` whose inputs named in `values` are constants of those values and no
 * longer inputs. Throws, naming the model's inputs, for a name that is not one, and for a value
 * of another dtype or of a shape the input's declared dimensions rule out.
 * @example
 * const vad = withFixedInputs(await loadModel('silero_vad.onnx'), { sr: i64([], [16000]) });
 */
export function withFixedInputs(model: RefitModel, values: Record<string, Tensor>): RefitModel {
  const names = model.inputs.map((i) => `${i.name} (${i.dtype})`).join(', ');
  for (const [name, t] of Object.entries(values)) {
    const input = model.inputs.find((i) => i.name === name);
    if (!input) throw new Error(`withFixedInputs: '${name}' is not an input of the model; its inputs: ${names}`);
    if (t.dtype !== input.dtype) throw new Error(`withFixedInputs: input '${name}' is ${input.dtype}; the value given is ${t.dtype}`);
    const s = input.shape;
    if (s && (s.length !== t.dims.length || s.some((d, i) => typeof d === 'number' && d !== t.dims[i]))) {
      throw new Error(`withFixedInputs: input '${name}' has shape [${s.map((d) => d ?? '?').join(', ')}]; the value given is [${t.dims.join(', ')}]`);
    }
  }
  return model.rewritten((ir) => {
    const g = ir.graph;
    for (const [name, t] of Object.entries(values)) {
      g.nodes.unshift({ name: `${name}_fixed`, opType: 'Constant', domain: '', inputs: [], outputs: [name], attrs: { value: { kind: 'tensor', value: t } } });
    }
    g.inputs = g.inputs.filter((i) => !(i.name in values));
    // An If on a condition the constants decide (a step's compile folds the rest); weights only the
    // branches not taken read (Silero VAD's 8 kHz model beside its 16 kHz one) go with it.
    inlineConstantIfs(g);
  });
}
