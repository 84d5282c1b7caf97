// `refit train --task tag` / `refit eval --task tag`: token classification (named entities, parts
// of speech: Hugging Face's …ForTokenClassification, a BiLSTM tagger): token ids from a .npy
// [sequences, length], a class per position from --labels, a .npy [sequences, length] of integers
// with -100 where a position has none (Hugging Face's convention for padding, special tokens and
// sub-word continuations); positions holding --pad-token are never scored either. The loss is the
// token cross-entropy over the labelled positions, as HF's trainer computes it. Or words with a
// label each (.jsonl as HF datasets write them, or CoNLL), tokenized by the model's tokenizer and
// labelled on each word's first token (./tagged-text.ts).
import type { RefitModel } from '../model.ts';
import { parseNpy } from './data-files.ts';
import { readBytes } from '../data/idx-node.ts';
import { IGNORE, labelsPerPosition, positionLogits } from './token-task.ts';
import { tokenInputs, readTokenIds, tokenFeeds, type TokenInputs } from './token-inputs.ts';
import type { TextSource } from './text-tokens.ts';
import { readTaggedText } from './tagged-text.ts';
import type { TrainTask } from './train-task.ts';

export interface TagOptions {
  data: string;
  labels?: string;
  logits?: string;
  padToken?: number;
  /** Words with a label each (.jsonl, .conll): the tokenizer (./tagged-text.ts). */
  text?: TextSource;
}

export function tagTask(model: RefitModel, o: TagOptions): TrainTask {
  const inputs = tokenInputs(model, '--task tag');
  const { logits, size: classes } = positionLogits(model, o.logits, 'tag', 'classes');
  if (!o.data.toLowerCase().endsWith('.npy')) return taggedTextTask(inputs, logits, classes, o);
  if (!o.labels) throw new Error('--task tag learns a class per token: give them with --labels <file> (a .npy [sequences, length] of integers, -100 where a position has no label)');
  if (!o.labels.toLowerCase().endsWith('.npy')) throw new Error(`--labels ${o.labels}: --task tag reads its labels from a .npy [sequences, length] of integers`);
  const a = readTokenIds(o.data, inputs.vocab);
  const l = parseNpy(readBytes(o.labels, 'NPY file'), o.labels);
  if (l.dtype !== 'int64' && l.dtype !== 'int32') throw new Error(`${o.labels}: labels must be int64 or int32, got ${l.dtype}`);
  if (l.shape.join() !== [a.n, a.length].join()) throw new Error(`${o.labels}: labels have shape [${l.shape.join(', ')}]; the token ids in ${o.data} have [${a.n}, ${a.length}] (one label per token, -100 where none)`);
  const labels = new Float64Array(l.values.length);
  for (let i = 0; i < labels.length; i++) {
    const y = l.values[i]!;
    if (a.values[i] === o.padToken) { labels[i] = IGNORE; continue; } // whatever the file says there
    if (y !== IGNORE && (y < 0 || (classes !== null && y >= classes))) throw new Error(`${o.labels}: label ${y} (sequence ${Math.floor(i / a.length)}, position ${i % a.length}) is outside the model's ${classes ?? '?'} classes (use -100 for no label)`);
    labels[i] = y;
  }
  if (!labels.some((y) => y !== IGNORE)) throw new Error(`${o.labels}: no position has a label (all -100 or padding)`);
  const tokens = (idx: number[]) => tokenFeeds(inputs, a.values, a.length, idx, o.padToken);
  return { data: { source: `${o.data} + ${o.labels}`, format: 'npy token ids, npy labels per token', samples: a.n, sampleShape: [a.length] }, ...labelsPerPosition(logits, labels, a.length, tokens) };
}

/** Words with a label each (./tagged-text.ts): tokenized by the model's tokenizer, each word's first token labelled. */
function taggedTextTask(inputs: TokenInputs, logits: string, classes: number | null, o: TagOptions): TrainTask {
  if (o.labels) throw new Error(`--labels ${o.labels}: ${o.data} carries a label per word already; --labels is for a .npy of token ids`);
  if (!o.text) throw new Error(`${o.data}: text data is read with the model's tokenizer (refit train and eval)`);
  const a = readTaggedText(o.data, { ...o.text, fixedLength: inputs.length, positions: inputs.positions });
  const bad = classes === null ? -1 : a.labels.findIndex((y) => y !== IGNORE && y >= classes);
  if (bad >= 0) throw new Error(`${o.data}: label ${a.labels[bad]} is outside the model's ${classes} classes (${a.format})`);
  for (let i = 0; i < a.values.length; i++) {
    if (inputs.vocab !== null && a.values[i]! >= inputs.vocab) throw new Error(`${o.data}: token ${a.values[i]} is outside the model's vocabulary [0, ${inputs.vocab}): is the tokenizer the model's own?`);
  }
  const pad = o.padToken ?? a.padToken;
  const tokens = (idx: number[]) => tokenFeeds(inputs, a.values, a.length, idx, pad);
  return { data: { source: o.data, format: a.format, samples: a.n, sampleShape: [a.length] }, ...labelsPerPosition(logits, a.labels, a.length, tokens) };
}
