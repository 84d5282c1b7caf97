// One configuration of the PEFT benchmark, in its own process (so that its peak RSS is its own).
// Started by bench/peft.ts; writes one JSON object to --out.
//
//   node --import tsx bench/peft-run.ts --id vit-lora8 --model models/fmnist-vit.onnx --epochs 2 --out r.json
//   (--model random: a randomly initialised model of the shipped architecture; --steps N caps the steps;
//    --lr X overrides the configuration's lr; --val N holds out the last N training samples, trains
//    on the rest and reports valAccuracy, for choosing an lr without looking at the test set)
import { mkdirSync, mkdtempSync, readdirSync, statSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RefitModel, loadModel } from '../src/model.ts';
import { vit, resnetCnn } from '../src/nn/models.ts';
import { f32, i64, type Tensor } from '../src/onnx/tensor.ts';
import { Rng } from '../src/data/random.ts';
import { loadMnist } from '../src/data/mnist.ts';
import { evaluate } from '../src/data/evaluate.ts';
import * as losses from '../src/train/losses.ts';
import * as optim from '../src/train/optim/index.ts';
import { Trainer } from '../src/train/trainer.ts';
import { PeftModel, withAdapter, head, accounting } from '../src/peft/index.ts';
import { saveAdapter } from '../src/peft/files-node.ts';
import { CONFIGS, HEAD_LR, WEIGHT_DECAY, type BenchConfig } from './peft-configs.ts';
import { median } from './stats.ts';

const args = process.argv.slice(2);
const arg = (name: string, dflt?: string): string => {
  const i = args.indexOf(`--${name}`);
  if (i >= 0 && args[i + 1] !== undefined) return args[i + 1]!;
  if (dflt === undefined) throw new Error(`peft-run: --${name} is required`);
  return dflt;
};
const found = CONFIGS.find((c) => c.id === arg('id'));
if (!found) throw new Error(`peft-run: unknown --id ${arg('id')}; ids: ${CONFIGS.map((c) => c.id).join(', ')}`);
const cfg: BenchConfig = { ...found, lr: Number(arg('lr', String(found.lr))) };
const modelPath = arg('model');
const epochs = Number(arg('epochs', '2'));
const maxSteps = Number(arg('steps', 'Infinity'));
const batch = Number(arg('batch', '64'));
const threads = Number(arg('threads', '2'));
const seed = Number(arg('seed', '0'));
const timingRounds = Number(arg('timing-rounds', '10'));
const inferRounds = Number(arg('infer-rounds', '40'));
const out = arg('out');

const session = { threads, optimization: 'all' as const };
const maxRssMiB = () => process.resourceUsage().maxRSS / 1024;
const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
const t0 = performance.now();

// ---- data and model -------------------------------------------------------------------------
const split = loadMnist({ trainSize: 8000, seed: 0 });
const valSize = Number(arg('val', '0'));
const { test } = split;
const train = valSize > 0 ? sliceImages(split.train, 0, split.train.n - valSize) : split.train;
const val = valSize > 0 ? sliceImages(split.train, split.train.n - valSize, split.train.n) : undefined;
function sliceImages(d: typeof split.train, from: number, to: number): typeof split.train {
  return { ...d, n: to - from, images: d.images.subarray(from * 784, to * 784), labels: d.labels.subarray(from, to) };
}
async function loadBase(c: BenchConfig): Promise<RefitModel> {
  if (modelPath !== 'random') return loadModel(modelPath, session);
  // The shipped models' architectures (scripts/train-source.ts), randomly initialised.
  return new RefitModel(c.model === 'vit' ? vit({ patch: 7, depth: 6, dim: 96, heads: 4, seed: 0 }) : resnetCnn({ width: 32, seed: 0 }), session);
}
const base = await loadBase(cfg);
const baseParams = base.parameterNames().reduce((a, n) => a + base.param(n).data.length, 0);

/** The configuration's model: a new 10-class head first, then the method's adapters. */
function build(c: BenchConfig, from: RefitModel): { model: PeftModel; trainable: string[]; headNames: string[] } {
  let p = withAdapter(from, 'head', head({ classes: 10, seed }));
  c.methods().forEach((m, i) => { p = withAdapter(p, i === 0 ? 'digits' : `digits${i}`, m); });
  const headNames = p.trainableNames('head');
  const trainable = c.full ? p.parameterNames() : p.trainableNames();
  return { model: p, trainable, headNames };
}

function makeTrainer(c: BenchConfig, model: PeftModel, trainable: string[], headNames: string[], totalSteps: number): Trainer {
  const step = model.compileTrainStep({ trainable, loss, batchNorm: c.bnTrain ? 'train' : 'eval' });
  const vectors = (n: string) => model.param(n).dims.length < 2 || /pos_embed/.test(n);
  return new Trainer(step, optim.adamw({
    lr: c.lr, weightDecay: WEIGHT_DECAY,
    groups: [
      { params: headNames, lr: HEAD_LR, weightDecay: WEIGHT_DECAY, name: 'new head' },
      { params: vectors, weightDecay: 0, name: 'vectors' },
      ...model.paramGroups<optim.AdamHyper>(),
    ],
    schedule: optim.warmupCosine({ warmupSteps: Math.max(1, Math.round(0.1 * totalSteps)), totalSteps, minLrRatio: 0 }),
  }), { clipNorm: 1 });
}

const { model, trainable, headNames } = build(cfg, base);
const stepsPerEpoch = Math.floor(train.n / batch);
const totalSteps = Math.min(epochs * stepsPerEpoch, maxSteps);
const trainer = makeTrainer(cfg, model, trainable, headNames, totalSteps);
const rssBeforeTrainMiB = maxRssMiB();

// ---- training -------------------------------------------------------------------------------
const order = Rng.xoshiro(1000 + seed);
const xb = new Float32Array(batch * 784);
const batchAt = (idx: ArrayLike<number>): Record<string, Tensor> => {
  const ys: number[] = [];
  for (let i = 0; i < idx.length; i++) { const j = idx[i]!; xb.set(train.images.subarray(j * 784, (j + 1) * 784), i * 784); ys.push(train.labels[j]!); }
  return { x: f32([batch, 1, 28, 28], xb.slice()), y: i64([batch], ys) };
};
const stepMs: number[] = [];
let firstStepMs = 0, lossFirst = NaN, lossLast = NaN, done = 0, lossSum = 0, lossN = 0;
const tTrain = performance.now();
outer: for (let e = 0; e < epochs; e++) {
  const perm = order.permutation(train.n);
  for (let s = 0; s < stepsPerEpoch; s++) {
    if (done >= totalSteps) break outer;
    const b = batchAt(perm.subarray(s * batch, (s + 1) * batch));
    const ts = performance.now();
    const r = await trainer.step(b);
    const dt = performance.now() - ts;
    if (done === 0) { firstStepMs = dt; lossFirst = r.loss; } else stepMs.push(dt);
    if (r.skipped) throw new Error(`${cfg.id}: step ${done} skipped: ${r.reason}`);
    done++;
    lossSum += r.loss; lossN++;
    if (done % 25 === 0 || done === totalSteps) { lossLast = lossSum / lossN; lossSum = 0; lossN = 0; process.stderr.write(`  ${cfg.id}: step ${done}/${totalSteps} loss ${lossLast.toFixed(3)}\n`); }
  }
}
const trainSeconds = (performance.now() - tTrain) / 1000;

// ---- accuracy, files, memory ----------------------------------------------------------------
const testAccuracy = await evaluate(model, test.images, test.labels, test.n);
const valAccuracy = val ? await evaluate(model, val.images, val.labels, val.n) : undefined;
const dir = mkdtempSync(join(tmpdir(), `peft-${cfg.id}-`));
let adapterFileBytes = 0;
if (cfg.full) {
  await model.save(join(dir, 'model.onnx'));
} else {
  for (const n of model.adapterNames()) await saveAdapter(model, n, join(dir, n));
}
const sizeOf = (p: string): number => (statSync(p).isDirectory() ? readdirSync(p).reduce((a, f) => a + sizeOf(join(p, f)), 0) : statSync(p).size);
adapterFileBytes = sizeOf(dir);
rmSync(dir, { recursive: true, force: true });
const trainableParams = trainable.reduce((a, n) => a + model.param(n).data.length, 0);
const acct = cfg.full ? undefined : accounting(model);
const peakRssMiB = maxRssMiB(); // training peak: measured before the timing comparison below builds a second model

// ---- train-step time vs a full-fine-tuning step, interleaved in this process ------------------
let fullStepMs: number[] = [], methodStepMs: number[] = [];
if (!cfg.full && timingRounds > 0) {
  const fullCfg = CONFIGS.find((c) => c.model === cfg.model && c.full)!;
  const f = build(fullCfg, base.clone());
  const fullTrainer = makeTrainer(fullCfg, f.model, f.trainable, f.headNames, 1000);
  const b = batchAt(Array.from({ length: batch }, (_, i) => i));
  for (let i = 0; i < 2; i++) { await fullTrainer.step(b); await trainer.step(b); }
  for (let i = 0; i < timingRounds; i++) {
    let ts = performance.now(); await trainer.step(b); methodStepMs.push(performance.now() - ts);
    ts = performance.now(); await fullTrainer.step(b); fullStepMs.push(performance.now() - ts);
  }
  await fullTrainer.compiled.release();
  await f.model.release();
}

// ---- merged model: accuracy, and inference time vs the base model (interleaved) -------------
// Timed with 1 onnxruntime thread, by the process's CPU time per run: on a shared 2-core machine,
// a 2-thread run's wall time mostly measures how often another process took a core (a parallel
// section waits for its slowest thread), and the two graphs here do the same work. Wall-clock
// medians are kept in the JSON too.
let mergedAccuracy: number | undefined, mergedInferVsBase: number | undefined, mergedInferWallVsBase: number | undefined, mergedInferMs: number | undefined, baseInferMs: number | undefined;
if (!cfg.full && inferRounds > 0) {
  const merged = model.mergeAll();
  mergedAccuracy = await evaluate(merged, test.images, test.labels, test.n);
  const one = { threads: 1, optimization: 'all' as const };
  const b1 = new RefitModel(base.ir, one), m1 = new RefitModel(merged.ir, one);
  const x = f32([batch, 1, 28, 28], test.images.slice(0, batch * 784));
  for (let i = 0; i < 3; i++) { await b1.run({ x }, { outputs: ['logits'] }); await m1.run({ x }, { outputs: ['logits'] }); }
  const cb: number[] = [], cm: number[] = [], wb: number[] = [], wm: number[] = [];
  for (let i = 0; i < inferRounds; i++) {
    // alternate which goes first, so that neither always follows the other
    const pair = i % 2 ? [[m1, cm, wm], [b1, cb, wb]] as const : [[b1, cb, wb], [m1, cm, wm]] as const;
    for (const [m, cpu, wall] of pair) {
      const c0 = process.cpuUsage(), w0 = performance.now();
      await m.run({ x }, { outputs: ['logits'] });
      const c = process.cpuUsage(c0);
      wall.push(performance.now() - w0); cpu.push((c.user + c.system) / 1000);
    }
  }
  baseInferMs = median(cb); mergedInferMs = median(cm); mergedInferVsBase = mergedInferMs / baseInferMs;
  mergedInferWallVsBase = median(wm) / median(wb);
  await Promise.all([b1.release(), m1.release(), merged.release()]);
}

const result = {
  id: cfg.id, model: cfg.model, label: cfg.label, modelSource: modelPath, lr: cfg.lr, headLr: HEAD_LR, lrNote: cfg.lrNote,
  batchNorm: cfg.model === 'cnn' ? (cfg.bnTrain ? 'train' : 'eval') : undefined,
  epochs, steps: done, batch, threads,
  testAccuracy, mergedAccuracy, valSize, valAccuracy,
  baseParams, trainableParams, trainablePercent: (100 * trainableParams) / baseParams,
  adapterTrainablePercent: acct?.trainablePercent, optimizerStateBytes: trainableParams * 8,
  adapterFileBytes,
  trainStepMedianMs: median(stepMs), firstStepMs, trainSeconds,
  methodStepMs: methodStepMs.length ? median(methodStepMs) : undefined,
  fullStepMs: fullStepMs.length ? median(fullStepMs) : undefined,
  stepVsFull: cfg.full ? 1 : fullStepMs.length ? median(methodStepMs) / median(fullStepMs) : undefined,
  peakRssMiB, rssBeforeTrainMiB,
  baseInferMs, mergedInferMs, mergedInferVsBase, mergedInferWallVsBase, inferRounds,
  lossFirst, lossLast,
  wallSeconds: (performance.now() - t0) / 1000,
};
mkdirSync(join(out, '..'), { recursive: true });
writeFileSync(out, JSON.stringify(result, null, 2));
await trainer.compiled.release();
await model.release();
await base.release();
