// `refit train --task next-token`: a language model's next-token loss on token sequences from a
// .npy file of integer ids, [sequences, length], or text (one sequence a line of a .txt file)
// tokenized by the model's own tokenizer (./text-tokens.ts). Position t's label is token t + 1; the last position and positions
// whose next token is --pad-token have none (-100, as PyTorch's ignore_index).
import type { RefitModel } from '../model.ts';
import { i64, type Tensor } from '../onnx/tensor.ts';
import { tokenCrossEntropy } from '../train/losses.ts';
import { scoreLogits } from './common.ts';
import { tokenInputs, readTokenIds, tokenFeeds } from './token-inputs.ts';
import type { TrainTask } from './train-task.ts';
import type { TextSource } from './text-tokens.ts';

export interface NextTokenOptions {
  data: string;
  logits?: string;
  padToken?: number;
  /** Text data: the tokenizer and how to read the file (./text-tokens.ts). */
  text?: TextSource;
}

export const IGNORE = -100;

/**
 * The [batch, sequence, `last`] logits a per-position task reads: `named`, else the first 3-D
 * output; with the size of their last axis where the export fixes it.
 */
export function positionLogits(model: RefitModel, named: string | undefined, task: string, last: string): { logits: string; size: number | null } {
  const logits = named ?? model.outputs.find((out) => out.shape?.length === 3)?.name;
  const out = model.outputs.find((x) => x.name === logits);
  if (!logits || !out) throw new Error(`--task ${task} needs [batch, sequence, ${last}] logits; name the output with --logits (outputs: ${model.outputs.map((x) => `${x.name} ${JSON.stringify(x.shape)}`).join(', ')})`);
  const d = out.shape?.[2];
  return { logits, size: typeof d === 'number' && d > 0 ? d : null };
}

export function nextTokenTask(model: RefitModel, o: NextTokenOptions): TrainTask {
  const inputs = tokenInputs(model, '--task next-token');
  const { logits, size } = positionLogits(model, o.logits, 'next-token', 'vocabulary');
  const vocab = size ?? inputs.vocab;
  if (o.padToken !== undefined && !(Number.isInteger(o.padToken) && o.padToken >= 0)) throw new Error(`--pad-token must be a non-negative integer, got ${o.padToken}`);
  const a = readTokenIds(o.data, vocab, 2, false, o.text && { ...o.text, fixedLength: inputs.length, positions: inputs.positions });
  const n = a.n, T = a.length, pad = o.padToken ?? a.padToken;
  const labels = new Float64Array(n * T);
  for (let s = 0; s < n; s++) {
    for (let t = 0; t < T; t++) {
      const next = t + 1 < T ? a.values[s * T + t + 1]! : IGNORE;
      labels[s * T + t] = next === pad ? IGNORE : next;
    }
  }
  const tokens = (idx: number[]) => tokenFeeds(inputs, a.values, T, idx, pad, a.types);
  return { data: { source: o.data, format: a.format, samples: n, sampleShape: [T] }, ...labelsPerPosition(logits, labels, T, tokens) };
}

/** Rows `idx` of `src` [n, T] as an int64 tensor [idx.length, T]. */
export function idRows(src: ArrayLike<number>, T: number, idx: readonly number[]): Tensor {
  return i64([idx.length, T], idx.flatMap((i) => Array.from({ length: T }, (_, t) => src[i * T + t]!)));
}

/**
 * What every task with a label per position shares (next-token, seq2seq): token cross-entropy of
 * `logits` [b, T, V] against `labels` [n, T] (IGNORE: not scored), fed `feeds` and the labels,
 * scored and evaluated per labelled position.
 */
export function labelsPerPosition(logits: string, labels: ArrayLike<number>, T: number, feeds: (idx: number[]) => Record<string, Tensor>): Omit<TrainTask, 'data'> {
  const tally = (z: Float32Array, idx: number[]) => tokenTally(z, labels, T, idx);
  return {
    logits,
    loss: tokenCrossEntropy({ logits, labels: 'refit_labels' }),
    feeds: (idx) => ({ ...feeds(idx), refit_labels: idRows(labels, T, idx) }),
    score(z, idx) {
      const r = tally(z.data as Float32Array, idx);
      return { correct: r.correct, scored: r.scored };
    },
    evaluate: (m, idx, bs) => evaluateTokens(m, idx, bs, logits, feeds, tally),
  };
}

/** Loss sum, correct and scored positions of logits [b, T, V] against rows `idx` of `labels` [n, T] (IGNORE: not scored). */
function tokenTally(z: Float32Array, labels: ArrayLike<number>, T: number, idx: readonly number[]): { lossSum: number; correct: number; scored: number } {
  const V = z.length / (idx.length * T);
  let lossSum = 0, correct = 0, scored = 0;
  idx.forEach((s, k) => {
    for (let t = 0; t < T; t++) {
      const y = labels[s * T + t]!;
      if (y === IGNORE) continue;
      const r = scoreLogits(z.subarray((k * T + t) * V, (k * T + t + 1) * V), V, [y]);
      lossSum += r.lossSum;
      correct += r.correct;
      scored++;
    }
  });
  return { lossSum, correct, scored };
}

/** Mean per-token loss and accuracy of `m` on rows `idx`, by plain inference in batches of `bs`. */
async function evaluateTokens(m: RefitModel, idx: number[], bs: number, logits: string, feeds: (idx: number[]) => Record<string, Tensor>,
  tally: (z: Float32Array, idx: number[]) => { lossSum: number; correct: number; scored: number }): Promise<{ loss: number; accuracy: number }> {
  let lossSum = 0, correct = 0, scored = 0;
  for (let s = 0; s < idx.length; s += bs) {
    const part = idx.slice(s, s + bs);
    const out = (await m.run(feeds(part), { outputs: [logits] }))[logits]!;
    const r = tally(out.data as Float32Array, part);
    lossSum += r.lossSum; correct += r.correct; scored += r.scored;
  }
  return { loss: lossSum / Math.max(1, scored), accuracy: correct / Math.max(1, scored) };
}
