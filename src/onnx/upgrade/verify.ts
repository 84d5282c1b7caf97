// Running a model on seeded synthetic inputs and comparing two runs: the evidence that an
// opset upgrade changed nothing.
import type { Model, ValueInfo } from '../ir.ts';
import { cloneModel } from '../ir.ts';
import { encodeModel } from '../proto.ts';
import { createSession, toOrt, fromOrt } from '../runtime.ts';
import { type Tensor, allocate, size, formatShape } from '../tensor.ts';
import { Rng } from '../../util/rng.ts';

/**
 * Inputs from the declared signature: floats standard normal, integers in {0, 1, 2} (valid as
 * indices into any non-trivial axis), bools random; symbolic dimensions set to `dynamicDim`, or
 * per axis by it (a detector's dynamic height and width need more than a batch does).
 */
export function syntheticFeeds(inputs: ValueInfo[], seed: number, dynamicDim: number | ((axis: number) => number)): Record<string, Tensor> {
  const rng = new Rng(seed);
  const feeds: Record<string, Tensor> = {};
  const dimAt = typeof dynamicDim === 'number' ? () => dynamicDim : dynamicDim;
  for (const v of inputs) {
    if (v.shape === null) throw new Error(`input '${v.name}' has no declared shape`);
    const dims = v.shape.map((d, axis) => (typeof d === 'number' ? d : dimAt(axis)));
    const n = size(dims);
    const data = allocate(v.dtype, n);
    for (let i = 0; i < n; i++) {
      if (data instanceof BigInt64Array || data instanceof BigUint64Array) data[i] = BigInt(rng.int(3));
      else if (v.dtype === 'float32' || v.dtype === 'float64') data[i] = rng.normal();
      else if (v.dtype === 'float16') throw new Error(`input '${v.name}' is float16: synthetic float16 inputs are not made`);
      else if (v.dtype === 'bool') data[i] = rng.int(2);
      else data[i] = rng.int(3);
    }
    feeds[v.name] = { dtype: v.dtype, dims, data };
  }
  return feeds;
}

/**
 * Run a model with graph optimizations off (so the kernels, not the fusions, are compared), on one
 * thread (so reductions run in one order). `expose` adds node outputs to the fetched values.
 */
export async function runAll(model: Model, feeds: Record<string, Tensor>, expose = false): Promise<Map<string, Tensor>> {
  if (!expose) return runExposing(model, feeds, null);
  // onnxruntime-node returns tensors only: a sequence (SequenceInsert's, or one a Loop carries) is
  // not exposed. Control-flow outputs are left out only when exposing them fails.
  const sequence = (op: string) => SEQUENCE_OUTPUTS.has(op);
  try {
    return await runExposing(model, feeds, sequence);
  } catch (e) {
    if (!/Non tensor type/i.test((e as Error).message)) throw e;
    return runExposing(model, feeds, (op) => sequence(op) || op === 'Loop' || op === 'If' || op === 'Scan');
  }
}

/** Ops whose outputs are sequences, never tensors. */
const SEQUENCE_OUTPUTS = new Set(['SequenceEmpty', 'SequenceConstruct', 'SequenceInsert', 'SequenceErase', 'SplitToSequence', 'SequenceMap']);

/** Run with every node output exposed but those of ops `hidden` names; with `hidden` null, the graph's outputs only. */
async function runExposing(model: Model, feeds: Record<string, Tensor>, hidden: ((opType: string) => boolean) | null): Promise<Map<string, Tensor>> {
  const m = cloneModel(model);
  const known = new Set(m.graph.outputs.map((o) => o.name));
  if (hidden) for (const n of m.graph.nodes) for (const o of n.outputs) {
    if (o && !known.has(o) && !hidden(n.opType)) {
      known.add(o);
      m.graph.outputs.push({ name: o, dtype: 'float32', shape: null, untyped: true });
    }
  }
  const session = await createSession(encodeModel(m), { optimization: 'disabled', threads: 1, quiet: true });
  try {
    const ortFeeds: Record<string, ReturnType<typeof toOrt>> = {};
    for (const [k, t] of Object.entries(feeds)) ortFeeds[k] = toOrt(t);
    const out = await session.run(ortFeeds);
    return new Map(Object.entries(out).map(([k, t]) => [k, fromOrt(t)]));
  } finally {
    await session.release();
  }
}

export interface OutputComparison {
  output: string;
  /** 'exact': bit-for-bit equal values; 'close': within RELATIVE_TOLERANCE; 'different' otherwise. */
  verdict: 'exact' | 'close' | 'different';
  maxAbsDiff: number;
  /** Largest |a − b| / max(|a|, |b|) over elements that differ. */
  maxRelDiff: number;
  detail?: string;
}

/**
 * Per-element relative tolerance. Rewrites route values through the same onnxruntime kernels
 * (Softmax on a flattened view, Resize instead of Upsample), so outputs are normally bit-exact;
 * 1e-6 admits only last-bit differences of float32 arithmetic done in another order.
 */
export const RELATIVE_TOLERANCE = 1e-6;

export function compareOutputs(name: string, a: Tensor | undefined, b: Tensor | undefined): OutputComparison {
  const fail = (detail: string): OutputComparison => ({ output: name, verdict: 'different', maxAbsDiff: Infinity, maxRelDiff: Infinity, detail });
  if (!a || !b) return fail(`missing in the ${a ? 'converted' : 'original'} model's run`);
  if (a.dtype !== b.dtype) return fail(`dtype ${a.dtype} became ${b.dtype}`);
  if (a.dims.join(',') !== b.dims.join(',')) return fail(`shape ${formatShape(a.dims)} became ${formatShape(b.dims)}`);
  let maxAbs = 0;
  let maxRel = 0;
  let exact = true;
  const x = a.data as ArrayLike<number | bigint>;
  const y = b.data as ArrayLike<number | bigint>;
  const float = a.dtype === 'float32' || a.dtype === 'float64';
  for (let i = 0; i < x.length; i++) {
    const p = x[i]!;
    const q = y[i]!;
    if (p === q) continue;
    if (float && Number.isNaN(p) && Number.isNaN(q)) continue;
    exact = false;
    // One NaN against a number (or infinities of opposite sign) counts as infinitely different.
    const raw = Math.abs(Number(p) - Number(q));
    const d = Number.isNaN(raw) ? Infinity : raw;
    const rel = float && Number.isFinite(d) ? d / Math.max(Math.abs(Number(p)), Math.abs(Number(q))) : Infinity;
    if (d > maxAbs) maxAbs = d;
    if (rel > maxRel) maxRel = rel;
  }
  const verdict = exact ? 'exact' : float && maxRel <= RELATIVE_TOLERANCE ? 'close' : 'different';
  return { output: name, verdict, maxAbsDiff: maxAbs, maxRelDiff: maxRel };
}
