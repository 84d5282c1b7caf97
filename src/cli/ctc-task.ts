// `refit train --task ctc`: a speech recogniser with a CTC head (wav2vec 2.0, HuBERT, or any model
// whose output is [batch, frames, classes] frame logits) trained on audio or features (--data,
// .npy [n, …] as the model's input takes them) and label sequences (--labels: .npy int [n,
// length], each row's labels first, then a negative fill; or a .txt of transcripts, one per line,
// with the model's vocab.json in --vocab, ./ctc-vocab.ts), with the CTC loss (losses.ctc), as
// Hugging Face fine-tunes Wav2Vec2ForCTC. --pad-token is the blank (HF's vocabularies make
// `<pad>` the blank; default 0, or the vocabulary's pad token). Accuracy is 1 − label error rate: the edit distance between each
// row's greedy decoding and its labels, over the label count. A text-line recogniser (PaddleOCR's
// PP-OCR) trains the same way, from a .npy of line images, or from PaddleOCR's own label file and
// character dictionary (./text-lines.ts, ./ctc-vocab.ts); a model ending in a Softmax is trained on
// the Softmax's input.
import type { RefitModel } from '../model.ts';
import { opsetVersion } from '../onnx/ir.ts';
import { i64, type Tensor } from '../onnx/tensor.ts';
import { readBytes } from '../data/idx-node.ts';
import { ctc } from '../train/losses.ts';
import { ctcGreedyDecode, ctcRowLoss, editDistance } from '../train/ctc-decode.ts';
import { modelIO, loadData, batchOf } from './common.ts';
import { parseNpy, type NpyArray } from './data-files.ts';
import { readCtcVocab, encodeTranscript, type CtcVocab } from './ctc-vocab.ts';
import { isLineLabelFile, readTextLines, DEFAULT_LINE_WIDTH } from './text-lines.ts';
import type { Dataset } from './data-files.ts';
import { readAudioPreprocessor, normalizeRows } from './hf-audio-preprocessor.ts';
import { readFileSync } from 'node:fs';
import type { TrainTask } from './train-task.ts';

export interface CtcTaskOptions {
  data: string;
  /** Label ids (.npy int [n, length], -100 after each row's labels), or transcripts (.txt, one per line, with `vocab`). */
  labels?: string;
  /** A Hugging Face vocab.json (or the model folder holding it) that turns --labels transcripts into ids. */
  vocab?: string;
  logits?: string;
  /** The blank class (HF: the pad token id). Default 0, or the vocabulary's pad token. */
  padToken?: number;
  /** A Wav2Vec2FeatureExtractor preprocessor_config.json: its per-utterance normalisation (./hf-audio-preprocessor.ts). */
  preprocessor?: string;
  /** Say on stderr what the preprocessor does and which tensor the loss reads (the CLI without --json). */
  verbose?: boolean;
}

/** The fill of label rows after their labels (any negative value is read as this). */
const FILL = -100;

export async function ctcTask(model: RefitModel, o: CtcTaskOptions): Promise<TrainTask> {
  // PaddleOCR's recognition label file (`image<TAB>transcript` lines) carries images and transcripts both.
  const lineFile = isLineLabelFile(o.data);
  if (lineFile && o.labels) throw new Error(`--data ${o.data} is a recognition label file (image<TAB>transcript a line), which holds the labels; drop --labels`);
  if (lineFile && !o.vocab) throw new Error(`--data ${o.data}: its transcripts need the model's vocabulary to become ids: give --vocab <vocab.json, or a PaddleOCR character dictionary such as ppocr_keys_v1.txt>`);
  if (!o.labels && !lineFile) throw new Error('--task ctc learns label sequences: give them with --labels <file> (.npy int [n, length], each row filled with -100 after its labels; or a .txt of transcripts with --vocab), or --data a recognition label file (image<TAB>transcript a line)');
  const transcripts = lineFile || /\.txt$/i.test(o.labels!);
  if (transcripts && !o.vocab) throw new Error(`--labels ${o.labels}: transcripts need the model's vocabulary to become ids: give --vocab <vocab.json or model folder>`);
  if (!transcripts && o.vocab) throw new Error(`--vocab turns transcripts (--labels <file>.txt) into ids; --labels ${o.labels} holds ids already`);
  const vocab = o.vocab ? readCtcVocab(o.vocab) : undefined;
  if (vocab && o.padToken !== undefined && o.padToken !== vocab.blank) throw new Error(`--pad-token ${o.padToken}: ${vocab.file} makes ${vocab.blank} the blank (its pad token)`);
  const io = modelIO(model, o.logits ?? model.outputs.find((v) => v.shape?.length === 3)?.name);
  const out = model.outputs.find((v) => v.name === io.logits)!;
  if (out.shape && out.shape.length !== 3) throw new Error(`--task ctc reads frame logits [batch, frames, classes]; output '${io.logits}' has shape ${JSON.stringify(out.shape)} (--logits names another output)`);
  const classes = io.classes;
  // A recogniser exported with its Softmax (PaddleOCR's PP-OCR, many CRNN exports) gives
  // probabilities; the CTC loss takes logits (it applies log-softmax), so it reads the Softmax's input.
  const logits = softmaxInput(model, io.logits) ?? io.logits;
  if (logits !== io.logits && o.verbose) process.stderr.write(`refit: '${io.logits}' is a Softmax over the classes; the CTC loss reads its input '${logits}' (the logits)\n`);
  const blank = o.padToken ?? vocab?.blank ?? 0;
  if (classes !== null && blank >= classes) throw new Error(`--pad-token ${blank} (the CTC blank) is not one of the model's ${classes} classes`);
  // A character dictionary fixes the class count (HF vocabularies may leave added tokens out).
  if (vocab && /\.txt$/i.test(vocab.file) && classes !== null && vocab.size !== classes) throw new Error(`--vocab ${vocab.file} defines ${vocab.size} classes (blank included) and the model has ${classes}: is it the model's own?`);
  const audio = o.preprocessor !== undefined ? readAudioPreprocessor(o.preprocessor) : undefined;
  if (audio && o.verbose) process.stderr.write(`refit: preprocessing from ${audio.summary}\n`);
  let ds: Dataset, a: NpyArray;
  if (lineFile) {
    const [C, H, W] = io.spec.dims;
    if (io.spec.dims.length !== 3 || C !== 3 || typeof H !== 'number') throw new Error(`--data ${o.data}: text-line images go to a [N, 3, H, W] input of fixed height; the model's '${io.spec.input}' is [N, ${io.spec.dims.map((d) => d ?? '?').join(', ')}]`);
    const lines = await readTextLines(o.data, H, W ?? DEFAULT_LINE_WIDTH);
    if (o.verbose) process.stderr.write(`refit: ${lines.data.n} text lines resized to height ${H} and padded to width ${W ?? DEFAULT_LINE_WIDTH}, BGR, (x/255 - 0.5)/0.5, as PaddleOCR feeds its recognisers\n`);
    ds = lines.data;
    a = transcriptArray(lines.transcripts, vocab!, o.data);
  } else {
    const read = await loadData(o.data, io);
    ds = audio?.normalize ? { ...read, x: normalizeRows(read.x, read.n) } : read;
    a = vocab ? transcriptIds(o.labels!, vocab) : parseNpy(readBytes(o.labels!, 'NPY file'), o.labels!);
  }
  const labelSource = o.labels ?? o.data;
  if (a.dtype !== 'int64' && a.dtype !== 'int32') throw new Error(`${labelSource}: label sequences must be integers (int64 or int32), got ${a.dtype}`);
  if (a.shape.length !== 2) throw new Error(`${labelSource}: shape [${a.shape.join(', ')}]; label sequences are [n, length]`);
  const [n, S] = a.shape as [number, number];
  if (n !== ds.n) throw new Error(`${labelSource}: ${n} label sequences for ${ds.n} samples in ${o.data}`);
  // rows as lists, checked: labels first, then only fill; every label a class other than the blank
  const rows: number[][] = [];
  for (let i = 0; i < n; i++) {
    const row = Array.from(a.values.subarray(i * S, (i + 1) * S));
    const len = row.findIndex((v) => v < 0);
    const labels = len < 0 ? row : row.slice(0, len);
    const bad = labels.find((v) => v === blank || (classes !== null && v >= classes));
    if (bad !== undefined) throw new Error(`${labelSource}: row ${i} has label ${bad}, which is ${bad === blank ? 'the blank (--pad-token)' : `not a class (the model has ${classes})`}`);
    if (len >= 0 && row.slice(len).some((v) => v >= 0)) throw new Error(`${labelSource}: row ${i} has a label after its fill; put each row's labels first, then -100`);
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
      const loss = ctcRowLoss(row, T, C, rows[i]!, blank);
      lossSum += Number.isFinite(loss) ? loss / Math.max(rows[i]!.length, 1) : 0; // zeroInfinity, as the step
    });
    return { errors, count, lossSum };
  };
  return {
    data: { source: lineFile ? o.data : `${o.data} → ${labelSource}`, format: `${ds.format} → ${vocab ? `transcripts (${vocab.file})` : 'npy label sequences'}`, samples: n, sampleShape: [...ds.sampleShape, S] },
    logits,
    // A row with more labels (and repeats) than the model has frames has no alignment: it counts
    // 0 rather than making the batch's loss +∞ (transformers' ctc_zero_infinity, which its CTC
    // fine-tuning examples turn on).
    loss: ctc({ logits, labels: 'refit_labels', blank, maxLabelLength: S, zeroInfinity: true }),
    feeds: (idx) => ({ ...feeds(idx), refit_labels: labelFeed(idx) }),
    score(z, idx) {
      const t = tally(z, idx);
      return { correct: Math.max(t.count - t.errors, 0), scored: t.count };
    },
    async evaluate(m, idx, bs, onBatch) {
      let errors = 0, count = 0, lossSum = 0;
      for (let s = 0; s < idx.length; s += bs) {
        const part = idx.slice(s, s + bs);
        const t = tally((await m.run(feeds(part), { outputs: [logits] }))[logits]!, part);
        errors += t.errors; count += t.count; lossSum += t.lossSum;
        onBatch?.(Math.min(s + bs, idx.length));
      }
      return { loss: lossSum / Math.max(idx.length, 1), accuracy: count ? Math.max(1 - errors / count, 0) : 0 };
    },
  };
}

/** The input of the Softmax over the last axis that writes output `name`, if one does. */
function softmaxInput(model: RefitModel, name: string): string | undefined {
  const n = model.ir.graph.nodes.find((x) => x.outputs[0] === name);
  if (!n || n.opType !== 'Softmax' || (n.domain !== '' && n.domain !== 'ai.onnx')) return undefined;
  const rank = model.outputs.find((v) => v.name === name)?.shape?.length ?? 3;
  const axis = n.attrs.axis?.kind === 'int' ? n.attrs.axis.value : opsetVersion(model.ir) >= 13 ? -1 : 1;
  // Before opset 13 Softmax flattens from its axis on: on [N, T, C] only axis 2 is the classes alone.
  return axis === -1 || axis === rank - 1 ? n.inputs[0] : undefined;
}

/** A transcript file (one per line) as label ids [n, longest], -100 after each row's labels. */
function transcriptIds(path: string, vocab: CtcVocab): NpyArray {
  let text: string;
  try { text = readFileSync(path, 'utf8'); } catch (e) { throw new Error(`--labels ${path}: ${(e as Error).message}`); }
  const lines = text.split(/\r?\n/);
  if (lines.at(-1) === '') lines.pop();
  return transcriptArray(lines, vocab, path);
}

/** Transcripts as label ids [n, longest], -100 after each row's labels; errors name `path` and the line. */
function transcriptArray(lines: string[], vocab: CtcVocab, path: string): NpyArray {
  const rows = lines.map((line, i) => encodeTranscript(vocab, line, `${path} line ${i + 1}`));
  const S = Math.max(1, ...rows.map((r) => r.length));
  const values = new Float64Array(rows.length * S).fill(FILL);
  rows.forEach((r, i) => values.set(r, i * S));
  return { dtype: 'int64', shape: [rows.length, S], values };
}
