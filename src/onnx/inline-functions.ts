// ONNX model-local functions (ModelProto.functions) are inlined at load. PyTorch writes them with
// `export_modules_as_functions`, its dynamo exporter and onnxscript write them too; a call is a
// node whose op is the function's (domain, name). refit's IR holds one flat graph: without this
// pass the function bodies were dropped on decode, so the calls had "no gradient rule" and a saved
// or compiled model no longer ran. onnxruntime inlines them the same way before it runs a model.
import protobuf from 'protobufjs/minimal.js';
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;
type ModelProto = onnxProto.onnx.IModelProto;
type GraphProto = onnxProto.onnx.IGraphProto;
type NodeProto = onnxProto.onnx.INodeProto;
type AttributeProto = onnxProto.onnx.IAttributeProto;
type FunctionProto = onnxProto.onnx.IFunctionProto;

/** A FunctionProto with the fields onnx-proto 8 does not know: attribute defaults (IR 9) and overload (IR 10). */
interface Fn { proto: FunctionProto; defaults: Map<string, AttributeProto>; overload: string }

// ModelProto.functions is field 25; FunctionProto.attribute_proto 11 and overload 13 (onnx.proto3).
const MODEL_FUNCTIONS = 25, FUNCTION_ATTRIBUTE_PROTO = 11, FUNCTION_OVERLOAD = 13;
/** Deeper than this, a call chain is taken to be recursive (the ONNX spec forbids recursion). */
const MAX_DEPTH = 64;

/** Each function's bytes, in order, read from the model bytes (for the fields onnx-proto drops). */
function functionExtras(modelBytes: Uint8Array): { defaults: Map<string, AttributeProto>; overload: string }[] {
  const out: { defaults: Map<string, AttributeProto>; overload: string }[] = [];
  const r = protobuf.Reader.create(modelBytes);
  while (r.pos < r.len) {
    const tag = r.uint32();
    if (tag >>> 3 !== MODEL_FUNCTIONS || (tag & 7) !== 2) { r.skipType(tag & 7); continue; }
    const fr = protobuf.Reader.create(r.bytes());
    const defaults = new Map<string, AttributeProto>();
    let overload = '';
    while (fr.pos < fr.len) {
      const t = fr.uint32();
      if (t >>> 3 === FUNCTION_ATTRIBUTE_PROTO && (t & 7) === 2) {
        const a = onnx.AttributeProto.decode(fr.bytes());
        defaults.set(a.name, a);
      } else if (t >>> 3 === FUNCTION_OVERLOAD && (t & 7) === 2) overload = fr.string();
      else fr.skipType(t & 7);
    }
    out.push({ defaults, overload });
  }
  return out;
}

const keyOf = (domain: string | null | undefined, name: string | null | undefined) => `${domain ?? ''}\u0000${name ?? ''}`;
const isDefault = (domain: string | null | undefined) => !domain || domain === 'ai.onnx';

/**
 * Inline every call of a model-local function in `p` (its graph and the subgraphs within), and
 * drop the functions and the opset imports only they used. `bytes` are the model's own bytes (for
 * attribute defaults). Returns the number of calls inlined. Throws, naming the function, on what
 * it cannot inline faithfully: overloads, recursion, or a body written for another opset.
 */
export function inlineModelFunctions(p: ModelProto, bytes: Uint8Array): number {
  const protos = p.functions ?? [];
  if (protos.length === 0) return 0;
  const extras = functionExtras(bytes);
  const fns = new Map<string, Fn>();
  protos.forEach((proto, i) => {
    const key = keyOf(proto.domain, proto.name);
    const extra = extras[i] ?? { defaults: new Map(), overload: '' };
    if (fns.has(key) || extra.overload) {
      throw new Error(`model-local function '${proto.domain}:${proto.name}' is overloaded (IR 10 overloads); refit cannot tell the calls apart`);
    }
    fns.set(key, { proto, ...extra });
  });
  const modelDefault = (p.opsetImport ?? []).find((o) => isDefault(o.domain));
  for (const fn of fns.values()) {
    const own = (fn.proto.opsetImport ?? []).find((o) => isDefault(o.domain));
    if (own && modelDefault && Number(own.version) !== Number(modelDefault.version)) {
      throw new Error(`model-local function '${fn.proto.domain}:${fn.proto.name}' is written for opset ${own.version} and the model for opset ${modelDefault.version}; refit inlines functions into the model's graph and cannot mix the two`);
    }
  }
  const names = new NameSource(p.graph!);
  const count = { calls: 0 };
  inlineGraph(p.graph!, fns, names, count, 0);

  // The functions' own imports of other domains (e.g. com.microsoft) now belong to the model.
  const imports = new Map((p.opsetImport ?? []).map((o) => [o.domain ?? '', o]));
  for (const fn of fns.values()) {
    for (const o of fn.proto.opsetImport ?? []) if (!imports.has(o.domain ?? '') && !isDefault(o.domain)) imports.set(o.domain ?? '', o);
  }
  const used = new Set<string>();
  usedDomains(p.graph!, used);
  const functionDomains = new Set([...fns.values()].map((f) => f.proto.domain ?? ''));
  p.opsetImport = [...imports.values()].filter((o) => !functionDomains.has(o.domain ?? '') || used.has(o.domain ?? ''));
  p.functions = [];
  return count.calls;
}

function usedDomains(g: GraphProto, into: Set<string>): void {
  for (const n of g.node ?? []) {
    into.add(n.domain ?? '');
    for (const a of n.attribute ?? []) {
      if (a.g) usedDomains(a.g, into);
      for (const s of a.graphs ?? []) usedDomains(s, into);
    }
  }
}

/** Fresh tensor and node names that collide with nothing in the model. */
class NameSource {
  private used = new Set<string>();
  constructor(g: GraphProto) { this.collect(g); }
  private collect(g: GraphProto): void {
    for (const v of [...(g.input ?? []), ...(g.output ?? []), ...(g.valueInfo ?? [])]) this.used.add(v.name ?? '');
    for (const t of g.initializer ?? []) this.used.add(t.name ?? '');
    for (const n of g.node ?? []) {
      this.used.add(n.name ?? '');
      for (const s of [...(n.input ?? []), ...(n.output ?? [])]) this.used.add(s);
      for (const a of n.attribute ?? []) {
        if (a.g) this.collect(a.g);
        for (const s of a.graphs ?? []) this.collect(s);
      }
    }
  }
  fresh(base: string): string {
    let name = base, k = 1;
    while (this.used.has(name)) name = `${base}_${++k}`;
    this.used.add(name);
    return name;
  }
}

function inlineGraph(g: GraphProto, fns: Map<string, Fn>, names: NameSource, count: { calls: number }, depth: number): void {
  const out: NodeProto[] = [];
  for (const n of g.node ?? []) {
    for (const a of n.attribute ?? []) {
      if (a.g) inlineGraph(a.g, fns, names, count, depth);
      for (const s of a.graphs ?? []) inlineGraph(s, fns, names, count, depth);
    }
    const fn = fns.get(keyOf(n.domain, n.opType));
    if (!fn) { out.push(n); continue; }
    if (depth >= MAX_DEPTH) throw new Error(`model-local function '${fn.proto.domain}:${fn.proto.name}' calls itself (directly or through others), which ONNX forbids`);
    const body: GraphProto = { node: expandCall(n, fn, names) };
    inlineGraph(body, fns, names, count, depth + 1); // calls inside the body
    out.push(...body.node!);
    count.calls++;
  }
  g.node = out;
}

/** The body of `fn` for one call: names bound to the call's, attributes resolved. */
function expandCall(call: NodeProto, fn: Fn, names: NameSource): NodeProto[] {
  const prefix = call.name || `${fn.proto.name}`;
  const declared = { inputs: fn.proto.input?.length ?? 0, outputs: fn.proto.output?.length ?? 0 };
  if ((call.input?.length ?? 0) > declared.inputs || (call.output?.length ?? 0) > declared.outputs) {
    throw new Error(`node '${call.name}' calls model-local function '${fn.proto.domain}:${fn.proto.name}' with ${call.input?.length ?? 0} inputs and ${call.output?.length ?? 0} outputs; it declares ${declared.inputs} and ${declared.outputs}`);
  }
  const rename = new Map<string, string>();
  (fn.proto.input ?? []).forEach((formal, i) => rename.set(formal, call.input?.[i] ?? ''));
  (fn.proto.output ?? []).forEach((formal, i) => {
    const actual = call.output?.[i];
    rename.set(formal, actual ? actual : names.fresh(`${prefix}/${formal}`));
  });
  // Every other name the body defines, in any scope, gets a fresh one: one map per call.
  const bind = (s: string) => {
    if (!s) return s;
    let r = rename.get(s);
    if (r === undefined) { r = names.fresh(`${prefix}/${s}`); rename.set(s, r); }
    return r;
  };
  const given = new Map((call.attribute ?? []).map((a) => [a.name ?? '', a]));
  const ctx: CallContext = { bind, given, fn, names, prefix };
  return (fn.proto.node ?? []).map((n) => copyNode(n, ctx));
}

interface CallContext {
  bind: (name: string) => string;
  /** The call's attributes, by name. */
  given: Map<string, AttributeProto>;
  fn: Fn;
  names: NameSource;
  prefix: string;
}

function copyNode(n: NodeProto, ctx: CallContext): NodeProto {
  const attribute: AttributeProto[] = [];
  for (const a of n.attribute ?? []) {
    if (a.refAttrName) {
      const value = ctx.given.get(a.refAttrName) ?? ctx.fn.defaults.get(a.refAttrName);
      if (value) attribute.push({ ...value, name: a.name });
      continue; // neither given nor defaulted: the attribute is absent, as the spec says
    }
    if (a.g || a.graphs?.length) {
      attribute.push({ ...a, g: a.g ? copyGraph(a.g, ctx) : a.g, graphs: (a.graphs ?? []).map((s) => copyGraph(s, ctx)) });
    } else attribute.push(a);
  }
  return {
    ...n,
    name: ctx.names.fresh(`${ctx.prefix}/${n.name || n.opType}`),
    input: (n.input ?? []).map(ctx.bind),
    output: (n.output ?? []).map(ctx.bind),
    attribute,
  };
}

/** A subgraph (If branch, Loop body) of a body node, its names bound like the body's. */
function copyGraph(g: GraphProto, ctx: CallContext): GraphProto {
  const vi = (v: onnxProto.onnx.IValueInfoProto) => ({ ...v, name: ctx.bind(v.name ?? '') });
  return {
    ...g,
    input: (g.input ?? []).map(vi),
    output: (g.output ?? []).map(vi),
    valueInfo: (g.valueInfo ?? []).map(vi),
    initializer: (g.initializer ?? []).map((t) => ({ ...t, name: ctx.bind(t.name ?? '') })),
    node: (g.node ?? []).map((n) => copyNode(n, ctx)),
  };
}
