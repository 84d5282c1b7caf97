// `refit eval model.onnx --data …`: accuracy and cross-entropy on a labelled set (inference only);
// with --task next-token, a language model's next-token accuracy, log-loss and perplexity on
// token sequences (a decoder exported with a KV cache runs without it).
import { loadModel } from '../model.ts';
import { loadAdapter } from '../peft/files-node.ts';
import { progressBar, positiveInt, finiteNumber, range, preprocessOptions } from './common.ts';
import { classifyTask } from './train-task.ts';
import { nextTokenTask } from './token-task.ts';
import { tagTask } from './tag-task.ts';
import { pairsTask } from './pairs-task.ts';
import { loadSeq2seq, loadSeq2seqFile, seq2seqTask } from './seq2seq-task.ts';
import { segmentTask } from './segment-task.ts';
import { regressTask } from './regress-task.ts';
import { ctcTask } from './ctc-task.ts';
import { TASKS } from './train.ts';
import { withoutKvCache } from '../onnx/kv-cache.ts';
import { sayTextData, textSource, type TextOptions } from './text-tokens.ts';

export interface EvalOptions extends TextOptions {
  /** 'classify' (the default), 'next-token' (a language model on token sequences), 'pairs' (an embedding model's retrieval accuracy), 'seq2seq' (an encoder-decoder in two files) or 'segment' (a segmenter's pixel accuracy). */
  task?: string;
  /** --task pairs: 'mean' (over the attention mask, the default) or 'cls'. */
  pooling?: string;
  /** --task seq2seq: the decoder file (the model argument is the encoder); --labels holds the target ids. */
  decoder?: string;
  /** An adapter folder (HF PEFT layout) applied to the model, not merged. */
  adapter?: string;
  /** --task seq2seq: the decoder's start token (default --pad-token). */
  decoderStart?: string | number;
  /** --task segment: the mask value of pixels left out (default 255). */
  ignoreIndex?: string | number;
  /** --task ctc: a Hugging Face vocab.json (or its folder) that turns --labels transcripts into ids. */
  vocab?: string;
  data: string;
  labels?: string;
  labelColumn?: string;
  batchSize?: string | number;
  logits?: string;
  /** Token models: the padding token id (attention_mask 0 there). */
  padToken?: string | number;
  /** Pixel data's per-channel normalisation, comma-separated (torchvision's Normalize). */
  mean?: string;
  std?: string;
  /** Image folders: a size for the shorter side before a centre crop, or 'stretch'. */
  resize?: string;
  /** A Hugging Face preprocessor_config.json (or its folder): --resize, --mean and --std where not given (./hf-preprocessor.ts). */
  preprocessor?: string;
  json?: boolean;
}

export interface EvalResult {
  model: string;
  data: string;
  samples: number;
  /** Per sample, or with task 'next-token' per scored token (a next token that is not padding), or with 'pairs' per anchor (its own positive the nearest of all candidates). */
  accuracy: number;
  /** Mean cross-entropy (nats; per token for next-token; the in-batch-negatives loss over the whole set for pairs). */
  loss: number;
  task?: 'next-token' | 'tag' | 'pairs' | 'seq2seq' | 'segment' | 'ctc' | 'regress';
  /** --task regress: the mean absolute error (`loss` is the mean squared error; `accuracy` is NaN). */
  meanAbsoluteError?: number;
  /** --task segment: the mean intersection over union over the classes labelled or predicted. */
  meanIoU?: number;
  seconds: number;
}

export async function runEval(modelPath: string, o: EvalOptions): Promise<EvalResult> {
  const t0 = performance.now();
  const batchSize = positiveInt('--batch-size', o.batchSize ?? 256);
  const padToken = o.padToken !== undefined ? finiteNumber('--pad-token', o.padToken, (v) => Number.isInteger(v) && v >= 0, 'a non-negative integer token id') : undefined;
  const text = textSource(modelPath, o, padToken);
  const said = <T extends { data: { format: string } }>(task: T): T => { sayTextData(o.data, task.data.format, o.json); return task; };
  // --task ctc reads an audio feature extractor's config itself (hf-audio-preprocessor.ts)
  const prep = preprocessOptions(o.task === 'ctc' ? { ...o, preprocessor: undefined } : o, o.json);
  const taskName = o.task ?? 'classify';
  if (!(TASKS as readonly string[]).includes(taskName)) throw new Error(`unknown --task '${o.task}'; known tasks: ${TASKS.join(', ')}`);
  if (o.pooling !== undefined && taskName !== 'pairs') throw new Error('--pooling is for --task pairs (an embedding model)');
  if (o.vocab !== undefined && taskName !== 'ctc') throw new Error('--vocab is for --task ctc (transcripts as label ids)');
  if (taskName !== 'seq2seq' && o.decoder !== undefined) throw new Error('--decoder is for --task seq2seq');
  if (o.adapter !== undefined && ['seq2seq', 'pairs', 'next-token'].includes(taskName)) throw new Error(`--adapter: not for --task ${taskName}; merge it first (refit adapter merge)`);
  if (taskName === 'seq2seq') {
    const flags = [o.labelColumn && '--label-column', prep.pixels && '--mean/--std', prep.resize !== undefined && '--resize', o.pooling && '--pooling'].filter(Boolean);
    if (flags.length) throw new Error(`${flags.join(', ')}: not for --task seq2seq, which reads source ids (--data) and target ids (--labels)`);
    const decoderStart = o.decoderStart !== undefined ? finiteNumber('--decoder-start', o.decoderStart, (v) => Number.isInteger(v) && v >= 0, 'a non-negative integer token id') : undefined;
    const pair = o.decoder !== undefined ? await loadSeq2seq(modelPath, o.decoder) : await loadSeq2seqFile(modelPath);
    try {
      const task = said(seq2seqTask(pair, { data: o.data, ...(o.labels ? { targets: o.labels } : {}), ...(padToken !== undefined ? { padToken } : {}), text, ...(decoderStart !== undefined ? { decoderStart } : {}) }));
      const n = task.data.samples;
      const r = await task.evaluate(pair.joined, range(0, n), batchSize);
      return { model: o.decoder !== undefined ? `${modelPath} + ${o.decoder}` : modelPath, data: task.data.source, samples: n, accuracy: r.accuracy, loss: r.loss, task: 'seq2seq', seconds: (performance.now() - t0) / 1000 };
    } finally {
      await pair.release();
    }
  }
  if (taskName === 'pairs') {
    const flags = [o.labels && '--labels', o.labelColumn && '--label-column', prep.pixels && '--mean/--std', prep.resize !== undefined && '--resize'].filter(Boolean);
    if (flags.length) throw new Error(`${flags.join(', ')}: not for --task pairs, which scores each anchor on finding its own positive`);
    const model = await loadModel(modelPath);
    try {
      const task = said(pairsTask(model, { data: o.data, ...(o.logits ? { embeddings: o.logits } : {}), ...(padToken !== undefined ? { padToken } : {}), text, ...(o.pooling ? { pooling: o.pooling as 'mean' } : {}) }));
      const n = task.data.samples;
      const bar = progressBar(!o.json, 'examples');
      bar?.start(n, 0, { label: 'eval', metrics: '' });
      const r = await task.evaluate(model, range(0, n), batchSize, (done) => bar?.update(done));
      bar?.stop();
      return { model: modelPath, data: o.data, samples: n, accuracy: r.accuracy, loss: r.loss, task: 'pairs', seconds: (performance.now() - t0) / 1000 };
    } finally {
      await model.release();
    }
  }
  if (taskName === 'next-token') {
    const flags = [o.labels && '--labels', o.labelColumn && '--label-column', prep.pixels && '--mean/--std', prep.resize !== undefined && '--resize'].filter(Boolean);
    if (flags.length) throw new Error(`${flags.join(', ')}: not for --task next-token, which scores each position on the sequence's own next token`);
    const given = await loadModel(modelPath);
    const model = withoutKvCache(given); // a model without a cache comes back as it is
    try {
      const task = said(nextTokenTask(model, { data: o.data, ...(o.logits ? { logits: o.logits } : {}), ...(padToken !== undefined ? { padToken } : {}), text }));
      const n = task.data.samples;
      const r = await task.evaluate(model, range(0, n), batchSize);
      return { model: modelPath, data: o.data, samples: n, accuracy: r.accuracy, loss: r.loss, task: 'next-token', seconds: (performance.now() - t0) / 1000 };
    } finally {
      await Promise.all([model.release(), given.release()]);
    }
  }
  if (o.ignoreIndex !== undefined && taskName !== 'segment') throw new Error('--ignore-index is for --task segment');
  const base = await loadModel(modelPath);
  // An adapter folder applied as it trained (not merged: a merge into an int8 layer moves the outputs a little).
  const model = o.adapter ? await loadAdapter(base, o.adapter).catch(async (e: Error) => { await base.release(); throw e; }) : base;
  const shown = o.adapter ? `${modelPath} + ${o.adapter}` : modelPath;
  try {
    if (taskName === 'tag') {
      const task = said(tagTask(model, { data: o.data, ...(o.labels ? { labels: o.labels } : {}), ...(o.logits ? { logits: o.logits } : {}), ...(padToken !== undefined ? { padToken } : {}), text: { ...text, ...(o.labelColumn !== undefined ? { labelColumn: o.labelColumn } : {}) } }));
      const n = task.data.samples;
      const r = await task.evaluate(model, range(0, n), batchSize);
      return { model: shown, data: task.data.source, samples: n, accuracy: r.accuracy, loss: r.loss, task: 'tag', seconds: (performance.now() - t0) / 1000 };
    }
    if (taskName === 'ctc') {
      const flags = [o.labelColumn && '--label-column', prep.pixels && '--mean/--std', prep.resize !== undefined && '--resize', o.pooling && '--pooling'].filter(Boolean);
      if (flags.length) throw new Error(`${flags.join(', ')}: not for --task ctc, which reads audio or features (--data) and label sequences (--labels)`);
      const task = await ctcTask(model, { data: o.data, ...(o.labels ? { labels: o.labels } : {}), ...(o.vocab ? { vocab: o.vocab } : {}), ...(o.preprocessor ? { preprocessor: o.preprocessor, verbose: !o.json } : {}), ...(o.logits ? { logits: o.logits } : {}), ...(padToken !== undefined ? { padToken } : {}) });
      const n = task.data.samples;
      const r = await task.evaluate(model, range(0, n), batchSize);
      return { model: shown, data: task.data.source, samples: n, accuracy: r.accuracy, loss: r.loss, task: 'ctc', seconds: (performance.now() - t0) / 1000 };
    }
    if (taskName === 'segment') {
      if (o.labelColumn || padToken !== undefined) throw new Error(`${o.labelColumn ? '--label-column' : '--pad-token'}: not for --task segment, which reads images (--data) and masks (--labels, .npy [N, H, W])`);
      const ignoreIndex = o.ignoreIndex !== undefined ? finiteNumber('--ignore-index', o.ignoreIndex, Number.isInteger, 'an integer') : undefined;
      const task = await segmentTask(model, { data: o.data, labels: o.labels, logits: o.logits, ...prep, ...(ignoreIndex !== undefined ? { ignoreIndex } : {}) }, 'refit eval');
      const n = task.data.samples;
      const r = await task.evaluate(model, range(0, n), batchSize);
      return { model: shown, data: task.data.source, samples: n, accuracy: r.accuracy, loss: r.loss, task: 'segment', meanIoU: r.meanIoU!, seconds: (performance.now() - t0) / 1000 };
    }
    if (taskName === 'regress') {
      if (o.labelColumn || padToken !== undefined) throw new Error(`${o.labelColumn ? '--label-column' : '--pad-token'}: not for --task regress, which reads inputs (--data) and float targets (--labels, .npy [N, ...])`);
      const task = await regressTask(model, { data: o.data, labels: o.labels, logits: o.logits, ...prep }, 'refit eval');
      const n = task.data.samples;
      const r = await task.evaluate(model, range(0, n), batchSize);
      return { model: shown, data: task.data.source, samples: n, accuracy: r.accuracy, loss: r.loss, task: 'regress', meanAbsoluteError: r.meanAbsoluteError, seconds: (performance.now() - t0) / 1000 };
    }
    const task = said(await classifyTask(model, { data: o.data, labels: o.labels, labelColumn: o.labelColumn, logits: o.logits, padToken, text, ...prep, needLabels: 'eval' }, 'refit eval'));
    const n = task.data.samples;
    const bar = progressBar(!o.json, 'samples');
    bar?.start(n, 0, { label: 'eval', metrics: '' });
    const r = await task.evaluate(model, range(0, n), batchSize, (done) => bar?.update(done));
    bar?.stop();
    return { model: shown, data: o.data, samples: n, accuracy: r.accuracy, loss: r.loss, seconds: (performance.now() - t0) / 1000 };
  } finally {
    await model.release();
    if (model !== base) await base.release();
  }
}

export function formatEval(r: EvalResult): string {
  if (r.task === 'pairs') return `${r.model} on ${r.data} (${r.samples} examples): retrieval accuracy ${(100 * r.accuracy).toFixed(2)}% (each anchor's own positive the nearest of all ${r.samples} examples' candidates), in-batch-negatives loss ${r.loss.toFixed(4)} (${r.seconds.toFixed(1)} s)`;
  if (r.task === 'segment') return `${r.model} on ${r.data} (${r.samples} images): pixel accuracy ${(100 * r.accuracy).toFixed(2)}% over the labelled pixels, mean IoU ${(100 * (r.meanIoU ?? NaN)).toFixed(2)}%, loss ${r.loss.toFixed(4)} nats per pixel (${r.seconds.toFixed(1)} s)`;
  if (r.task === 'regress') return `${r.model} on ${r.data} (${r.samples} samples): mean squared error ${r.loss.toPrecision(5)}, mean absolute error ${(r.meanAbsoluteError ?? NaN).toPrecision(5)} per output value (${r.seconds.toFixed(1)} s)`;
  if (r.task === 'ctc') return `${r.model} on ${r.data} (${r.samples} sequences): label error rate ${(100 * (1 - r.accuracy)).toFixed(2)}% (greedy decoding against the labels, edit distance over label count), CTC loss ${r.loss.toFixed(4)} nats per label (${r.seconds.toFixed(1)} s)`;
  if (r.task === 'seq2seq') return `${r.model} on ${r.data} (${r.samples} sequences): target-token accuracy ${(100 * r.accuracy).toFixed(2)}%, loss ${r.loss.toFixed(4)} nats per token, perplexity ${Math.exp(r.loss).toFixed(2)} (${r.seconds.toFixed(1)} s)`;
  if (r.task === 'tag') return `${r.model} on ${r.data} (${r.samples} sequences): token accuracy ${(100 * r.accuracy).toFixed(2)}% over the labelled tokens, loss ${r.loss.toFixed(4)} nats per token (${r.seconds.toFixed(1)} s)`;
  if (r.task === 'next-token') return `${r.model} on ${r.data} (${r.samples} sequences): next-token accuracy ${(100 * r.accuracy).toFixed(2)}%, loss ${r.loss.toFixed(4)} nats per token, perplexity ${Math.exp(r.loss).toFixed(2)} (${r.seconds.toFixed(1)} s)`;
  return `${r.model} on ${r.data}: accuracy ${(100 * r.accuracy).toFixed(2)}% (${Math.round(r.accuracy * r.samples)}/${r.samples}), loss ${r.loss.toFixed(4)} (${r.seconds.toFixed(1)} s)`;
}
