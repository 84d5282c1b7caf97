// `refit bench model.onnx`: how fast this model runs in refit on this machine: plain inference,
// a training step of every parameter, of the norm affine parameters only, of a LoRA adapter, and
// the given TTA methods (predict + adapt), on random inputs of the model's shape. Each case is
// timed as "compile" (the first call: graph build, session creation and the first run) and the
// median of --reps calls after --warmup more; the process's peak RSS is read after each case.
import { loadModel, type RefitModel } from '../model.ts';
import { crossEntropy } from '../train/losses.ts';
import { adamw } from '../train/optim/index.ts';
import { Trainer } from '../train/trainer.ts';
import { withAdapter, lora, normAffine } from '../peft/index.ts';
import { hasBatchNorm } from '../tta/bn-adapt.ts';
import { createAdapter, METHODS, sourceDataOptions } from '../tta/index.ts';
import { f32, i64, type Tensor } from '../onnx/tensor.ts';
import { Rng } from '../util/rng.ts';
import { modelIO, progressBar, positiveInt, denseLayers } from './common.ts';

export interface BenchOptions {
  batchSize?: string | number;
  threads?: string | number;
  /** Comma-separated TTA methods (default: tent, eata). */
  methods?: string;
  reps?: string | number;
  warmup?: string | number;
  /** LoRA rank of the LoRA step (default 8, as refit train). */
  rank?: string | number;
  logits?: string;
  json?: boolean;
}

export interface BenchCase {
  name: string;
  /** First call, ms: for training and TTA cases this includes building the graph and its session. */
  compileMs: number | null;
  medianMs: number | null;
  /** Samples per second at the median. */
  samplesPerSecond: number | null;
  /** Process peak resident set size after this case, MiB (cumulative: a peak never goes down). */
  peakRssMiB: number;
  /**
   * TTA methods: samples per call the method adapted on (mean over the timed calls). Methods that
   * filter samples (EATA, SAR) may adapt on none of random inputs, and are then as cheap as inference.
   */
  adaptedPerCall?: number;
  /** Why the case could not run (e.g. a model without norm layers has no norm-affine step). */
  error?: string;
}

export interface BenchResult {
  model: string;
  input: { name: string; shape: number[] };
  batchSize: number;
  threads: number;
  rank: number;
  reps: number;
  warmup: number;
  cases: BenchCase[];
  seconds: number;
}

export const DEFAULT_BENCH_METHODS = ['tent', 'eata'];

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const peakRssMiB = () => process.resourceUsage().maxRSS / 1024; // maxRSS is in KiB

export async function runBench(modelPath: string, o: BenchOptions = {}): Promise<BenchResult> {
  const t0 = performance.now();
  // Options first: a typo costs nothing.
  const batchSize = positiveInt('--batch-size', o.batchSize ?? 64);
  const threads = positiveInt('--threads', o.threads ?? 2);
  const reps = positiveInt('--reps', o.reps ?? 20);
  const rank = positiveInt('--rank', o.rank ?? 8);
  const warmup = o.warmup === undefined ? 3 : Number(o.warmup);
  if (!Number.isInteger(warmup) || warmup < 0) throw new Error(`--warmup must be a whole number, got ${JSON.stringify(o.warmup)}`);
  const methods = (o.methods ?? DEFAULT_BENCH_METHODS.join(',')).split(',').map((s) => s.trim()).filter(Boolean);
  for (const m of methods) if (!METHODS.includes(m)) throw new Error(`unknown method '${m}' in --methods; known methods: ${METHODS.join(', ')}`);

  const model = await loadModel(modelPath, { threads });
  const io = modelIO(model, o.logits);
  if (io.spec.dims.some((d) => d === null)) throw new Error(`the model's input '${io.spec.input}' has shape [N, ${io.spec.dims.map((d) => d ?? '?').join(', ')}]; bench needs every dimension but the batch fixed`);
  if (io.classes === null) throw new Error(`the model's output '${io.logits}' has no fixed class count; bench needs it for the training steps' labels`);
  const sample = io.spec.dims as number[];
  const per = sample.reduce((a, b) => a * b, 1);
  const rng = new Rng(0);
  // Random inputs in [0, 1) (pixel-like) and random labels: timing does not depend on the values.
  const batch = (): Tensor => f32([batchSize, ...sample], Float32Array.from({ length: batchSize * per }, () => rng.next()));
  const labels = (): Tensor => i64([batchSize], Array.from({ length: batchSize }, () => Math.floor(rng.next() * io.classes!)));
  const x = batch();
  const y = labels();

  type Case = { name: string; prepare: () => Promise<{ call: () => Promise<unknown>; release: () => Promise<void>; adapted?: number[] }> };
  const trainCase = (name: string, make: () => { m: RefitModel; trainable: string[] }): Case => ({
    name,
    prepare: async () => {
      const { m, trainable } = make();
      if (trainable.length === 0) throw new Error('no parameter to train');
      const step = m.compileTrainStep({
        trainable, loss: crossEntropy({ logits: io.logits, labels: 'refit_labels' }), outputs: [io.logits],
        ...(hasBatchNorm(m) ? { batchNorm: 'train' as const } : {}),
      });
      const trainer = new Trainer(step, adamw({ lr: 1e-4 }));
      return {
        call: () => trainer.step({ [io.spec.input]: x, refit_labels: y }),
        release: async () => { await step.release(); if (m !== model) await m.release(); },
      };
    },
  });
  const cases: Case[] = [
    { name: 'inference', prepare: async () => ({ call: () => model.run({ [io.spec.input]: x }, { outputs: [io.logits] }), release: async () => {} }) },
    trainCase('full step', () => ({ m: model, trainable: model.parameterNames('all') })),
    trainCase('norm-affine step', () => { const pm = withAdapter(model, 'na', normAffine({})); return { m: pm, trainable: pm.trainableNames('na') }; }),
    trainCase('lora step', () => { const pm = withAdapter(model, 'lora', lora({ targets: denseLayers, rank })); return { m: pm, trainable: pm.trainableNames('lora') }; }),
    ...methods.map((method): Case => ({
      name: method,
      prepare: async () => {
        // Methods that read in-distribution data (EATA's Fisher, CoTTA, RMT) get one random batch.
        const set = { images: batch(), labels: Uint8Array.from(labels().data as BigInt64Array, Number), n: batchSize };
        const a = createAdapter(model, method, { ...(o.logits ? { logits: o.logits } : {}), ...sourceDataOptions(method, set, { quick: true }) });
        // A fresh batch each call: some methods keep state keyed on what they saw.
        const adapted: number[] = [];
        return { call: async () => adapted.push((await a.predict(batch())).info.used), release: () => a.release(), adapted };
      },
    })),
  ];

  const bar = progressBar(!o.json, 'calls');
  bar?.start(cases.length * (1 + warmup + reps), 0, { label: 'bench', metrics: '' });
  let done = 0;
  const out: BenchCase[] = [];
  for (const c of cases) {
    bar?.update(done, { metrics: c.name });
    let r: BenchCase;
    try {
      const tc = performance.now();
      const { call, release, adapted } = await c.prepare();
      try {
        await call();
        const compileMs = performance.now() - tc;
        bar?.update(++done);
        for (let i = 0; i < warmup; i++) { await call(); bar?.update(++done); }
        const times: number[] = [];
        for (let i = 0; i < reps; i++) {
          const t = performance.now();
          await call();
          times.push(performance.now() - t);
          bar?.update(++done);
        }
        const med = median(times);
        const timed = adapted?.slice(-reps); // the timed calls only
        r = {
          name: c.name, compileMs, medianMs: med, samplesPerSecond: (1000 * batchSize) / med, peakRssMiB: peakRssMiB(),
          ...(timed ? { adaptedPerCall: timed.reduce((x, y) => x + y, 0) / timed.length } : {}),
        };
      } finally {
        await release();
      }
    } catch (e) {
      r = { name: c.name, compileMs: null, medianMs: null, samplesPerSecond: null, peakRssMiB: peakRssMiB(), error: (e as Error).message.split('\n')[0]! };
    }
    done = (cases.indexOf(c) + 1) * (1 + warmup + reps); // a failed case still fills its share of the bar
    bar?.update(done);
    out.push(r);
  }
  bar?.stop();
  await model.release();
  return {
    model: modelPath, input: { name: io.spec.input, shape: [batchSize, ...sample] }, batchSize, threads, rank, reps, warmup,
    cases: out, seconds: (performance.now() - t0) / 1000,
  };
}

export function formatBench(r: BenchResult): string {
  const f = (v: number | null, d = 1) => (v === null ? '–' : v.toFixed(d));
  const head = ['case'.padEnd(18), 'compile ms'.padStart(11), 'median ms'.padStart(10), 'samples/s'.padStart(10), 'peak RSS MiB'.padStart(13), 'adapted'.padStart(8)].join(' ');
  const rows = r.cases.map((c) => [c.name.padEnd(18), f(c.compileMs).padStart(11), f(c.medianMs, 2).padStart(10), f(c.samplesPerSecond, 0).padStart(10), c.peakRssMiB.toFixed(0).padStart(13), (c.adaptedPerCall === undefined ? '' : `${+c.adaptedPerCall.toFixed(1)}/${r.batchSize}`).padStart(8)].join(' ').trimEnd() + (c.error ? `  (failed: ${c.error})` : ''));
  return [
    `${r.model}: input ${r.input.name} [${r.input.shape.join(', ')}], ${r.threads} threads; median of ${r.reps} calls after ${r.warmup} warm-up (compile: the first call; adapted: samples per call a TTA method updated on)`,
    head, ...rows,
  ].join('\n');
}
