// What `refit train` trains on: the data, the loss, how a batch is fed and scored. The loop in
// train.ts is the same for every task; classification (labelled samples) and next-token
// prediction (token sequences, token-task.ts) differ only here.
import type { RefitModel } from '../model.ts';
import type { Tensor } from '../onnx/tensor.ts';
import type { LossSpec } from '../train/loss-spec.ts';
import { crossEntropy } from '../train/losses.ts';
import { modelIO, loadData, batchOf, evaluateSet, scoreLogits, type Preprocess } from './common.ts';
import { isTokenModel } from './token-inputs.ts';
import { isTextFile, type TextSource } from './text-tokens.ts';
import { sequenceClassifyTask } from './sequence-classify-task.ts';

export interface TrainTask {
  /** For the result: where the data came from and what it holds. */
  data: { source: string; format: string; samples: number; sampleShape: number[] };
  /** The output the loss reads. */
  logits: string;
  loss: LossSpec;
  /** The step's feeds for samples `idx` (model inputs and the loss's labels). */
  feeds(idx: number[]): Record<string, Tensor>;
  /** Correct predictions and how many were scored, from a step's logits for samples `idx`. */
  score(logits: Tensor, idx: number[]): { correct: number; scored: number };
  /** Mean loss and accuracy of `model` on samples `idx`, by plain inference. */
  evaluate(model: RefitModel, idx: number[], batchSize: number, onBatch?: (done: number) => void): Promise<{ loss: number; accuracy: number; meanIoU?: number; meanAbsoluteError?: number }>;
}

/** Pixel data's normalisation (--mean, --std), image folders' --resize, and --preprocessor's size to check. */
export interface ClassifyOptions extends Preprocess {
  data: string;
  labels?: string;
  labelColumn?: string;
  logits?: string;
  /** Token models: the padding token id (attention_mask 0 there). */
  padToken?: number;
  /** What the labels are for, in the error when there are none. @default 'training' */
  needLabels?: string;
  /** Token models: text data's tokenizer and columns (./text-tokens.ts). */
  text?: TextSource;
}

/**
 * Labelled samples (IDX, NPY, CSV, image folders) and cross-entropy over [N, classes] logits; on a
 * model that takes token ids, labelled token sequences (sequence-classify-task.ts).
 */
export async function classifyTask(model: RefitModel, o: ClassifyOptions, what = 'refit train'): Promise<TrainTask> {
  if (isTokenModel(model)) {
    if (o.labelColumn !== undefined && !isTextFile(o.data)) throw new Error(`--label-column reads a column of text data (.csv, .tsv, .jsonl); with a .npy of token ids the labels are in --labels`);
    if (o.pixels || o.resize !== undefined) throw new Error(`--mean, --std and --resize prepare pixel data; a token model reads token ids`);
    const text = o.text && { ...o.text, ...(o.labelColumn !== undefined ? { labelColumn: o.labelColumn } : {}) };
    return sequenceClassifyTask(model, { ...o, ...(text ? { text } : {}) }, what);
  }
  const io = modelIO(model, o.logits, o);
  const ds = await loadData(o.data, io, { labels: o.labels, labelColumn: o.labelColumn, needLabels: o.needLabels ?? 'training' });
  return {
    data: { source: ds.source, format: ds.format, samples: ds.n, sampleShape: ds.sampleShape },
    logits: io.logits,
    loss: crossEntropy({ logits: io.logits, labels: 'refit_labels' }),
    feeds(idx) {
      const b = batchOf(ds, idx);
      return { [io.spec.input]: b.x, refit_labels: b.y! };
    },
    score(logits, idx) {
      const r = scoreLogits(logits.data as Float32Array, logits.dims[logits.dims.length - 1]!, idx.map((i) => ds.labels![i]!));
      return { correct: r.correct, scored: idx.length };
    },
    evaluate: (m, idx, bs, onBatch) => evaluateSet(m, io, ds, idx, bs, onBatch),
  };
}
