// A thin typed IR over ONNX: plain objects that are easy to inspect and rewrite.
// Converted to and from onnx-proto messages in ./proto.ts.
import type { DType, Tensor } from './tensor.ts';
import { readsOf } from './subgraphs.ts';

export type Attr =
  | { kind: 'int'; value: number }
  | { kind: 'float'; value: number }
  | { kind: 'string'; value: string }
  | { kind: 'ints'; value: number[] }
  | { kind: 'floats'; value: number[] }
  | { kind: 'strings'; value: string[] }
  | { kind: 'tensor'; value: Tensor }
  /** Attributes refit does not interpret (subgraphs, sparse tensors): kept verbatim for round trips. */
  | { kind: 'opaque'; value: unknown };

export interface Node {
  name: string;
  opType: string;
  domain: string;
  /** Empty string marks an omitted optional input or output, as in ONNX. */
  inputs: string[];
  outputs: string[];
  attrs: Record<string, Attr>;
  /** refit's own annotations for later passes (never written to the file). */
  meta?: {
    batchStatistics?: boolean;
    /**
     * On a Conv that computes an input gradient: its weight is this tensor's per-group C↔O swap,
     * spatially flipped (src/onnx/nchwc.ts builds the blocked form straight from it).
     */
    flippedWeightOf?: string;
    /**
     * On a ConvTranspose that computes a conv's input gradient: the forward conv's geometry
     * (src/autodiff/rules/conv.ts ConvGeom), so a backend pass can write it in another form.
     */
    dxOfConv?: object;
    /**
     * On a Conv that computes one output phase of a strided conv's input gradient (conv.ts
     * phasesDx): its weight is this tensor's C↔O swap with only the kernel taps `taps` (flat
     * indices, in order), so src/onnx/nchwc.ts can build the blocked form from a fed weight.
     */
    phaseWeightOf?: { weight: string; taps: number[] };
    /**
     * On the Reshape that ends a phase-by-phase input gradient (conv.ts phasesDx): the phase
     * Convs' outputs, row-major over (row phase, column phase), which the Concats before it
     * interleave, so src/onnx/nchwc-step.ts can interleave blocked phases without leaving the layout.
     */
    phaseInterleave?: { phases: string[]; stride: number };
    /**
     * On the nodes of a batch-statistics BatchNorm gradient (norm.ts) that read the BN's input `x`,
     * and on the one Identity (`centre`) through which it reads the BN's batch mean: together they
     * read the two only as x − mean, so a pass may give them x − K and mean − K for any per-channel
     * K (src/onnx/nchwc-step.ts does, to keep one-pass moments precise). Also on the Reshape with
     * which batchnorm-train.ts makes zeros from x: zeros either way.
     */
    shiftInvariant?: { x: string; centre?: true };
    /**
     * On the Mul that ends SiLU's recomputed input gradient (src/autodiff/silu.ts): it is
     * dY·silu'(x), so a backend pass may write it in another form (src/onnx/nchwc-step.ts).
     */
    siluGradient?: { x: string; dY: string };
    /**
     * On the Add that ends a batch-statistics BatchNorm's input gradient in its 'bn-affine' form
     * (norm.ts): it is a·g + b·x + c with `a`, `b`, `c` per-channel [C] vectors, `g` the gradient
     * at the BN's output and `x` its input, so a backend pass may compute what reads it in another
     * form (src/onnx/nchwc-step.ts: through a 1×1 conv, from the conv's input).
     */
    bnAffineDx?: { x: string; g: string; a: string; b: string; c: string };
  };
}

export type Dim = number | string | null;

export interface ValueInfo {
  name: string;
  dtype: DType;
  /** null for unknown rank; string dims are symbolic (e.g. 'batch'). */
  shape: Dim[] | null;
  /** Written without a type (onnxruntime then types it from the graph); used for probe outputs. */
  untyped?: boolean;
}

export interface Graph {
  name: string;
  nodes: Node[];
  inputs: ValueInfo[];
  outputs: ValueInfo[];
  initializers: Map<string, Tensor>;
  valueInfo: ValueInfo[];
}

export interface OpsetImport { domain: string; version: number }

export interface Model {
  irVersion: number;
  opsets: OpsetImport[];
  producerName: string;
  producerVersion: string;
  docString: string;
  metadata: Record<string, string>;
  graph: Graph;
}

// ---- attribute accessors: precise errors instead of silent defaults on type mismatch ----

function attrOf(node: Node, name: string, kind: Attr['kind']): Attr | undefined {
  const a = node.attrs[name];
  if (a && a.kind !== kind) throw new Error(`node '${node.name}' (${node.opType}): attribute '${name}' is ${a.kind}, expected ${kind}`);
  return a;
}

export function attrInt(node: Node, name: string, fallback: number): number;
export function attrInt(node: Node, name: string): number | undefined;
export function attrInt(node: Node, name: string, fallback?: number): number | undefined {
  const a = attrOf(node, name, 'int');
  return a ? (a.value as number) : fallback;
}

export function attrFloat(node: Node, name: string, fallback: number): number;
export function attrFloat(node: Node, name: string): number | undefined;
export function attrFloat(node: Node, name: string, fallback?: number): number | undefined {
  const a = attrOf(node, name, 'float');
  return a ? (a.value as number) : fallback;
}

export function attrInts(node: Node, name: string, fallback: number[]): number[];
export function attrInts(node: Node, name: string): number[] | undefined;
export function attrInts(node: Node, name: string, fallback?: number[]): number[] | undefined {
  const a = attrOf(node, name, 'ints');
  return a ? (a.value as number[]) : fallback;
}

export function attrString(node: Node, name: string, fallback: string): string;
export function attrString(node: Node, name: string): string | undefined;
export function attrString(node: Node, name: string, fallback?: string): string | undefined {
  const a = attrOf(node, name, 'string');
  return a ? (a.value as string) : fallback;
}

export function attrTensor(node: Node, name: string): Tensor | undefined {
  const a = attrOf(node, name, 'tensor');
  return a ? (a.value as Tensor) : undefined;
}

// ---- attribute constructors for emitted nodes ----

export type AttrInput = number | string | number[] | string[] | Tensor | Attr;

/** Plain JS values become attributes; integers in ints arrays stay ints, a float forces 'float'. */
export function toAttr(v: AttrInput, asFloat = false): Attr {
  if (typeof v === 'number') return asFloat || !Number.isInteger(v) ? { kind: 'float', value: v } : { kind: 'int', value: v };
  if (typeof v === 'string') return { kind: 'string', value: v };
  if (Array.isArray(v)) {
    if (v.length > 0 && typeof v[0] === 'string') return { kind: 'strings', value: v as string[] };
    const nums = v as number[];
    return asFloat || nums.some((x) => !Number.isInteger(x)) ? { kind: 'floats', value: nums } : { kind: 'ints', value: nums };
  }
  if ('kind' in v) return v;
  return { kind: 'tensor', value: v };
}

export const floatAttr = (value: number): Attr => ({ kind: 'float', value });
export const floatsAttr = (value: number[]): Attr => ({ kind: 'floats', value });

/** Default-domain opset version of a model. */
/** A node of the default (ai.onnx) domain. */
export const isDefaultDomain = (n: Node) => n.domain === '' || n.domain === 'ai.onnx';

export function opsetVersion(model: Model): number {
  const o = model.opsets.find((x) => x.domain === '' || x.domain === 'ai.onnx');
  if (!o) throw new Error('model has no default-domain (ai.onnx) opset import');
  return o.version;
}

/** Map from tensor name to the node producing it. */
export function producers(graph: Graph): Map<string, Node> {
  const m = new Map<string, Node>();
  for (const n of graph.nodes) for (const o of n.outputs) if (o) m.set(o, n);
  return m;
}

/** The initializer `t` is, or the one an Identity copies into `t` (torch.onnx's alias of a weight stored once); undefined for neither. */
export function initializerBehind(graph: Graph, prod: Map<string, Node>, t: string): string | undefined {
  if (graph.initializers.has(t)) return t;
  const p = prod.get(t);
  return p && p.opType === 'Identity' && p.inputs[0] && graph.initializers.has(p.inputs[0]) ? p.inputs[0] : undefined;
}

/**
 * Remove nodes that no graph output depends on, then initializers nothing reads. An If, Loop or
 * Scan counts what its subgraphs read from this graph as read (./subgraphs.ts).
 */
export function dropDead(g: Graph): void {
  const prod = producers(g);
  const live = new Set<Node>();
  const stack = g.outputs.map((o) => prod.get(o.name)).filter((n): n is Node => !!n);
  while (stack.length) {
    const n = stack.pop()!;
    if (live.has(n)) continue;
    live.add(n);
    for (const i of readsOf(n)) { const p = i ? prod.get(i) : undefined; if (p) stack.push(p); }
  }
  g.nodes = g.nodes.filter((n) => live.has(n));
  const used = new Set(g.nodes.flatMap(readsOf));
  for (const o of g.outputs) used.add(o.name);
  for (const k of [...g.initializers.keys()]) if (!used.has(k)) g.initializers.delete(k);
}

/** The value of a tensor fixed in the file (initializer or Constant output), if it is one. */
export function constantValue(graph: Graph, name: string): Tensor | undefined {
  const init = graph.initializers.get(name);
  if (init) return init;
  const p = graph.nodes.find((n) => n.outputs.includes(name));
  return p && p.opType === 'Constant' ? attrTensor(p, 'value') : undefined;
}

/** Map from tensor name to the nodes consuming it. */
export function consumers(graph: Graph): Map<string, Node[]> {
  const m = new Map<string, Node[]>();
  for (const n of graph.nodes) for (const i of n.inputs) if (i) {
    const list = m.get(i);
    if (list) list.push(n); else m.set(i, [n]);
  }
  return m;
}

export function cloneGraph(g: Graph): Graph {
  return {
    name: g.name,
    nodes: g.nodes.map((n) => ({ ...n, inputs: [...n.inputs], outputs: [...n.outputs], attrs: { ...n.attrs } })),
    inputs: g.inputs.map((v) => ({ ...v, shape: v.shape ? [...v.shape] : null })),
    outputs: g.outputs.map((v) => ({ ...v, shape: v.shape ? [...v.shape] : null })),
    initializers: new Map(g.initializers), // tensors shared: rewrites replace entries, never mutate them
    valueInfo: g.valueInfo.map((v) => ({ ...v, shape: v.shape ? [...v.shape] : null })),
  };
}

export function cloneModel(m: Model): Model {
  return { ...m, opsets: m.opsets.map((o) => ({ ...o })), metadata: { ...m.metadata }, graph: cloneGraph(m.graph) };
}
