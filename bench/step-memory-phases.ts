// Where a step's peak RSS happens (issue 12, memory pass of session 6): one child process per
// (model, configuration), configured as bench/foreign.ts does, with the peak resident set measured
// per phase: the kernel's high-water mark (VmHWM) is read and reset (/proc/self/clear_refs = 5)
// around every onnxruntime session creation and every run, so each phase reports the highest RSS
// reached *inside* it (transient copies included), not only the RSS it left behind.
//
//   node --expose-gc --import tsx bench/step-memory-phases.ts [--models resnet18_64] [--configs tent,lora]
//        [--calls 3] [--gc] [--config session.key=v,...] [--env MALLOC_ARENA_MAX=2,...] [--out bench/results/step-memory-phases]
//
// Phases: 'load' (loadModel), then for each session onnxruntime creates: 'js before <kind>' (refit's
// own work since the last phase: graph building, encoding) and 'create <kind>' (InferenceSession.create),
// and for each run 'run <kind>'. Kinds: 'probe' (optimisation 'disabled': shape probes), 'step'
// (outputs include refit.loss), 'infer' (the rest). Each row: peak within the phase, RSS after it,
// JS ArrayBuffers and heap after it (live or not yet collected), the size of the bytes handed to onnxruntime. Models: tmp/foreign-models (bench/foreign_torch.py --export).
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel, type RefitModel } from '../src/model.ts';
import * as losses from '../src/train/losses.ts';
import * as optim from '../src/train/optim/index.ts';
import { Trainer } from '../src/train/trainer.ts';
import { f32, i64 } from '../src/onnx/tensor.ts';
import { Rng } from '../src/util/rng.ts';
import { createAdapter } from '../src/tta/index.ts';
import { withAdapter, lora } from '../src/peft/index.ts';
import { runtime } from '../src/onnx/runtime.ts';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
const MODELS: Record<string, { chw: [number, number, number]; batch: number }> = {
  cnn28: { chw: [1, 28, 28], batch: 64 },
  resnet18_64: { chw: [3, 64, 64], batch: 64 },
  resnet18_224: { chw: [3, 224, 224], batch: 16 },
  mobilenet_v2_224: { chw: [3, 224, 224], batch: 16 },
};
const arg = (name: string, dflt: string) => { const i = process.argv.indexOf(`--${name}`); return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : dflt; };
// --gc: collect garbage at every phase boundary (diagnostic: how much of each peak is dead JS buffers).
const GC = process.argv.includes('--gc');
const CONFIG = (process.argv.includes('--config') ? process.argv[process.argv.indexOf('--config') + 1]! : '').split(',').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)] as const);
const mb = (kb: number) => Math.round(kb / 1024);
const status = () => readFileSync('/proc/self/status', 'utf8');
const field = (s: string, k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)![1]);

interface Phase { phase: string; peak_mb: number; rss_mb: number; js_buffers_mb: number; js_heap_mb: number; bytes_mb?: number; ms: number }

async function child(model: string, config: string, calls: number): Promise<unknown> {
  const phases: Phase[] = [];
  let clock = performance.now();
  // Close the phase that ran since the last mark: its own high-water mark, then reset it.
  const mark = (phase: string, bytes?: number) => {
    if (GC) (globalThis as { gc?: () => void }).gc?.();
    const s = status();
    const u = process.memoryUsage();
    phases.push({ phase, peak_mb: mb(field(s, 'VmHWM')), rss_mb: mb(field(s, 'VmRSS')), js_buffers_mb: Math.round(u.arrayBuffers / 1048576), js_heap_mb: Math.round(u.heapUsed / 1048576), ...(bytes ? { bytes_mb: Math.round(bytes / 1048576) } : {}), ms: Math.round(performance.now() - clock) });
    writeFileSync('/proc/self/clear_refs', '5');
    clock = performance.now();
  };
  const { InferenceSession } = runtime().ort;
  const create = InferenceSession.create.bind(InferenceSession) as (...a: unknown[]) => Promise<any>;
  (InferenceSession as any).create = async (bytes: unknown, opts: any) => {
    // --config k=v,...: extra onnxruntime session config entries for every session but the probes.
    if (CONFIG.length && opts?.graphOptimizationLevel !== 'disabled') {
      const session = { ...(opts.extra?.session ?? {}) };
      for (const [k, v] of CONFIG) session[k] = v;
      opts = { ...opts, extra: { ...opts.extra, session } };
    }
    const kind = opts?.graphOptimizationLevel === 'disabled' ? 'probe' : 'pending';
    mark(`js before ${kind}`);
    const s = await create(bytes, opts);
    const k = kind === 'probe' ? 'probe' : s.outputNames.includes('refit.loss') ? 'step' : 'infer';
    phases[phases.length - 1]!.phase = `js before ${k}`;
    mark(`create ${k}`, (bytes as Uint8Array).byteLength);
    const run = s.run.bind(s);
    s.run = async (...a: unknown[]) => { mark(`js before run ${k}`); const r = await run(...a); mark(`run ${k}`); return r; };
    return s;
  };
  const info = MODELS[model]!;
  mark('start');
  const m0 = await loadModel(join(root, 'tmp', 'foreign-models', `${model}.onnx`), { threads: 2 });
  mark('load');
  const [c, h, w] = info.chw;
  const rng = new Rng(1);
  const x = f32([info.batch, c, h, w], Float32Array.from({ length: info.batch * c * h * w }, () => rng.normal()));
  const y = i64([info.batch], Array.from({ length: info.batch }, () => rng.int(10)));
  let fn: () => Promise<unknown>;
  if (['bn-adapt', 'tent', 'eata', 'sar'].includes(config)) {
    const opts: Record<string, unknown> = {};
    if (config === 'eata') {
      const fx = f32([2 * info.batch, c, h, w], Float32Array.from({ length: 2 * info.batch * c * h * w }, () => rng.normal()));
      Object.assign(opts, { marginFactor: 1.001, dMargin: 2, fisherData: fx, fisherSize: 2 * info.batch, fisherBatchSize: info.batch });
    }
    if (config === 'sar') Object.assign(opts, { marginFactor: 1.001 });
    const a = createAdapter(m0, config as never, opts);
    fn = () => a.predict(x);
  } else {
    let m: RefitModel = m0;
    let trainable: unknown = 'all';
    if (config === 'norm') {
      const bn = new Set<string>();
      for (const n of m0.ir.graph.nodes) if (n.opType === 'BatchNormalization') { bn.add(n.inputs[1]!); bn.add(n.inputs[2]!); }
      trainable = (n: string) => bn.has(n);
    }
    if (config === 'lora') {
      const p = withAdapter(m0, 'lora', lora({ targets: (s) => s.op !== 'Conv' || (s as { group?: number }).group === 1, rank: 8, alpha: 8 }));
      m = p;
      trainable = p.trainableNames();
    }
    const t = new Trainer(m.compileTrainStep({ trainable: trainable as never, loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }), batchNorm: 'train' }), optim.sgd({ lr: 1e-3 }));
    fn = () => t.step({ x, y });
  }
  for (let i = 0; i < calls; i++) await fn();
  mark('end');
  // The process's peak is the highest phase peak: resetting VmHWM also resets what getrusage's maxRSS
  // reports, so maxRSS now only covers the last phase.
  return { model, config, phases, peak_mb: Math.max(...phases.map((p) => p.peak_mb)) };
}

async function main(): Promise<void> {
  if (process.argv[2] === '--child') {
    process.stdout.write(JSON.stringify(await child(process.argv[3]!, process.argv[4]!, Number(arg('calls', '3')))) + '\n');
    return;
  }
  const models = arg('models', 'resnet18_64').split(',');
  const configs = arg('configs', 'tent,lora').split(',');
  const env = Object.fromEntries(arg('env', '').split(',').filter(Boolean).map((kv) => kv.split('=') as [string, string]));
  const out = resolve(arg('out', join(here, 'results', 'step-memory-phases')));
  const rows: unknown[] = [];
  const L: string[] = [];
  for (const model of models) for (const config of configs) {
    const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', fileURLToPath(import.meta.url), '--child', model, config, '--calls', arg('calls', '3'), ...(GC ? ['--gc'] : []), ...(CONFIG.length ? ['--config', arg('config', '')] : [])], { encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 1 << 26 });
    if (r.status !== 0) { process.stderr.write(r.stderr); continue; }
    const row = JSON.parse(r.stdout.trim().split('\n').pop()!) as { peak_mb: number; phases: Phase[] };
    rows.push(row);
    L.push(`## ${model} ${config} (peak ${row.peak_mb} MB)`, '', '| phase | peak in phase MB | RSS after MB | JS buffers after MB | JS heap after MB | bytes MB | ms |', '|---|---:|---:|---:|---:|---:|---:|');
    for (const p of row.phases) L.push(`| ${p.phase} | ${p.peak_mb} | ${p.rss_mb} | ${p.js_buffers_mb} | ${p.js_heap_mb} | ${p.bytes_mb ?? ''} | ${p.ms} |`);
    L.push('');
    process.stderr.write(`${model}/${config}: peak ${row.peak_mb} MB\n`);
  }
  const meta = { date: new Date().toISOString(), loadavg: readFileSync('/proc/loadavg', 'utf8').trim(), env, command: process.argv.slice(2).join(' ') };
  writeFileSync(`${out}.json`, JSON.stringify({ meta, rows }, null, 1));
  writeFileSync(`${out}.md`, [`# Step memory by phase`, '', `\`npx tsx bench/step-memory-phases.ts ${meta.command}\` at ${meta.date}, load ${meta.loadavg}`, '', ...L].join('\n'));
  process.stdout.write(L.join('\n') + '\n');
}

await main();
