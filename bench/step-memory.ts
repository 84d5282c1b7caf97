// What holds the memory of a training/adaptation step, one factor at a time (issue 12, memory).
//
// Usage: npx tsx bench/step-memory.ts [--models cnn28,resnet18_64,mobilenet_v2_224,fmnist-cnn,fmnist-vit]
//        [--configs infer,bn-adapt,tent,full,lora] [--variants base,arena-off,mempattern-off,both-off]
//        [--calls 3] [--out bench/results/step-memory] [--tag before]
//
// Each (model, config, variant) runs in its own child process, so its peak RSS
// (process.resourceUsage().maxRSS) is that configuration's alone. The child wraps
// onnxruntime's InferenceSession.create (src/ is not changed for it) to
//   - tell the sessions apart: 'probe' (the shape probe: optimisation 'disabled'), 'step' (its
//     outputs include refit.loss) and 'infer' (the rest);
//   - apply the variant's session options (enableCpuMemArena, enableMemPattern) to step and
//     inference sessions;
//   - record RSS and peak RSS after every session creation and every run,
// which gives the timeline: after loading, after the probe(s), after the step session is
// created (= after compiling), after the first call, after the last call.
// It then reads the compiled step graph (TrainStep.compile is cached) and computes, from the
// graph and its probed shapes, what a step must hold whatever the runtime does:
//   - saved activations: forward tensors (produced by forward or loss nodes) read by a backward node;
//   - all forward intermediates (what a probe exposing every value materialises at once);
//   - baked initializers of the step graph, fed parameters, the serialised model's size;
//   - optimizer state (SGD with momentum: one buffer per trainable; Adam: two).
// Models: tmp/foreign-models/*.onnx (bench/foreign_torch.py --export) and the shipped models/.
import { spawnSync } from 'node:child_process';
import { writeFileSync, existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel, type RefitModel } from '../src/model.ts';
import * as losses from '../src/train/losses.ts';
import * as optim from '../src/train/optim/index.ts';
import { Trainer } from '../src/train/trainer.ts';
import type { TrainStep } from '../src/train/train-step.ts';
import { f32, i64, size, type Tensor } from '../src/onnx/tensor.ts';
import { encodeModel } from '../src/onnx/proto.ts';
import { Rng } from '../src/util/rng.ts';
import { createAdapter } from '../src/tta/index.ts';
import { withAdapter, lora } from '../src/peft/index.ts';
import { ort } from '../src/onnx/runtime.ts';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
const THREADS = 2;
const MB = 1024 * 1024;

interface ModelSpec { path: string; chw: number[]; batch: number; classes: number; logits: string }
const MODELS: Record<string, ModelSpec> = {
  cnn28: { path: 'tmp/foreign-models/cnn28.onnx', chw: [1, 28, 28], batch: 64, classes: 10, logits: 'logits' },
  resnet18_64: { path: 'tmp/foreign-models/resnet18_64.onnx', chw: [3, 64, 64], batch: 64, classes: 10, logits: 'logits' },
  mobilenet_v2_224: { path: 'tmp/foreign-models/mobilenet_v2_224.onnx', chw: [3, 224, 224], batch: 16, classes: 10, logits: 'logits' },
  resnet18_224: { path: 'tmp/foreign-models/resnet18_224.onnx', chw: [3, 224, 224], batch: 16, classes: 10, logits: 'logits' },
  'fmnist-cnn': { path: 'models/fmnist-cnn.onnx', chw: [1, 28, 28], batch: 64, classes: 10, logits: 'logits' },
  'fmnist-vit': { path: 'models/fmnist-vit.onnx', chw: [1, 28, 28], batch: 64, classes: 10, logits: 'logits' },
};
const VARIANTS: Record<string, { arena?: boolean; memPattern?: boolean }> = {
  base: {},
  'arena-off': { arena: false },
  'mempattern-off': { memPattern: false },
  'both-off': { arena: false, memPattern: false },
};

interface Job { model: string; config: string; variant: string; calls: number }
interface Event { what: string; rss: number; peak: number; ms: number }

const arg = (name: string, dflt: string) => { const i = process.argv.indexOf(`--${name}`); return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : dflt; };
const mb = (b: number) => Math.round(b / MB);

// ------------------------------------------------------------------ child

const t0 = performance.now();
const events: Event[] = [];
function mark(what: string): Event {
  const e = { what, rss: mb(process.memoryUsage.rss()), peak: Math.round(process.resourceUsage().maxRSS / 1024), ms: Math.round(performance.now() - t0) };
  events.push(e);
  return e;
}

function hookSessions(v: { arena?: boolean; memPattern?: boolean }): void {
  const IS = ort.InferenceSession as unknown as { create: (...a: unknown[]) => Promise<ort.InferenceSession> };
  const orig = IS.create.bind(ort.InferenceSession);
  IS.create = async (...a: unknown[]) => {
    const o = (a[1] ?? {}) as ort.InferenceSession.SessionOptions;
    const isProbe = o.graphOptimizationLevel === 'disabled';
    if (!isProbe) {
      if (v.arena !== undefined) o.enableCpuMemArena = v.arena;
      if (v.memPattern !== undefined) o.enableMemPattern = v.memPattern;
    }
    const s = await orig(a[0], o, ...a.slice(2));
    const kind = isProbe ? 'probe' : s.outputNames.includes('refit.loss') ? 'step' : 'infer';
    mark(`create ${kind} (${s.outputNames.length} outputs)`);
    const run = s.run.bind(s) as (...r: unknown[]) => Promise<unknown>;
    (s as unknown as { run: typeof run }).run = async (...r: unknown[]) => {
      const out = await run(...r);
      mark(`run ${kind}`);
      return out;
    };
    return s;
  };
}

function batchOf(spec: ModelSpec, seed: number): { x: Tensor; y: Tensor } {
  const rng = new Rng(seed);
  const n = spec.batch;
  const x = new Float32Array(n * size(spec.chw));
  for (let i = 0; i < x.length; i++) x[i] = rng.normal();
  return { x: f32([n, ...spec.chw], x), y: i64([n], Array.from({ length: n }, () => rng.int(spec.classes))) };
}

/** What the compiled step graph must hold, from the graph and its probed shapes. */
function analyse(step: TrainStep, compiled: Awaited<ReturnType<TrainStep['compile']>>, optimizerBuffers: number) {
  const { graph } = compiled;
  const g = graph.model.graph;
  const bytesOf = (name: string) => { const s = graph.shapes.get(name); return s ? size(s.dims) * (s.dtype === 'float64' || s.dtype === 'int64' ? 8 : s.dtype === 'bool' || s.dtype === 'uint8' || s.dtype === 'int8' ? 1 : 4) : 0; };
  const inits = new Set(g.initializers.keys());
  const graphInputs = new Set(g.inputs.map((i) => i.name));
  // graph.shapes covers forward + loss (the second probe); backward nodes produce values outside it.
  const forwardValues = new Set<string>();
  const backward = [];
  for (const n of g.nodes) {
    if (n.outputs.some((o) => o && graph.shapes.has(o) && !inits.has(o))) for (const o of n.outputs) { if (o) forwardValues.add(o); }
    else backward.push(n);
  }
  const saved = new Set<string>();
  for (const n of backward) for (const i of n.inputs) if (i && forwardValues.has(i)) saved.add(i);
  let savedBytes = 0; for (const s of saved) savedBytes += bytesOf(s);
  let fwdBytes = 0; for (const s of forwardValues) fwdBytes += bytesOf(s);
  let bakedBytes = 0; for (const t of g.initializers.values()) bakedBytes += t.data.byteLength;
  let fedBytes = 0; for (const p of graph.paramInputs) fedBytes += step.model.param(p).data.byteLength;
  let trainableBytes = 0; for (const p of step.trainable) trainableBytes += step.model.param(p).data.byteLength;
  let modelParamBytes = 0; for (const t of step.model.ir.graph.initializers.values()) modelParamBytes += t.data.byteLength;
  const serialised = encodeModel(graph.model).byteLength;
  void graphInputs;
  return {
    nodes: g.nodes.length, backward_nodes: backward.length,
    saved_for_backward_mb: mb(savedBytes), saved_tensors: saved.size,
    forward_intermediates_mb: mb(fwdBytes), forward_values: forwardValues.size,
    baked_initializers_mb: mb(bakedBytes), fed_params_mb: mb(fedBytes), model_params_mb: mb(modelParamBytes),
    serialised_step_mb: mb(serialised), optimizer_state_mb: mb(optimizerBuffers * trainableBytes),
  };
}

async function child(job: Job): Promise<unknown> {
  hookSessions(VARIANTS[job.variant]!);
  const spec = MODELS[job.model]!;
  const model = await loadModel(join(root, spec.path), { threads: THREADS });
  mark('loaded');
  const { x, y } = batchOf(spec, 1);
  const input = model.inputs[0]!.name;
  let fn: () => Promise<unknown>;
  let step: TrainStep | null = null;
  let optimizerBuffers = 0;
  const cfg = job.config;
  if (cfg === 'infer') fn = () => model.run({ [input]: x }, { outputs: [spec.logits] });
  else if (cfg === 'bn-adapt' || cfg === 'tent' || cfg === 'infer+tent') {
    if (cfg === 'infer+tent') await model.run({ [input]: x }, { outputs: [spec.logits] });
    const adapter = createAdapter(model, cfg === 'infer+tent' ? 'tent' : cfg);
    step = (adapter as unknown as { step?: TrainStep }).step ?? null;
    optimizerBuffers = 1; // SGD with momentum
    fn = () => adapter.predict(x);
  } else {
    const loss = losses.crossEntropy({ logits: spec.logits, labels: 'y' });
    let m: RefitModel = model;
    let trainable: 'all' | string[] = 'all';
    if (cfg === 'lora') {
      const p = withAdapter(model, 'lora', lora({ targets: (s) => s.op !== 'Conv' || (s as { group?: number }).group === 1, rank: 8, alpha: 8 }));
      m = p;
      trainable = p.trainableNames();
    }
    step = m.compileTrainStep({ trainable, loss, batchNorm: 'train' });
    const trainer = new Trainer(step, optim.sgd({ lr: 1e-3 }));
    fn = () => trainer.step({ [input]: x, y });
  }
  let t = performance.now();
  await fn();
  const firstMs = performance.now() - t;
  mark('first call');
  const times: number[] = [];
  for (let i = 1; i < job.calls; i++) { t = performance.now(); await fn(); times.push(performance.now() - t); }
  mark('last call');
  const at = (prefix: string) => events.find((e) => e.what.startsWith(prefix));
  const firstStepRun = events.findIndex((e) => e.what.startsWith('run step') || (cfg === 'bn-adapt' || cfg === 'infer') && e.what.startsWith('run infer'));
  const compiled = events.slice(0, firstStepRun < 0 ? events.length : firstStepRun).at(-1);
  const probes = events.filter((e) => e.what === 'run probe');
  const result = {
    ...job,
    first_call_ms: Math.round(firstMs),
    ms: times.length ? Math.round(times.sort((a, b) => a - b)[times.length >> 1]!) : null,
    rss_loaded: at('loaded')!.rss,
    peak_after_probes: probes.length ? probes.at(-1)!.peak : null,
    rss_after_compile: compiled?.rss ?? null,
    peak_after_compile: compiled?.peak ?? null,
    rss_after_first_call: at('first call')!.rss,
    peak_after_first_call: at('first call')!.peak,
    peak: Math.round(process.resourceUsage().maxRSS / 1024),
    events,
    graph: null as unknown,
  };
  if (step) {
    const sig = { [input]: { dtype: x.dtype, dims: x.dims } };
    result.graph = analyse(step, await step.compile(sig), optimizerBuffers);
  }
  return result;
}

// ------------------------------------------------------------------ compile profile

/**
 * Where a step's compile time goes, per phase (StepGraph.timings: probe, fold, lower, loss,
 * backward, outputs, encode, session), and how much of the session creation is onnxruntime's
 * graph optimisation (the same bytes created again at level 'disabled'). Each configuration is
 * compiled `reps` times, alternating configurations (A, B, A, B …), median per phase.
 */
async function compileProfile(modelName: string, configs: string[], reps: number): Promise<Record<string, unknown>[]> {
  const spec = MODELS[modelName]!;
  const model = await loadModel(join(root, spec.path), { threads: THREADS });
  const input = model.inputs[0]!.name;
  const sig = { [input]: { dtype: 'float32' as const, dims: [spec.batch, ...spec.chw] } };
  const bn = new Set<string>();
  for (const n of model.ir.graph.nodes) if (n.opType === 'BatchNormalization') { bn.add(n.inputs[1]!); bn.add(n.inputs[2]!); }
  const ln = new Set<string>();
  for (const n of model.ir.graph.nodes) if (n.opType === 'LayerNormalization') { ln.add(n.inputs[1]!); if (n.inputs[2]) ln.add(n.inputs[2]); }
  const hasBn = bn.size > 0;
  const make = (cfg: string): TrainStep => {
    if (cfg === 'tent') {
      const norm = hasBn ? bn : ln;
      return model.compileTrainStep({ trainable: (n: string) => norm.has(n), loss: losses.softmaxEntropy({ logits: spec.logits }), outputs: [spec.logits], batchNorm: hasBn ? 'train' : 'eval' } as never);
    }
    const loss = losses.crossEntropy({ logits: spec.logits, labels: 'y' });
    if (cfg === 'lora') {
      const p = withAdapter(model, 'lora', lora({ targets: (s) => s.op !== 'Conv' || (s as { group?: number }).group === 1, rank: 8, alpha: 8 }));
      return p.compileTrainStep({ trainable: p.trainableNames(), loss, batchNorm: hasBn ? 'train' : 'eval' });
    }
    return model.compileTrainStep({ trainable: 'all', loss, batchNorm: hasBn ? 'train' : 'eval' });
  };
  const samples = new Map<string, Record<string, number>[]>();
  for (let r = 0; r < reps; r++) for (const cfg of configs) {
    const step = make(cfg);
    let t = performance.now();
    const c = await step.compile(sig);
    const total = performance.now() - t;
    const bytes = encodeModel(c.graph.model);
    t = performance.now();
    const plain = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'disabled', executionProviders: ['cpu'], intraOpNumThreads: THREADS });
    const disabled = performance.now() - t;
    await plain.release();
    await step.release();
    const row = { total, ...c.graph.timings, session_disabled: disabled, nodes: c.graph.model.graph.nodes.length, mb: bytes.byteLength / MB };
    samples.set(cfg, [...(samples.get(cfg) ?? []), row]);
  }
  const med = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s[s.length >> 1]!; };
  return configs.map((cfg) => {
    const rows = samples.get(cfg)!;
    const keys = Object.keys(rows[0]!);
    return { model: modelName, config: cfg, reps, ...Object.fromEntries(keys.map((k) => [k, Math.round(med(rows.map((x) => x[k] ?? 0)) * 10) / 10])) };
  });
}

// ------------------------------------------------------------------ parent

function runChild(job: Job): Record<string, unknown> {
  const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', JSON.stringify(job)], { cwd: root, encoding: 'utf8', maxBuffer: 64 * MB });
  const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
  if (!line) return { ...job, error: (r.stderr || r.stdout).slice(-800) };
  return JSON.parse(line.slice(7));
}

async function main(): Promise<void> {
  if (process.argv.includes('--compile-child')) {
    const rows = await compileProfile(arg('model', 'cnn28'), arg('configs', 'tent,full,lora').split(','), Number(arg('reps', '3')));
    console.log('RESULT ' + JSON.stringify(rows));
    return;
  }
  if (process.argv.includes('--compile')) {
    const tag = arg('tag', 'run');
    const out = arg('out', join(root, 'bench/results/step-memory'));
    const all: unknown[] = [];
    for (const model of arg('models', 'fmnist-cnn,fmnist-vit,cnn28,resnet18_64,mobilenet_v2_224').split(',')) {
      const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--compile-child', '--model', model, '--configs', arg('configs', 'tent,full,lora'), '--reps', arg('reps', '3')], { cwd: root, encoding: 'utf8', maxBuffer: 64 * MB });
      const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
      const rows = line ? JSON.parse(line.slice(7)) : [{ model, error: (r.stderr || r.stdout).slice(-600) }];
      for (const row of rows) console.log(JSON.stringify(row));
      all.push(...rows);
      writeFileSync(`${out}-compile-${tag}.json`, JSON.stringify({ tag, threads: THREADS, date: new Date().toISOString(), rows: all }, null, 1));
    }
    return;
  }
  if (process.argv.includes('--child')) {
    const job = JSON.parse(arg('child', '{}')) as Job;
    console.log('RESULT ' + JSON.stringify(await child(job)));
    return;
  }
  const models = arg('models', 'cnn28,resnet18_64,mobilenet_v2_224,fmnist-cnn,fmnist-vit').split(',');
  const configs = arg('configs', 'infer,bn-adapt,tent,full').split(',');
  const variants = arg('variants', 'base').split(',');
  const calls = Number(arg('calls', '3'));
  const out = arg('out', join(root, 'bench/results/step-memory'));
  const tag = arg('tag', 'run');
  const jsonPath = `${out}-${tag}.json`;
  const rows: Record<string, unknown>[] = existsSync(jsonPath) && process.argv.includes('--resume') ? JSON.parse((await import('node:fs')).readFileSync(jsonPath, 'utf8')).rows : [];
  for (const model of models) for (const config of configs) for (const variant of variants) {
    if (rows.some((r) => r.model === model && r.config === config && r.variant === variant && !r.error)) continue;
    const r = runChild({ model, config, variant, calls });
    const i = rows.findIndex((x) => x.model === model && x.config === config && x.variant === variant);
    if (i >= 0) rows.splice(i, 1);
    rows.push(r);
    const gr = r.graph as Record<string, number> | null;
    console.log([model, config, variant, r.error ? `ERROR ${String(r.error).slice(-300)}` : `loaded ${r.rss_loaded} probes-peak ${r.peak_after_probes} compiled rss ${r.rss_after_compile}/peak ${r.peak_after_compile} first ${r.rss_after_first_call}/${r.peak_after_first_call} peak ${r.peak} MB; first ${r.first_call_ms} ms, step ${r.ms} ms${gr ? `; saved ${gr.saved_for_backward_mb} fwd ${gr.forward_intermediates_mb} baked ${gr.baked_initializers_mb} fed ${gr.fed_params_mb} serial ${gr.serialised_step_mb} MB` : ''}`].join(' | '));
    writeFileSync(jsonPath, JSON.stringify({ tag, threads: THREADS, calls, date: new Date().toISOString(), rows }, null, 1));
  }
}

await main();
