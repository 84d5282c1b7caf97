// `refit train model.onnx --data …`: full fine-tuning or a PEFT adapter, with a validation split,
// metrics per epoch and a progress bar, for a classifier or (--task next-token) a language model;
// what differs between the two is in train-task.ts and token-task.ts. Nothing is written until training has finished, and then
// atomically (the model through RefitModel.save, the adapter folder through a swap).
// A text decoder exported with a KV cache (optimum's merged decoder, or past_key_values inputs)
// trains without it (../onnx/kv-cache.ts); full training writes the trained weights back into the
// model as given, so the file keeps its cache for generation.
import { mkdirSync } from 'node:fs';
import { dirname, extname, resolve } from 'node:path';
import { loadModel, RefitModel } from '../model.ts';
import { upcastFloat16, downcastFloat16 } from '../autodiff/lower/float16.ts';
import { adamw } from '../train/optim/index.ts';
import { Trainer } from '../train/trainer.ts';
import { withAdapter, lora, dora, ia3, bottleneck, bitfit, normAffine, accounting, type PeftModel } from '../peft/index.ts';
import type { AdapterMethod } from '../peft/types.ts';
import { saveAdapter } from '../peft/files-node.ts';
import { hasBatchNorm } from '../tta/bn-adapt.ts';
import { Rng } from '../util/rng.ts';
import { progressBar, positiveInt, finiteNumber, parseTargets, replaceDirAtomic, preprocessOptions, sameGraph, denseLayers } from './common.ts';
import { classifyTask, type TrainTask } from './train-task.ts';
import { nextTokenTask } from './token-task.ts';
import { tagTask } from './tag-task.ts';
import { pairsTask } from './pairs-task.ts';
import { loadSeq2seq, loadSeq2seqFile, seq2seqTask } from './seq2seq-task.ts';
import { segmentTask } from './segment-task.ts';
import { regressTask, REGRESSION_LOSSES, type RegressionLoss } from './regress-task.ts';
import { ctcTask } from './ctc-task.ts';
import { sayTextData, textSource, type TextOptions } from './text-tokens.ts';
import { kvCacheOf, withoutKvCache, writeWeightsBack } from '../onnx/kv-cache.ts';

export const ADAPTERS = ['lora', 'dora', 'ia3', 'bottleneck', 'bitfit', 'norm-affine'] as const;
export const TASKS = ['classify', 'next-token', 'tag', 'pairs', 'seq2seq', 'segment', 'ctc', 'regress'] as const;

export interface TrainOptions extends TextOptions {
  /**
   * 'classify' (labelled samples, the default), 'next-token' (token id sequences, token-task.ts),
   * 'pairs' (an embedding model on token id groups, pairs-task.ts), 'seq2seq' (an encoder-decoder
   * in two files, seq2seq-task.ts) or 'segment' (a segmenter on masks, segment-task.ts).
   */
  task?: string;
  /** --task pairs: how token states become a sentence embedding, 'mean' (over the attention mask) or 'cls'. */
  pooling?: string;
  /** --task seq2seq: the decoder file (decoder_model.onnx or decoder_model_merged.onnx); the model argument is the encoder. */
  decoder?: string;
  /** --task seq2seq: the decoder's start token (config.json's decoder_start_token_id); default the pad token. */
  decoderStart?: string | number;
  /** --task segment: the mask value of pixels left out (default 255). */
  ignoreIndex?: string | number;
  /** --task ctc: a Hugging Face vocab.json (or its folder) that turns --labels transcripts into ids. */
  vocab?: string;
  /** --task regress: the loss, mse (default), l1, smooth-l1 or huber (PyTorch's defaults, β = δ = 1). */
  loss?: string;
  /** Token models: a token id whose positions are padding (no label for next-token; attention_mask 0). */
  padToken?: string | number;
  data: string;
  labels?: string;
  labelColumn?: string;
  adapter?: string;
  rank?: string | number;
  alpha?: string | number;
  targets?: string;
  form?: string;
  /** Full training: which parameters (a /regex/ or 'all'). */
  trainable?: string;
  /** Load with keepTies: true, every tie kept (by default, 'auto', the ties of tensors of more than one value). */
  keepTies?: boolean;
  /** Load with keepTies: false: each copy of a weight stored twice is its own parameter. */
  untie?: boolean;
  /** The step without onnxruntime's weight pre-packing (SessionOptions.prepack false). */
  lowMemory?: boolean;
  epochs?: string | number;
  batchSize?: string | number;
  lr?: string | number;
  weightDecay?: string | number;
  clipNorm?: string | number;
  valSplit?: string | number;
  batchNorm?: string;
  seed?: string | number;
  logits?: string;
  /** Pixel data's per-channel normalisation, comma-separated (torchvision's Normalize). */
  mean?: string;
  std?: string;
  /** Image folders: a size for the shorter side before a centre crop, or 'stretch' (./image-resize.ts). */
  resize?: string;
  /** A Hugging Face preprocessor_config.json (or its folder): --resize, --mean and --std where not given (./hf-preprocessor.ts). */
  preprocessor?: string;
  out: string;
  json?: boolean;
}

export interface EpochMetrics {
  epoch: number;
  trainLoss: number;
  trainAccuracy: number;
  valLoss: number | null;
  valAccuracy: number | null;
  skippedSteps: number;
  seconds: number;
}

export interface TrainResult {
  model: string;
  data: { source: string; format: string; samples: number; train: number; validation: number; sampleShape: number[] };
  task: string;
  mode: 'full' | 'adapter';
  adapter?: string;
  trainableParams: number;
  trainablePercent: number;
  /** A model with a KV cache: it trained without it; weights defined only inside its If branch, left frozen. */
  kvCache?: { frozen: string[] };
  steps: number;
  epochs: EpochMetrics[];
  out: string;
  seconds: number;
}

function makeAdapter(kind: string, o: TrainOptions): AdapterMethod {
  const targets = o.targets ? parseTargets(o.targets) : /./; // default: every layer the method supports (HF PEFT's 'all-linear')
  const rank = o.rank !== undefined ? positiveInt('--rank', o.rank) : 8;
  const alpha = o.alpha !== undefined ? finiteNumber('--alpha', o.alpha, (v) => v > 0, 'a positive number') : undefined;
  const filter = (): RegExp | ((n: string) => boolean) | undefined => {
    if (!o.targets) return undefined;
    const t = targets;
    return t instanceof RegExp ? t : (n: string) => t.includes(n);
  };
  switch (kind) {
    // By default LoRA and DoRA pass over grouped and depthwise convolutions, which they cannot
    // attach to (PP-OCRv4's recogniser mixes them with the dense layers they can).
    case 'lora': return lora({ targets: o.targets ? targets : denseLayers, rank, ...(alpha ? { alpha } : {}) });
    case 'dora': return dora({ targets: o.targets ? targets : denseLayers, rank, ...(alpha ? { alpha } : {}) });
    case 'ia3': return ia3({ targets });
    case 'bottleneck': {
      const form = (o.form ?? 'houlsby') as 'houlsby' | 'pfeiffer' | 'parallel';
      if (!['houlsby', 'pfeiffer', 'parallel'].includes(form)) throw new Error(`--form must be houlsby, pfeiffer or parallel, got '${o.form}'`);
      return bottleneck({ form, targets });
    }
    case 'bitfit': return bitfit({ filter: filter() });
    case 'norm-affine': return normAffine({ filter: filter() });
    default: throw new Error(`unknown adapter '${kind}'; known adapters: ${ADAPTERS.join(', ')}`);
  }
}

/** Shuffle and split indices into training and validation sets. */
export function splitIndices(n: number, valSplit: number, seed: number): { train: number[]; val: number[] } {
  const perm = Array.from(new Rng(seed).permutation(n));
  let nVal = Math.round(n * valSplit);
  if (valSplit > 0 && nVal === 0 && n >= 2) nVal = 1;
  if (n - nVal < 1) throw new Error(`--val-split ${valSplit} leaves no training samples out of ${n}`);
  return { val: perm.slice(0, nVal).sort((a, b) => a - b), train: perm.slice(nVal) };
}

export async function runTrain(modelPath: string, o: TrainOptions): Promise<TrainResult> {
  const t0 = performance.now();
  // Check every option before loading anything, so a typo costs nothing.
  const epochs = positiveInt('--epochs', o.epochs ?? 1);
  const batchSize = positiveInt('--batch-size', o.batchSize ?? 32);
  const valSplit = finiteNumber('--val-split', o.valSplit ?? 0.1, (v) => v >= 0 && v < 1, 'a fraction in [0, 1)');
  const seed = finiteNumber('--seed', o.seed ?? 0, Number.isInteger, 'an integer');
  const mode = o.adapter ? 'adapter' : 'full';
  const taskName = o.task ?? 'classify';
  if (!(TASKS as readonly string[]).includes(taskName)) throw new Error(`unknown --task '${o.task}'; known tasks: ${TASKS.join(', ')}`);
  const padToken = o.padToken !== undefined ? finiteNumber('--pad-token', o.padToken, (v) => Number.isInteger(v) && v >= 0, 'a non-negative integer token id') : undefined;
  const text = textSource(modelPath, o, padToken);
  // --task ctc reads an audio feature extractor's config itself (hf-audio-preprocessor.ts)
  const prep = preprocessOptions(o.task === 'ctc' ? { ...o, preprocessor: undefined } : o, o.json);
  const { pixels, resize } = prep;
  if ((pixels || resize !== undefined) && taskName !== 'classify' && taskName !== 'segment' && taskName !== 'regress') throw new Error(`--mean, --std and --resize prepare pixel data; --task ${taskName} reads ${taskName === 'ctc' ? 'audio or features' : 'token ids'}`);
  if (taskName === 'ctc' && o.labelColumn) throw new Error('--label-column reads CSV data; --task ctc reads label sequences from --labels (.npy [n, length], or transcripts with --vocab)');
  if (o.vocab !== undefined && taskName !== 'ctc') throw new Error('--vocab is for --task ctc (transcripts as label ids)');
  if (o.ignoreIndex !== undefined && taskName !== 'segment') throw new Error('--ignore-index is for --task segment');
  if (o.loss !== undefined && taskName !== 'regress') throw new Error('--loss is for --task regress (the other tasks have their own loss)');
  if (o.loss !== undefined && !(REGRESSION_LOSSES as readonly string[]).includes(o.loss)) throw new Error(`--loss ${o.loss}: choose one of ${REGRESSION_LOSSES.join(', ')}`);
  if (taskName === 'segment' && (o.labelColumn || o.padToken !== undefined)) throw new Error(`${o.labelColumn ? '--label-column' : '--pad-token'}: not for --task segment, which reads images (--data) and masks (--labels, .npy [N, H, W])`);
  if (taskName === 'regress' && (o.labelColumn || o.padToken !== undefined)) throw new Error(`${o.labelColumn ? '--label-column' : '--pad-token'}: not for --task regress, which reads inputs (--data) and float targets (--labels, .npy [N, ...])`);
  const ignoreIndex = o.ignoreIndex !== undefined ? finiteNumber('--ignore-index', o.ignoreIndex, Number.isInteger, 'an integer') : undefined;
  if (o.pooling !== undefined && taskName !== 'pairs') throw new Error('--pooling is for --task pairs (an embedding model)');
  if (taskName === 'pairs' && (o.labels || o.labelColumn)) throw new Error('--task pairs learns from which sequences belong together (anchor, positive, hard negatives); it takes no --labels');
  const seq2seq = taskName === 'seq2seq';
  if (!seq2seq && o.decoder !== undefined) throw new Error('--decoder is for --task seq2seq');
  if (!seq2seq && o.decoderStart !== undefined) throw new Error('--decoder-start is for --task seq2seq');
  if (seq2seq && o.labelColumn) throw new Error('--label-column reads CSV data; --task seq2seq reads the target token ids from --labels (.npy)');
  if (seq2seq && o.adapter === 'bottleneck') throw new Error('--task seq2seq with --adapter bottleneck: an adapter is folded into the weights of both files, and bottleneck adapters add layers instead; use lora, dora, ia3, bitfit or norm-affine');
  const decoderStart = o.decoderStart !== undefined ? finiteNumber('--decoder-start', o.decoderStart, (v) => Number.isInteger(v) && v >= 0, 'a non-negative integer token id') : undefined;
  if (o.adapter && !(ADAPTERS as readonly string[]).includes(o.adapter)) throw new Error(`unknown adapter '${o.adapter}'; known adapters: ${ADAPTERS.join(', ')}`);
  const lr = finiteNumber('--lr', o.lr ?? (mode === 'full' ? 1e-3 : 5e-3), (v) => v > 0, 'a positive number');
  const weightDecay = finiteNumber('--weight-decay', o.weightDecay ?? 0.01, (v) => v >= 0, 'a non-negative number');
  const clipNorm = finiteNumber('--clip-norm', o.clipNorm ?? 1, (v) => v >= 0, 'a non-negative number (0: no clipping)');
  if (o.batchNorm !== undefined && o.batchNorm !== 'train' && o.batchNorm !== 'eval') throw new Error(`--batch-norm must be 'train' or 'eval', got '${o.batchNorm}'`);
  if (!o.out) throw new Error('--out is required: a .onnx file for full training, a folder for an adapter');
  if (seq2seq && extname(o.out).toLowerCase() === '.onnx') throw new Error(`--out ${o.out}: --task seq2seq writes the model's files (the encoder and the decoder, or the one file) into a folder; give a folder path`);
  if (mode === 'full' && !seq2seq && extname(o.out).toLowerCase() !== '.onnx') throw new Error(`--out ${o.out}: full training writes an ONNX model; give a path ending in .onnx`);
  if (mode === 'adapter' && extname(o.out).toLowerCase() === '.onnx') throw new Error(`--out ${o.out}: --adapter writes an adapter folder (HF PEFT layout), not an .onnx file; give a folder path`);

  if (o.keepTies && o.untie) throw new Error('--keep-ties and --untie contradict each other; give one');
  const ties = o.untie ? { keepTies: false } : o.keepTies ? { keepTies: true } : {};
  const pair = !seq2seq ? null : o.decoder !== undefined ? await loadSeq2seq(modelPath, o.decoder, ties) : await loadSeq2seqFile(modelPath, ties);
  const given = pair ? pair.joined : await loadModel(modelPath, ties);
  const kv = pair ? null : kvCacheOf(given);
  const loaded = kv ? withoutKvCache(given) : given;
  // Full training of a float16 model (transformers.js's model_fp16.onnx, onnxconverter-common's
  // output) runs on a float32 master copy, written back as float16 (rounded to nearest).
  const half = !o.adapter && !pair && !kv && loaded.parameterNames('all').some((p) => loaded.param(p).dtype === 'float16');
  const base = half ? new RefitModel(upcastFloat16(loaded.ir), loaded.sessionOptions) : loaded;
  if (half && !o.json) process.stderr.write('refit: float16 weights: trained on a float32 copy, written back as float16\n');
  const logits = o.logits ? { logits: o.logits } : {}, pad = { ...(padToken !== undefined ? { padToken } : {}), text };
  const makeTask = async (): Promise<TrainTask> => {
    switch (taskName) {
      case 'seq2seq': return seq2seqTask(pair!, { data: o.data, ...(o.labels ? { targets: o.labels } : {}), ...pad, ...(decoderStart !== undefined ? { decoderStart } : {}) });
      case 'next-token': return nextTokenTask(base, { data: o.data, ...logits, ...pad });
      case 'tag': return tagTask(base, { data: o.data, ...(o.labels ? { labels: o.labels } : {}), ...logits, ...pad, text: { ...text, ...(o.labelColumn !== undefined ? { labelColumn: o.labelColumn } : {}) } });
      case 'pairs': return pairsTask(base, { data: o.data, ...(o.logits ? { embeddings: o.logits } : {}), ...pad, ...(o.pooling ? { pooling: o.pooling as 'mean' } : {}) });
      case 'segment': return segmentTask(base, { data: o.data, labels: o.labels, ...logits, ...prep, ...(ignoreIndex !== undefined ? { ignoreIndex } : {}) });
      case 'regress': return regressTask(base, { data: o.data, labels: o.labels, ...logits, ...prep, ...(o.loss ? { loss: o.loss as RegressionLoss } : {}) });
      case 'ctc': return ctcTask(base, { data: o.data, ...(o.labels ? { labels: o.labels } : {}), ...(o.vocab ? { vocab: o.vocab } : {}), ...(o.preprocessor ? { preprocessor: o.preprocessor } : {}), verbose: !o.json, ...logits, ...(padToken !== undefined ? { padToken } : {}) });
      default: return classifyTask(base, { data: o.data, labels: o.labels, labelColumn: o.labelColumn, logits: o.logits, padToken, text, ...prep });
    }
  };
  const task = await makeTask();
  // Copies of a weight that 'auto' untied across modules (a buffer's, a causal mask's, train nothing).
  const params = new Set(given.parameterNames());
  const across = pair ? [] : (given.quirks.untiedAcrossModules ?? []).filter((n) => params.has(n));
  if (!o.json && across.length) process.stderr.write(`refit: ${across.length} equal ${across.length === 1 ? 'copy' : 'copies'} of a weight read by another module train on ${across.length === 1 ? 'its' : 'their'} own (the file cannot tell copied layers of an untrained model from one weight two modules share); if the modules share it, as TabNet's shared GLU layers do, train with --keep-ties\n`);
  sayTextData(o.data, task.data.format, o.json);
  const { train, val } = splitIndices(task.data.samples, valSplit, seed);

  let model: RefitModel = base;
  let trainable: string[];
  let percent = 100;
  let frozen: string[] = [];
  if (o.adapter) {
    const pm = withAdapter(base, o.adapter, makeAdapter(o.adapter, o));
    model = pm;
    trainable = pm.trainableNames(o.adapter);
    percent = accounting(pm, o.adapter).trainablePercent;
  } else {
    const sel = o.trainable && o.trainable !== 'all' ? parseTargets(o.trainable) : 'all';
    trainable = base.parameterNames(sel);
    if (kv || pair) {
      // Only weights of the file as given can be written back (an If branch's own scalars cannot).
      const writable = pair ? pair.writable : (p: string) => given.ir.graph.initializers.has(p);
      frozen = trainable.filter((p) => !writable(p));
      trainable = trainable.filter(writable);
    }
    if (trainable.length === 0) throw new Error(`--trainable ${o.trainable} selects no parameter of the model`);
    const all = base.parameterNames('all');
    const size = (names: string[]) => names.reduce((a, p) => a + base.param(p).data.length, 0);
    percent = (100 * size(trainable)) / Math.max(1, size(all));
  }
  const trainableParams = trainable.reduce((a, p) => a + model.param(p).data.length, 0);
  // BatchNorm: batch statistics for full training (PyTorch's model.train()), frozen running
  // statistics for adapters (the base model stays as it was, as PEFT fine-tuning usually does).
  const bn = (o.batchNorm ?? (mode === 'full' ? 'train' : 'eval')) as 'train' | 'eval';
  const step = model.compileTrainStep({
    trainable,
    loss: task.loss,
    outputs: [task.logits],
    ...(hasBatchNorm(model) ? { batchNorm: bn } : {}),
    ...(o.lowMemory ? { session: { ...model.sessionOptions, prepack: false } } : {}),
  });
  const groups = o.adapter ? (model as PeftModel).paramGroups() : []; // LoRA+ learning-rate scales, when set
  const trainer = new Trainer(step, adamw({ lr, weightDecay, ...(groups.length ? { groups } : {}) }), clipNorm > 0 ? { clipNorm } : {});

  // Full batches only (a smaller last batch would compile another step graph for one batch),
  // unless the whole training set is smaller than one batch.
  const bs = Math.min(batchSize, train.length);
  const stepsPerEpoch = Math.floor(train.length / bs);
  const rng = new Rng(seed + 1);
  const bar = progressBar(!o.json, 'steps');
  const epochsOut: EpochMetrics[] = [];
  let refusal = ''; // why the last refused step was refused
  for (let e = 1; e <= epochs; e++) {
    const te = performance.now();
    const order = Array.from(rng.shuffle(Uint32Array.from(train)));
    let lossSum = 0, correct = 0, seen = 0, lossSteps = 0;
    const skipped0 = trainer.skippedSteps;
    bar?.start(stepsPerEpoch, 0, { label: `epoch ${e}/${epochs}`, metrics: '' });
    for (let s = 0; s < stepsPerEpoch; s++) {
      const idx = order.slice(s * bs, (s + 1) * bs);
      const r = await trainer.step(task.feeds(idx));
      if (!r.skipped) { lossSum += r.loss; lossSteps++; } else refusal = r.reason ?? refusal;
      const logits = r.outputs[task.logits];
      if (logits) {
        const c = task.score(logits, idx);
        correct += c.correct;
        seen += c.scored;
      }
      bar?.update(s + 1, { metrics: `loss ${(lossSum / Math.max(1, lossSteps)).toFixed(4)}` });
    }
    bar?.stop();
    const v = val.length ? await task.evaluate(model, val, Math.max(bs, 64)) : null;
    const m: EpochMetrics = {
      epoch: e,
      trainLoss: lossSteps ? lossSum / lossSteps : NaN,
      trainAccuracy: seen ? correct / seen : NaN,
      valLoss: v ? v.loss : null,
      valAccuracy: v ? v.accuracy : null,
      skippedSteps: trainer.skippedSteps - skipped0,
      seconds: (performance.now() - te) / 1000,
    };
    epochsOut.push(m);
    if (!o.json) console.log(formatEpoch(m, epochs));
  }
  if (trainer.steps === 0) {
    // A gradient that is non-finite from the first step on is the parameter's, not the learning rate's
    // (a Pow exponent over a negative base, as Silero VAD's legacy file stores its 2.0s).
    const param = /^gradient of '([^']+)'/.exec(refusal)?.[1];
    throw new Error(`every training step was refused (non-finite loss or gradient; the last: ${refusal}); nothing written. ` +
      (param && !o.adapter ? `Leave '${param}' out (--trainable /regex/ without it), or try a smaller --lr (was ${lr})` : `Try a smaller --lr (was ${lr})`));
  }

  if (o.adapter && pair) {
    // an adapter over two files has no HF PEFT layout: it is folded in, and both files are written
    const merged = (model as PeftModel).mergeAll();
    if (!sameGraph(merged, base)) throw new Error(`--task seq2seq with --adapter ${o.adapter}: the adapter must fold into the weights of both files, and it changed the graph instead (an adapter that adds layers); use lora, dora, ia3 or bitfit; nothing written`);
    await replaceDirAtomic(o.out, async (tmp) => { await pair.write(tmp, (m, path) => m.save(path), merged); });
    await merged.release();
  } else if (o.adapter) {
    const pm = model as PeftModel;
    await replaceDirAtomic(o.out, (tmp) => saveAdapter(pm, o.adapter!, tmp));
  } else if (pair) {
    // both files or neither: written into a fresh folder that replaces --out at once
    await replaceDirAtomic(o.out, async (tmp) => { await pair.write(tmp, (m, path) => m.save(path)); });
  } else {
    mkdirSync(dirname(resolve(o.out)), { recursive: true }); // only now: a failed run creates nothing
    if (kv) writeWeightsBack(given, model, trainable);
    if (half) {
      const written = new RefitModel(downcastFloat16(given.ir, model.ir), given.sessionOptions);
      await written.save(o.out);
      await written.release();
    } else await (kv ? given : model).save(o.out);
  }
  await step.release();
  await Promise.all([model.release(), base.release(), given.release(), pair?.release()]);
  return {
    model: modelPath,
    data: { ...task.data, train: train.length, validation: val.length },
    mode,
    task: taskName,
    ...(o.adapter ? { adapter: o.adapter } : {}),
    trainableParams,
    trainablePercent: percent,
    ...(kv || pair?.cached ? { kvCache: { frozen } } : {}),
    steps: trainer.steps,
    epochs: epochsOut,
    out: o.out,
    seconds: (performance.now() - t0) / 1000,
  };
}

const pct = (v: number | null) => (v === null || Number.isNaN(v) ? '–' : `${(100 * v).toFixed(2)}%`);
const fx = (v: number | null) => (v === null || Number.isNaN(v) ? '–' : v.toFixed(4));

export function formatEpoch(m: EpochMetrics, of: number): string {
  return `epoch ${m.epoch}/${of}: train loss ${fx(m.trainLoss)}, accuracy ${pct(m.trainAccuracy)}` +
    (m.valLoss !== null ? ` | validation loss ${fx(m.valLoss)}, accuracy ${pct(m.valAccuracy)}` : '') +
    (m.skippedSteps ? ` | ${m.skippedSteps} steps refused (non-finite)` : '') + ` (${m.seconds.toFixed(1)} s)`;
}

export function formatTrainSummary(r: TrainResult): string {
  const kv = r.kvCache
    ? `; trained without the model's KV cache${r.mode === 'full' ? ', written back into the model with it' : ''}${r.kvCache.frozen.length ? ` (${r.kvCache.frozen.length} tensor${r.kvCache.frozen.length > 1 ? 's' : ''} defined inside its If branch left frozen: ${r.kvCache.frozen.slice(0, 3).join(', ')})` : ''}`
    : '';
  return `trained ${r.trainableParams.toLocaleString('en-US')} parameters (${r.trainablePercent.toFixed(2)}% of the model${r.adapter ? `, adapter ${r.adapter}` : ''}) for ${r.steps} steps on ${r.data.train} samples (${r.data.validation} held out)${kv}; wrote ${r.out} (${r.seconds.toFixed(1)} s)`;
}

