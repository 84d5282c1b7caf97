// `refit train --task ctc`: a speech recogniser with a CTC head (wav2vec 2.0, HuBERT, or any model
// whose output is [batch, frames, classes] frame logits) trained on audio or features (--data,
// .npy [n, …] as the model's input takes them) and label sequences (--labels, .npy int [n,
// length], each row's labels first, then a negative fill), with the CTC loss (losses.ctc), as
// Hugging Face fine-tunes Wav2Vec2ForCTC. --pad-token is the blank (HF's vocabularies make
// `<pad>` the blank; default 0). Accuracy is 1 − label error rate: the edit distance between each
// row's greedy decoding and its labels, over the label count.
import type { RefitModel } from '../model.ts';
import { i64, type Tensor } from '../onnx/tensor.ts';
import { readBytes } from '../data/idx-node.ts';
import { ctc } from '../train/losses.ts';
import { ctcGreedyDecode, ctcRowLoss, editDistance } from '../train/ctc-decode.ts';
import { modelIO, loadData, batchOf } from './common.ts';
import { parseNpy } from './data-files.ts';
import type { TrainTask } from './train-task.ts';

export interface CtcTaskOptions {
  data: string;
  labels?: string;
  logits?: string;
  /** The blank class (HF: the pad token id). Default 0. */
  padToken?: number;
}

/** The fill of label rows after their labels (any negative value is read as this). */
const FILL = -100;

export async function ctcTask(model: RefitModel, o: CtcTaskOptions): Promise<TrainTask> {
  if (!o.labels) throw new Error('--task ctc learns label sequences: give them with --labels <file> (.npy int [n, length], each row filled with -100 after its labels)');
  const io = modelIO(model, o.logits ?? model.outputs.find((v) => v.shape?.length === 3)?.name);
  const out = model.outputs.find((v) => v.name === io.logits)!;
  if (out.shape && out.shape.length !== 3) throw new Error(`--task ctc reads frame logits [batch, frames, classes]; output '${io.logits}' has shape ${JSON.stringify(out.shape)} (--logits names another output)`);
  const classes = io.classes;
  const blank = o.padToken ?? 0;
  if (classes !== null && blank >= classes) throw new Error(`--pad-token ${blank} (the CTC blank) is not one of the model's ${classes} classes`);
  const ds = await loadData(o.data, io);
  const a = parseNpy(readBytes(o.labels, 'NPY file'), o.labels);
  if (a.dtype !== 'int64' && a.dtype !== 'int32') throw new Error(`${o.labels}: label sequences must be integers (int64 or int32), got ${a.dtype}`);
  if (a.shape.length !== 2) throw new Error(`${o.labels}: shape [${a.shape.join(', ')}]; label sequences are [n, length]`);
  const [n, S] = a.shape as [number, number];
  if (n !== ds.n) throw new Error(`${o.labels}: ${n} label sequences for ${ds.n} samples in ${o.data}`);
  // rows as lists, checked: labels first, then only fill; every label a class other than the blank
  const rows: number[][] = [];
  for (let i = 0; i < n; i++) {
    const row = Array.from(a.values.subarray(i * S, (i + 1) * S));
    const len = row.findIndex((v) => v < 0);
    const labels = len < 0 ? row : row.slice(0, len);
    const bad = labels.find((v) => v === blank || (classes !== null && v >= classes));
    if (bad !== undefined) throw new Error(`${o.labels}: row ${i} has label ${bad}, which is ${bad === blank ? 'the blank (--pad-token)' : `not a class (the model has ${classes})`}`);
    if (len >= 0 && row.slice(len).some((v) => v >= 0)) throw new Error(`${o.labels}: row ${i} has a label after its fill; put each row's labels first, then -100`);
    rows.push(labels);
  }
  const labelFeed = (idx: number[]) => i64([idx.length, S], idx.flatMap((i) => Array.from({ length: S }, (_, k) => rows[i]![k] ?? FILL)));
  const feeds = (idx: number[]) => ({ [io.spec.input]: batchOf(ds, idx).x });
  /** Label errors (edit distance of the greedy decoding) and the label count over rows `idx` of frame logits z. */
  const tally = (z: Tensor, idx: number[]) => {
    const [, T, C] = z.dims as [number, number, number];
    const v = z.data as Float32Array;
    let errors = 0, count = 0, lossSum = 0;
    idx.forEach((i, r) => {
      const row = v.subarray(r * T * C, (r + 1) * T * C);
      errors += editDistance(ctcGreedyDecode(row, T, C, blank), rows[i]!);
      count += rows[i]!.length;
      lossSum += ctcRowLoss(row, T, C, rows[i]!, blank) / Math.max(rows[i]!.length, 1);
    });
    return { errors, count, lossSum };
  };
  return {
    data: { source: `${o.data} → ${o.labels}`, format: `${ds.format} → npy label sequences`, samples: n, sampleShape: [...ds.sampleShape, S] },
    logits: io.logits,
    loss: ctc({ logits: io.logits, labels: 'refit_labels', blank, maxLabelLength: S }),
    feeds: (idx) => ({ ...feeds(idx), refit_labels: labelFeed(idx) }),
    score(z, idx) {
      const t = tally(z, idx);
      return { correct: Math.max(t.count - t.errors, 0), scored: t.count };
    },
    async evaluate(m, idx, bs, onBatch) {
      let errors = 0, count = 0, lossSum = 0;
      for (let s = 0; s < idx.length; s += bs) {
        const part = idx.slice(s, s + bs);
        const t = tally((await m.run(feeds(part), { outputs: [io.logits] }))[io.logits]!, part);
        errors += t.errors; count += t.count; lossSum += t.lossSum;
        onBatch?.(Math.min(s + bs, idx.length));
      }
      return { loss: lossSum / Math.max(idx.length, 1), accuracy: count ? Math.max(1 - errors / count, 0) : 0 };
    },
  };
}
