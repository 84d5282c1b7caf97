// Sample-selection heads and the losses that read them. A head is a few nodes appended after
// the model's logits (on a shallow copy that shares the parameter tensors), so that one
// compiled train step both predicts and computes the per-sample entropies and the 0/1 masks
// of the samples a method keeps. The masks come from comparisons, which carry no gradient,
// so the filters are exact and free.
import { RefitModel } from '../model.ts';
import { cloneModel, opsetVersion } from '../onnx/ir.ts';
import { Emitter } from '../onnx/emitter.ts';
import { probeShapes } from '../onnx/shapes.ts';
import type { Tensor } from '../onnx/tensor.ts';
import { f32, i64 } from '../onnx/tensor.ts';
import type { LossSpec } from '../train/loss-spec.ts';

export const ENTROPY = 'tta.entropy';
export const MASK = 'tta.mask';
export const MASK_IN = 'tta.mask_in';
export const PBAR = 'tta.pbar';

export interface HeadOptions {
  /** Keep samples with entropy < margin. */
  margin: number;
  /** A fed 0/1 mask [N] that multiplies the kept set (SAR's second pass). */
  maskInput?: boolean;
  /** EATA's redundancy filter: keep samples with |cos(p, pbar)| < redundancy, pbar fed as input [C]. */
  redundancy?: number;
}

/** Number of classes of `logits`, probed with a batch of the given input. */
export async function classCount(model: RefitModel, logits: string, x: Tensor): Promise<number> {
  const shapes = await probeShapes(model.ir, { [model.inputs[0]!.name]: { dtype: x.dtype, dims: x.dims } });
  const s = shapes.get(logits)?.dims;
  if (!s || s.length !== 2) throw new Error(`output '${logits}' must be [batch, classes] logits, got shape [${s ?? '?'}]`);
  return s[1]!;
}

/**
 * A copy of `model` (sharing parameter tensors) with extra outputs `tta.entropy` [N] (Shannon
 * entropy of softmax(logits), as `-(softmax·log_softmax).sum(1)`) and `tta.mask` [N].
 */
export function withSelectionHead(model: RefitModel, logits: string, classes: number, o: HeadOptions): RefitModel {
  const ir = cloneModel(model.ir);
  const g = ir.graph;
  const em = new Emitter(g, opsetVersion(ir));
  const batchDim = g.inputs[0]!.shape?.[0] ?? 'N';
  const logp = em.op('LogSoftmax', [logits], { axis: -1 });
  const p = em.op('Softmax', [logits], { axis: -1 });
  const ent = em.neg(em.reduce('ReduceSum', em.mul(p, logp), [-1], false));
  const below = (a: string, t: number) => em.op('Cast', [em.op('Less', [a, em.scalar(t)])], { to: 1 });
  let mask = below(ent, o.margin);
  if (o.redundancy !== undefined) {
    g.inputs.push({ name: PBAR, dtype: 'float32', shape: [classes] });
    em.reserve(PBAR);
    const dot = em.reduce('ReduceSum', em.mul(p, PBAR), [-1], false);
    const n1 = em.reduce('ReduceSum', em.mul(p, p), [-1], false);
    const n2 = em.reduce('ReduceSum', em.mul(PBAR, PBAR), [-1], false);
    // F.cosine_similarity: x·y / max(‖x‖‖y‖, eps); a zero pbar (no history yet) gives 0, so every sample passes.
    const cos = em.div(dot, em.op('Max', [em.op('Sqrt', [em.mul(n1, n2)]), em.scalar(1e-8)]));
    mask = em.mul(mask, below(em.op('Abs', [cos]), o.redundancy));
  }
  if (o.maskInput) {
    g.inputs.push({ name: MASK_IN, dtype: 'float32', shape: [batchDim] });
    em.reserve(MASK_IN);
    mask = em.mul(mask, MASK_IN);
  }
  for (const [src, name] of [[ent, ENTROPY], [mask, MASK]] as const) {
    em.reserve(name);
    g.nodes.push({ name: em.fresh(`${name}_out`), opType: 'Identity', domain: '', inputs: [src], outputs: [name], attrs: {} });
    g.outputs.push({ name, dtype: 'float32', shape: [batchDim] });
  }
  return new RefitModel(ir, model.sessionOptions);
}

/** Σ mask·entropy / max(Σ mask, 1): the mean entropy of the kept samples (Tent's loss over SAR's reliable set). */
export function maskedMeanEntropy(): LossSpec {
  return {
    describe: `maskedMean(${ENTROPY}, ${MASK})`,
    reads: [ENTROPY, MASK],
    inputs: [],
    build({ em }) {
      const num = em.reduce('ReduceSum', em.mul(ENTROPY, MASK), [0], false);
      return em.div(num, em.op('Max', [em.reduce('ReduceSum', MASK, [0], false), em.scalar(1)]));
    },
  };
}

/**
 * EATA's reweighted entropy, mean over the kept samples of E·c with c = 1/exp(E − E0) held
 * constant (detached). Its gradient is that of Σ m·(−exp(E0 − E)) / Σ m, since
 * d/dθ[−exp(E0 − E)] = exp(E0 − E)·dE/dθ = c·dE/dθ; that surrogate is what the graph
 * differentiates (exact, and no detach op needed). Its *value* is not EATA's loss: the
 * adapter reports the true value, computed from the entropies and masks.
 */
export function eataSurrogate(margin: number): LossSpec {
  return {
    describe: `eataReweightedEntropy(${ENTROPY}, ${MASK}, E0=${margin})`,
    reads: [ENTROPY, MASK],
    inputs: [],
    build({ em }) {
      const w = em.neg(em.op('Exp', [em.sub(em.scalar(margin), ENTROPY)]));
      const num = em.reduce('ReduceSum', em.mul(w, MASK), [0], false);
      return em.div(num, em.op('Max', [em.reduce('ReduceSum', MASK, [0], false), em.scalar(1)]));
    },
  };
}

/** Cross-entropy against the model's own argmax (pseudo-labels), mean over the batch: EATA's Fisher loss. */
export function pseudoLabelCrossEntropy(logits: string): LossSpec {
  return {
    describe: `crossEntropy(${logits}, argmax(${logits}))`,
    reads: [logits],
    inputs: [],
    build({ em, shape }) {
      const [n, C] = shape(logits) as [number, number];
      const idx = em.op('ArgMax', [logits], { axis: -1, keepdims: 0 });
      const onehot = em.op('OneHot', [idx, em.constant(i64([], [C])), em.constant(f32([2], [0, 1]))], { axis: -1 });
      const ll = em.reduce('ReduceSum', em.mul(onehot, em.op('LogSoftmax', [logits], { axis: -1 })), [0, 1], false);
      return em.div(em.neg(ll), em.scalar(n));
    },
  };
}
