// A backend pass for onnxruntime-node's CPU provider: the input gradient of a strided conv whose
// weight is a constant (Tent, EATA, SAR, norm-affine and LoRA steps bake frozen convs) written
// phase by phase, one stride-1 Conv per output phase with only its taps (phasesDx), instead of a
// ConvTranspose. Constant-weight stride-1 Convs run on onnxruntime's blocked NCHWc kernels, which
// ConvTranspose does not: Tent steps 0.92–0.97× (cnn28 0.94, ResNet-18 at 64² 0.92, at 224² 0.97;
// `npx tsx bench/step-forms.ts --form phases`). Without those kernels the phases lose slightly
// (onnxruntime-web's wasm: 1.02–1.03× on the CNNs' Tent steps), so the portable graph
// (StepGraph.model, the browser's) keeps the ConvTranspose; only the session's copy is rewritten.
import type { Model, Node } from '../onnx/ir.ts';
import { opsetVersion } from '../onnx/ir.ts';
import { Emitter } from '../onnx/emitter.ts';
import { dxApplies, phasesDx, type ConvGeom } from '../autodiff/rules/conv.ts';

/** Switch for bench/step-forms.ts (--form phases): the pass on, or every strided dX a ConvTranspose. */
export const frozenStridedDx = { current: true };

/** Rewrite, in place, each ConvTranspose that is a dense strided conv's dX with a constant weight; returns how many. */
export function phaseFrozenStridedDx(model: Model): number {
  if (!frozenStridedDx.current) return 0;
  const g = model.graph;
  const fed = new Set(g.inputs.map((i) => i.name));
  const em = new Emitter(g, opsetVersion(model), 'refit_phases_');
  const out: Node[] = [];
  let done = 0;
  for (const n of [...g.nodes]) {
    const geom = n.meta?.dxOfConv as ConvGeom | undefined;
    const w = n.inputs[1]!;
    if (n.opType !== 'ConvTranspose' || !geom || geom.group !== 1 || !dxApplies(geom, 'phases') || !g.initializers.has(w) || fed.has(w)) {
      out.push(n);
      continue;
    }
    const { value: dx, nodes } = em.collect(() => phasesDx(em, geom, n.inputs[0]!, w));
    // the last node writes the result: give it the ConvTranspose's output name
    const last = nodes.at(-1)!;
    last.outputs = last.outputs.map((o) => (o === dx ? n.outputs[0]! : o));
    out.push(...nodes);
    done++;
  }
  g.nodes = out;
  return done;
}
