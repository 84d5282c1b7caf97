// Normalization layers of a graph, fused or written as primitive ops, with their affine
// parameters. One place that answers "where are the norm layers?" for PEFT's norm-affine and
// BitFit selections and every TTA method.
//
// Recognised:
// - fused ops: BatchNormalization, LayerNormalization, InstanceNormalization, GroupNormalization,
//   and onnxruntime's SimplifiedLayerNormalization (RMSNorm, written by its optimizer) and
//   com.microsoft's SkipLayerNormalization / SkipSimplifiedLayerNormalization (gamma input 2,
//   beta input 3; x is input 0 plus the skip);
// - LayerNorm as torch.onnx writes it below opset 17 (opsets 13/14 checked with torch 1.13):
//     m = ReduceMean(x); d = Sub(x, m); v = ReduceMean(Pow(d, 2)); y = Div(d, Sqrt(Add(v, eps)))
//     then Mul(y, weight), Add(·, bias)
//   also with Mul(d, d) for the square, Mul(d, Reciprocal(Sqrt(·))) for the division, and Cast
//   nodes anywhere between (mixed-precision exports);
// - the same pattern over spatial axes (ReduceMean axes starting at 2) as InstanceNorm;
// - RMSNorm (Llama, Qwen, T5 …) as torch.onnx writes it: r = Sqrt(Add(ReduceMean(Pow(x, 2)), eps)),
//   then Mul(x, Div(1, r)), Mul(x, Reciprocal(r)) or Div(x, r), then Mul(weight); Casts anywhere
//   between (HF computes it in float32);
// - GroupNorm as torch.onnx writes it below opset 18: Reshape(x, [N, G, -1]) →
//   InstanceNormalization(scale = ones, bias = zeros, constants) → Reshape back →
//   Mul(weight) → Add(bias), and the decomposed pattern between two Reshapes likewise.
// The affine weight may reach the Mul/Add through Unsqueeze, Reshape, Identity or Cast (an
// unfolded export writes Unsqueeze(weight, [1, 2]); a folded one stores the [C,1,1] result).
// Forward numerics are never changed: the pattern is only recognised, not rewritten.
import type { Graph, Node } from './ir.ts';
import { attrInts, consumers as consumersOf, producers as producersOf } from './ir.ts';
import { toNumbers, type Tensor } from './tensor.ts';

export type NormKind = 'batch' | 'layer' | 'group' | 'instance' | 'rms';

export interface NormLayer {
  kind: NormKind;
  /** The fused op type, or 'decomposed' for a pattern of primitive ops. */
  op: string;
  /** Names of the nodes that make up the layer, affine Mul/Add included; the first is the anchor. */
  nodes: string[];
  /** Initializer holding the affine scale (γ), when it is a stored parameter. */
  scale?: string;
  /** Initializer holding the affine shift (β), when it is a stored parameter. */
  bias?: string;
  /**
   * Constant operands inside a decomposed pattern (ε of the Add, the exponent of Pow): never
   * parameters, even when an exporter stores them as initializers (tf2onnx does).
   */
  constants?: string[];
  /** Input tensor of the layer. */
  x: string;
  /** Output tensor of the layer (after the affine part). */
  y: string;
}

const FUSED: Record<string, NormKind> = {
  BatchNormalization: 'batch', LayerNormalization: 'layer', InstanceNormalization: 'instance', GroupNormalization: 'group',
  // onnxruntime's fused RMSNorm (its optimizer writes it for the decomposed pattern; default domain),
  // and opset 23's standard RMSNormalization
  SimplifiedLayerNormalization: 'rms', RMSNormalization: 'rms',
};

/** onnxruntime's residual-add-then-norm ops (com.microsoft): input, skip, gamma, beta? … */
const FUSED_SKIP: Record<string, NormKind> = { SkipLayerNormalization: 'layer', SkipSimplifiedLayerNormalization: 'rms' };

/** Ops a parameter may pass through on its way to the affine Mul/Add (layout only, values kept). */
const PASS_THROUGH = new Set(['Unsqueeze', 'Reshape', 'Identity', 'Cast', 'Squeeze']);

export function findNormLayers(graph: Graph): NormLayer[] {
  const prod = producersOf(graph);
  const cons = consumersOf(graph);
  const outputs = new Set(graph.outputs.map((o) => o.name));
  const inits = graph.initializers;
  const used = new Set<Node>();

  /** The only consumer of `t`, skipping single-consumer Casts; undefined if several or a graph output. */
  const soleConsumer = (t: string): Node | undefined => {
    const c = cons.get(t);
    if (!c || c.length !== 1 || outputs.has(t)) return undefined;
    return c[0]!;
  };
  const skipCastsDown = (t: string, nodes: Node[]): string => {
    for (;;) {
      const c = soleConsumer(t);
      if (!c || c.opType !== 'Cast') return t;
      nodes.push(c);
      t = c.outputs[0]!;
    }
  };
  const skipCastsUp = (t: string): string => {
    for (let p = prod.get(t); p?.opType === 'Cast'; p = prod.get(t)) t = p.inputs[0]!;
    return t;
  };
  /** The initializer behind `t` (through layout-only ops), if `t` is a stored parameter. */
  const paramOf = (t: string | undefined): string | undefined => {
    for (let i = 0; t && i < 8; i++) {
      if (inits.has(t)) return t;
      const p = prod.get(t);
      if (!p || !PASS_THROUGH.has(p.opType)) return undefined;
      t = p.inputs[0];
    }
    return undefined;
  };
  /** Follow y into Mul(param) then Add(param); either may be absent. */
  const affine = (y: string, nodes: Node[]): { y: string; scale?: string; bias?: string } => {
    let out: { y: string; scale?: string; bias?: string } = { y };
    let t = skipCastsDown(y, nodes);
    const mul = soleConsumer(t);
    if (mul?.opType === 'Mul') {
      const other = mul.inputs[0] === t ? mul.inputs[1] : mul.inputs[0];
      const p = paramOf(other);
      if (p) { nodes.push(mul); out = { y: mul.outputs[0]!, scale: p }; t = skipCastsDown(out.y, nodes); }
    }
    const add = soleConsumer(t);
    if (add?.opType === 'Add') {
      const other = add.inputs[0] === t ? add.inputs[1] : add.inputs[0];
      const p = paramOf(other);
      if (p) { nodes.push(add); out = { ...out, y: add.outputs[0]!, bias: p }; }
    }
    return out;
  };
  /** A Reshape around a per-group normalization makes it a GroupNorm: x → Reshape → norm → Reshape. */
  const groupWrap = (x: string, y: string, nodes: Node[]): { x: string; y: string } | undefined => {
    const before = prod.get(x);
    const after = soleConsumer(skipCastsDown(y, []));
    if (before?.opType !== 'Reshape' || after?.opType !== 'Reshape') return undefined;
    nodes.unshift(before);
    nodes.push(after);
    return { x: before.inputs[0]!, y: after.outputs[0]! };
  };

  const layers: NormLayer[] = [];
  for (const n of graph.nodes) {
    if (used.has(n)) continue;
    const skip = n.domain === 'com.microsoft' ? FUSED_SKIP[n.opType] : undefined;
    if (skip) {
      // gamma is input 2 and beta (SkipLayerNormalization only) input 3; x is the sum of inputs 0 and 1
      const scale = paramOf(n.inputs[2]), bias = skip === 'layer' ? paramOf(n.inputs[3]) : undefined;
      layers.push({ kind: skip, op: n.opType, nodes: [n.name], ...pick({ scale, bias }), x: n.inputs[0]!, y: n.outputs[0]! });
      used.add(n);
      continue;
    }
    const fused = n.domain === '' || n.domain === 'ai.onnx' ? FUSED[n.opType] : undefined;
    if (fused) {
      const nodes = [n];
      const scale = paramOf(n.inputs[1]), bias = paramOf(n.inputs[2]);
      // torch.onnx's GroupNorm below opset 18: InstanceNormalization with constant ones/zeros
      // between two Reshapes, the real affine parameters applied after.
      if (fused === 'instance' && !scale && !bias) {
        const g = groupWrap(n.inputs[0]!, n.outputs[0]!, nodes);
        if (g) {
          const a = affine(g.y, nodes);
          layers.push({ kind: 'group', op: 'decomposed', nodes: nodes.map((m) => m.name), ...pick(a), x: g.x, y: a.y });
          nodes.forEach((m) => used.add(m));
          continue;
        }
      }
      layers.push({ kind: fused, op: n.opType, nodes: [n.name], ...pick({ scale, bias }), x: n.inputs[0]!, y: n.outputs[0]! });
      used.add(n);
      continue;
    }
    if (n.opType !== 'ReduceMean') continue;
    const m = matchMeanVariance(n, graph, prod, cons, skipCastsDown, skipCastsUp);
    if (!m) {
      const r = matchRootMeanSquare(n, graph, prod, cons, skipCastsDown, skipCastsUp);
      if (!r || r.nodes.some((k) => used.has(k))) continue;
      const a = affine(r.y, r.nodes);
      layers.push({ kind: 'rms', op: 'decomposed', nodes: r.nodes.map((k) => k.name), ...pick(a), constants: r.constants, x: r.x, y: a.y });
      r.nodes.forEach((k) => used.add(k));
      continue;
    }
    const nodes = m.nodes;
    let kind: NormKind = m.axes.length > 0 && m.axes.every((a) => a >= 2) ? 'instance' : 'layer';
    let x = m.x, y = m.y;
    const g = groupWrap(x, y, nodes);
    if (g) { kind = 'group'; x = g.x; y = g.y; }
    const a = affine(y, nodes);
    layers.push({ kind, op: 'decomposed', nodes: nodes.map((k) => k.name), ...pick(a), constants: m.constants, x, y: a.y });
    nodes.forEach((k) => used.add(k));
  }
  return layers;
}

function pick(a: { scale?: string; bias?: string }): { scale?: string; bias?: string } {
  const o: { scale?: string; bias?: string } = {};
  if (a.scale) o.scale = a.scale;
  if (a.bias) o.bias = a.bias;
  return o;
}

/** Reduction axes of a ReduceMean (attribute below opset 18, constant input from 18). */
function reduceAxes(n: Node, graph: Graph, prod: Map<string, Node>): number[] | undefined {
  const attr = attrInts(n, 'axes');
  if (attr) return attr;
  const a = n.inputs[1];
  if (!a) return [];
  const t = graph.initializers.get(a);
  if (t) return toNumbers(t);
  const c = prod.get(a);
  const v = c?.opType === 'Constant' ? c.attrs.value : undefined;
  return v?.kind === 'tensor' ? toNumbers(v.value) : undefined;
}

/**
 * Match (x − mean(x)) / sqrt(mean((x − mean(x))²) + eps) starting at the first ReduceMean.
 * Returns the nodes (affine excluded), the input x, the normalized output and the axes.
 */
function matchMeanVariance(
  mean: Node, graph: Graph, prod: Map<string, Node>, cons: Map<string, Node[]>,
  skipCastsDown: (t: string, nodes: Node[]) => string, skipCastsUp: (t: string) => string,
): { nodes: Node[]; x: string; y: string; axes: number[]; constants: string[] } | undefined {
  const x = mean.inputs[0]!;
  const axes = reduceAxes(mean, graph, prod);
  if (!axes) return undefined;
  const nodes: Node[] = [mean];
  const m = skipCastsDown(mean.outputs[0]!, nodes);
  const sub = (cons.get(m) ?? []).find((c) => c.opType === 'Sub' && c.inputs[1] === m && skipCastsUp(c.inputs[0]!) === skipCastsUp(x));
  if (!sub) return undefined;
  nodes.push(sub);
  const d = sub.outputs[0]!;
  const users = cons.get(d) ?? [];
  // The square: Pow(d, 2) or Mul(d, d).
  const sq = users.find((c) => (c.opType === 'Pow' && c.inputs[0] === d) || (c.opType === 'Mul' && c.inputs[0] === d && c.inputs[1] === d));
  if (!sq) return undefined;
  nodes.push(sq);
  const constants: string[] = [];
  if (sq.opType === 'Pow' && sq.inputs[1]) constants.push(sq.inputs[1]);
  const var1 = (cons.get(sq.outputs[0]!) ?? []).find((c) => c.opType === 'ReduceMean');
  if (!var1 || (reduceAxes(var1, graph, prod) ?? []).join() !== axes.join()) return undefined;
  nodes.push(var1);
  const root = rootOf(var1.outputs[0]!, cons, nodes, constants);
  if (!root) return undefined;
  const s = skipCastsDown(root, nodes);
  // The division: Div(d, s), or Mul(d, Reciprocal(s)).
  let div = users.find((c) => c.opType === 'Div' && c.inputs[0] === d && c.inputs[1] === s);
  if (!div) {
    const rec = (cons.get(s) ?? []).find((c) => c.opType === 'Reciprocal');
    if (rec) {
      const r = rec.outputs[0]!;
      div = users.find((c) => c.opType === 'Mul' && c.inputs.includes(d) && c.inputs.includes(r) && c !== sq);
      if (div) nodes.push(rec);
    }
  }
  if (!div) return undefined;
  nodes.push(div);
  return { nodes, x, y: div.outputs[0]!, axes, constants };
}

/** Sqrt(Add(v, ε)) (the Add optional) after a mean of squares `v`: its output, with the nodes and ε recorded. */
function rootOf(v: string, cons: Map<string, Node[]>, nodes: Node[], constants: string[]): string | undefined {
  let t = v;
  const addEps = (cons.get(t) ?? []).find((c) => c.opType === 'Add');
  if (addEps) {
    nodes.push(addEps);
    const eps = addEps.inputs[0] === t ? addEps.inputs[1] : addEps.inputs[0];
    if (eps) constants.push(eps);
    t = addEps.outputs[0]!;
  }
  const sqrt = (cons.get(t) ?? []).find((c) => c.opType === 'Sqrt');
  if (!sqrt) return undefined;
  nodes.push(sqrt);
  return sqrt.outputs[0]!;
}

/** The value of a one-element constant (an initializer or a Constant node's output), if `t` is one. */
function scalarOf(t: string | undefined, graph: Graph, prod: Map<string, Node>): number | undefined {
  if (!t) return undefined;
  const init = graph.initializers.get(t);
  const v = init ?? (prod.get(t)?.opType === 'Constant' ? (prod.get(t)!.attrs.value?.kind === 'tensor' ? prod.get(t)!.attrs.value!.value as Tensor : undefined) : undefined);
  return v && v.data.length === 1 ? toNumbers(v)[0] : undefined;
}

/**
 * Match x / sqrt(mean(x²) + eps) (RMSNorm) at its ReduceMean. Returns the nodes (affine excluded,
 * the square first), the input x, the normalized output and the constants (exponent, ε).
 */
function matchRootMeanSquare(
  mean: Node, graph: Graph, prod: Map<string, Node>, cons: Map<string, Node[]>,
  skipCastsDown: (t: string, nodes: Node[]) => string, skipCastsUp: (t: string) => string,
): { nodes: Node[]; x: string; y: string; constants: string[] } | undefined {
  if (!reduceAxes(mean, graph, prod)) return undefined;
  const sq = prod.get(mean.inputs[0]!);
  if (!sq) return undefined;
  const constants: string[] = [];
  if (sq.opType === 'Pow' && scalarOf(sq.inputs[1], graph, prod) === 2) constants.push(sq.inputs[1]!);
  else if (!(sq.opType === 'Mul' && sq.inputs[0] === sq.inputs[1])) return undefined;
  const x = sq.inputs[0]!;
  const nodes: Node[] = [sq, mean];
  const root = rootOf(mean.outputs[0]!, cons, nodes, constants);
  if (!root) return undefined;
  const r = skipCastsDown(root, nodes);
  const isX = (i: string | undefined) => !!i && skipCastsUp(i) === skipCastsUp(x);
  // The scaling: Div(x, r), or Mul(x, 1 / r) with Reciprocal(r) or Div(1, r).
  let out = (cons.get(r) ?? []).find((c) => c.opType === 'Div' && c.inputs[1] === r && isX(c.inputs[0]));
  if (!out) {
    const inv = (cons.get(r) ?? []).find((c) => c.opType === 'Reciprocal' || (c.opType === 'Div' && c.inputs[1] === r && scalarOf(c.inputs[0], graph, prod) === 1));
    if (!inv) return undefined;
    const between: Node[] = [];
    const ri = skipCastsDown(inv.outputs[0]!, between);
    out = (cons.get(ri) ?? []).find((c) => c.opType === 'Mul' && c.inputs.includes(ri) && isX(c.inputs[c.inputs[0] === ri ? 1 : 0]));
    if (!out) return undefined;
    nodes.push(inv, ...between);
  }
  nodes.push(out);
  return { nodes, x, y: out.outputs[0]!, constants };
}
