// `refit train` / `refit eval` on a sequence classifier (BERT-style: token ids in, [batch, classes]
// logits out): token ids [sequences, length] from a .npy file, one label per sequence from
// --labels, and the Hugging Face inputs beside the ids made from them (./token-inputs.ts).
import type { RefitModel } from '../model.ts';
import { i64 } from '../onnx/tensor.ts';
import { crossEntropy } from '../train/losses.ts';
import { defaultLogits } from '../tta/types.ts';
import { readLabels } from './data-files.ts';
import { scoreLogits, evaluateBatches } from './common.ts';
import { tokenInputs, readTokenIds, tokenFeeds } from './token-inputs.ts';
import type { TrainTask } from './train-task.ts';

export interface SequenceClassifyOptions {
  data: string;
  labels?: string;
  logits?: string;
  padToken?: number;
}

export function sequenceClassifyTask(model: RefitModel, o: SequenceClassifyOptions, what = 'refit train'): TrainTask {
  const inputs = tokenInputs(model, `${what} on a token model`);
  const logits = o.logits ?? defaultLogits(model.outputs);
  const out = model.outputs.find((v) => v.name === logits);
  if (!out) throw new Error(`the model has no output '${logits}' (outputs: ${model.outputs.map((v) => v.name).join(', ')})`);
  if (out.shape && out.shape.length !== 2) throw new Error(`${what} on a token model classifies sequences and needs [batch, classes] logits; output '${logits}' has shape ${JSON.stringify(out.shape)} (for a language model use --task next-token)`);
  const c = out.shape?.[1];
  const classes = typeof c === 'number' && c > 0 ? c : null;
  if (!o.labels) throw new Error(`${o.data}: token ids carry no labels; give one per sequence with --labels <file> (.npy, .csv/.txt or idx1)`);
  const a = readTokenIds(o.data, inputs.vocab);
  const labels = readLabels(o.labels);
  if (labels.length !== a.n) throw new Error(`${o.labels}: ${labels.length} labels for ${a.n} sequences in ${o.data}`);
  if (classes !== null) {
    const bad = labels.findIndex((y) => y >= classes);
    if (bad >= 0) throw new Error(`${o.labels}: label ${bad} is ${labels[bad]}, but the model has ${classes} classes`);
  }
  const feeds = (idx: number[]) => tokenFeeds(inputs, a.values, a.length, idx, o.padToken);
  const scoreOf = (z: Float32Array, idx: number[]) => scoreLogits(z, z.length / idx.length, idx.map((i) => labels[i]!));
  return {
    data: { source: o.data, format: 'npy token ids', samples: a.n, sampleShape: [a.length] },
    logits,
    loss: crossEntropy({ logits, labels: 'refit_labels' }),
    feeds: (idx) => ({ ...feeds(idx), refit_labels: i64([idx.length], idx.map((i) => labels[i]!)) }),
    score: (z, idx) => ({ correct: scoreOf(z.data as Float32Array, idx).correct, scored: idx.length }),
    evaluate: (m, idx, bs, onBatch) => evaluateBatches(m, logits, idx, bs, feeds, (i) => labels[i]!, onBatch),
  };
}
