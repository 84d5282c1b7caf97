// Text decoders exported for generation carry a KV cache: inputs past_key_values.* ([batch,
// heads, past, head size]) and outputs present.*, and optimum's merged files also a
// `use_cache_branch` flag choosing between the cached and the uncached graph (an If). That is
// what transformers.js ships: decoder_model_merged.onnx (GPT-2 and most older exports) or one
// model.onnx with past inputs (onnx-community's Llama, Qwen, SmolLM …).
//
// Training and adaptation run whole sequences, with no cache: withoutKvCache makes every past
// tensor empty (past length 0) inside the graph, fixes use_cache_branch to false and inlines the
// If it chose (./inline-if.ts), and drops the present outputs. The result computes exactly what
// the model computes when fed empty pasts, from the ids (and attention mask, positions) alone.
// Its weights keep their names, so what trains on it can be written back into the original file
// (writeWeightsBack), which keeps its cache for generation.
import type { RefitModel } from '../model.ts';
import type { Node, ValueInfo } from './ir.ts';
import { dropDead, opsetVersion } from './ir.ts';
import { Emitter } from './emitter.ts';
import { i64, tensor, type DType, type Tensor } from './tensor.ts';
import { inlineConstantIfs } from './inline-if.ts';

const PAST = /^past(_key_values)?[._]/;
const PRESENT = /^present[._]/;
export const USE_CACHE_BRANCH = 'use_cache_branch';

export interface KvCache {
  /** The past inputs (past_key_values.*). */
  past: ValueInfo[];
  /** optimum's merged-decoder flag, when the model has one. */
  useCacheBranch?: string;
  /** The present outputs (present.*). */
  present: string[];
}

/** The model's KV-cache inputs and outputs, or null when it has none. */
export function kvCacheOf(model: Pick<RefitModel, 'inputs' | 'outputs'>): KvCache | null {
  const past = model.inputs.filter((i) => PAST.test(i.name) && (i.dtype === 'float32' || i.dtype === 'float16'));
  const flag = model.inputs.find((i) => i.name === USE_CACHE_BRANCH && i.dtype === 'bool');
  if (!past.length && !flag) return null;
  return { past, ...(flag ? { useCacheBranch: flag.name } : {}), present: model.outputs.filter((o) => PAST.test(o.name) || PRESENT.test(o.name)).map((o) => o.name) };
}

/** Which axis of a past input is the cache length: the dimension named for it, else [batch, heads, past, head size]'s third. */
function pastAxis(v: ValueInfo): number {
  const named = v.shape!.findIndex((d) => typeof d === 'string' && /past/i.test(d));
  return named >= 0 ? named : v.shape!.length === 4 ? 2 : -1;
}

/**
 * The model without its KV cache: past inputs made empty inside the graph, use_cache_branch fixed
 * to false (its If inlined), present outputs dropped. A sharing clone; a model without a cache is
 * returned as it is. Throws, naming the input, for a past input whose shape it cannot make.
 */
export function withoutKvCache(model: RefitModel): RefitModel {
  const kv = kvCacheOf(model);
  if (!kv) return model;
  const batchSource = model.inputs.find((i) => !PAST.test(i.name) && i.name !== kv.useCacheBranch && i.shape?.length && typeof i.shape[0] !== 'number');
  const plans = kv.past.map((v) => {
    const what = `KV cache input '${v.name}' (shape ${JSON.stringify(v.shape)})`;
    if (!v.shape) throw new Error(`${what}: its rank is not declared, so refit cannot make an empty cache for it`);
    const axis = pastAxis(v);
    if (axis < 0) throw new Error(`${what}: no dimension is named for the past length and it is not [batch, heads, past, head size]`);
    const dims = v.shape.map((d, k) => {
      if (k === axis) return 0;
      if (typeof d === 'number') return d;
      if (k === 0) return 'batch' as const;
      throw new Error(`${what}: dimension ${k} ('${d}') is not a number; refit needs every dimension but the batch and the past length fixed to make an empty cache`);
    });
    if (dims.includes('batch') && !batchSource) throw new Error(`${what}: no other input has a batch dimension to take the cache's batch size from`);
    return { v, dims };
  });
  return model.rewritten((ir) => {
    const g = ir.graph;
    const em = new Emitter(g, opsetVersion(ir), 'refit_kv_');
    const before = g.nodes.length;
    let batch: string | undefined;
    for (const { v, dims } of plans) {
      let shape: string;
      if (dims.includes('batch')) {
        batch ??= em.op('Slice', [em.op('Shape', [batchSource!.name]), em.constant(i64([1], [0]), 'zero'), em.constant(i64([1], [1]), 'one')]);
        shape = em.op('Concat', [batch, em.constant(i64([dims.length - 1], dims.slice(1) as number[]), 'cache_dims')], { axis: 0 });
      } else {
        shape = em.constant(i64([dims.length], dims as number[]), 'cache_shape');
      }
      g.nodes.push(emptyOfShape(em, shape, v.name, v.dtype));
    }
    g.nodes.unshift(...g.nodes.splice(before)); // they read only an input's shape
    if (kv.useCacheBranch) g.initializers.set(kv.useCacheBranch, tensor('bool', [1], [0]));
    const gone = new Set([...kv.past.map((v) => v.name), ...(kv.useCacheBranch ? [kv.useCacheBranch] : [])]);
    g.inputs = g.inputs.filter((i) => !gone.has(i.name));
    inlineConstantIfs(g);
    const left = g.nodes.find((n) => n.opType === 'If');
    if (left) throw new Error(`withoutKvCache: If node '${left.name}' does not depend on ${USE_CACHE_BRANCH} alone; refit cannot choose its branch`);
    const present = new Set(kv.present);
    g.outputs = g.outputs.filter((o) => !present.has(o.name));
    if (!g.outputs.length) throw new Error('withoutKvCache: the model has no output besides its KV cache');
    dropDead(g); // the present tensors' producers that nothing else reads
  });
}

/** A ConstantOfShape node writing an empty (or zero) tensor of `dtype` to `out`. */
function emptyOfShape(em: Emitter, shape: string, out: string, dtype: DType): Node {
  return { name: em.fresh(`${out}_node`), opType: 'ConstantOfShape', domain: '', inputs: [shape], outputs: [out], attrs: { value: { kind: 'tensor', value: tensor(dtype, [1], [0]) } } };
}

/**
 * Write the weights `names` of `trained` (a model made by withoutKvCache from `base`, trained or
 * merged since) into `base`, which keeps its cache. Every name must be a float32 weight of both
 * with the same shape; nothing is written otherwise. Without `names`: every float32 weight of
 * `base` that `trained` holds with the same shape and other values. A copy of a written weight
 * that `trained` reads as its Transpose (loaded with keepTies) is written too, transposed.
 * Returns the names written.
 */
export function writeWeightsBack(base: RefitModel, trained: RefitModel, names?: readonly string[]): string[] {
  names ??= [...base.ir.graph.initializers].filter(([k, t]) => {
    const u = trained.ir.graph.initializers.get(k);
    return u && u !== t && t.dtype === 'float32' && u.dtype === 'float32' && t.dims.join() === u.dims.join() && (u.data as Float32Array).some((v, i) => v !== t.data[i]);
  }).map(([k]) => k);
  const values = new Map<string, Float32Array>();
  for (const n of names) {
    const to = base.ir.graph.initializers.get(n);
    const from: Tensor | undefined = trained.ir.graph.initializers.get(n);
    if (!to || !from) throw new Error(`weight '${n}' is not in ${to ? 'the trained' : 'the original'} model, so it cannot be written back into the model with its KV cache`);
    if (to.dtype !== 'float32' || from.dtype !== 'float32' || to.dims.join() !== from.dims.join()) throw new Error(`weight '${n}': ${from.dtype} [${from.dims}] cannot be written back over ${to.dtype} [${to.dims}]`);
    values.set(n, from.data as Float32Array);
  }
  // A transposed copy the trained model reads as Transpose(weight) (loaded with keepTies) is
  // still an initializer of the file: it gets the written weight, transposed.
  const written = [...names];
  for (const n of trained.ir.graph.nodes) {
    const [src, copy] = [n.inputs[0], n.outputs[0]];
    const from = src ? values.get(src) : undefined;
    const to = copy ? base.ir.graph.initializers.get(copy) : undefined;
    const perm = n.attrs.perm?.kind === 'ints' ? n.attrs.perm.value.join() : '1,0';
    if (n.opType !== 'Transpose' || perm !== '1,0' || !from || !to || trained.ir.graph.initializers.has(copy!)) continue;
    const [a, b] = trained.ir.graph.initializers.get(src!)!.dims as [number, number];
    if (to.dims.join() !== `${b},${a}`) continue;
    const t = new Float32Array(a * b);
    for (let i = 0; i < a; i++) for (let j = 0; j < b; j++) t[j * a + i] = from[i * b + j]!;
    values.set(copy!, t);
    written.push(copy!);
  }
  base.setParams(values);
  return written;
}
