// `refit demo`: the shipped CNN on the continual Fashion-MNIST-C stream (severity 5), scored
// unadapted and with every adaptation method refit has; a table, JSON, and an HTML report.
import { existsSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import cliProgress from 'cli-progress';
import { loadModel } from '../model.ts';
import { loadFashionMnist } from '../data/fashion-mnist.ts';
import { continualStream, type Stream } from '../data/streams.ts';
import { assertSeverity } from '../data/corruptions/index.ts';
import { createAdapter, inputStats, CLASSIFIER_METHODS as TTA_METHODS, loadSourceSet, sourceDataOptions, type Adapter, type SourceSet } from '../tta/index.ts';
import { ContinualAdapter } from '../continual/adapter.ts';
import { recommendedControllerOptions } from '../continual/recommended.ts';
import type { RefitModel } from '../model.ts';
import { f32, type Tensor } from '../onnx/tensor.ts';
import { runStream, type StreamScore } from '../tta/run-stream.ts';
import { renderReport, runProvenance } from '../report/html.ts';
import { writeFileAtomic } from '../onnx/io.ts';
import { packageRoot } from '../util/package-root.ts';
import { withFeaturesFor } from './common.ts';
import { defaultLogits } from '../tta/types.ts';

/** Every TTA method, then the continual controller (issue 11), which escalates only as far as health requires. */
export const METHODS = [...TTA_METHODS, 'continual'];

/**
 * The adapter `refit demo` runs for `method`: a TTA method with the bundled set where it needs one,
 * or the continual controller with the recommended options, its entropy reference from 512
 * in-distribution images (the bundled training set). Benches use it to compare with the demo's methods.
 */
export function demoAdapter(model: RefitModel, method: string, sourceSet: SourceSet, full = false): Adapter {
  if (method !== 'continual') return createAdapter(model, method, sourceDataOptions(method, sourceSet, { quick: !full }) /* RMT: one warm-up pass over the set, except --full */);
  const calibration: Tensor[] = [];
  const images = sourceSet.images.data as Float32Array;
  for (let i = 0; i + 64 <= Math.min(512, sourceSet.n); i += 64) calibration.push(f32([64, 1, 28, 28], images.subarray(i * 784, (i + 64) * 784)));
  // The options the validation stream chose for the shipped CNN (../continual/recommended.ts):
  // level 3 runs RMT over every parameter on the bundled set; the smoothed batch prior, the
  // persistence-gated debias and, on label-concentrated batches, LAME on the output; every batch's
  // input first aligned to the bundled set's statistics (input alignment, ../tta/input-align.ts).
  const embedding = model.outputs.some((o) => o.name === 'features') ? 'features' : undefined;
  return new ContinualAdapter(model, recommendedControllerOptions({ logits: 'logits', embedding, source: sourceSet, inputAlign: inputStats(sourceSet.images, sourceSet.labels) }), calibration);
}

/** Batches per corruption: the default keeps the demo to a few minutes with every method on 2 cores. */
export const DEFAULT_BATCHES = 6;
export const QUICK_BATCHES = 3;

export interface DemoOptions {
  quick?: boolean;
  /** One pass over the 10k test set per corruption (the benchmark's stream) instead of the default slice. */
  full?: boolean;
  /** Batches per corruption; overrides --quick's 3 and the default 6 (not with --full). */
  batches?: number;
  json?: boolean;
  model?: string;
  methods?: string[];
  batchSize?: number;
  severity?: number;
  out?: string;
  threads?: number;
}

export interface DemoResult {
  model: string;
  stream: { scenario: string; severity: number; batchSize: number; batches: number; samples: number; domains: string[] };
  scores: StreamScore[];
  report: string;
  seconds: number;
}

export async function runDemo(o: DemoOptions): Promise<DemoResult> {
  const t0 = performance.now();
  const methods = o.methods ?? METHODS;
  for (const m of methods) if (!METHODS.includes(m)) throw new Error(`unknown method '${m}'; known methods: ${METHODS.join(', ')}`);
  const severity = o.severity ?? 5;
  assertSeverity(severity);
  if (!(Number.isInteger(o.batchSize ?? 64) && (o.batchSize ?? 64) > 0)) throw new Error(`--batch-size must be a positive integer, got ${o.batchSize}`);
  if (o.batches !== undefined && !(Number.isInteger(o.batches) && o.batches > 0)) throw new Error(`--batches must be a positive integer, got ${o.batches}`);
  if (o.batches !== undefined && o.full) throw new Error('--batches and --full do not go together: --full streams the whole test set per corruption');
  const modelPath = o.model ?? resolve(packageRoot(), 'models', 'fmnist-cnn.onnx');
  if (!existsSync(modelPath)) throw new Error(`model not found: ${modelPath} (the shipped CNN lives in models/fmnist-cnn.onnx)`);
  const model = await loadModel(modelPath, { threads: o.threads ?? 2 });
  const input = model.inputs[0]!;
  const shape = input.shape ?? [];
  if (shape.length !== 4 || shape[1] !== 1 || shape[2] !== 28 || shape[3] !== 28) {
    await model.release();
    throw new Error(`the demo streams 1×28×28 Fashion-MNIST images; model input '${input.name}' has shape [${shape.map((d) => d ?? '?').join(', ')}], expected [N, 1, 28, 28]`);
  }
  const data = loadFashionMnist('test');
  const batchSize = o.batchSize ?? 64;
  const makeStream = (): Stream => continualStream(data, { severity, batchSize, seed: 0, ...(o.full ? {} : { batchesPerDomain: o.batches ?? (o.quick ? QUICK_BATCHES : DEFAULT_BATCHES) }) });
  const stream = makeStream();
  const bar = o.json ? null : new cliProgress.SingleBar({ format: '{method} |{bar}| {value}/{total} batches | {duration}s', hideCursor: true, noTTYOutput: true, notTTYSchedule: 10000, stream: process.stderr }, cliProgress.Presets.shades_classic);
  const scores: StreamScore[] = [];
  // The bundled in-distribution set (2000 training images): EATA's Fisher, RMT's prototypes, warm-up and replay.
  const sourceSet = loadSourceSet();
  for (const method of methods) {
    const adapter = demoAdapter(withFeaturesFor(method, model, defaultLogits(model.outputs), { quiet: o.json }), method, sourceSet, !!o.full);
    bar?.start(stream.numBatches, 0, { method: method.padEnd(10) });
    scores.push(await runStream(adapter, makeStream(), (done) => bar?.update(done)));
    bar?.stop();
    await adapter.release();
  }
  const domains = scores[0]!.domains.map((d) => d.domain);
  const boundaries: { batch: number; domain: string }[] = [];
  let at = 0;
  for (const s of stream.segments) { boundaries.push({ batch: at, domain: s.domain }); at += s.batches; }
  const report = resolve(o.out ?? 'refit-demo-report.html');
  writeFileAtomic(report, new TextEncoder().encode(renderReport({
    title: 'refit demo: continual Fashion-MNIST-C',
    subtitle: `${modelPath} · severity ${severity} · batch ${batchSize} · ${stream.numBatches} batches (${stream.numSamples} images)${o.full ? ' · full pass per corruption' : o.quick ? ' · quick run' : ''}`,
    scores,
    boundaries,
    provenance: runProvenance(),
  })));
  await model.release();
  return {
    model: modelPath,
    stream: { scenario: 'continual', severity, batchSize, batches: stream.numBatches, samples: stream.numSamples, domains },
    scores,
    report,
    seconds: (performance.now() - t0) / 1000,
  };
}

const abbrev = (d: string) => d.replace('_noise', '').replace('_blur', '').replace('_compression', '').replace('_transform', '').slice(0, 8);

export function formatTable(r: DemoResult): string {
  const cols = r.stream.domains.map(abbrev);
  const head = ['method'.padEnd(10), ...cols.map((c) => c.padStart(8)), 'mean'.padStart(7), 'ms/batch'.padStart(9), '1st ms'.padStart(7)].join(' ');
  const lines = r.scores.map((s) => [s.method.padEnd(10), ...s.domains.map((d) => (100 * d.error).toFixed(1).padStart(8)), (100 * s.meanError).toFixed(1).padStart(7), s.msPerBatch.toFixed(1).padStart(9), s.firstBatchMs.toFixed(0).padStart(7)].join(' '));
  return [
    `Error (%) on the continual Fashion-MNIST-C stream, severity ${r.stream.severity}, batch ${r.stream.batchSize}; ms/batch after the first batch; 1st ms: the first batch, which compiles and prepares, with every one-time set-up (the continual controller's deep learner, built when level 3 first needs it):`,
    head, ...lines,
  ].join('\n');
}

export function writeJson(path: string, r: DemoResult): void {
  writeFileSync(path, JSON.stringify(r, null, 2));
}
