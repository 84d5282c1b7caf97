// Shapes of every intermediate tensor for one input signature, found by probing:
// run the graph once in onnxruntime with every value exposed as an output.
// Exact for any op onnxruntime runs (no hand-written inference rules to get wrong).
import type { Model, Node, ValueInfo } from './ir.ts';
import { cloneModel } from './ir.ts';
import { readsOf, withoutSubgraphShapes } from './subgraphs.ts';
import { encodeModel } from './proto.ts';
import { createSession, toOrt, fromOrt } from './runtime.ts';
import { type Tensor, type DType, tensor, size, formatShape, isFloat } from './tensor.ts';

export interface ValueMeta { dtype: DType; dims: number[] }
export type ShapeMap = Map<string, ValueMeta>;

export interface InputSignature { [name: string]: { dtype: DType; dims: number[] } }

/** Check a signature against the model's declared inputs; name the input and both shapes on mismatch. */
export function checkSignature(inputs: ValueInfo[], sig: InputSignature): void {
  for (const v of inputs) {
    const s = sig[v.name];
    if (!s) throw new Error(`missing input '${v.name}' (expected ${v.dtype} ${formatShape(v.shape ?? [])})`);
    if (s.dtype !== v.dtype) throw new Error(`input '${v.name}' has dtype ${s.dtype}, the model expects ${v.dtype}`);
    if (v.shape) {
      const ok = v.shape.length === s.dims.length && v.shape.every((d, i) => typeof d !== 'number' || d === s.dims[i]);
      if (!ok) throw new Error(`input '${v.name}' has shape ${formatShape(s.dims)}, the model expects ${formatShape(v.shape)}`);
    }
  }
  for (const k of Object.keys(sig)) {
    if (!inputs.some((v) => v.name === k)) throw new Error(`unknown input '${k}'; the model's inputs are: ${inputs.map((v) => v.name).join(', ')}`);
  }
}

/**
 * Probe all value shapes. `feeds` may be given (real data) or synthesised from the
 * signature (zeros: valid for indices too). Initializers are included.
 */
export async function probeShapes(model: Model, sig: InputSignature, feeds?: Record<string, Tensor>): Promise<ShapeMap> {
  return (await probe(model, sig, { feeds })).shapes;
}

export interface ProbeResult {
  shapes: ShapeMap;
  /** Values of the requested node outputs (names the graph does not produce are absent). */
  values: Map<string, Tensor>;
  /** Values asked for and outputs whose shape inference left open: computed by a run (or, for a Shape or Size of a known shape, from it); the rest were inferred. */
  computed: string[];
}

const META_DTYPE: Record<string, DType> = {
  float32: 'float32', float64: 'float64', float16: 'float16', int8: 'int8', uint8: 'uint8', int16: 'int16',
  uint16: 'uint16', int32: 'int32', uint32: 'uint32', int64: 'int64', uint64: 'uint64', bool: 'bool',
};

/**
 * probeShapes, also returning the values of `values` (node outputs).
 *
 * Memory (bench/results/step-memory.md): running a graph with every value as an output holds every
 * intermediate at once, in onnxruntime and again as the JS copies of the outputs; for a training
 * step's graph that probe was the process's peak RSS (cnn28 Tent: 554 MB, against 446 MB for the
 * step itself). So the shapes come from onnxruntime's own shape inference first (the session's
 * output metadata, with the inputs fixed to the signature), and the graph runs only for the values
 * asked for and the outputs whose shape or type inference left open (data-dependent shapes),
 * in a graph cut down to what those need.
 */
export async function probe(model: Model, sig: InputSignature, opts: { feeds?: Record<string, Tensor>; values?: Iterable<string>; maxFloatElements?: number; known?: ShapeMap } = {}): Promise<ProbeResult> {
  const feeds = opts.feeds;
  checkSignature(model.graph.inputs, sig);
  const m = cloneModel(model);
  // Static input shapes let onnxruntime infer static shapes downstream; stale value_info
  // (symbolic 'batch' dims written by an exporter) would only blur them. Shapes an earlier probe
  // of the same inputs found (`known`) are declared: a Loop unrolled after it holds copies of its
  // body whose inputs onnxruntime could not infer (of unknown rank, after NMS), and its inference
  // of a Resize there then took computed sizes for 0 elements (torchvision's Mask R-CNN).
  m.graph.inputs = m.graph.inputs.map((v) => (sig[v.name] ? { ...v, shape: [...sig[v.name]!.dims] } : v));
  const outputsOfNodes = new Set(m.graph.nodes.flatMap((n) => n.outputs));
  m.graph.valueInfo = opts.known ? [...opts.known].filter(([k]) => outputsOfNodes.has(k)).map(([name, s]) => ({ name, dtype: s.dtype, shape: [...s.dims] })) : [];
  m.graph.nodes = m.graph.nodes.map(withoutSubgraphShapes);
  const produced = new Set<string>();
  for (const n of m.graph.nodes) for (const o of n.outputs) if (o) produced.add(o);
  const wanted = new Set([...(opts.values ?? [])].filter((v) => produced.has(v)));
  const known = new Set(m.graph.outputs.map((o) => o.name));
  for (const n of m.graph.nodes) {
    for (const o of n.outputs) {
      if (o && !known.has(o)) {
        known.add(o);
        // An output with no type is accepted by onnxruntime and typed from the graph.
        m.graph.outputs.push({ name: o, dtype: 'float32', shape: null, untyped: true });
      }
    }
  }
  const shapes: ShapeMap = new Map();
  for (const [name, t] of m.graph.initializers) shapes.set(name, { dtype: t.dtype, dims: [...t.dims] });
  for (const [name, s] of Object.entries(sig)) shapes.set(name, { dtype: s.dtype, dims: [...s.dims] });
  const open = await inferShapes(m, shapes);
  // `maxFloatElements`: values asked for but known to be larger floats are not fetched (the step's
  // fold keeps those computed anyway; fetching them made JS garbage of a dense conv matrix's size).
  if (opts.maxFloatElements !== undefined) {
    for (const v of wanted) {
      const s = shapes.get(v);
      if (s && isFloat(s.dtype) && size(s.dims) > opts.maxFloatElements) wanted.delete(v);
    }
  }
  const values = new Map<string, Tensor>();
  const run = [...new Set([...open, ...wanted])];
  if (run.length === 0) return { shapes, values, computed: run };
  // A Shape or Size of a tensor whose shape is known becomes a constant first. Otherwise the cut for
  // a shape computation reaches back through the activation it measures, and the run covers the
  // whole forward pass (an exported 135M-parameter decoder: 9 s of a 13 s compile).
  const measured = shapeConstants(m, shapes);
  for (const [name, t] of measured) if (wanted.has(name)) values.set(name, t);
  const rest = run.filter((v) => !measured.has(v));
  if (rest.length > 0) {
    for (const [name, t] of await runCut(withConstants(m, measured), rest, sig, feeds)) {
      shapes.set(name, { dtype: t.dtype, dims: t.dims });
      if (wanted.has(name)) values.set(name, t);
    }
  }
  return { shapes, values, computed: run };
}

/** The value of every Shape and Size node whose input's shape is known (Shape's start/end honoured). */
function shapeConstants(m: Model, shapes: ShapeMap): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const n of m.graph.nodes) {
    if (n.opType !== 'Shape' && n.opType !== 'Size') continue;
    if (!n.outputs[0] || (n.domain !== '' && n.domain !== 'ai.onnx')) continue;
    const dims = shapes.get(n.inputs[0] ?? '')?.dims;
    if (!dims) continue;
    if (n.opType === 'Size') { out.set(n.outputs[0], tensor('int64', [], [size(dims)])); continue; }
    const r = dims.length, clamp = (v: number) => Math.min(Math.max(v < 0 ? v + r : v, 0), r);
    const start = n.attrs.start?.kind === 'int' ? clamp(n.attrs.start.value) : 0;
    const end = n.attrs.end?.kind === 'int' ? clamp(n.attrs.end.value) : r;
    const v = dims.slice(start, Math.max(start, end));
    out.set(n.outputs[0], tensor('int64', [v.length], v));
  }
  return out;
}

/**
 * Shapes from onnxruntime's shape inference (the session's output metadata) into `shapes`; returns
 * the outputs it left open (unknown dims, or downstream of an op whose inference is untrusted).
 * At level 'basic' onnxruntime folds the shape arithmetic (Shape of a static tensor, the Gathers
 * and Concats on it) before it infers, so a Reshape to a computed shape is inferred too; at
 * 'disabled' it was left open, and every activation after it had to be computed by a run. The
 * weights are graph inputs here (withoutWeights), so nothing heavy folds.
 */
async function inferShapes(m: Model, shapes: ShapeMap): Promise<string[]> {
  const open: string[] = [];
  const scalars = new Map<string, DType>();
  const inferred = new Map<string, { dtype: DType; dims: number[] }>();
  const session = await createSession(encodeModel(withoutWeights(m)), { optimization: 'basic', threads: 1 });
  try {
    for (const meta of session.outputMetadata) {
      const dtype = meta.isTensor ? META_DTYPE[meta.type] : undefined;
      const dims = meta.isTensor ? meta.shape : undefined;
      // A sequence (a Loop's carried list) has no tensor shape, and onnxruntime-node cannot return one.
      if (!meta.isTensor) continue;
      if (dtype && dims?.length === 0) scalars.set(meta.name, dtype);
      // A dim of 2^31 or more is no tensor's: onnxruntime-web's metadata gives such garbage for
      // some dims it could not infer (a SequenceAt's output, 51539607540); they are asked by a run.
      else if (dtype && dims && dims.every((d): d is number => typeof d === 'number' && d >= 0 && d < 2 ** 31)) inferred.set(meta.name, { dtype, dims: [...dims] });
      else open.push(meta.name);
    }
  } finally {
    await session.release();
  }
  const shapeOf = (t: string) => inferred.get(t)?.dims ?? shapes.get(t)?.dims;
  const untrusted = downstreamOfUntrustedInference(m, shapeOf);
  for (const [name, s] of inferred) {
    if (untrusted.has(name)) open.push(name);
    else shapes.set(name, s);
  }
  for (const name of [...scalars.keys()]) if (untrusted.has(name)) { scalars.delete(name); open.push(name); }
  // Scalars the graph itself proves (a torch export's shape arithmetic: Gather of a Shape at a
  // constant index, and arithmetic on those) need no second session to ask.
  const certain = provenScalars(m);
  const unsure = [...scalars.keys()].filter((n) => !certain.has(n));
  const ranked = unsure.length > 0 ? await scalarsOfKnownRank(m, shapes, unsure) : new Set<string>();
  for (const n of certain) ranked.add(n);
  for (const [name, dtype] of scalars) {
    if (ranked.has(name)) shapes.set(name, { dtype, dims: [] });
    else open.push(name);
  }
  return fillOpen(m, shapes, open);
}

/** NumPy broadcasting of two sizes along one axis; NaN where they cannot broadcast. */
function broadcastDim(a: number, b: number): number {
  return a === b || b === 1 ? a : a === 1 ? b : NaN;
}

/** Elementwise ops whose output shape is the broadcast of their inputs'. */
const BROADCASTING = new Set(['Add', 'Sub', 'Mul', 'Div', 'Max', 'Min']);

/**
 * Shapes onnxruntime's inference leaves open that the graph fixes: the statistics outputs of a
 * training-mode BatchNormalization below opset 14 (ONNX infers only its first output; they are
 * [C], as its running statistics), and elementwise arithmetic on known shapes after them (the
 * running-statistic updates of a step with batchNorm: 'train'). On MobileNetV2's SAR step those
 * were 468 values computed by a run of the whole forward pass (436 ms of a 1.8 s first call).
 * Returns what stays open.
 */
function fillOpen(m: Model, shapes: ShapeMap, open: string[]): string[] {
  if (open.length === 0) return open;
  const left = new Set(open);
  for (const n of m.graph.nodes) {
    if (n.domain !== '' && n.domain !== 'ai.onnx') continue;
    if (n.opType === 'BatchNormalization') {
      const stat = shapes.get(n.inputs[3] ?? '');
      if (!stat) continue;
      for (const o of n.outputs.slice(1)) if (o && left.has(o)) { shapes.set(o, { dtype: stat.dtype, dims: [...stat.dims] }); left.delete(o); }
    } else if (BROADCASTING.has(n.opType) && n.outputs[0] && left.has(n.outputs[0])) {
      const ins = n.inputs.map((i) => shapes.get(i));
      if (ins.some((s) => !s)) continue;
      const rank = Math.max(...ins.map((s) => s!.dims.length));
      const dims = Array.from({ length: rank }, (_, k) => ins.reduce((d, s) => broadcastDim(d, s!.dims[s!.dims.length - rank + k] ?? 1), 1));
      if (dims.some((d) => Number.isNaN(d))) continue;
      shapes.set(n.outputs[0], { dtype: ins[0]!.dtype, dims });
      left.delete(n.outputs[0]);
    }
  }
  return open.filter((o) => left.has(o));
}

/** Elementwise ops whose output is a scalar when every input is. */
const SCALAR_PRESERVING = new Set(['Add', 'Sub', 'Mul', 'Div', 'Mod', 'Pow', 'Min', 'Max', 'Neg', 'Abs', 'Floor', 'Ceil', 'Sqrt', 'Cast', 'Equal', 'Less', 'LessOrEqual', 'Greater', 'GreaterOrEqual', 'Not', 'And', 'Or', 'Where', 'Identity']);

/**
 * Node outputs whose rank is 0 by construction: a Constant holding a scalar, a Gather at a scalar
 * index from a Shape (always 1-d), and elementwise ops on scalars only. What torch.onnx writes for
 * `x.size(i)` arithmetic: MViT-V2-S's unrolled graph has thousands, and asking each in a session of
 * its own cost 1.6 s of its first call.
 */
function provenScalars(m: Model): Set<string> {
  const scalar = new Set<string>();
  const shapes = new Set<string>();
  for (const [k, t] of m.graph.initializers) if (t.dims.length === 0) scalar.add(k);
  for (const n of m.graph.nodes) {
    if (n.domain !== '' && n.domain !== 'ai.onnx') continue;
    const out = n.outputs[0];
    if (!out || n.outputs.length !== 1) continue;
    const value = n.opType === 'Constant' && n.attrs.value?.kind === 'tensor' ? n.attrs.value.value : undefined;
    if (value && value.dims.length === 0) scalar.add(out);
    else if (n.opType === 'Size') scalar.add(out); // a Size is a scalar by definition (ONNX's expanded LayerNormalization's Rank)
    else if (n.opType === 'Shape') shapes.add(out);
    else if (n.opType === 'Gather' && shapes.has(n.inputs[0] ?? '') && scalar.has(n.inputs[1] ?? '')) scalar.add(out);
    else if (SCALAR_PRESERVING.has(n.opType) && n.inputs.length > 0 && n.inputs.every((i) => scalar.has(i))) scalar.add(out);
  }
  return scalar;
}

/**
 * onnxruntime's output metadata gives the shape [] both for a scalar and for a tensor whose rank
 * inference could not tell (what a Loop's sequence hands to SequenceAt, and everything computed
 * from it: torch.tensor_split's export in torchvision's MViT). Believing [] there made a Shape of
 * a 4-d activation the constant [] and the probe run fail. So each [] is asked again, as a Shape of
 * it: inference gives that Shape the dims [0] only when it knows the rank is 0.
 */
async function scalarsOfKnownRank(m: Model, shapes: ShapeMap, names: string[]): Promise<Set<string>> {
  const constants = shapeConstants(m, shapes);
  // A name that became a constant has no node left to probe (and its value says its rank).
  const constantScalars = names.filter((n) => constants.get(n)?.dims.length === 0);
  const probes = names.filter((n) => !constants.has(n)).map((n, i) => ({ of: n, out: `__rank_of_${i}` }));
  if (probes.length === 0) return new Set(constantScalars);
  const known = withConstants(m, constants);
  known.graph.nodes = [...known.graph.nodes, ...probes.map((p) => ({ opType: 'Shape', domain: '', name: p.out, inputs: [p.of], outputs: [p.out], attrs: {} }))];
  known.graph.outputs = [...known.graph.outputs, ...probes.map((p) => ({ name: p.out, dtype: 'int64' as const, shape: null, untyped: true }))];
  const cut = cutTo(known, probes.map((p) => p.out));
  const session = await createSession(encodeModel(withoutWeights(cut)), { optimization: 'basic', threads: 1 });
  try {
    const rank = new Map(session.outputMetadata.map((meta) => [meta.name, meta.isTensor ? meta.shape : undefined]));
    return new Set([...constantScalars, ...probes.filter((p) => { const d = rank.get(p.out); return d?.length === 1 && d[0] === 0; }).map((p) => p.of)]);
  } finally {
    await session.release();
  }
}

/** Run the graph cut down to `names` on the signature (zeros where no feed is given). */
async function runCut(m: Model, names: string[], sig: InputSignature, feeds?: Record<string, Tensor>): Promise<Map<string, Tensor>> {
  const sub = cutTo(m, names);
  const session = await createSession(encodeModel(sub), { optimization: 'disabled', threads: 1 });
  const ortFeeds: Record<string, ReturnType<typeof toOrt>> = {};
  const subInputs = new Set(sub.graph.inputs.map((i) => i.name));
  for (const [name, s] of Object.entries(sig)) if (subInputs.has(name)) ortFeeds[name] = toOrt(feeds?.[name] ?? tensor(s.dtype, s.dims));
  let out;
  try {
    out = await session.run(ortFeeds);
  } catch (e) {
    throw new Error(`shape probe failed for input signature ${describeSignature(sig)}: ${(e as Error).message}`);
  } finally {
    await session.release();
  }
  return new Map(Object.entries(out).map(([name, t]) => [name, fromOrt(t)]));
}

/**
 * The model with `values` as initializers in place of the nodes that compute them (a node is
 * replaced only when every output it has is among them; its outputs leave the graph outputs). Only
 * initializers a node still reads stay (onnxruntime warns of each unused one).
 */
function withConstants(m: Model, values: Map<string, Tensor>): Model {
  const gone = new Set<string>();
  const nodes = m.graph.nodes.filter((n) => {
    const outs = n.outputs.filter((o) => o);
    if (outs.length === 0 || !outs.every((o) => values.has(o))) return true;
    for (const o of outs) gone.add(o);
    return false;
  });
  const outputs = m.graph.outputs.filter((o) => !gone.has(o.name));
  const read = new Set([...nodes.flatMap((n) => readsOf(n)), ...outputs.map((o) => o.name)]);
  const initializers = new Map([...m.graph.initializers].filter(([k]) => read.has(k)));
  for (const o of gone) if (read.has(o)) initializers.set(o, values.get(o)!);
  return { ...m, graph: { ...m.graph, nodes, initializers, outputs } };
}

/**
 * Whether onnxruntime's inferred shape of node `n`'s output can be believed. Einsum's inference
 * disagrees with its kernel on a broadcast dimension ('ij,ij->ij' on [1,3] and [2,3] is inferred
 * [1,3]; the kernel returns [2,3]), so an Einsum's inferred shape is believed only where it is the
 * shape its equation gives from its inputs' (MaxViT's attention: every activation after its first
 * Einsum used to come from a run, 5 s of a 13 s first call).
 */
function inferenceTrusted(n: Node, shapeOf: (t: string) => number[] | undefined): boolean {
  if (n.opType !== 'Einsum') return true;
  const out = shapeOf(n.outputs[0] ?? '');
  const want = einsumShape(n, n.inputs.map(shapeOf));
  return !!out && !!want && out.length === want.length && out.every((d, i) => d === want[i]);
}

/** The output shape of an explicit ('…->…') Einsum equation on inputs of these shapes, broadcasting as its kernel does; undefined when unsure. */
export function einsumShape(n: Node, inputs: (number[] | undefined)[]): number[] | undefined {
  const eq = n.attrs.equation?.kind === 'string' ? n.attrs.equation.value.replace(/\s/g, '') : undefined;
  if (!eq || !eq.includes('->') || inputs.some((d) => !d)) return undefined;
  const [lhs, rhs] = eq.split('->') as [string, string];
  const terms = lhs.split(',');
  if (terms.length !== inputs.length) return undefined;
  const size = new Map<string, number>();
  let ellipsis: number[] = [];
  for (let k = 0; k < terms.length; k++) {
    const dims = inputs[k]!, term = terms[k]!;
    const letters = term.replace('...', '');
    const e = term.includes('...') ? dims.length - letters.length : 0;
    if (e < 0 || (!term.includes('...') && letters.length !== dims.length)) return undefined;
    const at = term.indexOf('...');
    const ell = e > 0 ? dims.slice(at, at + e) : [];
    const named = e > 0 ? [...dims.slice(0, at), ...dims.slice(at + e)] : dims;
    // the ellipsis dims broadcast right-aligned across operands
    const len = Math.max(ellipsis.length, ell.length);
    ellipsis = Array.from({ length: len }, (_, i) => broadcastDim(ellipsis[ellipsis.length - len + i] ?? 1, ell[ell.length - len + i] ?? 1));
    for (let i = 0; i < letters.length; i++) size.set(letters[i]!, broadcastDim(size.get(letters[i]!) ?? 1, named[i]!));
  }
  if ([...size.values(), ...ellipsis].some((d) => Number.isNaN(d))) return undefined; // sizes that cannot broadcast
  const out: number[] = [];
  for (let i = 0; i < rhs.length; i++) {
    if (rhs.startsWith('...', i)) { out.push(...ellipsis); i += 2; continue; }
    const d = size.get(rhs[i]!);
    if (d === undefined) return undefined;
    out.push(d);
  }
  return out.every((d) => Number.isInteger(d) && d >= 0) ? out : undefined;
}

/** Outputs of nodes whose inferred shape cannot be believed, and of everything computed from them: their shapes come from a run. */
function downstreamOfUntrustedInference(m: Model, shapeOf: (t: string) => number[] | undefined): Set<string> {
  const tainted = new Set<string>();
  for (const n of m.graph.nodes) {
    if (n.inputs.some((i) => tainted.has(i)) || !inferenceTrusted(n, shapeOf)) for (const o of n.outputs) if (o) tainted.add(o);
  }
  return tainted;
}

/**
 * For shape inference only: float initializers become inputs of the same static shape. A weight's
 * values never decide a shape (shape-like tensors are integers), and the session then neither
 * copies nor pre-packs the weights (ResNet-18: 45 MB less to encode and load).
 */
function withoutWeights(m: Model): Model {
  const inits = new Map<string, Tensor>();
  const inputs = [...m.graph.inputs];
  for (const [k, t] of m.graph.initializers) {
    if (isFloat(t.dtype) && t.data.length >= 64) inputs.push({ name: k, dtype: t.dtype, shape: [...t.dims] });
    else inits.set(k, t);
  }
  return { ...m, graph: { ...m.graph, inputs: inputs.filter((v, i) => inputs.findIndex((w) => w.name === v.name) === i), initializers: inits } };
}

/**
 * The graph with only `outputs` as outputs and only the nodes, initializers and inputs they need.
 * Nodes with subgraph attributes may read outer values by name: then every node is kept.
 */
function cutTo(m: Model, outputs: string[]): Model {
  const g = m.graph;
  const outs = new Set(outputs);
  const typed = new Map(g.outputs.map((o) => [o.name, o]));
  const sub = { ...m, graph: { ...g, outputs: outputs.map((o) => typed.get(o)!), initializers: new Map(g.initializers) } };
  if (g.nodes.some((n) => Object.values(n.attrs).some((a) => a.kind === 'opaque'))) return sub;
  // Walk producers from the outputs (by name, so the node order does not matter).
  const producer = new Map<string, number>();
  g.nodes.forEach((n, i) => { for (const o of n.outputs) if (o) producer.set(o, i); });
  const need = new Set(outs);
  const keep: boolean[] = new Array(g.nodes.length).fill(false);
  const todo = [...outs];
  while (todo.length) {
    const i = producer.get(todo.pop()!);
    if (i === undefined || keep[i]) continue;
    keep[i] = true;
    for (const x of g.nodes[i]!.inputs) if (x && !need.has(x)) { need.add(x); todo.push(x); }
  }
  sub.graph.nodes = g.nodes.filter((_, i) => keep[i]);
  sub.graph.inputs = g.inputs.filter((v) => need.has(v.name));
  sub.graph.initializers = new Map([...g.initializers].filter(([k]) => need.has(k)));
  return sub;
}

export function describeSignature(sig: InputSignature): string {
  return Object.entries(sig).map(([k, v]) => `${k}: ${v.dtype}${formatShape(v.dims)}`).join(', ');
}

export function signatureOf(feeds: Record<string, Tensor>): InputSignature {
  const sig: InputSignature = {};
  for (const [k, t] of Object.entries(feeds)) {
    if (t.data.length !== size(t.dims)) throw new Error(`input '${k}': data has ${t.data.length} values but shape ${formatShape(t.dims)} needs ${size(t.dims)}`);
    sig[k] = { dtype: t.dtype, dims: [...t.dims] };
  }
  return sig;
}

export function signatureKey(sig: InputSignature): string {
  return Object.keys(sig).sort().map((k) => `${k}:${sig[k]!.dtype}[${sig[k]!.dims.join(',')}]`).join(';');
}
