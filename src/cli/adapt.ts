// `refit adapt model.onnx --method … --stream …`: run a test-time adaptation method or the
// continual controller over a stream of batches (in file order), and write one prediction per
// sample (CSV or JSONL), the error when labels are given, and an HTML report.
import { extname, resolve } from 'node:path';
import { loadModel } from '../model.ts';
import { createAdapter, METHODS, LANGUAGE_MODEL_METHODS, type InputStats } from '../tta/index.ts';
import { adaptLanguageModel, type LanguageModelScores } from './adapt-lm.ts';
import { adaptSegmenter } from './adapt-dense.ts';
import { adaptOutputs } from './adapt-outputs.ts';
import type { Adapter } from '../tta/types.ts';
import type { Tensor } from '../onnx/tensor.ts';
import { ContinualController, LEVEL_NAMES } from '../continual/index.ts';
import type { StreamScore } from '../tta/run-stream.ts';
import { renderReport, runProvenance } from '../report/html.ts';
import { modelIO, withFeaturesFor, loadData, batchOf, progressBar, positiveInt, finiteNumber, range, topClass, writeTextAtomic, preprocessOptions, parseMethodOptions, csvCell, type ModelIO } from './common.ts';
import { isTokenModel } from './token-inputs.ts';
import { tokenStream, tokenSourceIds, TOKEN_METHODS, type StreamData } from './token-stream.ts';
import { textSource, type TextOptions } from './text-tokens.ts';
import { methodSetup, ACTMAD_NEEDS_SOURCE } from './method-setup.ts';

export interface AdaptOptions extends TextOptions {
  method: string;
  stream: string;
  labels?: string;
  labelColumn?: string;
  batchSize?: string | number;
  /** Labelled in-distribution data for the methods that use it (EATA's Fisher, CoTTA, RMT) and the controller's calibration. */
  source?: string;
  sourceLabels?: string;
  logits?: string;
  embedding?: string;
  /** Continual: hand the stream's labels to the controller this many batches after each batch (delayed feedback). */
  feedbackDelay?: string | number;
  /**
   * Continual with --source: level 3 runs RMT on the source set (the deep learner, as `refit
   * demo`); false (`--no-deep`) keeps level 3 on the normalization adapters. @default true
   */
  deep?: boolean;
  /** Continual with --source: what the deep learner adapts, 'all' or 'norm' (--deep-params). @default 'norm' over 1M parameters, else 'all' */
  deepParams?: string;
  /** Align each batch's input per channel to --source's statistics (src/tta/input-align.ts); default: on for continual with --source. */
  inputAlign?: boolean;
  /** Pixel data's per-channel normalisation, comma-separated (torchvision's Normalize); the stream's and --source's. */
  mean?: string;
  std?: string;
  /** Image folders (the stream's and --source): a size for the shorter side before a centre crop, or 'stretch'. */
  resize?: string;
  /** A Hugging Face preprocessor_config.json (or its folder): --resize, --mean and --std where not given (./hf-preprocessor.ts). */
  preprocessor?: string;
  /** Token models: the padding id (attention_mask 0 there; ./token-stream.ts). */
  padToken?: string | number;
  /** The method's options as a JSON object (e.g. '{"lr": 0.001}'), over its defaults (continual: over the recommended set). */
  methodOptions?: string | Record<string, unknown>;
  out: string;
  report?: string;
  json?: boolean;
}

export interface AdaptResult {
  model: string;
  method: string;
  stream: { source: string; format: string; samples: number; batches: number; batchSize: number; labelled: boolean };
  /** With labels: error of the adapted predictions, and of the unadapted model on the same batches. */
  error: number | null;
  sourceError: number | null;
  /** Continual: batches spent at each level, and the controller's events. */
  levels?: Record<string, number>;
  events?: { batch: number; kind: string; reason: string }[];
  /** Continual with --feedback-delay: labels accepted by the controller. */
  feedbackAccepted?: number;
  /** Continual: whether level 3 runs the deep learner (RMT on --source), and over what. */
  deepLearner?: boolean;
  deepParams?: 'all' | 'norm';
  /** With --input-align: the --source statistics each batch was aligned to. */
  inputAlign?: InputStats;
  /** A language-model method (dynamic-eval): next-token log-loss of the stream, adapted and not (./adapt-lm.ts). */
  languageModel?: LanguageModelScores;
  /** A segmenter with masks: the labelled pixels `error` and `sourceError` are shares of (./adapt-dense.ts). */
  pixels?: number;
  /** A model without class scores (a detector): the shape of the adapted outputs written to the .npy (./adapt-outputs.ts). */
  outputShape?: number[];
  out: string;
  report: string | null;
  msPerBatch: number;
  seconds: number;
}

const FORMATS = ['.csv', '.jsonl'];

/** ActMAD's clean inputs from --source (its labels unused), for the segmenter and output paths; {} for other methods. */
async function actmadSource(method: string, source: string | undefined, io: ModelIO): Promise<{ sourceData?: Tensor }> {
  if (method !== 'actmad') return {};
  if (!source) throw new Error(ACTMAD_NEEDS_SOURCE);
  const clean = await loadData(source, io, {});
  return { sourceData: batchOf(clean, range(0, clean.n)).x };
}

export async function runAdapt(modelPath: string, o: AdaptOptions): Promise<AdaptResult> {
  const t0 = performance.now();
  // Options first: a typo costs nothing and writes nothing.
  const method = o.method;
  if (!method) throw new Error(`--method is required: one of ${[...METHODS, 'continual'].join(', ')}`);
  if (method !== 'continual' && !METHODS.includes(method)) throw new Error(`unknown method '${method}'; known methods: ${[...METHODS, 'continual'].join(', ')}`);
  const batchSize = positiveInt('--batch-size', o.batchSize ?? 64);
  if (!o.out) throw new Error('--out is required: a .csv or .jsonl file for the predictions');
  const ext = extname(o.out).toLowerCase();
  if (!FORMATS.includes(ext) && ext !== '.npy') throw new Error(`--out ${o.out}: predictions are written as CSV or JSONL (a detector's adapted outputs as .npy); give a path ending in .csv or .jsonl`);
  if (o.report && extname(o.report).toLowerCase() !== '.html') throw new Error(`--report ${o.report}: give a path ending in .html`);
  const delay = o.feedbackDelay !== undefined ? finiteNumber('--feedback-delay', o.feedbackDelay, (v) => Number.isInteger(v) && v >= 0, 'a whole number of batches') : null;
  if (delay !== null && method !== 'continual') throw new Error(`--feedback-delay is for --method continual (the TTA methods learn from unlabelled data only)`);
  const prep = preprocessOptions(o, o.json);
  const { pixels, resize } = prep;
  const padToken = o.padToken !== undefined ? finiteNumber('--pad-token', o.padToken, (v) => Number.isInteger(v) && v >= 0, 'a non-negative integer token id') : undefined;
  if (o.deep === false && method !== 'continual') throw new Error(`--no-deep is for --method continual (it turns off the controller's level-3 deep learner)`);
  const methodOptions = parseMethodOptions(o.methodOptions) ?? {};
  const text = textSource(modelPath, o, padToken);
  if (LANGUAGE_MODEL_METHODS.includes(method)) {
    const unused = [o.labels && '--labels', o.source && '--source', o.report && '--report', pixels && '--mean/--std', resize !== undefined && '--resize', o.inputAlign && '--input-align'].filter(Boolean);
    if (unused.length) throw new Error(`${unused.join(', ')}: not for --method ${method}, which scores a language model on the stream's own next tokens`);
    const r = await adaptLanguageModel(modelPath, { method, stream: o.stream, out: o.out, batchSize, methodOptions, text, ...(padToken !== undefined ? { padToken } : {}), ...(o.logits ? { logits: o.logits } : {}), ...(o.json ? { json: true } : {}) });
    return {
      model: modelPath, method, stream: { source: o.stream, format: r.format, samples: r.samples, batches: r.batches, batchSize, labelled: false },
      error: null, sourceError: null, languageModel: r.scores, out: o.out, report: null, msPerBatch: r.ms, seconds: (performance.now() - t0) / 1000,
    };
  }

  let model = await loadModel(modelPath);
  let io: ModelIO;
  let ds: StreamData;
  let tokenSource: Tensor | undefined;
  let streamPad = padToken; // text data: the tokenizer's pad id where --pad-token gives none
  if (isTokenModel(model)) {
    // Token ids in: the companions made inside the graph, methods that leave the input as it is.
    if (method !== 'continual' && !(TOKEN_METHODS as readonly string[]).includes(method)) throw new Error(`--method ${method} on a token model: ${method} augments its input images; token models take ${TOKEN_METHODS.join(', ')}, continual`);
    const imageFlags = [pixels && '--mean/--std', resize !== undefined && '--resize', o.inputAlign && '--input-align', o.sourceLabels && '--source-labels'].filter(Boolean);
    if (imageFlags.length) throw new Error(`${imageFlags.join(', ')}: for image data; this model reads token ids`);
    // --source: in-distribution ids (the controller's entropy reference, EATA's Fisher).
    if (o.source) tokenSource = tokenSourceIds(model, o.source, '--source', text);
    ({ model, io, ds, padToken: streamPad } = tokenStream(model, { stream: o.stream, labels: o.labels, logits: o.logits, text: { ...text, ...(o.labelColumn !== undefined ? { labelColumn: o.labelColumn } : {}) }, ...(padToken !== undefined ? { padToken } : {}) }));
    model = withFeaturesFor(method, model, io.logits, { embedding: o.embedding, quiet: o.json });
  } else {
    if (padToken !== undefined) throw new Error('--pad-token is for token models; this model takes float32 inputs');
    if (o.tokenizer !== undefined || o.maxLength !== undefined || o.textColumn !== undefined) throw new Error('--tokenizer, --max-length and --text-column are for token models; this model takes float32 inputs');
    io = modelIO(model, o.logits, prep);
    const rank = model.outputs.find((v) => v.name === io.logits)?.shape?.length;
    if (rank !== undefined && rank !== 2 && rank !== 4) {
      // a detector, a regressor, a recogniser: the adapted outputs themselves (./adapt-outputs.ts)
      const unused = [o.labels && '--labels', o.source && method !== 'actmad' && '--source', o.report && '--report', o.inputAlign && '--input-align', o.embedding && '--embedding', o.labelColumn && '--label-column'].filter(Boolean);
      if (unused.length) throw new Error(`${unused.join(', ')}: not for this model, whose output '${io.logits}' has ${rank} axes (neither [batch, classes] nor [batch, classes, H, W]); refit adapt writes its adapted outputs to .npy without scoring them`);
      const r = await adaptOutputs(model, io, { method, stream: o.stream, out: o.out, batchSize, methodOptions: { ...await actmadSource(method, o.source, io), ...methodOptions }, ...(o.json ? { json: true } : {}) });
      await model.release();
      return {
        model: modelPath, method, stream: { source: r.source, format: r.format, samples: r.samples, batches: r.batches, batchSize, labelled: false },
        error: null, sourceError: null, outputShape: r.shape, out: o.out, report: null, msPerBatch: r.ms, seconds: (performance.now() - t0) / 1000,
      };
    }
    if (ext === '.npy') throw new Error(`--out ${o.out}: .npy holds the adapted outputs of a model that has no class scores; '${io.logits}' gives classes, so the predictions are written as CSV or JSONL`);
    if (rank === 4) {
      // a segmenter: one row per image, pixel accuracy against masks (./adapt-dense.ts)
      const unused = [o.source && method !== 'actmad' && '--source', o.report && '--report', o.inputAlign && '--input-align', o.embedding && '--embedding', o.labelColumn && '--label-column'].filter(Boolean);
      if (unused.length) throw new Error(`${unused.join(', ')}: not for a segmenter (dense logits [batch, classes, H, W]), which refit adapt scores per pixel against --labels masks`);
      const r = await adaptSegmenter(model, io, { method, stream: o.stream, out: o.out, batchSize, methodOptions: { ...await actmadSource(method, o.source, io), ...methodOptions }, ...(o.labels ? { labels: o.labels } : {}), ...(o.json ? { json: true } : {}) });
      await model.release();
      return {
        model: modelPath, method, stream: { source: r.source, format: r.format, samples: r.samples, batches: r.batches, batchSize, labelled: !!r.scores },
        error: r.scores?.error ?? null, sourceError: r.scores?.sourceError ?? null, ...(r.scores ? { pixels: r.scores.pixels } : {}),
        out: o.out, report: null, msPerBatch: r.ms, seconds: (performance.now() - t0) / 1000,
      };
    }
    model = withFeaturesFor(method, model, io.logits, { embedding: o.embedding, quiet: o.json }); // before the data: its error first
    const images = await loadData(o.stream, io, { labels: o.labels, labelColumn: o.labelColumn });
    ds = { ...images, batch: (idx) => batchOf(images, idx).x };
  }
  if (delay !== null && !ds.labels) throw new Error(`--feedback-delay hands the stream's labels to the controller; give --labels (or a labelled stream)`);
  if (o.report && !ds.labels) throw new Error(`--report charts the error over the stream and needs labels; give --labels (or a labelled stream), or drop --report`);
  const setup = await methodSetup(method, model, io, o, { batchSize, log: o.json ? undefined : (line) => process.stderr.write(`${line}\n`), ...(tokenSource ? { tokenSource } : {}) });
  let adapter: Adapter | null = null;
  let controller: ContinualController | null = null;
  if (method === 'continual') {
    controller = new ContinualController(model, { ...setup.options, ...(streamPad !== undefined ? { padToken: streamPad } : {}), ...methodOptions });
    if (setup.calibration) await controller.calibrate(setup.calibration);
    // Warm the level-3 deep learner up now, with progress, not inside the batch that first reaches level 3.
    if (setup.deepLearner && setup.calibration) {
      if (!o.json) process.stderr.write('refit: preparing the deep learner (RMT on --source: prototypes, warm-up, compiled step)\n');
      await controller.prepareDeepLearner(setup.calibration[0]!);
    }
  } else {
    adapter = createAdapter(model, method, { ...setup.options, ...methodOptions }); // each method's own default output unless --logits
  }

  const batches = Math.ceil(ds.n / batchSize);
  const bar = progressBar(!o.json, 'batches');
  bar?.start(batches, 0, { label: method, metrics: '' });
  const lines: string[] = ext === '.csv' ? [['id', 'prediction', ...(ds.classes ? ['class'] : []), 'confidence', ...(ds.labels ? ['label'] : []), ...(controller ? ['level'] : [])].join(',')] : [];
  const batchErrors: number[] = [], sourceErrors: number[] = [];
  const levels: Record<string, number> = {};
  const levelPerBatch: number[] = [], driftBatches: number[] = []; // the report's controller timeline
  let wrong = 0, sourceWrong = 0, ms = 0, accepted = 0;
  const feedback = async (k: number) => {
    // Labels of batch k arrive now: after the predictions they score were made and written.
    const idx = range(k * batchSize, Math.min((k + 1) * batchSize, ds.n));
    accepted += (await controller!.feedback(idx.map((i) => ds.ids[i]!), idx.map((i) => ds.labels![i]!))).accepted;
  };
  for (let k = 0; k < batches; k++) {
    if (delay !== null && k - delay >= 0 && delay > 0) await feedback(k - delay);
    const idx = range(k * batchSize, Math.min((k + 1) * batchSize, ds.n));
    const b = { x: ds.batch(idx), ids: idx.map((i) => ds.ids[i]!) };
    const tb = performance.now();
    let probsOrLogits: Float32Array, C: number, softmaxed: boolean, level: number | undefined;
    if (controller) {
      const r = await controller.predict(b.x, b.ids);
      probsOrLogits = r.probs; C = r.probs.length / idx.length; softmaxed = true; level = r.level;
      levelPerBatch.push(r.level);
      if (r.signals.drift) driftBatches.push(k);
      const name = LEVEL_NAMES[r.level];
      levels[name] = (levels[name] ?? 0) + 1;
    } else {
      const r = await adapter!.predict(b.x);
      probsOrLogits = r.logits.data as Float32Array; C = r.logits.dims[r.logits.dims.length - 1]!; softmaxed = false;
    }
    ms += performance.now() - tb;
    let bw = 0;
    for (let i = 0; i < idx.length; i++) {
      const { cls, conf } = softmaxed ? argmaxProb(probsOrLogits, C, i) : topClass(probsOrLogits, C, i);
      const label = ds.labels?.[idx[i]!];
      if (label !== undefined && label !== cls) bw++;
      const row = { id: b.ids[i]!, prediction: cls, ...(ds.classes ? { class: ds.classes[cls] ?? String(cls) } : {}), confidence: +conf.toFixed(6), ...(label !== undefined ? { label } : {}), ...(level !== undefined ? { level } : {}) };
      lines.push(ext === '.csv' ? Object.values(row).map((v) => csvCell(String(v))).join(',') : JSON.stringify(row));
    }
    if (ds.labels) {
      wrong += bw;
      batchErrors.push(bw / idx.length);
      // The unadapted model on the same batch: the baseline the method has to beat.
      const out = (await model.run({ [io.spec.input]: b.x }, { outputs: [io.logits] }))[io.logits]!;
      let sw = 0;
      for (let i = 0; i < idx.length; i++) if (topClass(out.data as Float32Array, C, i).cls !== ds.labels[idx[i]!]) sw++;
      sourceWrong += sw;
      sourceErrors.push(sw / idx.length);
    }
    if (delay === 0) await feedback(k);
    bar?.update(k + 1, { metrics: ds.labels ? `error ${(100 * wrong / (idx[idx.length - 1]! + 1)).toFixed(1)}%` : '' });
  }
  bar?.stop();
  writeTextAtomic(o.out, lines.join('\n') + '\n');

  const error = ds.labels ? wrong / ds.n : null;
  const sourceError = ds.labels ? sourceWrong / ds.n : null;
  let report: string | null = null;
  if (o.report) {
    const score = (name: string, errs: number[], e: number): StreamScore => ({
      method: name, batchErrors: errs, domains: [{ domain: 'stream', severity: 0, round: 0, error: e, samples: ds.n }],
      meanError: e, msPerBatch: 0, firstBatchMs: 0, skipped: 0,
    });
    report = resolve(o.report);
    writeTextAtomic(report, renderReport({
      title: `refit adapt: ${method} on ${o.stream}`,
      subtitle: `${modelPath} · ${ds.n} samples in ${batches} batches of ${batchSize}${controller ? ` · levels: ${Object.entries(levels).map(([k, v]) => `${k} ${v}`).join(', ')}` : ''}`,
      scores: [score('source', sourceErrors, sourceError!), { ...score(method, batchErrors, error!), ...(controller ? { levels: levelPerBatch, drifts: driftBatches } : {}) }],
      boundaries: [{ batch: 0, domain: 'stream' }],
      provenance: runProvenance(),
    }));
  }
  const events = controller?.events.map((e) => ({ batch: e.batch, kind: e.kind, reason: e.reason }));
  await adapter?.release();
  await controller?.release();
  await model.release();
  return {
    model: modelPath,
    method,
    stream: { source: ds.source, format: ds.format, samples: ds.n, batches, batchSize, labelled: !!ds.labels },
    error,
    sourceError,
    ...(controller ? { levels, events, deepLearner: setup.deepLearner, ...(setup.deepParams ? { deepParams: setup.deepParams } : {}) } : {}),
    ...(delay !== null ? { feedbackAccepted: accepted } : {}),
    ...(setup.inputAlign ? { inputAlign: setup.inputAlign } : {}),
    out: o.out,
    report,
    msPerBatch: ms / Math.max(1, batches),
    seconds: (performance.now() - t0) / 1000,
  };
}

function argmaxProb(p: Float32Array, C: number, i: number): { cls: number; conf: number } {
  let arg = 0;
  for (let c = 1; c < C; c++) if (p[i * C + c]! > p[i * C + arg]!) arg = c;
  return { cls: arg, conf: p[i * C + arg]! };
}

export function formatAdapt(r: AdaptResult): string {
  const lines = [`${r.method} on ${r.stream.samples} samples (${r.stream.batches} batches of ${r.stream.batchSize}, ${r.msPerBatch.toFixed(1)} ms/batch): wrote ${r.out}`];
  if (r.error !== null) lines.push(`${r.pixels !== undefined ? `pixel error over ${r.pixels.toLocaleString('en-US')} labelled pixels` : 'error'} ${(100 * r.error).toFixed(2)}% (unadapted model: ${(100 * r.sourceError!).toFixed(2)}%)`);
  const lm = r.languageModel;
  if (lm) lines.push(`next-token log-loss ${lm.nll.toFixed(4)} nats per token, perplexity ${Math.exp(lm.nll).toFixed(2)} (unadapted model: ${lm.sourceNll.toFixed(4)}, ${Math.exp(lm.sourceNll).toFixed(2)}) over ${lm.tokens} tokens`);
  if (r.levels) lines.push(`controller levels (batches): ${Object.entries(r.levels).map(([k, v]) => `${k} ${v}`).join(', ')}; ${r.events!.length} events${r.feedbackAccepted !== undefined ? `; ${r.feedbackAccepted} labels fed back` : ''}`);
  if (r.levels) lines.push(r.deepLearner ? `level 3: RMT over ${r.deepParams === 'norm' ? "the normalization layers' scales and shifts (a large model; --deep-params all for every parameter)" : 'every parameter'} on --source (the deep learner)` : r.stream.format === 'npy token ids' ? 'level 3: the normalization adapters (the deep learner, RMT, augments images: not for token ids)' : 'level 3: the normalization adapters (give --source, labelled in-distribution data, for RMT, the deep learner)');
  if (r.inputAlign) lines.push(`input aligned per channel to --source: mean ${r.inputAlign.mean.map((v) => v.toFixed(4)).join(', ')}, within-sample std ${r.inputAlign.sampleStd.map((v) => v.toFixed(4)).join(', ')}`);
  if (r.report) lines.push(`report: ${r.report}`);
  return lines.join('\n');
}
