// `refit train` / `refit eval` on a sequence classifier (BERT-style: token ids in, [batch, classes]
// logits out): token ids [sequences, length] from a .npy file, or text tokenized by the model's
// tokenizer (a text or a pair per row), one label per sequence from --labels or the text file's
// label column, and the Hugging Face inputs beside the ids made from them (./token-inputs.ts).
import type { RefitModel } from '../model.ts';
import { i64 } from '../onnx/tensor.ts';
import { crossEntropy } from '../train/losses.ts';
import { defaultLogits } from '../tta/types.ts';
import { readLabels } from './data-files.ts';
import { scoreLogits, evaluateBatches } from './common.ts';
import { tokenInputs, readTokenIds, tokenFeeds } from './token-inputs.ts';
import type { TrainTask } from './train-task.ts';
import type { TextSource } from './text-tokens.ts';
import { classIds } from './text-labels.ts';

export interface SequenceClassifyOptions {
  data: string;
  labels?: string;
  logits?: string;
  padToken?: number;
  /** Text data: where the tokenizer is and how to read the file (./text-tokens.ts). */
  text?: TextSource;
}

export function sequenceClassifyTask(model: RefitModel, o: SequenceClassifyOptions, what = 'refit train'): TrainTask {
  const inputs = tokenInputs(model, `${what} on a token model`);
  const logits = o.logits ?? defaultLogits(model.outputs);
  const out = model.outputs.find((v) => v.name === logits);
  if (!out) throw new Error(`the model has no output '${logits}' (outputs: ${model.outputs.map((v) => v.name).join(', ')})`);
  if (out.shape && out.shape.length !== 2) throw new Error(`${what} on a token model classifies sequences and needs [batch, classes] logits; output '${logits}' has shape ${JSON.stringify(out.shape)} (for a language model use --task next-token)`);
  const c = out.shape?.[1];
  const classes = typeof c === 'number' && c > 0 ? c : null;
  const a = readTokenIds(o.data, inputs.vocab, 1, false, o.text && { ...o.text, fixedLength: inputs.length, positions: inputs.positions, wantLabels: !o.labels });
  if (a.labels && o.labels) throw new Error(`${o.data} carries labels already (its label column); drop --labels ${o.labels} or pass --label-column none`);
  if (!a.labels && !o.labels) throw new Error(`${o.data}: ${a.format === 'npy token ids' ? 'token ids carry' : 'the text has'} no labels; give one per sequence with --labels <file> (.npy, .csv/.txt or idx1)${a.format === 'npy token ids' ? '' : ' or a label column'}`);
  const named = a.labels ? classIds(a.labels, o.data, o.text!.modelPath) : null;
  const labels = named ? named.ids : readLabels(o.labels!);
  if (labels.length !== a.n) throw new Error(`${o.labels}: ${labels.length} labels for ${a.n} sequences in ${o.data}`);
  const pad = o.padToken ?? a.padToken;
  if (classes !== null) {
    const bad = labels.findIndex((y) => y >= classes);
    if (bad >= 0) throw new Error(`${o.labels ?? o.data}: label ${bad} is ${labels[bad]}${named?.mapping ? ` (${named.mapping})` : ''}, but the model has ${classes} classes`);
  }
  const feeds = (idx: number[]) => tokenFeeds(inputs, a.values, a.length, idx, pad, a.types);
  const scoreOf = (z: Float32Array, idx: number[]) => scoreLogits(z, z.length / idx.length, idx.map((i) => labels[i]!));
  return {
    data: { source: o.data, format: named?.mapping ? `${a.format}; labels by ${named.mapping}` : a.format, samples: a.n, sampleShape: [a.length] },
    logits,
    loss: crossEntropy({ logits, labels: 'refit_labels' }),
    feeds: (idx) => ({ ...feeds(idx), refit_labels: i64([idx.length], idx.map((i) => labels[i]!)) }),
    score: (z, idx) => ({ correct: scoreOf(z.data as Float32Array, idx).correct, scored: idx.length }),
    evaluate: (m, idx, bs, onBatch) => evaluateBatches(m, logits, idx, bs, feeds, (i) => labels[i]!, onBatch),
  };
}
