// Where adapters attach: the weight-bearing nodes of a graph (MatMul, Gemm, Conv with an
// initializer weight, and convs whose weight the graph computes, for LoRA), each named by its
// PyTorch-style module, and target selection over them.
import type { Graph, Node } from '../onnx/ir.ts';
import { attrInt, attrInts, attrFloat, producers, consumers, initializerBehind } from '../onnx/ir.ts';
import { PeftError, closest } from './errors.ts';
import { nbitsLayout } from '../onnx/nbits.ts';
import { constantDims } from '../onnx/constant-dims.ts';
import { GENERATED_NAME as GENERATED, modulePathOfNode } from '../onnx/node-scope.ts';

export { modulePathOfNode };

export type SiteOp = 'MatMul' | 'Gemm' | 'Conv';

/**
 * A layer an adapter can attach to. Tensor names refer to the base graph; rewrites keep them
 * valid (see `intercept`), so a site found on the base graph stays usable after other adapters.
 */
export interface Site {
  /**
   * Module name, as PyTorch and HF PEFT name it: the weight's name without `.weight`
   * (`blocks.0.attn.q`), or, when the exporter named the weight itself (torch.onnx's transposed
   * `onnx::MatMul_880`), the module path in the node's name (`/layers.0/self_attn/q_proj/MatMul` →
   * `layers.0.self_attn.q_proj`).
   */
  module: string;
  /** The weight-derived name a site renamed from its node had before (adapter files may use it). */
  alias?: string;
  node: string;
  op: SiteOp;
  weight: string;
  /**
   * How the weight initializer is stored: `in_out` ([in, out]: refit's MatMul, Gemm transB=0),
   * `out_in` ([out, in]: PyTorch Linear exported as Transpose→MatMul or Gemm transB=1),
   * `conv` ([O, C/group, kh, kw]).
   */
  layout: 'in_out' | 'out_in' | 'conv';
  dIn: number;
  dOut: number;
  /** The data input (X) of the node. */
  x: string;
  /** The node's output (before a separate bias Add). */
  y: string;
  /** The module's output: after the bias Add when one follows, else `y`. */
  out: string;
  /** Bias initializer, if any (Gemm's C, Conv's B, or the 1-D addend of the following Add). */
  bias?: string;
  /** Gemm: transA and alpha; Conv: kernel, group and the node's attributes. */
  transA?: boolean;
  alpha?: number;
  kernel?: number[];
  group?: number;
  convNode?: Node;
  /**
   * A frozen quantized layer: 'qdq' (weight through DequantizeLinear of an integer initializer),
   * 'dynamic' (onnxruntime's DynamicQuantizeLinear + MatMulInteger or ConvInteger + Cast + Mul) or 'nbits'
   * (com.microsoft MatMulNBits: `weight` is its packed uint8 B, dIn/dOut its K/N). `weight` is then the
   * integer initializer, `x` the layer's float input before activation quantization (adapters read
   * it), and `y` the float output. Adapters see the dequantized weight (see ./quantized.ts).
   */
  quant?: 'qdq' | 'dynamic' | 'nbits';
  /**
   * A convolution whose weight the graph computes from parameters alone (BiT's and NFNet's weight
   * standardization, weight norm): `weight` names the computed tensor, not an initializer, and the
   * shapes come from the ops that compute it (src/onnx/constant-dims.ts). Only a LoRA branch of
   * its own attaches (HF PEFT wraps such a Conv2d subclass the same way); nothing reads or folds
   * into the weight.
   */
  computed?: true;
}

/** The module name for a weight initializer: `a.b.weight` → `a.b` (`a.b.weight_quantized` and `a.b.weight_Q4` too, as onnxruntime's quantizers name them). */
export const moduleOf = (weight: string) => weight.replace(/_quantized$|_Q\d$/, '').replace(/\.weight$/, '');

const isIntWeight = (t: { dtype: string } | undefined) => !!t && (t.dtype === 'int8' || t.dtype === 'uint8');


/** A layer's module name from its weight and node (as findSites names it, short of its check that no two layers share one). */
export function moduleOfLayer(weight: string, node: string): string {
  return (GENERATED.test(weight) ? modulePathOfNode(node) : undefined) ?? moduleOf(weight);
}

/**
 * The module a MatMul's addend names: torch.onnx folds `F.linear`'s transposed weight into
 * `onnx::MatMul_N` but keeps the bias's name (`blocks.0.attn.proj.bias`), even when the bias is
 * computed from constants first (Swin V2 zeroes the key third of `qkv.bias` by ScatterND). The
 * `….bias` initializer with the layer's output width among the addend's constant ancestors, if
 * exactly one; undefined when the addend depends on a graph input (a residual reads another
 * layer's output, whose bias must not name this one).
 */
function biasModule(g: Graph, prod: Map<string, Node>, addend: string, dOut: number): string | undefined {
  const found = new Set<string>();
  const seen = new Set<string>();
  const constant = (t: string): boolean => {
    if (seen.has(t)) return true;
    seen.add(t);
    const w = g.initializers.get(t);
    if (w) { if (/\.bias$/.test(t) && w.data.length === dOut) found.add(t.replace(/\.bias$/, '')); return true; }
    const p = prod.get(t);
    if (!p || seen.size > 32) return false; // a graph input, or too far to be a bias's own arithmetic
    return p.inputs.every((i) => i === '' || constant(i));
  };
  return constant(addend) && found.size === 1 ? [...found][0] : undefined;
}

/** Sites whose weight the exporter named get their module's name from their bias or their node, where that is unambiguous. */
function nameFromNodes(sites: Site[], biasModules: Map<Site, string>): void {
  const derived = sites.map((s) => (GENERATED.test(s.weight) ? biasModules.get(s) ?? modulePathOfNode(s.node) : undefined));
  // A name is free for a site when no other weight claims it (one module called twice reads one weight).
  const weights = new Map<string, Set<string>>();
  const claim = (name: string, weight: string) => weights.set(name, (weights.get(name) ?? new Set()).add(weight));
  sites.forEach((s, i) => { claim(s.module, s.weight); if (derived[i]) claim(derived[i]!, s.weight); });
  sites.forEach((s, i) => {
    const d = derived[i];
    if (d && weights.get(d)!.size === 1) { s.alias = s.module; s.module = d; } // two layers in one path keep their weights' names
  });
}

/**
 * Sites that read one weight (a module called twice, its folded copies tied by loadModel's
 * keepTies) are one module, as PEFT wraps the module and every call goes through the adapter:
 * they take the first one's name, so an adapter keeps one set of tensors for all of them.
 */
function oneModulePerWeight(sites: Site[]): void {
  const first = new Map<string, Site>();
  for (const s of sites) {
    const f = first.get(s.weight);
    if (!f) first.set(s.weight, s);
    else if (s.module !== f.module) { s.alias ??= s.module; s.module = f.module; }
  }
}

/** The sites of `sites` with distinct weights: what a merge folds, once per weight. */
export const oneSitePerWeight = (sites: Site[]) => sites.filter((s, i) => sites.findIndex((o) => o.weight === s.weight) === i);

/** Every site in the graph, in node order. `exclude` skips nodes and weights adapters created. */
export function findSites(g: Graph, exclude: (name: string) => boolean = () => false): Site[] {
  const prod = producers(g);
  const cons = consumers(g);
  const sites: Site[] = [];
  const biasModules = new Map<Site, string>();
  // A weight is an initializer, or an Identity of one: torch.onnx's alias of a weight used twice, kept as a tie.
  const source = (n: string) => initializerBehind(g, prod, n) ?? n;
  const init = (n: string) => g.initializers.get(source(n));
  // A weight read through DequantizeLinear of an integer initializer (QDQ): the integer initializer.
  const dqWeight = (n: string) => {
    const p = prod.get(n);
    return p && p.opType === 'DequantizeLinear' && isIntWeight(init(p.inputs[0]!)) ? p.inputs[0]! : undefined;
  };
  // The float tensor a quantize → DequantizeLinear pair quantizes (a QDQ activation, or a merged
  // dynamic layer's), so adapters read the unquantized input.
  const floatInput = (x: string) => {
    const d = prod.get(x);
    const q = d && d.opType === 'DequantizeLinear' ? prod.get(d.inputs[0]!) : undefined;
    return q && (q.opType === 'QuantizeLinear' || q.opType === 'DynamicQuantizeLinear') ? q.inputs[0]! : x;
  };
  const computedConvs = new Map<Node, { name: string; dims: number[] }>();
  for (const n of computedWeightNodes(g, prod)) {
    const dims = n.opType === 'Conv' ? constantDims(g, prod, n.inputs[1]!) : undefined;
    if (dims) computedConvs.set(n, { name: largestParameterBehind(g, prod, n.inputs[1]!) ?? n.inputs[1]!, dims });
  }
  for (const node of g.nodes) {
    if (exclude(node.name)) continue;
    if (node.domain === 'com.microsoft' && node.opType === 'MatMulNBits') {
      // A low-bit weight (transformers.js's q4 models): its own bias (input 5) stays inside the op.
      const l = nbitsLayout(node), b = node.inputs[1]!;
      if (typeof l === 'string' || init(b)?.dtype !== 'uint8' || exclude(b)) continue;
      sites.push({ module: moduleOf(b), node: node.name, op: 'MatMul', weight: b, layout: 'in_out', dIn: l.K, dOut: l.N, x: node.inputs[0]!, y: node.outputs[0]!, out: node.outputs[0]!, quant: 'nbits' });
      continue;
    }
    // Default-domain ops only: a com.microsoft.nchwc Conv (a model saved by onnxruntime at level
    // 'all') holds its weight reordered into blocks and reads blocked activations, so an adapter
    // written for an OIHW weight and an NCHW input would mix the wrong elements.
    if (node.domain !== '' && node.domain !== 'ai.onnx') continue;
    let site: Site | undefined;
    if (node.opType === 'MatMul') {
      const [x, b] = node.inputs as [string, string];
      let w = init(b), weight = source(b), layout: Site['layout'] = 'in_out';
      const p = prod.get(b);
      const dq = dqWeight(b);
      if (!w && p && p.opType === 'Transpose' && init(p.inputs[0]!) && (attrInts(p, 'perm') ?? [1, 0]).join() === '1,0') {
        weight = source(p.inputs[0]!); w = init(weight); layout = 'out_in';
      } else if (!w && dq) {
        weight = dq; w = init(dq);
      }
      if (!w || w.dims.length !== 2) continue;
      const [dIn, dOut] = layout === 'in_out' ? w.dims as [number, number] : [w.dims[1]!, w.dims[0]!];
      site = { module: moduleOf(weight), node: node.name, op: 'MatMul', weight, layout, dIn, dOut, x: floatInput(x), y: node.outputs[0]!, out: node.outputs[0]!, ...(dq ? { quant: 'qdq' as const } : {}) };
    } else if (node.opType === 'MatMulInteger' || node.opType === 'ConvInteger') {
      // onnxruntime's quantize_dynamic: DynamicQuantizeLinear(x) → MatMulInteger or ConvInteger(x_q, W_q) →
      // Cast → Mul(x_scale·w_scale). A ConvInteger's input 2 is the activation's zero point, not a
      // bias: the bias, if any, is an Add after the Mul.
      const conv = node.opType === 'ConvInteger';
      const dql = prod.get(node.inputs[0]!), w = init(node.inputs[1]!);
      const cast = cons.get(node.outputs[0]!);
      const mul = cast?.length === 1 && cast[0]!.opType === 'Cast' ? cons.get(cast[0]!.outputs[0]!) : undefined;
      const rankOk = conv ? (w?.dims.length ?? 0) >= 3 : w?.dims.length === 2;
      if (!dql || dql.opType !== 'DynamicQuantizeLinear' || !isIntWeight(w) || !rankOk || mul?.length !== 1 || mul[0]!.opType !== 'Mul') continue;
      const common = { module: moduleOf(node.inputs[1]!), node: node.name, weight: node.inputs[1]!, x: dql.inputs[0]!, y: mul[0]!.outputs[0]!, out: mul[0]!.outputs[0]!, quant: 'dynamic' as const };
      const group = attrInt(node, 'group', 1);
      site = conv
        ? { ...common, op: 'Conv', layout: 'conv', dIn: w!.dims[1]! * group, dOut: w!.dims[0]!, kernel: w!.dims.slice(2), group, convNode: node }
        : { ...common, op: 'MatMul', layout: 'in_out', dIn: w!.dims[0]!, dOut: w!.dims[1]! };
    } else if (node.opType === 'Gemm') {
      const dq = dqWeight(node.inputs[1]!);
      const w = init(dq ?? node.inputs[1]!);
      if (!w || w.dims.length !== 2) continue;
      const transB = attrInt(node, 'transB', 0) === 1;
      const [dIn, dOut] = transB ? [w.dims[1]!, w.dims[0]!] : w.dims as [number, number];
      const c = node.inputs[2];
      const weight = dq ?? source(node.inputs[1]!);
      site = {
        module: moduleOf(weight), node: node.name, op: 'Gemm', weight, layout: transB ? 'out_in' : 'in_out',
        dIn, dOut, x: floatInput(node.inputs[0]!), y: node.outputs[0]!, out: node.outputs[0]!, transA: attrInt(node, 'transA', 0) === 1,
        alpha: attrFloat(node, 'alpha', 1), ...(c && init(c) ? { bias: c } : {}), ...(dq ? { quant: 'qdq' as const } : {}),
      };
    } else if (node.opType === 'Conv') {
      const dq = dqWeight(node.inputs[1]!);
      const weight = dq ?? source(node.inputs[1]!);
      const computed = !init(weight) && computedConvs.has(node) ? computedConvs.get(node) : undefined;
      const w = init(weight) ?? (computed && { dims: computed.dims });
      if (!w || w.dims.length < 3 || (computed && !computedShapeFits(node, w.dims))) continue;
      const group = attrInt(node, 'group', 1);
      const b = node.inputs[2];
      site = {
        module: moduleOf(weight), node: node.name, op: 'Conv', weight, layout: 'conv',
        dIn: w.dims[1]! * group, dOut: w.dims[0]!, x: floatInput(node.inputs[0]!), y: node.outputs[0]!, out: node.outputs[0]!,
        kernel: w.dims.slice(2), group, convNode: node, ...(b && init(b) ? { bias: b } : {}), ...(dq ? { quant: 'qdq' as const } : {}),
        ...(computed ? { module: modulePathOfNode(node.name) ?? moduleOf(computed.name), computed: true as const } : {}),
      };
    }
    if (site && site.op === 'MatMul') {
      const next = cons.get(site.y);
      if (next?.length === 1 && next[0]!.opType === 'Add') {
        const other = next[0]!.inputs.find((i) => i !== site!.y);
        const bt = other ? init(other) : undefined;
        if (bt && bt.data.length === site.dOut && bt.dims[bt.dims.length - 1] === site.dOut) { site.bias = other; site.out = next[0]!.outputs[0]!; }
        const named = other && GENERATED.test(site.weight) ? biasModule(g, prod, other, site.dOut) : undefined;
        if (named) biasModules.set(site, named);
      }
    }
    if (site && !exclude(site.weight)) sites.push(site);
  }
  nameFromNodes(sites, biasModules);
  oneModulePerWeight(sites);
  return sites;
}

/** com.microsoft Attention nodes with a stored [D, 3D] weight: onnxruntime's transformer optimizer packed Q, K and V there. */
export function packedAttentionNodes(g: Graph): Node[] {
  return g.nodes.filter((n) => n.domain === 'com.microsoft' && n.opType === 'Attention' && !!n.inputs[1] && g.initializers.has(n.inputs[1]));
}

/**
 * Conv, MatMul and Gemm nodes whose weight the graph computes from parameters alone (no graph input
 * behind it): weight standardization (BiT's and NFNet's StdConv2d, a BatchNormalization over the
 * kernel), weight norm, a scaled or reshaped parameter. The convs among them are LoRA's sites
 * (`Site.computed`); every other adapter reads or scales a stored weight.
 */
export function computedWeightNodes(g: Graph, prod: Map<string, Node> = producers(g)): Node[] {
  // One pass in graph order: which tensors depend on a graph input (or pass a DequantizeLinear,
  // whose quantized weight is a site of its own), and which on an initializer.
  const data = new Set(g.inputs.map((i) => i.name)), params = new Set(g.initializers.keys());
  for (const n of g.nodes) {
    const outs = n.outputs.filter(Boolean);
    if (n.opType === 'DequantizeLinear' || n.inputs.some((t) => data.has(t))) for (const o of outs) data.add(o);
    else if (n.inputs.some((t) => params.has(t))) for (const o of outs) params.add(o);
  }
  return g.nodes.filter((n) => {
    const w = n.inputs[1];
    if ((n.domain !== '' && n.domain !== 'ai.onnx') || !['Conv', 'MatMul', 'Gemm'].includes(n.opType) || !w || g.initializers.has(w)) return false;
    const p = prod.get(w)?.opType;
    // A layer applies its weight to data: a product of two parameter-only operands (spectral norm's
    // power iteration, u·W·v) is part of computing a weight, not a layer.
    return p !== 'Identity' && p !== 'Transpose' && !data.has(w) && params.has(w) && data.has(n.inputs[0]!);
  });
}

/** The initializer with the most elements among a parameter-only tensor's ancestors: a computed conv weight's own parameter (StdConv's W, weight norm's v), which names its module where the node's name does not. */
function largestParameterBehind(g: Graph, prod: Map<string, Node>, t: string): string | undefined {
  let best: string | undefined, most = 0;
  const seen = new Set<string>();
  const walk = (x: string) => {
    if (!x || seen.has(x)) return;
    seen.add(x);
    const w = g.initializers.get(x);
    if (w) { if (w.data.length > most) { best = x; most = w.data.length; } return; }
    for (const i of prod.get(x)?.inputs ?? []) walk(i);
  };
  walk(t);
  return best;
}

/** A computed weight's shape must have the conv's rank and kernel (a kernel_shape attribute, when given, must agree). */
function computedShapeFits(conv: Node, dims: readonly number[]): boolean {
  const k = attrInts(conv, 'kernel_shape');
  return dims.every((d) => d > 0) && (!k || (k.length === dims.length - 2 && k.every((v, i) => v === dims[i + 2])));
}

/**
 * A target error made clearer where no adapter can attach to layers the user may have meant: the
 * query, key and value projections onnxruntime's transformer optimizer packed into com.microsoft
 * Attention nodes (one [D, 3D] weight each), and layers whose weight the graph computes
 * (computedWeightNodes). Other errors pass.
 */
export function withTargetNotes(e: unknown, g: Graph): unknown {
  if (!(e instanceof PeftError) || !/ match(es|ed) no /.test(e.message)) return e;
  const notes: string[] = [];
  const listed = (nodes: Node[], name: (n: Node) => string) => nodes.slice(0, 3).map(name).join(', ') + (nodes.length > 3 ? ', …' : '');
  const fused = packedAttentionNodes(g);
  if (fused.length) notes.push(`This model's query, key and value projections are packed into ${fused.length} com.microsoft Attention node${fused.length > 1 ? 's' : ''} (${listed(fused, (n) => n.name || n.outputs[0]!)}) by onnxruntime's transformer optimizer, where no adapter can attach: adapt the model as exported before that optimization (torch.onnx, or optimum without --optimize), or target other layers.`);
  const computed = computedWeightNodes(g);
  if (computed.length) notes.push(`${computed.length} ${[...new Set(computed.map((n) => n.opType))].join('/')} layer${computed.length > 1 ? 's' : ''} of this model (${listed(computed, (n) => modulePathOfNode(n.name) || n.name)}) compute${computed.length > 1 ? '' : 's'} the weight in the graph from parameters (weight standardization, as BiT's and NFNet's StdConv2d, weight norm, or a scaled weight): of refit's adapters only LoRA attaches there (convolutions only: a branch beside the layer, which a merge bakes into the graph), the others need a stored weight; train them with trainable: 'all', LoRA, or target other layers.`);
  if (!notes.length) return e;
  const note = notes.join(' ');
  const at = e.message.search(/ (Closest c|C)andidates: /);
  return new PeftError(at < 0 ? `${e.message}. ${note}` : `${e.message.slice(0, at)} ${note}${e.message.slice(at)}`);
}

/**
 * Which sites an adapter attaches to.
 * - a RegExp, tested against the module, weight and node names;
 * - a name or list of names: each must equal a module, weight or node name, or be a
 *   module-name suffix after a dot (HF PEFT's `target_modules` rule: `'q'` matches `blocks.0.attn.q`);
 * - a predicate over sites.
 */
export type TargetSelector = RegExp | string | readonly string[] | ((site: Site) => boolean);

export interface TargetOptions {
  targets: TargetSelector;
  /** Restrict to these op types. @default all that the method supports */
  opTypes?: readonly SiteOp[];
}

/** `computed`: the method takes layers whose weight the graph computes (`Site.computed`; LoRA's branch does). */
export function selectSites(all: Site[], opts: TargetOptions, method: string, supported: readonly SiteOp[], computed = false): Site[] {
  const ops = opts.opTypes ?? supported;
  for (const o of ops) if (!supported.includes(o)) throw new PeftError(`${method} does not support op type ${o}; it supports ${supported.join(', ')}`);
  const sites = all.filter((s) => ops.includes(s.op) && (computed || !s.computed));
  const names = (s: Site) => [s.module, s.weight, s.node];
  const candidates = [...new Set(sites.map((s) => s.module))];
  const t = opts.targets;
  const hint = (what: string) => {
    const other = all.filter((s) => !ops.includes(s.op) && names(s).some((n) => matchesName(t, n)));
    const extra = other.length ? ` (${other.map((s) => `${s.module} is a ${s.op}`).slice(0, 5).join(', ')}; this method targets ${ops.join(', ')})` : '';
    return `${method}: targets ${what} matched no ${ops.join('/')} layer${extra}. Candidates: ${candidates.slice(0, 40).join(', ')}${candidates.length > 40 ? ` … (${candidates.length} in all)` : ''}`;
  };
  if (t === undefined || t === null) throw new PeftError(`${method}: give targets, the layers to adapt (a name, a list of names, a RegExp such as /./ for every ${ops.join('/')} layer, or a predicate). Candidates: ${candidates.slice(0, 40).join(', ')}${candidates.length > 40 ? ` … (${candidates.length} in all)` : ''}`);
  let chosen: Site[];
  if (typeof t === 'function') chosen = sites.filter(t);
  else if (t instanceof RegExp) chosen = sites.filter((s) => names(s).some((n) => { t.lastIndex = 0; return t.test(n); }));
  else {
    const list = typeof t === 'string' ? [t] : [...t];
    chosen = [];
    for (const n of list) {
      const hit = sites.filter((s) => names(s).some((x) => x === n) || s.module.endsWith(`.${n}`));
      if (hit.length === 0) {
        const other = all.find((s) => !ops.includes(s.op) && names(s).some((x) => x === n || s.module.endsWith(`.${n}`)));
        const why = other ? ` (${other.module} is a ${other.op}; this method targets ${ops.join(', ')})` : '';
        throw new PeftError(`${method}: target '${n}' matches no ${ops.join('/')} layer${why}. Closest candidates: ${closest(n, candidates).join(', ')}`);
      }
      for (const h of hit) if (!chosen.includes(h)) chosen.push(h);
    }
  }
  if (chosen.length === 0) throw new PeftError(hint(typeof t === 'function' ? `predicate ${t.name || '(anonymous)'}` : String(t)));
  return chosen;
}

function matchesName(t: TargetSelector, n: string): boolean {
  if (typeof t === 'function') return false;
  if (t instanceof RegExp) { t.lastIndex = 0; return t.test(n); }
  const list = typeof t === 'string' ? [t] : t;
  return list.some((x) => x === n || n.endsWith(`.${x}`));
}
