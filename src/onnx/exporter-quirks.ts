// Load-time repairs for how exporters store parameters, so that selection, PEFT and saving
// see every parameter as one initializer under its own name:
// - torch.onnx's Constant nodes that onnxruntime's transformer optimizer stored as initializers
//   (`/…/Constant_11_output_0`) become Constant nodes again: computed buffers, not parameters;
// - weights written as `Constant` nodes (paddle2onnx) become initializers named after the output
//   (not in torch.onnx's exports, which store every parameter as an initializer: their float
//   Constants are computed buffers, such as a diffusion U-Net's timestep frequencies);
// - `Identity` aliases of initializers (torch.onnx ≥ 1.13 stores equal tensors once and routes
//   the others through Identity nodes): by default (`keepTies: 'auto'`) an alias of a tensor of
//   one value (fresh BatchNorm ones, zero biases: separate parameters that happen to be equal)
//   becomes its own initializer, and an alias of any other tensor stays a tie (one weight used
//   twice, whose folded copies the exporter merged: DeBERTa's shared key projections, a module
//   called in every decoder layer), unless another layer reads the copy or the file shows
//   separate parameters of equal values (QuirkOptions); `false` unties every alias, `true` keeps
//   every one;
// - BatchNorm running statistics that share storage with anything else (a weight, another BN)
//   get their own copy, always: a buffer must never sit on a parameter's gradient path;
// - a weight stored again transposed (constant folding of a tied lm_head) is read as a Transpose
//   of the original, so the tie trains as one parameter (with 'auto' and true).
// The caller's Model and tensors are never mutated: a changed model is a clone, and every
// tensor the pass writes is a fresh copy.
import type { Graph, Model, Node } from './ir.ts';
import { cloneModel, opsetVersion } from './ir.ts';
import { decomposeStatelessBatchNorms } from './stateless-batchnorm.ts';
import { type Tensor, cloneTensor, isFloat } from './tensor.ts';
import { GENERATED_NAME, modulePathOfNode } from './node-scope.ts';

export interface QuirkOptions {
  /**
   * torch.onnx's ties. It stores equal tensors once, routing the other uses through an `Identity`
   * alias, and folds a tied `lm_head` (`x @ wte.T`) into a MatMul with a transposed copy of the
   * embedding. A kept tie is one parameter whose gradient sums its uses, as PyTorch trains a
   * weight used twice; asking to train an alias by name is then an error that names its source.
   *
   * - `'auto'` (default): keep the ties of tensors with more than one value, which no two
   *   separately trained parameters share, where the nodes' names do not place the two uses in
   *   different modules (an untrained Mamba's `A_log` is equal in every layer by its
   *   initialisation); untie tensors of one value (fresh BatchNorm ones and
   *   zero biases, separate parameters in PyTorch). When an alias under a parameter's own name
   *   (a weight or bias) holds more than two values, the file holds separate parameters that are
   *   equal (an untrained model whose layers were deep-copied), so every tie is undone, as with
   *   `false`. Not caught: such a model without biases.
   * - `true`: keep every tie. `false`: each alias and each transposed copy is its own parameter.
   *
   * BatchNorm running statistics are untied either way.
   */
  keepTies?: boolean | 'auto';
}

export interface QuirkReport {
  /** Constant nodes turned into initializers (their output names). */
  constants: string[];
  /** Identity outputs turned into their own initializers. */
  untied: string[];
  /**
   * Of `untied`, the aliases of a tensor of several values read by another module (keepTies
   * 'auto'): equal copies in two layers of an untrained model, or one weight that two modules
   * share (TabNet's shared GLU layers). The file cannot tell which; `keepTies: true` ties them.
   */
  untiedAcrossModules?: string[];
  /** Identity aliases kept as ties: [alias, the initializer it reads]. */
  tied: [string, string][];
  /** BatchNorm running statistics given their own copy: [node, old name, new name]. */
  statCopies: [string, string, string][];
  /** Transposed copies now read as Transpose(original): [copy, original]. */
  retied: [string, string][];
  /** keepTies 'auto': the alias under a parameter's own name, of more than one value, for which every tie was undone. */
  equalParameters?: string;
  /** Training-mode BatchNormalization nodes that were no BatchNorm layer (weight standardization), now standard ops. */
  standardized?: string[];
  /** Initializers an optimizer made of torch.onnx's Constant nodes, Constant nodes again (their names). */
  restoredConstants?: string[];
}

/** How torch.onnx names a Constant node's output: `/…/Constant_11_output_0`, `/Constant_output_0`. */
const TORCH_CONSTANT_OUTPUT = /(^|\/)Constant(_\d+)?_output_0$/;

/**
 * Input slots that carry shapes, indices, axes, scales or bounds, never data a parameter would
 * flow through. A float tensor read only in such slots is a constant, not a parameter.
 */
export const CONTROL_SLOTS: Record<string, readonly number[]> = {
  Reshape: [1], Expand: [1], Tile: [1], Slice: [1, 2, 3, 4], Resize: [1, 2, 3], Upsample: [1],
  Pad: [1, 3], ConstantOfShape: [0], Range: [0, 1, 2], Squeeze: [1], Unsqueeze: [1], Split: [1],
  ReduceSum: [1], ReduceMean: [1], ReduceMax: [1], ReduceMin: [1], ReduceProd: [1], ReduceL2: [1],
  ReduceSumSquare: [1], ReduceLogSumExp: [1], TopK: [1], Gather: [1], GatherElements: [1],
  GatherND: [1], ScatterND: [1], ScatterElements: [1], OneHot: [0, 1], CumSum: [1], Shape: [0],
  Size: [0], Clip: [1, 2], Trilu: [1], NonZero: [0], EyeLike: [0],
  // Quantization scales and zero points: refit keeps them constant (the straight-through
  // convention of src/autodiff/rules/quant.ts; no LSQ), and a lowered layer dequantizes its weight
  // once, after which nothing reads a fused layer's weight scale at all. Listed so that 'all' offers
  // the same parameters before and after onnxruntime's optimizer fuses QDQ pairs into com.microsoft
  // MatMulIntegerToFloat (level 'extended'/'all'). See also quantizationControls below.
  QuantizeLinear: [1, 2], DequantizeLinear: [1, 2], MatMulInteger: [2, 3],
  MatMulIntegerToFloat: [2, 3, 4, 5], DynamicQuantizeMatMul: [2, 3],
  QLinearMatMul: [1, 2, 4, 5, 6, 7], QLinearConv: [1, 2, 4, 5, 6, 7],
  // com.microsoft's low-bit weight (src/onnx/nbits.ts): its scales and zero points, and g_idx;
  // and its low-bit embedding table (onnxruntime-genai's 4-bit tied embeddings): scales, zero points
  MatMulNBits: [2, 3, 4], GatherBlockQuantized: [2, 3],
  // Rotary position tables (cos/sin caches) and positions: buffers in every model that has them
  // (RotaryEmbedding's slots 1-3 are position_ids, cos, sin in com.microsoft's and cos, sin,
  // position_ids in opset 23's), and GroupQueryAttention's seqlens_k, total length, cos, sin.
  RotaryEmbedding: [1, 2, 3], GroupQueryAttention: [5, 6, 7, 8],
};

/** Ops whose control slots above include a rotary position table, for the message that names it. */
export const ROTARY_TABLE_OPS = new Set(['RotaryEmbedding', 'GroupQueryAttention']);

const QUANT_CONTROL_OPS = new Set(['QuantizeLinear', 'DequantizeLinear', 'MatMulInteger', 'MatMulIntegerToFloat', 'DynamicQuantizeMatMul', 'QLinearMatMul', 'QLinearConv', 'MatMulNBits', 'GatherBlockQuantized']);

/**
 * Slot predicate for one graph: CONTROL_SLOTS, plus the weight scale of onnxruntime's unfused
 * dynamic quantization (quantize_dynamic: MatMulInteger → Cast → Mul by Mul(x_scale, w_scale),
 * x_scale a DynamicQuantizeLinear's output 1). That Mul is an ordinary op, so only the graph
 * around it tells its w_scale is a quantization scale.
 */
function controlSlots(g: Graph): (n: Node, i: number) => boolean {
  const dynScales = dynamicScales(g);
  return (n, i) => (CONTROL_SLOTS[n.opType]?.includes(i) ?? false) || isDynamicWeightScale(n, i, dynScales);
}

/** The activation scales DynamicQuantizeLinear nodes compute (their output 1). */
const dynamicScales = (g: Graph) => new Set(g.nodes.flatMap((n) => (n.opType === 'DynamicQuantizeLinear' && n.outputs[1] ? [n.outputs[1]] : [])));

const isDynamicWeightScale = (n: Node, i: number, dynScales: ReadonlySet<string>) =>
  n.opType === 'Mul' && n.inputs.length === 2 && i < 2 && dynScales.has(n.inputs[1 - i]!) && !dynScales.has(n.inputs[i]!);

/**
 * Tensors read in a quantization scale or zero-point slot, each with its first such reader and
 * slot (for the refusal that names it).
 */
export function quantizationControls(g: Graph): Map<string, [Node, number]> {
  const dynScales = dynamicScales(g);
  const out = new Map<string, [Node, number]>();
  for (const n of g.nodes) n.inputs.forEach((x, i) => {
    if (!x || out.has(x)) return;
    if ((QUANT_CONTROL_OPS.has(n.opType) && CONTROL_SLOTS[n.opType]!.includes(i)) || isDynamicWeightScale(n, i, dynScales)) out.set(x, [n, i]);
  });
  return out;
}

/** True if some node reads `name` in a data slot (not only as a shape, index, axis or bound). */
export function readAsData(graph: Graph, name: string): boolean {
  const isControlSlot = controlSlots(graph);
  for (const n of graph.nodes) for (let i = 0; i < n.inputs.length; i++) if (n.inputs[i] === name && !isControlSlot(n, i)) return true;
  return false;
}

/** The first node reading `name`, with the slot: for error messages. */
export function firstReader(graph: Graph, name: string): [Node, number] | undefined {
  for (const n of graph.nodes) for (let i = 0; i < n.inputs.length; i++) if (n.inputs[i] === name) return [n, i];
  return undefined;
}

/** Index of the first non-finite element of a float tensor, or -1. float16 is read from its bits. */
export function firstNonFinite(t: Tensor): number {
  if (!isFloat(t.dtype)) return -1;
  const d = t.data as ArrayLike<number>;
  if (t.dtype === 'float16') {
    for (let i = 0; i < d.length; i++) if ((d[i]! & 0x7c00) === 0x7c00) return i;
    return -1;
  }
  for (let i = 0; i < d.length; i++) if (!Number.isFinite(d[i]!)) return i;
  return -1;
}

/**
 * What counts as a weight among Constant nodes: a float tensor with at least 2 elements, all
 * finite, not all equal, read as data by some node. Why: torch.onnx writes its own constants as
 * Constant nodes too: scalars (epsilon, the 2 of Pow, 1/√d), shapes and axes (integers), and
 * the all-ones / all-zeros scale and bias of the InstanceNormalization inside an exported
 * GroupNorm or a non-affine InstanceNorm. None of those are PyTorch parameters; trained
 * weights are never exactly uniform, so uniform tensors stay constants. Known cost: an untrained
 * paddle2onnx model whose bias is still all zeros keeps that bias as a constant.
 */
export function isWeightConstant(t: Tensor): boolean {
  if (!isFloat(t.dtype) || t.data.length < 2 || firstNonFinite(t) >= 0) return false;
  const d = t.data as ArrayLike<number>;
  for (let i = 1; i < d.length; i++) if (d[i] !== d[0]) return true;
  return false;
}

function constantValue(n: Node): Tensor | undefined {
  if (n.opType !== 'Constant' || (n.domain !== '' && n.domain !== 'ai.onnx')) return undefined;
  const v = n.attrs.value;
  if (v?.kind === 'tensor') return v.value as Tensor;
  const fs = n.attrs.value_floats;
  if (fs?.kind === 'floats') return { dtype: 'float32', dims: [fs.value.length], data: Float32Array.from(fs.value) };
  return undefined;
}

/** Apply the repairs. Returns the input model itself when nothing changed, else a repaired clone. */
export function applyExporterQuirks(source: Model, opts: QuirkOptions = {}): { model: Model; report: QuirkReport } {
  const report: QuirkReport = { constants: [], untied: [], tied: [], statCopies: [], retied: [] };
  const model = cloneModel(source); // nodes and maps copied; tensors shared until replaced
  const g = model.graph;
  const outputs = new Set(g.outputs.map((o) => o.name));
  let changed = false;

  // 1. Constant weights → initializers (named after the Constant's output). The inputs of a
  // DequantizeLinear (int8 weight, scale, zero point: a quantized weight) count as weights too,
  // so adapters find the quantized layers of a paddle-style int8 model (and of torch's quantized
  // models, whose packed weights torch.onnx writes as Constants). Any other float Constant in a
  // torch.onnx export is what PyTorch computed from buffers, never a parameter ('all' would train it).
  const fromTorch = source.producerName === 'pytorch';

  // 0. onnxruntime's transformer optimizer, run on a torch.onnx export, stores the export's
  // Constant nodes as initializers under their output names: computed buffers (an attention's
  // 1/√d, a mask's fill value), never parameters, which 'all' would train. They become Constant
  // nodes again, which step 1 treats as it treats the export's own.
  const restored = new Set<string>();
  if (fromTorch || source.producerName === 'onnxruntime.transformers') {
    const inputs = new Set(g.inputs.map((i) => i.name));
    const nodes: Node[] = [];
    for (const [name, t] of g.initializers) {
      if (!TORCH_CONSTANT_OUTPUT.test(name) || inputs.has(name) || outputs.has(name)) continue;
      nodes.push({ name: name.replace(/_output_0$/, ''), opType: 'Constant', domain: '', inputs: [], outputs: [name], attrs: { value: { kind: 'tensor', value: t } } });
      g.initializers.delete(name);
      restored.add(name);
    }
    if (nodes.length) {
      g.nodes = [...nodes, ...g.nodes];
      report.restoredConstants = [...restored];
      changed = true;
    }
  }
  const isData = dataReaders(g);
  const dequantized = new Set<string>();
  for (const n of g.nodes) if (n.opType === 'DequantizeLinear') for (const i of n.inputs) if (i) dequantized.add(i);
  g.nodes = g.nodes.filter((n) => {
    const t = constantValue(n);
    const out = n.outputs[0];
    if (!t || !out || outputs.has(out) || g.initializers.has(out)) return true;
    if (!dequantized.has(out) && (fromTorch || restored.has(out) || !isData.has(out) || !isWeightConstant(t))) return true;
    g.initializers.set(out, cloneTensor(t));
    report.constants.push(out);
    changed = true;
    return false;
  });

  // 2. Identity aliases of initializers. Nodes are in topological order, so chains resolve.
  const statSlots = new Set<string>();
  for (const n of g.nodes) if (n.opType === 'BatchNormalization') for (const s of n.inputs.slice(3, 5)) if (s) statSlots.add(s);
  const equal = (opts.keepTies ?? 'auto') === 'auto' ? equalParameters(g) : undefined;
  if (equal) report.equalParameters = equal;
  const mode = opts.keepTies === true ? 'all' : opts.keepTies === false || equal ? 'none' : 'varied';
  const scopes = callScopes(g);
  g.nodes = g.nodes.filter((n) => {
    if (!isInitializerAlias(g, n)) return true;
    const src = n.inputs[0]!, out = n.outputs[0]!;
    const t = g.initializers.get(src)!;
    if (outputs.has(out) || g.initializers.has(out)) return true;
    const keep = mode === 'all' || (mode === 'varied' && isFloat(t.dtype) && !uniform(t) && sameModule(scopes(src), scopes(out)));
    if (keep && !statSlots.has(out)) { report.tied.push([out, src]); return true; }
    g.initializers.set(out, cloneTensor(t));
    report.untied.push(out);
    if (mode === 'varied' && isFloat(t.dtype) && !uniform(t)) (report.untiedAcrossModules ??= []).push(out);
    changed = true;
    return false;
  });

  // 3. Running statistics that share a tensor with anything else get their own copy.
  const uses = new Map<string, number>();
  for (const n of g.nodes) for (const i of n.inputs) if (i) uses.set(i, (uses.get(i) ?? 0) + 1);
  const taken = new Set<string>();
  for (const n of g.nodes) {
    if (n.opType !== 'BatchNormalization') continue;
    for (const slot of [3, 4]) {
      const s = n.inputs[slot];
      const t = s ? g.initializers.get(s) : undefined;
      if (!s || !t) continue;
      if ((uses.get(s) ?? 0) > 1 || outputs.has(s) || taken.has(s)) {
        const fresh = freshName(g, `${n.name || n.outputs[0]}.${slot === 3 ? 'running_mean' : 'running_var'}`);
        g.initializers.set(fresh, cloneTensor(t));
        n.inputs[slot] = fresh;
        report.statCopies.push([n.name, s, fresh]);
        uses.set(s, (uses.get(s) ?? 1) - 1);
        taken.add(fresh);
        changed = true;
      } else taken.add(s);
    }
  }

  // 4. A training-mode BatchNormalization whose statistics are no buffers and whose running
  // outputs nothing reads (timm's weight standardization) becomes the ops it computes.
  const decomposed = decomposeStatelessBatchNorms(g, opsetVersion(model));
  if (decomposed.length) { report.standardized = decomposed; changed = true; }

  // 5. Transposed copies of a weight become a Transpose of it (placed first: it reads only an
  // initializer).
  if (mode !== 'none') {
    for (const [copy, original] of transposedCopies(g)) {
      g.initializers.delete(copy);
      g.nodes.unshift({ name: freshName(g, `${copy}_tie`), opType: 'Transpose', domain: '', inputs: [original], outputs: [copy], attrs: { perm: { kind: 'ints', value: [1, 0] } } });
      report.retied.push([copy, original]);
      changed = true;
    }
  }
  return changed ? { model, report } : { model: source, report };
}

/**
 * Pairs [copy, original] of 2-D float initializers where the copy is exactly the original's
 * transpose. A table a Gather reads (an embedding) is taken as the original. Tensors of one value
 * (zeros, ones) are left alone: equal by construction, not by a tie.
 */
function transposedCopies(g: Graph): [string, string][] {
  const gathered = new Set(g.nodes.filter((n) => n.opType === 'Gather').map((n) => n.inputs[0]));
  const matrices = [...g.initializers].filter(([, t]) => t.dtype === 'float32' && t.dims.length === 2 && t.dims[0]! > 1 && t.dims[1]! > 1 && !uniform(t));
  const byDims = new Map<string, string[]>();
  for (const [k, t] of matrices) byDims.set(t.dims.join(), [...(byDims.get(t.dims.join()) ?? []), k]);
  matrices.sort(([a], [b]) => Number(gathered.has(b)) - Number(gathered.has(a)));
  const paired = new Set<string>();
  const out: [string, string][] = [];
  for (const [original, t] of matrices) {
    if (paired.has(original)) continue;
    const copy = (byDims.get(`${t.dims[1]},${t.dims[0]}`) ?? []).find((c) => c !== original && !paired.has(c) && isTransposeOf(g.initializers.get(c)!, t));
    if (!copy) continue;
    out.push([copy, original]);
    paired.add(copy).add(original);
  }
  return out;
}

/**
 * The modules that read each tensor, from torch.onnx's node names, with the suffix a repeated
 * call adds (`query_proj_1`, `layers.0_1`) removed: the uses of one module called twice share a
 * scope, two layers do not. Identity nodes and names without a module path are left out.
 */
function callScopes(g: Graph): (tensor: string) => Set<string> {
  const byTensor = new Map<string, Set<string>>();
  for (const n of g.nodes) {
    if (n.opType === 'Identity') continue;
    const path = modulePathOfNode(n.name);
    if (path === undefined) continue;
    const scope = path.split('.').map((p) => p.replace(/_\d+$/, '')).join('.');
    for (const i of n.inputs) if (i) (byTensor.get(i) ?? byTensor.set(i, new Set()).get(i)!).add(scope);
  }
  return (t) => byTensor.get(t) ?? new Set();
}

/**
 * Whether an alias is read in the module that reads its source (one module called twice:
 * DeBERTa's `key_proj` and `key_proj_1`), or the names do not say. Equal tensors read by two
 * layers are two parameters that happen to be equal: an untrained Mamba's `A_log`, which its
 * initialisation makes the same in every layer.
 */
function sameModule(a: Set<string>, b: Set<string>): boolean {
  if (a.size === 0 || b.size === 0) return true;
  for (const x of a) if (b.has(x)) return true;
  return false;
}

const isInitializerAlias = (g: Graph, n: Node) =>
  n.opType === 'Identity' && (n.domain === '' || n.domain === 'ai.onnx') && !!n.inputs[0] && !!n.outputs[0] && g.initializers.has(n.inputs[0]);

/**
 * An Identity alias under a parameter's own name (`layers.1.linear1.bias`: a weight or bias) whose
 * tensor holds more than two values: two separate PyTorch parameters that are equal, which
 * happens in an untrained model whose layers were deep-copied (nn.TransformerEncoder's random
 * biases) but not between trained weights. A weight used twice is one parameter: its only aliases
 * are folded copies under made-up names. Buffers equal in every layer are left out: a causal mask
 * holds two values, and its name (GPT-2's `attn.bias` aside) is not a weight's or a bias's.
 */
function equalParameters(g: Graph): string | undefined {
  for (const n of g.nodes) {
    if (!isInitializerAlias(g, n) || GENERATED_NAME.test(n.outputs[0]!) || !/(weight|bias)$/.test(n.outputs[0]!)) continue;
    const t = g.initializers.get(n.inputs[0]!)!;
    if (isFloat(t.dtype) && new Set(t.data as Float32Array).size > 2) return n.outputs[0]!;
  }
  return undefined;
}

function uniform(t: Tensor): boolean {
  const d = t.data as Float32Array;
  return d.every((v) => v === d[0]);
}

/** Whether `c` ([b, a]) is `t` ([a, b]) transposed, element for element. */
function isTransposeOf(c: Tensor, t: Tensor): boolean {
  const [a, b] = t.dims as [number, number];
  const cd = c.data as Float32Array, td = t.data as Float32Array;
  for (let i = 0; i < a; i++) for (let j = 0; j < b; j++) if (cd[j * a + i] !== td[i * b + j]) return false;
  return true;
}

export function dataReaders(g: Graph): Set<string> {
  const out = new Set<string>();
  const isControlSlot = controlSlots(g);
  for (const n of g.nodes) n.inputs.forEach((x, i) => { if (x && !isControlSlot(n, i)) out.add(x); });
  return out;
}

function freshName(g: Graph, base: string): string {
  const used = new Set<string>([...g.initializers.keys(), ...g.inputs.map((i) => i.name)]);
  for (const n of g.nodes) for (const o of n.outputs) used.add(o);
  let name = base;
  for (let k = 1; used.has(name); k++) name = `${base}_${k}`;
  return name;
}
