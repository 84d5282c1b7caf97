// A 1×1 convolution (stride 1, no padding, one group) with a constant weight is a MatMul over the
// channel axis: Y[n] = W[O, C] · X[n][C, H·W] (+ b). In a test-time step (Tent/EATA/SAR, whose convs
// are constants) onnxruntime-node runs every constant-weight conv on its blocked NCHWc kernels, and
// every training-mode BatchNorm between two convs forces the activations out of the blocked layout
// and back: a ReorderOutput after each conv and a ReorderInput before it, in the forward and again
// around each conv's input gradient. On MobileNet-style nets, where two of every three convs are
// 1×1, onnxruntime's profiler put the reorders at a quarter of the Tent step's kernel time. As a
// MatMul the conv reads and writes NCHW directly, and its input gradient follows as the MatMul by
// Wᵀ (a constant onnxruntime folds), so only the depthwise convs keep their reorders (156 → 44 ms
// of reorders in MobileNetV2's Tent step at 224², batch 16). The step's wall time gains less than
// that (the MatMuls with 16–24 channels on one side run below the blocked kernels' rate): on/off,
// alternating in one process (session 33), MobileNetV2 Tent 0.95, SAR 0.94, norm-affine 0.91,
// LoRA 0.96; MobileNetV3-Large Tent 0.94–0.95, EfficientNet-B0 0.97, RegNetY-400MF 0.94,
// ResNet-50 0.96. A 1×1 conv on one position (a squeeze-excitation gate) is one [N, C]·Wᵀ product.
//
// Shapes come from the static propagation (src/onnx/static-shapes.ts); a conv whose input shape it
// cannot tell is left as it is. Trained weights keep the Conv (their weight gradients have their
// own forms, src/autodiff/rules/conv.ts).
import type { Model, Node } from '../onnx/ir.ts';
import { attrInt, attrInts, attrString, opsetVersion, isDefaultDomain as isDefault } from '../onnx/ir.ts';
import { Emitter } from '../onnx/emitter.ts';
import type { InputSignature } from '../onnx/shapes.ts';
import { staticShapes } from '../onnx/static-shapes.ts';

/** On by default where onnxruntime-node blocks convs (TrainStep.compile); tests and benches switch it off to compare. */
export const pointwiseMatMul = { current: true };

function isPointwise(n: Node, wDims: number[] | undefined): boolean {
  if (!isDefault(n) || n.opType !== 'Conv' || !wDims || wDims.length !== 4) return false;
  if (wDims[2] !== 1 || wDims[3] !== 1 || attrInt(n, 'group', 1) !== 1) return false;
  if ((attrInts(n, 'strides') ?? [1, 1]).some((s) => s !== 1)) return false;
  if ((attrInts(n, 'pads') ?? [0, 0, 0, 0]).some((p) => p !== 0)) return false;
  const ap = attrString(n, 'auto_pad', 'NOTSET');
  return ap === 'NOTSET' || ap === 'VALID';
}

/**
 * Write `model`'s constant-weight 1×1 convs as MatMuls (a rewritten copy; `model` is not changed).
 * `frozen(w)`: whether the weight is a constant of the step. `assumed`: the input shapes the
 * Reshapes were written for, which the caller checks against the step's probe.
 */
export function pointwiseConvsAsMatMul(model: Model, sig: InputSignature, frozen: (t: string) => boolean): { model: Model; rewritten: string[]; assumed: Map<string, number[]> } {
  const none = { model, rewritten: [], assumed: new Map<string, number[]>() };
  if (!pointwiseMatMul.current) return none;
  const g = model.graph;
  const sh = staticShapes(g, sig);
  const chosen = new Set(g.nodes.filter((n) => {
    const [x, w] = n.inputs;
    return x && w && frozen(w) && g.initializers.has(w) && isPointwise(n, g.initializers.get(w)!.dims) && sh.get(x)?.length === 4 && sh.get(n.outputs[0]!)?.length === 4;
  }));
  if (!chosen.size) return none;
  // Emitted into a copy, each conv's nodes where it stood (as stateless-batchnorm.ts does).
  const copy = { ...g, nodes: [...g.nodes], initializers: new Map(g.initializers) };
  const em = new Emitter(copy, opsetVersion(model));
  for (const n of chosen) {
    const [x, w, b] = n.inputs as [string, string, string | undefined];
    const [, C, H, W] = sh.get(x)!;
    const O = g.initializers.get(w)!.dims[0]!;
    const { nodes } = em.collect(() => {
      const w2 = em.reshape(w, [O, C!]);
      // One position (a squeeze-excitation's convs after the global pool): one [N, C]·Wᵀ product
      // rather than N matrix-vector products.
      const y3 = H! * W! === 1 ? em.op('MatMul', [em.reshape(x, [-1, C!]), em.transpose(w2, [1, 0])]) : em.op('MatMul', [w2, em.reshape(x, [-1, C!, H! * W!])]);
      const y = em.reshape(y3, [-1, O, H!, W!]);
      if (b) em.add(y, em.reshape(b, [1, O, 1, 1]));
      copy.nodes[copy.nodes.length - 1]!.outputs[0] = n.outputs[0]!; // the last node writes the conv's output
    });
    copy.nodes.splice(copy.nodes.indexOf(n), 1, ...nodes);
  }
  return {
    model: { ...model, graph: copy },
    rewritten: [...chosen].map((n) => n.name),
    assumed: new Map([...chosen].map((n) => [n.inputs[0]!, sh.get(n.inputs[0]!)!])),
  };
}
