// Choosing which initializers train: names, a regex, a predicate or 'all'.
//
// How 'all' (and a regex or predicate, which filter the same candidates) decides: a candidate
// is a float initializer with at least one element that is not a buffer. Buffers are
// - BatchNormalization running statistics (inputs 3 and 4: updated by batchNorm: 'train', never trained);
// - tensors holding a non-finite value (an attention mask full of −inf);
// - integer and bool tensors;
// - float tensors read only as shapes, indices, axes, scales or bounds (Reshape's shape,
//   Resize's scales, Clip's bounds, quantization scales and zero points, rotary cos/sin tables…;
//   see CONTROL_SLOTS in src/onnx/exporter-quirks.ts);
// - the ε and the exponent inside a decomposed normalization (src/onnx/norm-layers.ts), which
//   some exporters store as initializers;
// - tensors from which no path to a graph output carries a gradient (nanoGPT's causal-mask
//   buffer reaches the output only through Equal → Where's condition). Named explicitly, such a
//   tensor is accepted and gets a zero gradient (a weight behind a Floor, say, is still a weight).
// A finite float buffer read as data (a sinusoidal position table, say) cannot be told from a
// parameter in ONNX: exclude it with a regex or predicate. Exporter quirks (weights as Constant
// nodes, torch.onnx's Identity aliases) are repaired when the model loads (exporter-quirks.ts).
import type { Graph } from '../onnx/ir.ts';
import type { Tensor } from '../onnx/tensor.ts';
import { isFloat } from '../onnx/tensor.ts';
import { dataReaders, firstNonFinite, firstReader, quantizationControls, ROTARY_TABLE_OPS } from '../onnx/exporter-quirks.ts';
import { findNormLayers } from '../onnx/norm-layers.ts';
import { closest } from '../util/closest.ts';
import { reachedFrom } from '../autodiff/missing-rules.ts';

export type ParamSelector = 'all' | RegExp | string | readonly string[] | ((name: string, t: Tensor) => boolean);

function runningStats(graph: Graph): Map<string, string> {
  const stats = new Map<string, string>();
  for (const n of graph.nodes) if (n.opType === 'BatchNormalization') {
    if (n.inputs[3]) stats.set(n.inputs[3], `running mean (input 3) of BatchNormalization node '${n.name}'`);
    if (n.inputs[4]) stats.set(n.inputs[4], `running variance (input 4) of BatchNormalization node '${n.name}'`);
  }
  return stats;
}

/** Initializers that are ε or an exponent inside a decomposed norm layer, read nowhere else: name → layer anchor. */
function normConstants(graph: Graph): Map<string, string> {
  const out = new Map<string, string>();
  // Unnamed nodes cannot be told apart by name: such layers are skipped (their constants stay candidates).
  const layers = findNormLayers(graph).filter((l) => l.constants?.length && l.nodes.every(Boolean));
  if (layers.length === 0) return out;
  const inside = new Set(layers.flatMap((l) => l.nodes));
  const readOutside = new Set<string>();
  for (const n of graph.nodes) if (!inside.has(n.name)) for (const i of n.inputs) readOutside.add(i);
  for (const l of layers) if (l.nodes.every(Boolean)) for (const c of l.constants!) if (graph.initializers.has(c) && !readOutside.has(c)) out.set(c, l.nodes[0]!);
  return out;
}

/** Tensors a gradient can flow back to from the graph's outputs. */
function gradientReach(graph: Graph): Set<string> {
  return reachedFrom(graph.nodes, graph.outputs.map((o) => o.name));
}

/** Float initializers that can carry a gradient: no buffer (see the comment at the top). */
export function parameterCandidates(graph: Graph): string[] {
  const stats = runningStats(graph);
  const normConst = normConstants(graph);
  const asData = dataReaders(graph);
  const read = new Set<string>();
  for (const n of graph.nodes) for (const i of n.inputs) if (i) read.add(i);
  const reach = gradientReach(graph);
  const out: string[] = [];
  for (const [name, t] of graph.initializers) {
    if (!isFloat(t.dtype) || t.data.length === 0 || stats.has(name) || normConst.has(name)) continue;
    if (read.has(name) && !asData.has(name)) continue;
    if (read.has(name) && !reach.has(name)) continue;
    if (firstNonFinite(t) >= 0) continue;
    out.push(name);
  }
  return out;
}

/**
 * Why `name` cannot be trained, as a sentence naming the node and what to do; undefined if it can.
 * Covers buffers, exporter aliases kept by `keepTies`, and tensors computed by a node.
 */
export function whyNotParameter(graph: Graph, name: string): string | undefined {
  const t = graph.initializers.get(name);
  if (!t) {
    const producer = graph.nodes.find((n) => n.outputs.includes(name));
    if (producer?.opType === 'Identity' && producer.inputs[0] && graph.initializers.has(producer.inputs[0])) {
      const src = producer.inputs[0];
      return `'${name}' is an exporter alias: Identity node '${producer.name}' copies initializer '${src}' (torch.onnx stores equal tensors once). It is kept as a tie (loadModel keeps the ties of tensors of more than one value, one weight used twice, by default, and every tie with keepTies: true); load with keepTies: false to train it as its own parameter, or train '${src}', which updates every tensor tied to it`;
    }
    if (producer) return `'${name}' is computed by node '${producer.name}' (${producer.opType}), not a stored parameter`;
    return undefined;
  }
  if (!isFloat(t.dtype)) return `'${name}' has dtype ${t.dtype}; only float tensors can be trained`;
  const stat = runningStats(graph).get(name);
  if (stat) return `'${name}' is the ${stat}: a buffer, never trained (batchNorm: 'train' updates it from batch statistics). Train the node's scale and bias instead`;
  const anchor = normConstants(graph).get(name);
  if (anchor) return `'${name}' is the epsilon or exponent of the normalization written as primitive ops starting at node '${anchor}': a constant, not a parameter. Train the layer's scale and bias instead`;
  const bad = firstNonFinite(t);
  if (bad >= 0) return `'${name}' holds a non-finite value (${Number((t.data as ArrayLike<number>)[bad])} at element ${bad}): a buffer such as an attention mask, not a parameter`;
  const reader = firstReader(graph, name);
  // Clip's bounds are left out of 'all' (PyTorch's ReLU6 bounds are constants) but have a
  // gradient, so naming them is allowed.
  const clipBoundOnly = graph.nodes.every((n) => n.inputs.every((x, i) => x !== name || (n.opType === 'Clip' && i > 0)));
  if (reader && !dataReaders(graph).has(name) && !clipBoundOnly) {
    const quant = quantizationControls(graph).get(name);
    if (quant) return `'${name}' is a quantization scale or zero point (input ${quant[1]} of ${quant[0].opType} node '${quant[0].name}'): refit keeps scales and zero points constant (straight-through estimation; a trainable scale, as in LSQ, is not supported). Train the layer's float parameters, or an adapter on it (LoRA)`;
    const [n, slot] = reader;
    if (ROTARY_TABLE_OPS.has(n.opType)) return `'${name}' is a rotary position table (input ${slot} of ${n.opType} node '${n.name}'): a buffer, not a parameter`;
    return `'${name}' is read only as a shape, index, axis, scale or bound (input ${slot} of ${n.opType} node '${n.name}'): not differentiable`;
  }
  return undefined;
}

/** Ops that read a weight stored quantized (int8, 4-bit): such a weight is frozen, adapters train beside it. */
const QUANTIZED_WEIGHT_OPS = new Set(['DequantizeLinear', 'MatMulNBits', 'MatMulInteger', 'ConvInteger', 'QLinearConv', 'QLinearMatMul', 'GatherBlockQuantized']);

export function selectParams(graph: Graph, sel: ParamSelector): string[] {
  const candidates = parameterCandidates(graph);
  let chosen: string[];
  if (sel === 'all') chosen = candidates;
  else if (sel instanceof RegExp) chosen = candidates.filter((n) => sel.test(n));
  else if (typeof sel === 'function') chosen = candidates.filter((n) => sel(n, graph.initializers.get(n)!));
  else {
    const names = typeof sel === 'string' ? [sel] : [...sel];
    // A candidate can train; only the others need the reasons (each of which scans the graph).
    const ok = new Set(candidates);
    for (const n of names) {
      if (ok.has(n)) continue;
      const why = whyNotParameter(graph, n);
      if (why) throw new Error(`trainable ${why}`);
      if (!graph.initializers.has(n)) throw new Error(`trainable '${n}' is not an initializer of the model. ${closestHint(n, candidates)}`);
    }
    chosen = names;
  }
  if (chosen.length === 0 && candidates.length === 0) {
    const quantized = graph.nodes.some((n) => QUANTIZED_WEIGHT_OPS.has(n.opType));
    throw new Error(`trainable selector ${String(sel)} matched no parameter: the model has no float parameters${quantized ? ' (its weights are stored quantized, and those stay frozen): train an adapter on them, e.g. withAdapter(model, name, lora({ targets: /./ })) or `refit train --adapter lora`' : ''}`);
  }
  if (chosen.length === 0) {
    throw new Error(`trainable selector ${String(sel)} matched no parameter. Candidates: ${candidates.slice(0, 40).join(', ')}${candidates.length > 40 ? ` … (${candidates.length} in all)` : ''}`);
  }
  return chosen;
}

function closestHint(name: string, candidates: string[]): string {
  const c = closest(name, candidates);
  return c.length ? `Closest candidates: ${c.join(', ')}` : 'The model has no float parameters.';
}
