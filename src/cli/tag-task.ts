// `refit train --task tag` / `refit eval --task tag`: token classification (named entities, parts
// of speech: Hugging Face's …ForTokenClassification, a BiLSTM tagger): token ids from a .npy
// [sequences, length], a class per position from --labels, a .npy [sequences, length] of integers
// with -100 where a position has none (Hugging Face's convention for padding, special tokens and
// sub-word continuations); positions holding --pad-token are never scored either. The loss is the
// token cross-entropy over the labelled positions, as HF's trainer computes it.
import type { RefitModel } from '../model.ts';
import { parseNpy } from './data-files.ts';
import { readBytes } from '../data/idx-node.ts';
import { IGNORE, labelsPerPosition, positionLogits } from './token-task.ts';
import { tokenInputs, readTokenIds, tokenFeeds } from './token-inputs.ts';
import { isTextFile } from './text-tokens.ts';
import type { TrainTask } from './train-task.ts';

export interface TagOptions {
  data: string;
  labels?: string;
  logits?: string;
  padToken?: number;
}

export function tagTask(model: RefitModel, o: TagOptions): TrainTask {
  if (isTextFile(o.data)) throw new Error(`--task tag reads token ids (.npy) whose --labels name a class per token; text would need its labels aligned to the tokenizer's tokens, which the CLI does not do: tokenize first (e.g. with word_ids() in Python) and pass the ids`);
  const inputs = tokenInputs(model, '--task tag');
  const { logits, size: classes } = positionLogits(model, o.logits, 'tag', 'classes');
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
