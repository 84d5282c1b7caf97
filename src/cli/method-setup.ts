// What `refit adapt` and `refit serve` hand a method: its options (the controller's recommended
// set, or a TTA method's own with what --source gives it) and, for the controller, in-distribution
// batches that set its entropy reference. One place, so the two commands run the same thing.
import type { RefitModel } from '../model.ts';
import { tensor, type Tensor } from '../onnx/tensor.ts';
import { inputStats, sourceDataOptions, type InputStats } from '../tta/index.ts';
import { recommendedControllerOptions, recommendedDeepParams } from '../continual/recommended.ts';
import { loadData, batchOf, range, type ModelIO } from './common.ts';

export interface SourceFlags {
  /** Labelled in-distribution data (--source, --source-labels). */
  source?: string;
  sourceLabels?: string;
  /** --logits as given (TTA methods otherwise pick their own default output). */
  logits?: string;
  /** Continual: an [N, D] output for LAME and the error memory (default: 'features' when present). */
  embedding?: string;
  /** Continual with --source: level 3 runs the deep learner; false is --no-deep. @default true */
  deep?: boolean;
  /** --deep-params: what the deep learner adapts, 'all' or 'norm'. @default recommendedDeepParams(model) */
  deepParams?: string;
  /** Input alignment to --source's statistics; default on for continual with --source. */
  inputAlign?: boolean;
}

export interface MethodSetup {
  options: Record<string, unknown>;
  /** Continual with --source: batches of it for `calibrate`. */
  calibration?: Tensor[];
  /** Continual: level 3 is the deep learner (RMT on --source). */
  deepLearner: boolean;
  /** What the deep learner adapts: every parameter, or the normalization layers' scales and shifts. */
  deepParams?: 'all' | 'norm';
  inputAlign?: InputStats;
}

export interface SetupOptions {
  /** Batch size of the calibration batches. */
  batchSize: number;
  /**
   * Gets a line at every tenth of RMT's warm-up (its paper's 50,000 source samples take minutes on
   * a CPU, inside the first batch). For one adapter: the options hold one counter.
   */
  log?: (line: string) => void;
  /**
   * RMT warms up on one pass over the source set instead of its paper's 50,000 samples (as the
   * controller's deep learner does): `refit serve` warms up every new tenant inside its first request.
   */
  shortWarmup?: boolean;
  /**
   * A token model's --source: in-distribution sequences of ids [M, length]. They set the
   * controller's entropy reference and EATA's Fisher; a token model has no deep learner and no
   * input alignment (both are for images).
   */
  tokenSource?: Tensor;
}

/** ActMAD without --source (the classifier path here, a detector's in ./adapt.ts). */
export const ACTMAD_NEEDS_SOURCE = '--method actmad matches the stream\'s activation statistics to clean in-distribution data: give it with --source';

export async function methodSetup(method: string, model: RefitModel, io: ModelIO, o: SourceFlags, { batchSize, log, shortWarmup, tokenSource }: SetupOptions): Promise<MethodSetup> {
  if (tokenSource) return tokenSetup(method, model, io, o, tokenSource, batchSize);
  if (method === 'actmad' && !o.source) throw new Error(ACTMAD_NEEDS_SOURCE);
  // ActMAD reads only the source's inputs; the other methods with --source read its labels too.
  const src = o.source ? await loadData(o.source, io, method === 'actmad' ? {} : { labels: o.sourceLabels, needLabels: '--source' }) : null;
  const srcTensor = src ? batchOf(src, range(0, src.n)).x : null;
  if (o.inputAlign && !srcTensor) throw new Error('--input-align aligns the stream to the statistics of in-distribution data; give --source');
  // The source's labels give per-class statistics: the class-mix gate (src/tta/class-mix.ts).
  // On by default for the continual controller with --source: it is part of the options it runs
  // (../continual/recommended.ts); --no-input-align turns it off.
  const aligned = o.inputAlign ?? (method === 'continual' && !!srcTensor);
  const inputAlign = aligned ? inputStats(srcTensor!, src!.labels) : undefined;
  const align = inputAlign ? { inputAlign } : {};
  if (o.deepParams !== undefined && method !== 'continual') throw new Error(`--deep-params is for --method continual (what its level-3 deep learner adapts)`);
  if (method !== 'continual') {
    const extra = srcTensor ? sourceDataOptions(method, { images: srcTensor, labels: Uint8Array.from(src!.labels ?? []), n: src!.n }, { quick: shortWarmup }) : {};
    const progress = method === 'rmt' && srcTensor && log ? { onWarmup: warmupLog(log, "RMT warm-up on the source set (the paper's mean-teacher warm-up)") } : {};
    return { options: { ...(o.logits ? { logits: o.logits } : {}), ...extra, ...progress, ...align }, deepLearner: false, ...align };
  }
  const deepLearner = !!srcTensor && o.deep !== false;
  if (o.deepParams !== undefined && !['all', 'norm'].includes(o.deepParams)) throw new Error(`--deep-params must be 'all' or 'norm', got '${o.deepParams}'`);
  if (o.deepParams !== undefined && !deepLearner) throw new Error(`--deep-params is for the deep learner of --method continual with --source${o.deep === false ? ', and --no-deep turns it off' : ''}`);
  // Every parameter on small models, the normalization layers' scales and shifts on large ones.
  const deepParams = deepLearner ? (o.deepParams as 'all' | 'norm' | undefined) ?? recommendedDeepParams(model) : undefined;
  const embedding = o.embedding ?? (model.outputs.some((x) => x.name === 'features') ? 'features' : undefined);
  // The options `refit demo` runs (chosen on the shipped CNN's validation streams; on a ResNet-18
  // trained elsewhere they beat the library's defaults too, docs/continual.md). With labelled
  // in-distribution data, level 3 is the deep learner (RMT).
  const source = deepLearner ? { images: srcTensor!, labels: src!.labels! } : undefined;
  const options = recommendedControllerOptions({ logits: io.logits, embedding, source, ...(deepParams ? { deepParams } : {}), ...align });
  if (options.deep && log) options.deep.rmt = { ...options.deep.rmt, onWarmup: warmupLog(log, "the deep learner's warm-up on the source set (RMT)") };
  // The entropy reference from in-distribution batches rather than the stream's first ones.
  const calibration = src ? Array.from({ length: Math.ceil(src.n / batchSize) }, (_, b) => batchOf(src, range(b * batchSize, Math.min((b + 1) * batchSize, src.n))).x) : undefined;
  return { options: options as Record<string, unknown>, deepLearner, ...(deepParams ? { deepParams } : {}), ...align, ...(calibration ? { calibration } : {}) };
}

/** methodSetup for a token model with --source: EATA's Fisher, or the controller's calibration batches. */
function tokenSetup(method: string, model: RefitModel, io: ModelIO, o: SourceFlags, ids: Tensor, batchSize: number): MethodSetup {
  if (o.inputAlign) throw new Error('--input-align moves image channels to the source\'s statistics; this model reads token ids');
  if (o.deepParams !== undefined) throw new Error('--deep-params is for the deep learner, which augments images; this model reads token ids');
  const logits = o.logits ? { logits: o.logits } : {};
  if (method !== 'continual') return { options: { ...logits, ...(method === 'eata' ? { fisherData: ids } : {}) }, deepLearner: false };
  const embedding = o.embedding ?? (model.outputs.some((x) => x.name === 'features') ? 'features' : undefined);
  const [M, L] = ids.dims as [number, number];
  const rows = ids.data as BigInt64Array | Int32Array;
  const calibration = Array.from({ length: Math.ceil(M / batchSize) }, (_, b) => {
    const n = Math.min(batchSize, M - b * batchSize);
    return tensor(ids.dtype, [n, L], rows.slice(b * batchSize * L, (b * batchSize + n) * L));
  });
  return { options: recommendedControllerOptions({ logits: io.logits, ...(embedding ? { embedding } : {}) }) as Record<string, unknown>, deepLearner: false, calibration };
}

/** RMT's onWarmup: one line per tenth done. */
function warmupLog(log: (line: string) => void, what: string): (done: number, total: number) => void {
  let shown = 0;
  return (done, total) => {
    const tenth = Math.floor((10 * done) / total);
    if (tenth <= shown) return;
    shown = tenth;
    log(`refit: ${what}: ${done}/${total} samples`);
  };
}
