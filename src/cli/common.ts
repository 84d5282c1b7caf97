// Shared pieces of the `refit` commands: what a model takes and gives, batches, a progress bar
// with ETA, cross-entropy/accuracy in TypeScript, and writes that never leave half a file.
import type { Site } from '../peft/sites.ts';
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, basename, join, resolve } from 'node:path';
import cliProgress from 'cli-progress';
import type { RefitModel } from '../model.ts';
import { f32, i64, type Tensor } from '../onnx/tensor.ts';
import { defaultLogits } from '../tta/types.ts';
import { writeFileAtomic } from '../onnx/io.ts';
import { FeaturesError } from '../onnx/penultimate.ts';
import { readDataset, checkLabels, imageFiles, type Dataset, type SampleSpec, type ReadOptions, type PixelNorm, type DecodedImage } from './data-files.ts';
import { resizeImage, parseResize, type ResizeMode } from '../data/image-resize.ts';
import { readHfPreprocessor } from './hf-preprocessor.ts';

export interface ModelIO {
  spec: SampleSpec;
  logits: string;
  /** Class count from the logits output's shape, when it is known. */
  classes: number | null;
}

/**
 * RMT, T3A and LAME read the penultimate features, and the controller's deep learner and error
 * memory use them: a model exported with only its logits gets the input of its linear head as the
 * output 'features' (model.withFeatures()), said on stderr. Where it has no linear head, T3A,
 * LAME and RMT fail with the reason; the controller runs without an embedding.
 */
export function withFeaturesFor(method: string, model: RefitModel, logits: string, o: { embedding?: string; quiet?: boolean } = {}): RefitModel {
  const reads = ['rmt', 't3a', 'lame'].includes(method) || (method === 'continual' && !o.embedding);
  if (!reads || model.outputs.some((v) => v.name === 'features')) return model;
  try {
    const m = model.withFeatures({ logits });
    const f = m.outputs.find((v) => v.name === 'features')!;
    if (!o.quiet) process.stderr.write(`refit: the model has no 'features' output; ${method} uses the input of its linear head (${f.shape![1]} values per sample)\n`);
    return m;
  } catch (e) {
    if (method === 'continual') return model;
    throw new Error(`--method ${method} reads the penultimate features: ${e instanceof FeaturesError ? e.reason : (e as Error).message}`);
  }
}

/** --mean and --std (comma-separated, one value or one per channel), checked; undefined when neither is given. */
export function pixelNorm(o: { mean?: string; std?: string }): PixelNorm | undefined {
  if (o.mean === undefined && o.std === undefined) return undefined;
  if (o.mean === undefined || o.std === undefined) throw new Error('--mean and --std go together (e.g. ImageNet\'s --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225)');
  const list = (name: string, v: string, ok: (x: number) => boolean, what: string) => {
    const xs = v.split(',').map((t) => t.trim());
    return xs.map((t) => finiteNumber(name, t, ok, what));
  };
  const mean = list('--mean', o.mean, () => true, 'comma-separated numbers');
  const std = list('--std', o.std, (x) => x > 0, 'comma-separated positive numbers');
  if (mean.length !== std.length) throw new Error(`--mean has ${mean.length} values and --std ${std.length}; give as many of each (one, or one per channel)`);
  return { mean, std };
}

/**
 * --mean/--std and --resize, with --preprocessor (a Hugging Face preprocessor_config.json,
 * ./hf-preprocessor.ts) filling whichever of them is not given; what it set goes to stderr unless quiet.
 */
export function preprocessOptions(o: { mean?: string; std?: string; resize?: string; preprocessor?: string }, quiet = false): Preprocess {
  let pixels = pixelNorm(o);
  let resize = parseResize(o.resize);
  let processorSize: Preprocess['processorSize'];
  if (o.preprocessor !== undefined) {
    const hf = readHfPreprocessor(o.preprocessor);
    const given = [pixels && '--mean/--std', resize !== undefined && '--resize'].filter(Boolean);
    pixels ??= hf.pixels;
    // The processor's size is checked against the model's input when its resize is the one used.
    if (resize === undefined && hf.resize !== undefined) {
      resize = hf.resize;
      if (hf.size) processorSize = { size: hf.size, file: hf.file };
    }
    if (!quiet) {
      process.stderr.write(`refit: preprocessing from ${hf.summary}${given.length ? ` (${given.join(' and ')} given, and used instead)` : ''}\n`);
      for (const n of hf.notes) process.stderr.write(`refit: note: ${n}\n`);
    }
  }
  return { ...(pixels ? { pixels } : {}), ...(resize !== undefined ? { resize } : {}), ...(processorSize ? { processorSize } : {}) };
}

/** How data read for the model is prepared: --mean/--std and --resize. */
export interface Preprocess {
  pixels?: PixelNorm;
  resize?: ResizeMode;
  /** --preprocessor's crop or target size [H, W] (and its file), when its resize is used: it must be the model's H×W. */
  processorSize?: { size: [number, number]; file: string };
}

/** The model's single input and its class-score output; `prep` prepares the data read for it. */
export function modelIO(model: RefitModel, logitsName?: string, prep: Preprocess = {}): ModelIO {
  if (model.inputs.length !== 1) throw new Error(`the CLI feeds models with one input; this one has ${model.inputs.length} (${model.inputs.map((i) => i.name).join(', ')}); use the library for more`);
  const input = model.inputs[0]!;
  if (input.dtype !== 'float32') throw new Error(`the model's input '${input.name}' is ${input.dtype}; the CLI feeds float32 inputs`);
  const dims = (input.shape ?? []).slice(1).map((d) => (typeof d === 'number' && d > 0 ? d : null));
  if (!input.shape || input.shape.length < 2) throw new Error(`the model's input '${input.name}' has shape ${JSON.stringify(input.shape)}; the CLI needs [N, ...] with a batch dimension first`);
  const ps = prep.processorSize;
  if (ps && dims.length === 3 && dims[1] !== null && dims[2] !== null && (dims[1] !== ps.size[0] || dims[2] !== ps.size[1])) {
    throw new Error(`--preprocessor ${ps.file}: the processor makes ${ps.size[0]}×${ps.size[1]} images, and the model's input '${input.name}' is ${dims.join('×')}; give this model's own preprocessor_config.json, or --resize`);
  }
  const logits = logitsName ?? defaultLogits(model.outputs);
  const out = model.outputs.find((o) => o.name === logits);
  if (!out) throw new Error(`the model has no output '${logits}' (outputs: ${model.outputs.map((o) => o.name).join(', ')})`);
  const c = out.shape?.[out.shape.length - 1];
  return { spec: { input: input.name, dims, ...(prep.pixels ? { pixels: prep.pixels } : {}), ...(prep.resize !== undefined ? { resize: prep.resize } : {}) }, logits, classes: typeof c === 'number' && c > 0 ? c : null };
}

/**
 * Every image of a folder (as the folder reader lists them) decoded and resized to the model's
 * H×W, by file; the folder reader then converts them as it converts images of the right size.
 */
async function resizeFolder(path: string, spec: SampleSpec, mode: ResizeMode): Promise<Map<string, DecodedImage>> {
  if (!existsSync(path) || !statSync(path).isDirectory()) throw new Error(`--resize resizes the images of a folder; ${path} is not a folder (resize the data before saving it, or drop --resize)`);
  const [, H, W] = spec.dims;
  if (spec.dims.length !== 3 || typeof H !== 'number' || typeof W !== 'number') throw new Error(`--resize needs a model input of shape [N, C, H, W] with a fixed H and W; the model's input '${spec.input}' is [N, ${spec.dims.map((d) => d ?? '?').join(', ')}]`);
  const out = new Map<string, DecodedImage>();
  for (const { file } of imageFiles(path)) out.set(file, await resizeImage(file, W, H, mode));
  return out;
}

/** Read a dataset for this model (image folders resized first with --resize); labels checked against its classes. */
export async function loadData(path: string, io: ModelIO, o: ReadOptions & { needLabels?: string } = {}): Promise<Dataset> {
  const decoded = io.spec.resize !== undefined ? await resizeFolder(path, io.spec, io.spec.resize) : undefined;
  const ds = readDataset(path, io.spec, { ...o, ...(decoded ? { decoded } : {}) });
  if (o.needLabels && !ds.labels) throw new Error(`${path} has no labels, and ${o.needLabels} needs them: give --labels <file>, a CSV label column, or a folder with one sub-folder per class`);
  checkLabels(ds, io.classes, path);
  return ds;
}

/** Samples `idx` (or `start..start+size`) of a dataset as an input tensor and, when labelled, int64 labels. */
export function batchOf(ds: Dataset, idx: ArrayLike<number>): { x: Tensor; y?: Tensor; ids: string[] } {
  const per = ds.x.length / ds.n;
  const x = new Float32Array(idx.length * per);
  for (let k = 0; k < idx.length; k++) x.set(ds.x.subarray(idx[k]! * per, (idx[k]! + 1) * per), k * per);
  const y = ds.labels ? i64([idx.length], Array.from(idx, (i) => ds.labels![i]!)) : undefined;
  return { x: f32([idx.length, ...ds.sampleShape], x), y, ids: Array.from(idx, (i) => ds.ids[i]!) };
}

export const range = (start: number, end: number) => Array.from({ length: end - start }, (_, i) => start + i);

/** Cross-entropy (summed) and correct predictions of a batch of logits against labels. */
export function scoreLogits(logits: Float32Array, C: number, labels: ArrayLike<number>): { lossSum: number; correct: number } {
  let lossSum = 0, correct = 0;
  for (let i = 0; i < labels.length; i++) {
    const row = logits.subarray(i * C, (i + 1) * C);
    let m = -Infinity, arg = 0;
    for (let c = 0; c < C; c++) if (row[c]! > m) { m = row[c]!; arg = c; }
    let s = 0;
    for (let c = 0; c < C; c++) s += Math.exp(row[c]! - m);
    lossSum += m + Math.log(s) - row[Number(labels[i])]!;
    if (arg === Number(labels[i])) correct++;
  }
  return { lossSum, correct };
}

/** Loss and accuracy of the model on a labelled dataset, in batches (inference only). */
export function evaluateSet(model: RefitModel, io: ModelIO, ds: Dataset, idx: number[], batchSize: number, onBatch?: (done: number) => void): Promise<{ loss: number; accuracy: number; samples: number }> {
  return evaluateBatches(model, io.logits, idx, batchSize, (part) => ({ [io.spec.input]: batchOf(ds, part).x }), (i) => ds.labels![i]!, onBatch);
}

/** Loss and accuracy over `[N, classes]` logits of samples `idx`, fed `feeds(part)` a batch at a time, against `label(i)`. */
export async function evaluateBatches(model: RefitModel, logits: string, idx: number[], batchSize: number, feeds: (part: number[]) => Record<string, Tensor>, label: (i: number) => number, onBatch?: (done: number) => void): Promise<{ loss: number; accuracy: number; samples: number }> {
  let lossSum = 0, correct = 0;
  for (let s = 0; s < idx.length; s += batchSize) {
    const part = idx.slice(s, s + batchSize);
    const out = (await model.run(feeds(part), { outputs: [logits] }))[logits]!;
    const r = scoreLogits(out.data as Float32Array, out.dims[out.dims.length - 1]!, part.map(label));
    lossSum += r.lossSum;
    correct += r.correct;
    onBatch?.(Math.min(s + batchSize, idx.length));
  }
  return { loss: lossSum / Math.max(1, idx.length), accuracy: correct / Math.max(1, idx.length), samples: idx.length };
}

/** A progress bar with ETA on stderr; null (no output) with --json. */
export function progressBar(enabled: boolean, unit: string): cliProgress.SingleBar | null {
  if (!enabled) return null;
  return new cliProgress.SingleBar({
    format: `{label} |{bar}| {value}/{total} ${unit} | ETA {eta_formatted} | {metrics}`,
    hideCursor: true, noTTYOutput: true, notTTYSchedule: 10000, stream: process.stderr, etaBuffer: 20,
  }, cliProgress.Presets.shades_classic);
}

/** A positive integer option, or a one-line error naming it. */
export function positiveInt(name: string, v: unknown): number {
  const n = typeof v === 'number' ? v : Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got ${JSON.stringify(v)}`);
  return n;
}

export function finiteNumber(name: string, v: unknown, check: (n: number) => boolean = () => true, what = 'a number'): number {
  const n = typeof v === 'number' ? v : Number(v);
  if (v === undefined || v === '' || !Number.isFinite(n) || !check(n)) throw new Error(`${name} must be ${what}, got ${JSON.stringify(v)}`);
  return n;
}

/** Write text atomically (temp file + rename): a failure keeps whatever was there. */
/** A CSV cell: quoted when it holds a quote, a comma or a newline. */
export const csvCell = (s: string) => (/[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);

export function writeTextAtomic(path: string, text: string): void {
  mkdirSync(dirname(resolve(path)), { recursive: true });
  writeFileAtomic(path, new TextEncoder().encode(text));
}

/**
 * Fill a folder through `write(tmpDir)` and then put it in place of `dir`: a failure leaves the
 * old folder as it was. The swap is two renames (old aside, new in), so a crash between them
 * leaves the old folder under `<dir>.old-*` rather than a mix of old and new files.
 */
export async function replaceDirAtomic(dir: string, write: (tmp: string) => Promise<void>): Promise<void> {
  const full = resolve(dir);
  mkdirSync(dirname(full), { recursive: true });
  const tmp = mkdtempSync(join(dirname(full), `.${basename(full)}.tmp-`));
  try {
    await write(tmp);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  const old = existsSync(full) ? `${full}.old-${process.pid}-${Date.now()}` : null;
  if (old) renameSync(full, old);
  try {
    renameSync(tmp, full);
  } catch (e) {
    if (old) renameSync(old, full);
    rmSync(tmp, { recursive: true, force: true });
    throw new Error(`could not write ${dir}: ${(e as Error).message}`);
  }
  if (old) rmSync(old, { recursive: true, force: true });
}

/**
 * The default LoRA/DoRA targets of `refit train` and `refit bench`: every linear layer and every
 * convolution with one group (LoRA on a grouped or depthwise convolution is refused by peft).
 */
export const denseLayers = (s: Site) => s.op !== 'Conv' || (s.group ?? 1) === 1;

/** Parse --targets: `/regex/flags` or a comma-separated list of names. */
export function parseTargets(s: string): RegExp | string[] {
  const m = /^\/(.*)\/([a-z]*)$/.exec(s);
  if (m) {
    try { return new RegExp(m[1]!, m[2]); } catch (e) { throw new Error(`--targets ${s}: not a valid regular expression (${(e as Error).message})`); }
  }
  return s.split(',').map((t) => t.trim()).filter(Boolean);
}

/** Softmax of one row: predicted class and its probability. */
export function topClass(logits: Float32Array, C: number, i: number): { cls: number; conf: number } {
  const row = logits.subarray(i * C, (i + 1) * C);
  let m = -Infinity, arg = 0;
  for (let c = 0; c < C; c++) if (row[c]! > m) { m = row[c]!; arg = c; }
  let s = 0;
  for (let c = 0; c < C; c++) s += Math.exp(row[c]! - m);
  return { cls: arg, conf: 1 / s };
}

/** --method-options: a JSON object of the method's options (or one already parsed); undefined when not given. */
export function parseMethodOptions(v: string | Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  if (typeof v !== 'string') return v;
  let o: unknown;
  try {
    o = JSON.parse(v);
  } catch (e) {
    throw new Error(`--method-options must be a JSON object: ${(e as Error).message}`);
  }
  if (!o || typeof o !== 'object' || Array.isArray(o)) throw new Error('--method-options must be a JSON object');
  return o as Record<string, unknown>;
}

/** Whether `a` has `b`'s ops and initializers (names, types, shapes): adapters folded into weights, nothing added or reshaped. */
export function sameGraph(a: RefitModel, b: RefitModel): boolean {
  const ops = (m: RefitModel) => m.ir.graph.nodes.map((n) => `${n.domain}:${n.opType}`).sort().join();
  const ga = a.ir.graph.initializers, gb = b.ir.graph.initializers;
  return ops(a) === ops(b) && ga.size === gb.size && [...gb].every(([k, t]) => { const u = ga.get(k); return !!u && u.dtype === t.dtype && u.dims.join() === t.dims.join(); });
}
