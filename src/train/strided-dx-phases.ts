// A backend pass for onnxruntime-node's CPU provider: the input gradient of a dense strided conv
// written phase by phase, one stride-1 Conv per output phase with only its taps (phasesDx),
// instead of a ConvTranspose. Stride-1 Convs run on onnxruntime's blocked NCHWc kernels (by
// themselves where the weight is a constant, as Tent, EATA, SAR and norm-affine steps bake frozen
// convs; through src/onnx/nchwc.ts where it is fed, which builds each phase's blocked weight from
// the fed one), and ConvTranspose does not. Whole steps, alternating in one process (`npx tsx
// bench/step-forms.ts --form phases [--config full]`): Tent 0.91–0.97× (cnn28 0.91–0.96, ResNet-18 at
// 64² 0.92–0.94, at 224² 0.97), full steps 0.95–0.98×. Without blocked kernels the phases lose slightly
// (onnxruntime-web's wasm: 1.02–1.03× on the CNNs' Tent steps), so the portable graph
// (StepGraph.model, the browser's) keeps the ConvTranspose; only the session's copy is rewritten.
// A kernel shorter than the stride (a 1×1 stride-2 shortcut) keeps its ConvTranspose: its phases
// no tap reaches would be zeros, which cost ResNet-18 at 224² 55–100 MB of peak memory for no time.
// So do small gradients and strides over 2: each phase is a node of its own, and on the
// real-model bench's small inputs (≤ 25k elements a gradient; SegFormer's 8×8 and 4×4 patch
// convs, 64 and 16 phases of one tap each) the phases made full steps 1.24× (SegFormer) and 1.04×
// (fast-neural-style) slower. The pass takes stride 2, a kernel longer than 2, and gradients of at
// least minElements (cnn28's and ResNet-18's have 262k–1.6M).
// Grouped convs too (session 32; `grouped`): MobileNetV2's strided depthwise convs at 224², batch 16,
// whose ConvTranspose took 33 ms for the 96-channel 56² → 112² gradient alone. Alternating in one
// process: Tent 0.94–0.95, full step 0.90 (gradients within 3e-4 of the ConvTranspose's on the
// BatchNorm scales, whose sums over 200k terms cancel: a 1e-7 relative nudge of the input moves
// them by 1e-2). Session 5's measurement of depthwise phases (1.36–1.79× ConvTranspose) was of an
// earlier form (DepthToSpace, not the Concats) on a machine at load average 20.
import type { Model, Node } from '../onnx/ir.ts';
import { opsetVersion } from '../onnx/ir.ts';
import { Emitter } from '../onnx/emitter.ts';
import { dxApplies, phasesDx, type ConvGeom } from '../autodiff/rules/conv.ts';

/** Switch for bench/step-forms.ts (--form phases): the pass on, or every strided dX a ConvTranspose; grouped convs too; and its limits (tests widen them). */
export const stridedDxPhases = { current: true, minElements: 2 ** 17, maxStride: 2, grouped: true };

/** Stride ≤ maxStride, every kernel dim longer than the stride, and a gradient of at least minElements. */
const worthIt = (g: ConvGeom): boolean => g.strides[0]! <= stridedDxPhases.maxStride && g.k.every((k) => k > g.strides[0]!)
  && g.N * g.C * g.inSp.reduce((a, b) => a * b, 1) >= stridedDxPhases.minElements;

/**
 * Rewrite, in place, each ConvTranspose that is a strided conv's dX (conv.ts marks them; a grouped
 * conv's where stridedDxPhases.grouped) with a float32 weight, constant or fed; returns how many.
 * Run before blockFedConvs, which then puts the fed ones' phase convs on the blocked kernels.
 */
export function phaseStridedDx(model: Model): number {
  if (!stridedDxPhases.current) return 0;
  const g = model.graph;
  const inputs = new Map(g.inputs.map((i) => [i.name, i]));
  const em = new Emitter(g, opsetVersion(model), 'refit_phases_');
  const out: Node[] = [];
  let done = 0;
  for (const n of [...g.nodes]) {
    const geom = n.meta?.dxOfConv as ConvGeom | undefined;
    const w = n.inputs[1]!;
    const float = (inputs.get(w)?.dtype ?? g.initializers.get(w)?.dtype) === 'float32';
    if (n.opType !== 'ConvTranspose' || !geom || (geom.group !== 1 && !stridedDxPhases.grouped) || !dxApplies(geom, 'phases') || !float || !worthIt(geom)) {
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
