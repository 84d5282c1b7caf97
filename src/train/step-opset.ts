// The opset a training step is built at. A model at opset 13–15 with an overlapping-window
// MaxPool (ResNet's 3×3 stride-2 stem pool) gets its step graph at opset 16, where MaxPool's
// gradient is one ScatterElements with reduction 'add' at the forward node's Indices instead of
// an im2col Conv, ArgMax, Equal, Cast, Mul and a col2im ConvTranspose (src/autodiff/rules/pool.ts).
// So does one with an embedding of EMBEDDING_ROWS rows or more (a language model exported at
// torch's opset 14): the table's gradient is one ScatterElements add instead of a one-hot [rows, tokens]
// matrix product (rules/indexing.ts), and the loss's GatherElements one ScatterElements add; a
// GPT-2-sized table (50257 × 768, 1024 tokens) stepped in 405 ms instead of 913, peak RSS 918
// against 1021 MB (bench/embedding-grad.ts). The model itself is not changed.
//
// Why lifting the import is exact: between opsets 13 and 16 the default domain changed these
// schemas (onnx.defs, since_version 14–16): Add, Sub, Mul, Div, Relu, Pow, CumSum, Identity,
// Where, LeakyRelu, PRelu, GreaterOrEqual, LessOrEqual (more types only); Reshape (allowzero,
// default 0 = old behaviour), Shape (start/end, default the whole shape), GRU/LSTM/RNN (layout,
// default 0 = old), ScatterElements/ScatterND (reduction, default 'none' = old); new ops
// (HardSwish, Trilu, CastLike, Bernoulli, Optional*, GridSample) cannot occur below their opset.
// Three change meaning and are refused here: BatchNormalization with more than one output (the
// opset ≤ 13 training-mode outputs differ from opset 14's), RoiAlign (opset 16 changed the
// default coordinate_transformation_mode) and If/Loop/Scan (their bodies would be read at the new
// opset too, unchecked). Refit's own lowering reads the opset (batchnorm-train.ts writes the
// opset-14 training-mode node), so what it emits is valid at the lifted opset.
import type { Model, Node } from '../onnx/ir.ts';
import { attrInt, attrInts, opsetVersion, isDefaultDomain as isDefault } from '../onnx/ir.ts';

export const STEP_OPSET = 16;

/** On by default; tests and bench/step-forms.ts switch it off to compare with the opset-13 form. */
export const stepOpsetLift: { current: boolean } = { current: true };

/** Why a node forbids the lift, or null. */
function refusal(n: Node): string | null {
  if (!isDefault(n)) return null;
  if (n.opType === 'BatchNormalization' && n.outputs.slice(1).some(Boolean)) return `BatchNormalization '${n.name}' has training-mode outputs`;
  if (n.opType === 'RoiAlign') return `RoiAlign '${n.name}' changed its default at opset 16`;
  if (n.opType === 'If' || n.opType === 'Loop' || n.opType === 'Scan') return `${n.opType} '${n.name}' has a subgraph`;
  return null;
}

/** A MaxPool whose windows overlap (some stride below the dilated kernel extent): the one the lift is for. */
export function hasOverlappingMaxPool(model: Model): boolean {
  return model.graph.nodes.some((n) => {
    if (!isDefault(n) || n.opType !== 'MaxPool') return false;
    const k = attrInts(n, 'kernel_shape') ?? [];
    const s = attrInts(n, 'strides') ?? k.map(() => 1);
    const d = attrInts(n, 'dilations') ?? k.map(() => 1);
    return k.some((ki, i) => (s[i] ?? 1) < (ki - 1) * (d[i] ?? 1) + 1);
  });
}

/**
 * An embedding this large lifts the step too: below opset 16 its gradient is a one-hot
 * [rows, tokens] matrix times the output gradient; at 16 one ScatterElements with reduction 'add'.
 */
export const EMBEDDING_ROWS = 256;

/** Rows of the largest table a Gather reads from an initializer along axis 0 (an embedding's vocabulary), or 0. */
export function largestEmbedding(model: Model): number {
  let rows = 0;
  for (const n of model.graph.nodes) {
    if (!isDefault(n) || n.opType !== 'Gather' || attrInt(n, 'axis', 0) !== 0) continue;
    const t = model.graph.initializers.get(n.inputs[0]!);
    if (t && t.dims.length === 2) rows = Math.max(rows, t.dims[0]!);
  }
  return rows;
}

/**
 * The model a step is built from: `model` itself, or (when the lift applies) a shallow copy whose
 * default-domain import reads STEP_OPSET. Graph and initializers are shared, never modified
 * (buildStepGraph clones what it changes).
 */
export function stepSource(model: Model): { model: Model; lifted: boolean; why: string } {
  const v = opsetVersion(model);
  if (!stepOpsetLift.current) return { model, lifted: false, why: 'lift switched off' };
  if (v < 13 || v >= STEP_OPSET) return { model, lifted: false, why: `opset ${v}` };
  const pool = hasOverlappingMaxPool(model), vocab = largestEmbedding(model);
  if (!pool && vocab < EMBEDDING_ROWS) return { model, lifted: false, why: 'no overlapping MaxPool and no large embedding' };
  for (const n of model.graph.nodes) {
    const r = refusal(n);
    if (r) return { model, lifted: false, why: r };
  }
  const opsets = model.opsets.map((o) => (o.domain === '' || o.domain === 'ai.onnx' ? { ...o, version: STEP_OPSET } : { ...o }));
  // Opset 16 belongs to IR version 8.
  return { model: { ...model, irVersion: Math.max(model.irVersion, 8), opsets }, lifted: true, why: pool ? `overlapping MaxPool at opset ${v}` : `embedding of ${vocab} rows at opset ${v}` };
}
