// Shapes of every intermediate tensor for one input signature, found by probing:
// run the graph once in onnxruntime with every value exposed as an output.
// Exact for any op onnxruntime runs (no hand-written inference rules to get wrong).
import type { Model, ValueInfo } from './ir.ts';
import { cloneModel } from './ir.ts';
import { encodeModel } from './proto.ts';
import { createSession, toOrt, fromOrt } from './runtime.ts';
import { type Tensor, type DType, tensor, size, formatShape } from './tensor.ts';

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
  /** Values of the requested node outputs (the probe computes every value anyway: keeping some costs nothing). */
  values: Map<string, Tensor>;
}

/** probeShapes, also returning the values of `values` (node outputs; names the graph does not produce are absent). */
export async function probe(model: Model, sig: InputSignature, opts: { feeds?: Record<string, Tensor>; values?: Iterable<string> } = {}): Promise<ProbeResult> {
  const feeds = opts.feeds;
  const wanted = new Set(opts.values ?? []);
  checkSignature(model.graph.inputs, sig);
  const m = cloneModel(model);
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
  const bytes = encodeModel(m);
  const session = await createSession(bytes, { optimization: 'disabled', threads: 1 });
  const ortFeeds: Record<string, ReturnType<typeof toOrt>> = {};
  for (const [name, s] of Object.entries(sig)) ortFeeds[name] = toOrt(feeds?.[name] ?? tensor(s.dtype, s.dims));
  let out;
  try {
    out = await session.run(ortFeeds);
  } catch (e) {
    throw new Error(`shape probe failed for input signature ${describeSignature(sig)}: ${(e as Error).message}`);
  } finally {
    await session.release();
  }
  const shapes: ShapeMap = new Map();
  for (const [name, t] of m.graph.initializers) shapes.set(name, { dtype: t.dtype, dims: [...t.dims] });
  for (const [name, s] of Object.entries(sig)) shapes.set(name, { dtype: s.dtype, dims: [...s.dims] });
  const values = new Map<string, Tensor>();
  for (const [name, t] of Object.entries(out)) {
    const ft = fromOrt(t);
    shapes.set(name, { dtype: ft.dtype, dims: ft.dims });
    if (wanted.has(name)) values.set(name, ft);
  }
  return { shapes, values };
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
