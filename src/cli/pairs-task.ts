// `refit train --task pairs`: an embedding model (a feature-extraction export: token ids in,
// last_hidden_state or sentence embeddings out) trained as sentence-transformers trains it, on
// (anchor, positive) pairs with in-batch negatives, or (anchor, positive, hard negative…) groups:
// token ids [examples, columns, length] from a .npy file. A step's batch holds every anchor, then
// every positive, then each further column (losses.inBatchNegatives). Accuracy is retrieval
// accuracy: how often an anchor's nearest candidate by cosine similarity is its own positive,
// among the batch's candidates in training and among every held-out example's in validation.
import type { RefitModel } from '../model.ts';
import type { Tensor } from '../onnx/tensor.ts';
import { inBatchNegatives } from '../train/losses.ts';
import { tokenInputs, readTokenIds, tokenFeeds } from './token-inputs.ts';
import type { TextSource } from './text-tokens.ts';
import type { TrainTask } from './train-task.ts';

export interface PairsOptions {
  data: string;
  /** The output holding token states or sentence embeddings (default: last_hidden_state, sentence_embedding, else the first output). */
  embeddings?: string;
  padToken?: number;
  pooling?: 'mean' | 'cls';
  /** Text data: the tokenizer and how to read the file (./text-tokens.ts): one text column each. */
  text?: TextSource;
}

const SCALE = 20; // sentence-transformers' MultipleNegativesRankingLoss default

export function pairsTask(model: RefitModel, o: PairsOptions): TrainTask {
  const inputs = tokenInputs(model, '--task pairs');
  const pooling = o.pooling ?? 'mean';
  if (pooling !== 'mean' && pooling !== 'cls') throw new Error(`--pooling must be 'mean' or 'cls', got '${o.pooling}'`);
  const names = model.outputs.map((v) => v.name);
  const embeddings = o.embeddings ?? ['last_hidden_state', 'sentence_embedding', 'token_embeddings'].find((n) => names.includes(n)) ?? names[0]!;
  const out = model.outputs.find((v) => v.name === embeddings);
  if (!out) throw new Error(`the model has no output '${embeddings}' (outputs: ${names.join(', ')})`);
  if (out.shape && out.shape.length !== 2 && out.shape.length !== 3) throw new Error(`--task pairs trains embeddings: output '${embeddings}' must be [batch, dim] or [batch, tokens, dim], got ${JSON.stringify(out.shape)}`);
  const a = readTokenIds(o.data, inputs.vocab, 1, true, o.text && { ...o.text, fixedLength: inputs.length, positions: inputs.positions });
  const pad = o.padToken ?? a.padToken;
  if (a.n < 3) throw new Error(`${o.data}: ${a.n} example${a.n === 1 ? '' : 's'}; --task pairs needs at least 2 per batch to train and more to hold some out`);
  const { columns: k, length: T } = a;
  // a mask only where the model takes one: pooling then skips padding as the model's attention does
  const mask = inputs.companions.some((c) => c.name === 'attention_mask') ? 'attention_mask' : undefined;
  const loss = inBatchNegatives({ embeddings, pooling, group: k, scale: SCALE, ...(mask ? { mask } : {}) });
  /** Rows of a batch of examples `idx`: column-major (every anchor, then every positive, …). */
  const rowsOf = (idx: readonly number[]) => Array.from({ length: k }, (_, c) => idx.map((i) => i * k + c)).flat();
  const feeds = (idx: readonly number[]) => tokenFeeds(inputs, a.values, T, rowsOf(idx), pad);
  const unitRows = (states: Tensor, f: Record<string, Tensor>) => unitEmbeddings(states, pooling, mask ? f[mask] : undefined);
  return {
    data: { source: o.data, format: a.format === 'npy token ids' ? 'npy token id groups' : a.format, samples: a.n, sampleShape: [k, T] },
    logits: embeddings,
    loss,
    feeds: (idx) => feeds(idx),
    score(states, idx) {
      const r = retrieval(unitRows(states, feeds(idx)), idx.length, k);
      return { correct: r.correct, scored: idx.length };
    },
    async evaluate(m, idx, bs, onBatch) {
      // every held-out example's rows embedded, then each anchor against all held-out candidates
      const parts: Float32Array[] = [];
      for (let s = 0; s < idx.length; s += bs) {
        const part = idx.slice(s, s + bs);
        const f = feeds(part);
        const states = (await m.run(f, { outputs: [embeddings] }))[embeddings]!;
        parts.push(unitRows(states, f));
        onBatch?.(Math.min(s + bs, idx.length));
      }
      const dim = parts[0]!.length / (Math.min(bs, idx.length) * k);
      const all = regroup(parts, idx.length, bs, k, dim);
      const r = retrieval(all, idx.length, k);
      return { loss: r.lossSum / idx.length, accuracy: r.correct / idx.length };
    },
  };
}

/** Pooled, unit-length embeddings [rows, dim] from token states [rows, T, dim] (or embeddings [rows, dim]). */
export function unitEmbeddings(states: Tensor, pooling: 'mean' | 'cls', mask?: Tensor): Float32Array {
  const x = states.data as Float32Array;
  const [rows, T, dim] = states.dims.length === 3 ? states.dims as [number, number, number] : [states.dims[0]!, 1, states.dims[1]!];
  const out = new Float32Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    const e = out.subarray(r * dim, (r + 1) * dim);
    if (states.dims.length === 2 || pooling === 'cls') e.set(x.subarray(r * T * dim, r * T * dim + dim));
    else {
      let count = 0;
      for (let t = 0; t < T; t++) {
        const w = mask ? Number(mask.data[r * T + t]) : 1;
        if (!w) continue;
        count += w;
        for (let d = 0; d < dim; d++) e[d]! += w * x[(r * T + t) * dim + d]!;
      }
      for (let d = 0; d < dim; d++) e[d]! /= Math.max(count, 1e-9);
    }
    const norm = Math.max(Math.hypot(...e), 1e-12);
    for (let d = 0; d < dim; d++) e[d]! /= norm;
  }
  return out;
}

/** Batches of column-major rows (as fed) into one column-major set: every anchor, then every positive, … */
function regroup(parts: Float32Array[], n: number, bs: number, k: number, dim: number): Float32Array {
  const all = new Float32Array(n * k * dim);
  parts.forEach((p, b) => {
    const m = p.length / (k * dim); // examples in this batch
    for (let c = 0; c < k; c++) for (let i = 0; i < m; i++) all.set(p.subarray((c * m + i) * dim, (c * m + i + 1) * dim), (c * n + b * bs + i) * dim);
  });
  return all;
}

/** In-batch-negatives loss (scale 20) summed over anchors, and how many anchors rank their own positive first. */
function retrieval(unit: Float32Array, n: number, k: number): { lossSum: number; correct: number } {
  const dim = unit.length / (n * k);
  const candidates = (k - 1) * n;
  let lossSum = 0, correct = 0;
  const s = new Float64Array(candidates);
  for (let i = 0; i < n; i++) {
    let best = -Infinity, arg = -1;
    for (let j = 0; j < candidates; j++) {
      let dot = 0;
      for (let d = 0; d < dim; d++) dot += unit[i * dim + d]! * unit[(n + j) * dim + d]!;
      s[j] = SCALE * dot;
      if (s[j]! > best) { best = s[j]!; arg = j; }
    }
    let z = 0;
    for (let j = 0; j < candidates; j++) z += Math.exp(s[j]! - best);
    lossSum += best + Math.log(z) - s[i]!;
    if (arg === i) correct++;
  }
  return { lossSum, correct };
}
