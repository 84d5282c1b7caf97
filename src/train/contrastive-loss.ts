// The loss sentence-transformers trains embedding models with by default: in-batch negatives
// (MultipleNegativesRankingLoss; Henderson et al. 2017, "Efficient Natural Language Response
// Suggestion"; van den Oord et al. 2018's InfoNCE). Each anchor's own positive must score above
// every other candidate in the batch: the other anchors' positives and any hard negatives.
import type { LossSpec } from './loss-spec.ts';

export interface InBatchNegativesOptions {
  /** Sentence embeddings [rows, dim], or token states [rows, tokens, dim] (a feature-extraction export's last_hidden_state), pooled here. */
  embeddings: string;
  /** How token states become one vector: the mean over the mask's tokens (default), or the first token ([CLS]). */
  pooling?: 'mean' | 'cls';
  /** A [rows, tokens] tensor, 1 for a token and 0 for padding (the model's attention_mask input), for mean pooling; without it every position counts. */
  mask?: string;
  /**
   * Rows per example: 2 for (anchor, positive) pairs, 3 or more for hard negatives after the
   * positive. The batch holds every anchor first, then every positive, then each further column:
   * row c·B + i is column c of example i (B = rows / group). @default 2
   */
  group?: number;
  /** Cosine similarities are multiplied by this before the softmax (sentence-transformers' 20). @default 20 */
  scale?: number;
}

/**
 * Cross-entropy of each anchor over its cosine similarities to all candidates in the batch (every
 * positive and hard negative), its own positive the label: sentence-transformers'
 * `MultipleNegativesRankingLoss(model, scale=20, similarity_fct=cos_sim)` after a mean-pooling
 * (or CLS) module, batch mean. Pooling divides by max(token count, 1e-9) and normalising by
 * max(‖e‖, 1e-12), as sentence-transformers' Pooling and F.normalize do.
 */
export function inBatchNegatives(o: InBatchNegativesOptions): LossSpec {
  const group = o.group ?? 2, scale = o.scale ?? 20, pooling = o.pooling ?? 'mean';
  if (!Number.isInteger(group) || group < 2) throw new Error(`inBatchNegatives: group must be an integer ≥ 2 (anchor, positive, hard negatives…), got ${o.group}`);
  if (!(Number.isFinite(scale) && scale > 0)) throw new Error(`inBatchNegatives: scale must be a positive number, got ${o.scale}`);
  if (pooling !== 'mean' && pooling !== 'cls') throw new Error(`inBatchNegatives: pooling must be 'mean' or 'cls', got '${pooling}'`);
  return {
    describe: `inBatchNegatives(${o.embeddings}${o.mask ? `, ${o.mask}` : ''}, group ${group})`,
    reads: [o.embeddings, ...(o.mask ? [o.mask] : [])],
    inputs: [],
    build(ctx) {
      const em = ctx.em;
      const s = ctx.shape(o.embeddings);
      if (s.length !== 2 && s.length !== 3) throw new Error(`inBatchNegatives expects '${o.embeddings}' to be [rows, dim] embeddings or [rows, tokens, dim] token states, got shape [${s}]`);
      const rows = s[0]!;
      if (rows % group !== 0 || rows < 2 * group) throw new Error(`inBatchNegatives: '${o.embeddings}' has ${rows} rows, which is not ${group} columns of at least 2 examples (rows must be a multiple of ${group}, ≥ ${2 * group})`);
      const B = rows / group;
      let e = o.embeddings;
      if (s.length === 3) {
        if (pooling === 'cls') e = em.squeeze(em.op('Slice', [e, em.ints([0]), em.ints([1]), em.ints([1])]), [1]);
        else if (!o.mask) e = em.reduce('ReduceMean', e, [1], false);
        else {
          const ms = ctx.shape(o.mask);
          if (ms.length !== 2 || ms[0] !== rows || ms[1] !== s[1]) throw new Error(`inBatchNegatives: mask '${o.mask}' has shape [${ms}], expected [${rows}, ${s[1]}] to match '${o.embeddings}'`);
          const m = em.op('Cast', [o.mask], { to: 1 });
          const summed = em.reduce('ReduceSum', em.mul(e, em.unsqueeze(m, [2])), [1], false);
          const count = em.op('Max', [em.reduce('ReduceSum', m, [1], true), em.scalar(1e-9)]);
          e = em.div(summed, count);
        }
      } else if (o.mask) throw new Error(`inBatchNegatives: '${o.embeddings}' is already pooled ([rows, dim]); a mask applies to token states`);
      const norm = em.op('Max', [em.op('Sqrt', [em.reduce('ReduceSum', em.mul(e, e), [1], true)]), em.scalar(1e-12)]);
      const unit = em.div(e, norm);
      const anchors = em.op('Slice', [unit, em.ints([0]), em.ints([B]), em.ints([0])]);
      const candidates = em.op('Slice', [unit, em.ints([B]), em.ints([rows]), em.ints([0])]);
      const scores = em.mul(em.op('MatMul', [anchors, em.transpose(candidates, [1, 0])]), em.scalar(scale)); // [B, (group-1)·B]
      // example i's positive is candidate i: the diagonal of the first B columns
      const logp = em.op('Slice', [em.op('LogSoftmax', [scores], { axis: 1 }), em.ints([0]), em.ints([B]), em.ints([1])]);
      const eye = em.constant({ dtype: 'float32', dims: [B, B], data: Float32Array.from({ length: B * B }, (_, k) => (k % (B + 1) === 0 ? 1 : 0)) }, 'identity');
      const perAnchor = em.neg(em.reduce('ReduceSum', em.mul(logp, eye), [1], false));
      return em.div(em.reduce('ReduceSum', perAnchor, [0], false), em.scalar(B));
    },
  };
}
