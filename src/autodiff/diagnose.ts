// Which parameter groups of a model can train, and what blocks the others: a pure graph walk
// (no onnxruntime), the function behind an `inspect`-style report. For each group of candidate
// parameters (by the kind of layer that reads them) it lists the ops on their gradient path that
// have no gradient rule, with the nodes, and which ops compile by lowering (LSTM, fused ops).
import type { Graph, Model, Node } from '../onnx/ir.ts';
import { attrInt, attrTensor } from '../onnx/ir.ts';
import { type DType, isFloat, dtypeFromOnnx } from '../onnx/tensor.ts';
import { applyExporterQuirks } from '../onnx/exporter-quirks.ts';
import { withUnrolledLoops, unrollPlan } from '../onnx/unroll-loop.ts';
import { parameterCandidates } from '../train/params.ts';
import { NO_GRADIENT_OPS } from './rule.ts';
import { findBlockers, nodesOnPath, isDefaultDomain } from './missing-rules.ts';
import { isLowerable, loweringVerdict } from './lower/index.ts';
import { staticTensors } from '../onnx/fold.ts';
import './rules/index.ts';

export interface DiagnoseOptions {
  /** Parameters to consider; default every candidate ('all' as compileTrainStep sees it). */
  params?: readonly string[];
  /** Tensors the gradient flows back from; default the graph outputs. */
  targets?: readonly string[];
  /** Group name per parameter; default by the kind of layer reading it (see GROUP_ORDER). */
  groupOf?: (param: string, graph: Graph) => string;
}

export interface GroupBlocker {
  opType: string;
  /** '' for the default domain. */
  domain: string;
  nodes: string[];
  /** Set when the op has a rule or a lowering but this node's form is refused. */
  reason?: string;
}

export interface ParamGroup {
  name: string;
  params: string[];
  /** True when every op on the group's gradient path has a rule (or is lowered). */
  trainable: boolean;
  blockers: GroupBlocker[];
  /** Parameters of the group that no target depends on (their gradient would be absent). */
  unreached: string[];
}

export interface Diagnosis {
  groups: ParamGroup[];
  /** Every blocked op over all parameters, with the groups whose path it lies on. */
  unsupportedOps: (GroupBlocker & { groups: string[]; params: string[] })[];
  /** Nodes per op type in the whole graph (non-default domains as 'domain:Op'). */
  opCounts: Record<string, number>;
  /** Ops without a rule of their own that compile by lowering when on the path (LSTM, fused ops; an If on a shape, inlined). */
  lowered: { opType: string; nodes: string[] }[];
  /** The same as readable lines. */
  summary: string[];
}

/**
 * Sequence ops and the inputs that must be fixed for them to resolve into tensors
 * (../onnx/static-sequences.ts): positions, and SplitToSequence's sizes.
 */
const SEQUENCE_POSITIONS: Record<string, number[]> = {
  SequenceEmpty: [], SequenceConstruct: [], SequenceLength: [], ConcatFromSequence: [],
  SequenceAt: [1], SequenceInsert: [2], SequenceErase: [1], SplitToSequence: [1],
};

/** Integer layers lowerQuantized (lower/quant.ts) rewrites in float when a trainable lies upstream. */
const INT8_LAYERS = new Set(['MatMulInteger', 'ConvInteger', 'com.microsoft:DynamicQuantizeMatMul', 'com.microsoft:MatMulIntegerToFloat']);

export const GROUP_ORDER = ['conv weights', 'linear weights', 'recurrent weights', 'norm affine', 'biases', 'embeddings', 'quantization scales', 'other'] as const;

/** Diagnose which parameter groups can train; never throws on an unknown op. */
export function diagnoseTraining(source: Model, opts: DiagnoseOptions = {}): Diagnosis {
  const exported = applyExporterQuirks(source).model; // the parameters RefitModel would see
  // A Loop with a constant trip count is unrolled when a step compiles (PyTorch's tensor_split), so
  // the paths are judged on the unrolled graph; the op counts stay the export's.
  const model = withUnrolledLoops(exported);
  const g = model.graph;
  const params = opts.params ? [...opts.params] : parameterCandidates(g);
  const targets = opts.targets ? [...opts.targets] : g.outputs.map((o) => o.name);
  const dtypes = inferDtypes(g);
  const isFloatT = (t: string) => { const d = dtypes.get(t); return d === undefined || isFloat(d); };
  // An If on a value the input shapes fix (PyTorch's `if x.dim() == 3:`) is inlined when a step compiles.
  const fixed = staticTensors(g, params);
  const judge = (n: Node) => (isDefaultDomain(n) && (
    (n.opType === 'If' && fixed.has(n.inputs[0]!))
    // a Loop whose trip count the shapes fix, unrolled once a step folds it; the sequences it builds resolve then
    || (n.opType === 'Loop' && fixed.has(n.inputs[0]!) && typeof unrollPlan(g, n, { tripCountFixed: true }) !== 'string')
    || (SEQUENCE_POSITIONS[n.opType] !== undefined && SEQUENCE_POSITIONS[n.opType]!.every((i) => !n.inputs[i] || fixed.has(n.inputs[i]!)))
  ) ? null : loweringVerdict(n, g));
  const groupOf = opts.groupOf ?? ((p: string) => paramKind(p, g));

  const byGroup = new Map<string, string[]>();
  for (const p of params) {
    const k = groupOf(p, g);
    const list = byGroup.get(k);
    if (list) list.push(p); else byGroup.set(k, [p]);
  }
  const names = [...byGroup.keys()].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  const groups: ParamGroup[] = names.map((name) => {
    const ps = byGroup.get(name)!;
    const q = { nodes: g.nodes, wrt: ps, targets, isFloat: isFloatT, judge };
    const blockers = findBlockers(q).map(({ opType, domain, nodes, reason }) => ({ opType, domain, nodes, ...(reason ? { reason } : {}) }));
    // A parameter is reached when a target depends on it through ops that carry gradient.
    const { reach } = nodesOnPath(q);
    const unreached = ps.filter((p) => !reach.has(p));
    return { name, params: ps, trainable: blockers.length === 0 && unreached.length < ps.length, blockers, unreached };
  });

  const groupOfParam = new Map<string, string>();
  for (const gr of groups) for (const p of gr.params) groupOfParam.set(p, gr.name);
  const unsupportedOps = findBlockers({ nodes: g.nodes, wrt: params, targets, isFloat: isFloatT, judge }).map((b) => ({
    opType: b.opType, domain: b.domain, nodes: b.nodes, ...(b.reason ? { reason: b.reason } : {}),
    params: b.params, groups: [...new Set(b.params.map((p) => groupOfParam.get(p)!))],
  }));

  const opCounts: Record<string, number> = {};
  const lowered = new Map<string, string[]>();
  const loops = new Map(g.nodes.filter((x) => x.opType === 'Loop').map((x) => [x.name, x]));
  const kept = new Set(g.nodes.map((x) => x.name)); // what the unrolling before compiling left
  for (const n of exported.graph.nodes) {
    const key = isDefaultDomain(n) ? n.opType : `${n.domain}:${n.opType}`;
    opCounts[key] = (opCounts[key] ?? 0) + 1;
    const loop = n.opType === 'Loop' && isDefaultDomain(n) ? loops.get(n.name) : undefined;
    const unrolled = n.opType === 'Loop' && isDefaultDomain(n) && (!loop || judge(loop) === null);
    const resolved = SEQUENCE_POSITIONS[n.opType] !== undefined && isDefaultDomain(n) && (!kept.has(n.name) || judge(n) === null);
    // an int8 layer of onnxruntime's dynamic quantization: lowered to float with a straight-through gradient (lower/quant.ts)
    const int8 = INT8_LAYERS.has(key);
    if (((isLowerable(n) || n.opType === 'If') && judge(n) === null) || unrolled || resolved || int8) { // an If: inlined; a Loop: unrolled; a sequence op: resolved to tensors
      const l = lowered.get(key);
      if (l) l.push(n.name); else lowered.set(key, [n.name]);
    }
  }
  const summary = groups.map((gr) => {
    const head = `${gr.name} (${gr.params.length}): `;
    if (gr.trainable && gr.unreached.length === 0) return `${head}trainable`;
    const parts = gr.blockers.map((b) => `${b.domain ? `${b.domain}:` : ''}${b.opType} ×${b.nodes.length}${b.reason ? ` (${b.reason})` : ''}`);
    if (gr.unreached.length) parts.push(`${gr.unreached.length} not reaching any output`);
    return `${head}${gr.blockers.length ? 'blocked by ' : ''}${parts.join(', ')}`;
  });
  return { groups, unsupportedOps, opCounts, lowered: [...lowered].map(([opType, nodes]) => ({ opType, nodes })), summary };
}

function rank(group: string): number {
  const i = (GROUP_ORDER as readonly string[]).indexOf(group);
  return i < 0 ? GROUP_ORDER.length : i;
}

// Ops a weight passes through unchanged in kind before the layer that uses it (exporters
// transpose, reshape, slice and concatenate weights, e.g. torch.onnx's LSTM gate reordering).
const PASS_THROUGH = new Set(['Identity', 'Transpose', 'Cast', 'Reshape', 'Unsqueeze', 'Squeeze', 'Slice', 'Concat', 'Split', 'Expand', 'Flatten', 'DequantizeLinear']);

/** The kind of layer that reads a parameter: the first non-pass-through consumer and its slot. */
export function paramKind(p: string, g: Graph): string {
  const readers = readersOf(g);
  const rankOf = g.initializers.get(p)?.dims.length ?? 0;
  const seen = new Set<string>();
  const queue = [p];
  while (queue.length) {
    const t = queue.shift()!;
    if (seen.has(t)) continue;
    seen.add(t);
    for (const [n, i] of readers.get(t) ?? []) {
      if (n.opType === 'DequantizeLinear' && i > 0) return 'quantization scales';
      if (PASS_THROUGH.has(n.opType) && isDefaultDomain(n)) { queue.push(...n.outputs.filter(Boolean)); continue; }
      const k = kindAt(n, i, rankOf, p);
      if (k) return k;
    }
  }
  return kindByName(p);
}

const READERS = new WeakMap<Graph, Map<string, [Node, number][]>>();
function readersOf(g: Graph): Map<string, [Node, number][]> {
  let r = READERS.get(g);
  if (!r) {
    r = new Map();
    for (const n of g.nodes) n.inputs.forEach((x, i) => { if (x) { const l = r!.get(x); if (l) l.push([n, i]); else r!.set(x, [[n, i]]); } });
    READERS.set(g, r);
  }
  return r;
}

function kindAt(n: Node, i: number, rankOf: number, p: string): string | undefined {
  switch (n.opType) {
    case 'Conv': case 'ConvTranspose': case 'FusedConv':
      return i === 1 ? 'conv weights' : i === 2 ? 'biases' : undefined;
    case 'Gemm': case 'FusedGemm':
      return i === 2 ? 'biases' : 'linear weights';
    case 'MatMul': case 'Einsum': case 'FusedMatMul':
      return rankOf >= 2 ? 'linear weights' : undefined;
    case 'Attention':
      return i === 1 ? 'linear weights' : i === 2 ? 'biases' : undefined;
    case 'LSTM': case 'GRU': case 'RNN':
      return 'recurrent weights';
    case 'BatchNormalization': case 'LayerNormalization': case 'InstanceNormalization': case 'GroupNormalization':
    case 'SimplifiedLayerNormalization':
      return i === 1 || i === 2 ? 'norm affine' : undefined;
    case 'SkipLayerNormalization': case 'SkipSimplifiedLayerNormalization':
      return i === 2 || (i === 3 && n.opType === 'SkipLayerNormalization') ? 'norm affine' : i >= 3 ? 'biases' : undefined;
    case 'Gather':
      return i === 0 ? 'embeddings' : undefined;
    case 'EmbedLayerNormalization':
      return i >= 2 && i <= 4 ? 'embeddings' : i === 5 || i === 6 ? 'norm affine' : undefined;
    case 'FastGelu': case 'BiasGelu':
      return i === 1 ? 'biases' : undefined;
    case 'Add': case 'Mul':
      // A decomposed LayerNorm's affine is a rank-1 Mul and Add: told apart from biases by name.
      if (rankOf > 1) return undefined;
      return kindByName(p) === 'norm affine' ? 'norm affine' : n.opType === 'Add' ? 'biases' : undefined;
    default:
      return undefined;
  }
}

function kindByName(p: string): string {
  const s = p.toLowerCase();
  if (/(norm|(^|[._])(ln|bn|gn)(_?\d+)?([._]|$))/.test(s)) return 'norm affine';
  if (/(^|[._])(bias|b)$/.test(s)) return 'biases';
  if (/embed|(^|[._])wte|(^|[._])wpe/.test(s)) return 'embeddings';
  return 'other';
}

/** Element types of graph tensors where cheap to know (unknown ones are treated as float). */
export function inferDtypes(g: Graph): Map<string, DType> {
  const d = new Map<string, DType>();
  for (const [k, t] of g.initializers) d.set(k, t.dtype);
  for (const v of g.inputs) d.set(v.name, v.dtype);
  const set = (n: Node, i: number, t: DType | undefined) => { const o = n.outputs[i]; if (o && t) d.set(o, t); };
  const firstKnown = (n: Node) => n.inputs.map((x) => (x ? d.get(x) : undefined)).find((t) => t !== undefined);
  for (const n of g.nodes) {
    const op = n.opType;
    if (!isDefaultDomain(n)) { set(n, 0, firstKnown(n)); continue; }
    if (op === 'Cast') { const to = attrInt(n, 'to'); set(n, 0, to !== undefined ? safeDtype(to) : undefined); continue; }
    if (op === 'CastLike') { set(n, 0, d.get(n.inputs[1] ?? '')); continue; }
    if (op === 'Constant') { set(n, 0, attrTensor(n, 'value')?.dtype ?? (n.attrs.value_int || n.attrs.value_ints ? 'int64' : 'float32')); continue; }
    if (op === 'ConstantOfShape') { set(n, 0, attrTensor(n, 'value')?.dtype ?? 'float32'); continue; }
    if (['Shape', 'Size', 'ArgMax', 'ArgMin', 'NonZero', 'NonMaxSuppression'].includes(op)) { set(n, 0, 'int64'); continue; }
    if (['Equal', 'Less', 'LessOrEqual', 'Greater', 'GreaterOrEqual', 'Not', 'And', 'Or', 'Xor', 'IsNaN', 'IsInf'].includes(op)) { set(n, 0, 'bool'); continue; }
    if (op === 'TopK') { set(n, 0, firstKnown(n)); set(n, 1, 'int64'); continue; }
    if (op === 'Where') { set(n, 0, d.get(n.inputs[1] ?? '') ?? d.get(n.inputs[2] ?? '')); continue; }
    if (op === 'QuantizeLinear' || op === 'DynamicQuantizeLinear') { set(n, 0, d.get(n.inputs[2] ?? '') ?? 'uint8'); if (op === 'DynamicQuantizeLinear') { set(n, 1, 'float32'); set(n, 2, 'uint8'); } continue; }
    if (op === 'DequantizeLinear') { set(n, 0, d.get(n.inputs[1] ?? '') ?? 'float32'); continue; }
    if (op === 'MatMulInteger' || op === 'ConvInteger') { set(n, 0, 'int32'); continue; }
    if (op === 'OneHot') { set(n, 0, d.get(n.inputs[2] ?? '')); continue; }
    // The signal ops' outputs are of their output_datatype (float by default), whatever their inputs.
    if (['MelWeightMatrix', 'HannWindow', 'HammingWindow', 'BlackmanWindow'].includes(op)) { set(n, 0, safeDtype(attrInt(n, 'output_datatype', 1))); continue; }
    if (op === 'If' || op === 'Loop' || op === 'Scan') continue; // outputs typed by the subgraphs (unknown: treated as float)
    if (NO_GRADIENT_OPS.has(op) && op !== 'Sign' && op !== 'Floor' && op !== 'Ceil' && op !== 'Round') { continue; }
    const t = firstKnown(n);
    n.outputs.forEach((_, i) => set(n, i, t));
  }
  return d;
}

function safeDtype(code: number): DType | undefined {
  try { return dtypeFromOnnx(code); } catch { return undefined; }
}
