// Foreign-model benchmark (issue 12, item 1): CNNs that PyTorch built (torchvision ResNet-18 at
// 64×64 and 224×224, torchvision MobileNetV2 at 224×224, the ResNet-style CNN of
// bench/torch_models.py at 28×28), refit against PyTorch 1.13 (Debian's /usr/bin/python3) on the
// same weights, batch and thread count, in one run. Both sides load one torch model: the ONNX
// files and the .pt weights come from bench/foreign_torch.py --export.
//
//   npx tsx bench/foreign.ts [--models cnn28,resnet18_64,resnet18_224,mobilenet_v2_224]
//     (the default four; efficientnet_b0_224, mobilenet_v3_large_224, resnet50_224 and
//     regnet_y_400mf_224 by name, exported on first use)
//        [--configs infer,bn-adapt,tent,eata,sar,full,norm,lora] [--reps 10] [--warmup 2]
//        [--skip resnet18_224/lora,...] [--out bench/results/foreign]
//        [--resume [--redo-contended 0.1]]  keep finished rows; rerun those where other processes used > 10% CPU
//        [--rounds 3]  run each cell's refit and PyTorch children 3 times, alternating; the row takes each
//        side's median run and lists every run's ms (single runs of one cell moved by up to 40 % on some hosts)
//        [--no-arena]   refit sessions with onnxruntime's CPU memory arena off (memoryArena: false)
//        [--env K=V,...] extra environment for BOTH sides' children (e.g. MALLOC_MMAP_THRESHOLD_=131072,
//                       glibc's fixed mmap threshold: docs/speed.md, memory pass of session 6)
//        [--torch-heap]  also time PyTorch with glibc serving every block from its heap (TORCH_HEAP_ENV:
//                       no mmap, no trim), a third child per round. By default glibc maps each block above
//                       32 MB afresh and the kernel zeroes its pages on first touch, every call; PyTorch's
//                       CPU allocator has no cache of its own, so a 224² step at batch 16 paid 46k–490k minor
//                       faults per call (docs/speed.md, session 36). onnxruntime's arena keeps its blocks.
//   npx tsx bench/foreign.ts --profile [--models …] [--out bench/results/foreign-profile]
//        one onnxruntime profile (enableProfiling) of the Tent step and the full step per model,
//        op types and nodes by time; PyTorch's autograd profiler on the same steps beside it.
//        --profile-configs bn-adapt,tent,full: which refit configurations to profile (default tent,full).
//
// Every (model, configuration, engine) runs in its own child process, so its peak RSS is its own
// (refit: process.resourceUsage().maxRSS; PyTorch: getrusage ru_maxrss). The refit and PyTorch
// children of one configuration run back to back. Times: median of --reps calls after --warmup
// calls (the first call, which compiles, is reported apart). Before each child the benchmark
// samples the CPU idle share over 1 s (/proc/stat) and writes it next to the time; the machine
// has 2 cores, and another job may share them.
//
// Configurations (refit / PyTorch):
//   infer     model.run / eval forward under no_grad
//   bn-adapt  tta 'bn-adapt' / train-mode BatchNorm forward under no_grad (batch statistics)
//   tent, eata, sar  tta.createAdapter(model, m) / make_tta_fixtures.py's tent_step, eata_step,
//             sar_step (the papers' code). EATA and SAR filter samples by entropy; on random
//             weights the filters would drop most samples, so both sides open the margins
//             (marginFactor 1.001: margin 1.001·ln C, above any softmax entropy; EATA dMargin 2)
//             and every sample updates. EATA's Fisher: 2 batches of random inputs on both sides.
//   full      CE step, every parameter, SGD, BatchNorm in train mode
//   norm      CE step, BatchNorm weight and bias only
//   lora      CE step, LoRA rank 8 (alpha 8) on every non-grouped Conv and Gemm/MatMul
//             (refit: peft.lora; PyTorch: the same A k×k conv, B 1×1 conv by hand)
import { spawnSync, execSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel, type RefitModel } from '../src/model.ts';
import * as losses from '../src/train/losses.ts';
import * as optim from '../src/train/optim/index.ts';
import { Trainer } from '../src/train/trainer.ts';
import { f32, i64, type Tensor } from '../src/onnx/tensor.ts';
import { Rng } from '../src/util/rng.ts';
import { createAdapter } from '../src/tta/index.ts';
import { withAdapter, lora } from '../src/peft/index.ts';
import { ort } from '../src/onnx/runtime.ts';
import { median } from './stats.ts';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
const THREADS = 2;
const CLASSES = 10;
const MODELS: Record<string, { chw: [number, number, number]; batch: number; label: string }> = {
  cnn28: { chw: [1, 28, 28], batch: 64, label: 'ResNet-style CNN (bench/torch_models.py), 28×28' },
  resnet18_64: { chw: [3, 64, 64], batch: 64, label: 'torchvision ResNet-18, 64×64' },
  resnet18_224: { chw: [3, 224, 224], batch: 16, label: 'torchvision ResNet-18, 224×224' },
  mobilenet_v2_224: { chw: [3, 224, 224], batch: 16, label: 'torchvision MobileNetV2, 224×224' },
  // Asked for by name (--models), exported on first use:
  efficientnet_b0_224: { chw: [3, 224, 224], batch: 16, label: 'torchvision EfficientNet-B0, 224×224' },
  mobilenet_v3_large_224: { chw: [3, 224, 224], batch: 16, label: 'torchvision MobileNetV3-Large, 224×224' },
  resnet50_224: { chw: [3, 224, 224], batch: 16, label: 'torchvision ResNet-50, 224×224' },
  regnet_y_400mf_224: { chw: [3, 224, 224], batch: 16, label: 'torchvision RegNetY-400MF, 224×224' },
};
/** The models a run takes without --models. */
const DEFAULT_MODELS = ['cnn28', 'resnet18_64', 'resnet18_224', 'mobilenet_v2_224'];
const CONFIGS = ['infer', 'bn-adapt', 'tent', 'eata', 'sar', 'full', 'norm', 'lora'] as const;
type Cfg = (typeof CONFIGS)[number];
const modelDir = join(root, 'tmp', 'foreign-models');
/** --rounds: children per side and cell. */
let ROUNDS = 1;

interface Job { model: string; config: Cfg; batch: number; reps: number; warmup: number; arena?: boolean }
interface Side { minflt_per_call?: number; steal?: number; cpu_s?: number; wall_s?: number; otherLoad?: number; ms: number; times: number[]; first_ms: number; peak_rss_mb: number; trainable?: number; used?: number; compile_ms?: number; error?: string }

const arg = (name: string, dflt: string) => { const i = process.argv.indexOf(`--${name}`); return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : dflt; };

function inputs(job: Job, seed: number): { x: Tensor; y: Tensor } {
  const [c, h, w] = MODELS[job.model]!.chw;
  const rng = new Rng(seed);
  const n = job.batch;
  const x = new Float32Array(n * c * h * w);
  for (let i = 0; i < x.length; i++) x[i] = rng.normal();
  return { x: f32([n, c, h, w], x), y: i64([n], Array.from({ length: n }, () => rng.int(CLASSES))) };
}

/** BatchNormalization scale and bias initializers (torchvision names them bn1.weight, downsample.1.weight, features.0.1.weight …). */
function bnParams(model: RefitModel): Set<string> {
  const s = new Set<string>();
  for (const n of model.ir.graph.nodes) if (n.opType === 'BatchNormalization') { s.add(n.inputs[1]!); s.add(n.inputs[2]!); }
  return s;
}

async function timeIt(fn: () => Promise<unknown>, reps: number, warmup: number): Promise<{ first: number; times: number[]; minflt: number }> {
  let t = performance.now();
  await fn();
  const first = performance.now() - t;
  for (let i = 0; i < warmup; i++) await fn();
  const times: number[] = [];
  const f0 = process.resourceUsage().minorPageFault;
  for (let i = 0; i < reps; i++) { t = performance.now(); await fn(); times.push(performance.now() - t); }
  return { first, times, minflt: (process.resourceUsage().minorPageFault - f0) / reps };
}

// ------------------------------------------------------------------ refit child

async function refitChild(job: Job): Promise<Side> {
  const model = await loadModel(join(modelDir, `${job.model}.onnx`), { threads: THREADS, ...(job.arena === false ? { memoryArena: false } : {}) });
  const { x, y } = inputs(job, 1);
  const extra: Partial<Side> = {};
  let fn: () => Promise<unknown>;
  const cfg = job.config;
  if (cfg === 'infer') {
    fn = () => model.run({ x }, { outputs: ['logits'] });
  } else if (cfg === 'bn-adapt' || cfg === 'tent' || cfg === 'eata' || cfg === 'sar') {
    const opts: Record<string, unknown> = {};
    if (cfg === 'eata') Object.assign(opts, { marginFactor: 1.001, dMargin: 2, fisherData: inputs({ ...job, batch: 2 * job.batch }, 2).x, fisherSize: 2 * job.batch, fisherBatchSize: job.batch });
    if (cfg === 'sar') Object.assign(opts, { marginFactor: 1.001 });
    const adapter = createAdapter(model, cfg, opts);
    fn = async () => { const r = await adapter.predict(x); extra.used = r.info.used; };
  } else {
    const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
    let m: RefitModel = model;
    let trainable: string[] | ((n: string) => boolean) = 'all' as never;
    if (cfg === 'norm') { const bn = bnParams(model); trainable = (n: string) => bn.has(n); }
    if (cfg === 'lora') {
      const p = withAdapter(model, 'lora', lora({ targets: (s) => s.op !== 'Conv' || (s as { group?: number }).group === 1, rank: 8, alpha: 8 }));
      m = p;
      trainable = p.trainableNames();
    }
    const step = m.compileTrainStep({ trainable: trainable as never, loss, batchNorm: 'train' });
    const trainer = new Trainer(step, optim.sgd({ lr: 1e-3 }));
    const names = m.parameterNames(trainable as never);
    extra.trainable = names.reduce((a, n) => a + m.param(n).data.length, 0);
    fn = () => trainer.step({ x, y });
  }
  const { first, times, minflt } = await timeIt(fn, job.reps, job.warmup);
  const ms = median(times);
  const cpu = process.cpuUsage();
  return { ms, times, minflt_per_call: minflt, first_ms: first, compile_ms: cfg === 'infer' ? undefined : first - ms, peak_rss_mb: process.resourceUsage().maxRSS / 1024, cpu_s: (cpu.user + cpu.system) / 1e6, ...extra };
}

// ------------------------------------------------------------------ profile child

/** One onnxruntime profile per session: InferenceSession.create gets enableProfiling (src/ is not changed for it). */
async function profileChild(modelName: string, cfgs: string[]): Promise<unknown> {
  const sessions: ort.InferenceSession[] = [];
  const IS = ort.InferenceSession as unknown as { create: (...a: unknown[]) => Promise<ort.InferenceSession> };
  const orig = IS.create.bind(ort.InferenceSession);
  const dir = join(root, 'tmp', 'foreign-profile');
  mkdirSync(dir, { recursive: true });
  let tag = 'x';
  IS.create = async (...a: unknown[]) => {
    const [bytes, o = {}] = a as [unknown, Record<string, unknown>?];
    const s = await orig(bytes, { ...o, enableProfiling: true, profileFilePrefix: join(dir, `${modelName}-${tag}`) });
    sessions.push(s);
    return s;
  };
  const out: Record<string, unknown> = {};
  for (const cfg of cfgs) {
    tag = cfg;
    for (const f of readdirSync(dir)) if (f.startsWith(`${modelName}-${cfg}`)) rmSync(join(dir, f));
    const model = await loadModel(join(modelDir, `${modelName}.onnx`), { threads: THREADS });
    const job: Job = { model: modelName, config: cfg as Cfg, batch: MODELS[modelName]!.batch, reps: 5, warmup: 1 };
    const { x, y } = inputs(job, 1);
    let fn: () => Promise<unknown>;
    if (cfg !== 'full') { const a = createAdapter(model, cfg); fn = () => a.predict(x); }
    else { const t = new Trainer(model.compileTrainStep({ trainable: 'all', loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }), batchNorm: 'train' }), optim.sgd({ lr: 1e-3 })); fn = () => t.step({ x, y }); }
    const start = sessions.length;
    const { times } = await timeIt(fn, 5, 1);
    for (const s of sessions.slice(start)) { try { (s as unknown as { endProfiling(): string }).endProfiling(); } catch { /* released: its profile was written on release */ } }
    // Kernel time by op type and by node, per run, over the sessions that ran every call (the
    // probe session that refit runs once while compiling is listed in files but not summed).
    const byOp = new Map<string, number>(), byNode = new Map<string, { op: string; us: number; shape?: string }>();
    const fileList: { file: string; runs: number; kernelMs: number }[] = [];
    let total = 0;
    for (const f of readdirSync(dir).filter((f) => f.startsWith(`${modelName}-${cfg}`))) {
      const ev = JSON.parse(readFileSync(join(dir, f), 'utf8')) as { cat: string; name: string; dur: number; args?: { op_name?: string; input_type_shape?: unknown; output_type_shape?: unknown } }[];
      const runs = ev.filter((e) => e.cat === 'Session' && e.name === 'model_run').length;
      const kernel = ev.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time'));
      fileList.push({ file: f, runs, kernelMs: kernel.reduce((a, e) => a + e.dur, 0) / 1000 / Math.max(1, runs) });
      if (runs < 5) continue;
      for (const e of kernel) {
        const op = e.args?.op_name ?? '?';
        const us = e.dur / runs;
        byOp.set(op, (byOp.get(op) ?? 0) + us);
        const node = e.name.replace(/_kernel_time$/, '');
        const b = byNode.get(node) ?? { op, us: 0, shape: JSON.stringify(e.args?.input_type_shape ?? []) + ' -> ' + JSON.stringify(e.args?.output_type_shape ?? []) };
        b.us += us;
        byNode.set(node, b);
        total += us;
      }
    }
    const ops = [...byOp.entries()].sort((a, b) => b[1] - a[1]).map(([op, us]) => ({ op, ms: us / 1000, share: us / total }));
    const nodes = [...byNode.entries()].sort((a, b) => b[1].us - a[1].us).slice(0, 300).map(([node, v]) => ({ node, op: v.op, ms: v.us / 1000, share: v.us / total, shape: v.shape }));
    const kernelMsPerCall = total / 1000;
    out[cfg] = { msPerCall: median(times), kernelMsPerCall, files: fileList, ops, nodes };
    for (const s of sessions.slice(start)) await s.release().catch(() => undefined);
  }
  return out;
}

// ------------------------------------------------------------------ orchestration

const statLine = () => readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
/** Busy CPU seconds (all cores) since boot, from /proc/stat (USER_HZ = 100). */
const busySeconds = () => { const v = statLine(); return (v.reduce((a, x) => a + x, 0) - v[3]! - (v[4] ?? 0)) / 100; };
function cpuIdle(): number {
  const a = statLine();
  execSync('sleep 1');
  const b = statLine();
  const d = b.map((v, i) => v - a[i]!);
  const tot = d.reduce((s, v) => s + v, 0);
  return tot ? (d[3]! + (d[4] ?? 0)) / tot : NaN;
}
/** Wait (at most maxS seconds) for a quiet second: idle share ≥ 0.85. Returns the last idle share. */
function waitQuiet(maxS: number): number {
  const t = performance.now();
  let idle = cpuIdle();
  while (idle < 0.85 && performance.now() - t < maxS * 1000) idle = cpuIdle();
  return idle;
}

/** Runs one child; otherLoad = CPU seconds used by other processes during the child, per second and core (0 = the child had the machine alone). */
function runChild(args: string[], py: boolean, env: Record<string, string> = {}): Side {
  const b0 = busySeconds(), s0 = statLine()[7] ?? 0, t0 = performance.now();
  const side = runChild1(args, py, env);
  const wall = (performance.now() - t0) / 1000, busy = busySeconds() - b0;
  side.wall_s = wall;
  side.steal = ((statLine()[7] ?? 0) - s0) / 100 / (THREADS * wall);
  if (side.cpu_s !== undefined) side.otherLoad = Math.max(0, (busy - side.cpu_s) / (THREADS * wall));
  return side;
}
const extraEnv = Object.fromEntries(arg('env', '').split(',').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
/** --torch-heap: glibc never maps a block of its own (MMAP_MAX 0) and never gives the heap's top back (TRIM_THRESHOLD 16 GiB), so freed activations are reused without page faults. */
const TORCH_HEAP_ENV = { MALLOC_MMAP_MAX_: '0', MALLOC_TRIM_THRESHOLD_: String(16 * 2 ** 30) };
function runChild1(args: string[], py: boolean, env: Record<string, string> = {}): Side {
  const r = py
    ? spawnSync('/usr/bin/python3', [join(here, 'foreign_torch.py'), ...args], { encoding: 'utf8', env: { ...process.env, ...extraEnv, ...env, OMP_NUM_THREADS: String(THREADS), MKL_NUM_THREADS: String(THREADS), OPENBLAS_NUM_THREADS: '1' }, maxBuffer: 1 << 26 })
    : spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), ...args], { encoding: 'utf8', env: { ...process.env, ...extraEnv }, maxBuffer: 1 << 26 });
  if (r.status !== 0) return { ms: NaN, times: [], first_ms: NaN, peak_rss_mb: NaN, error: (r.stderr || String(r.signal)).slice(-600) };
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

const uptime = () => execSync('uptime').toString().trim();

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes('--help') || argv.includes('-h')) {
    // The usage is this file's opening comment; never start a run (it would overwrite the results).
    const head = readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n');
    process.stdout.write(head.slice(0, head.findIndex((l) => !l.startsWith('//'))).map((l) => l.replace(/^\/\/ ?/, '')).join('\n') + '\n');
    return;
  }
  if (argv[0] === '--child') { process.stdout.write(JSON.stringify(await refitChild(JSON.parse(argv[1]!))) + '\n'); return; }
  if (argv[0] === '--profile-child') { process.stdout.write(JSON.stringify(await profileChild(argv[1]!, (argv[2] ?? 'tent,full').split(','))) + '\n'); return; }
  if (!existsSync(join(modelDir, 'cnn28.onnx'))) execSync(`/usr/bin/python3 ${join(here, 'foreign_torch.py')} --export ${modelDir}`, { stdio: 'inherit' });
  const models = arg('models', DEFAULT_MODELS.join(',')).split(',');
  const unknown = models.filter((m) => !MODELS[m]);
  if (unknown.length) throw new Error(`--models: unknown ${unknown.join(', ')}; known: ${Object.keys(MODELS).join(', ')}`);
  const missing = models.filter((m) => !existsSync(join(modelDir, `${m}.onnx`)));
  if (missing.length) execSync(`/usr/bin/python3 ${join(here, 'foreign_torch.py')} --export ${modelDir} --only ${missing.join(',')}`, { stdio: 'inherit' });
  if (argv.includes('--profile')) return profile(models);
  const configs = arg('configs', CONFIGS.join(',')).split(',') as Cfg[];
  const skip = new Set(arg('skip', '').split(',').filter(Boolean));
  const reps = Number(arg('reps', '10')), warmup = Number(arg('warmup', '2'));
  ROUNDS = Math.max(1, Number(arg('rounds', '1')));
  const torchHeap = argv.includes('--torch-heap');
  const out = resolve(arg('out', join(here, 'results', 'foreign')));
  const meta = { date: new Date().toISOString(), node: process.version, threads: THREADS, reps, warmup, uptimeStart: uptime(), uptimeEnd: '', skipped: [...skip], command: `npx tsx bench/foreign.ts ${argv.join(' ')}`, blas: '', cpu: '' };
  meta.blas = execSync("update-alternatives --query libblas.so.3-x86_64-linux-gnu 2>/dev/null | grep '^Value' || true").toString().trim();
  // Hosts differ between sessions (an AMD EPYC on 2026-12-06, session 33, after Intel Xeons): ratios compare only within one host.
  meta.cpu = execSync("grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2 || true").toString().trim();
  const prev = existsSync(`${out}.json`) && argv.includes('--resume') ? (JSON.parse(readFileSync(`${out}.json`, 'utf8')) as { rows: Row[] }).rows : [];
  // --redo-contended T (with --resume): run again the rows where other processes used more than T of the CPU during either child.
  const redo = Number(arg('redo-contended', 'Infinity'));
  const contended = (r: Row) => (r.refit.otherLoad ?? 0) > redo || (r.torch.otherLoad ?? 0) > redo || !!r.refit.error || !!r.torch.error;
  const rows: Row[] = prev.filter((r) => !contended(r));
  const earlier = new Map(prev.filter(contended).map((r) => [`${r.model}/${r.config}`, r]));
  const t0 = performance.now();
  for (const model of models) for (const config of configs) {
    if (skip.has(`${model}/${config}`) || rows.some((r) => r.model === model && r.config === config)) continue;
    const job: Job = { model, config, batch: MODELS[model]!.batch, reps, warmup, ...(argv.includes('--no-arena') ? { arena: false } : {}) };
    const refits: Side[] = [], torches: Side[] = [], heaps: Side[] = [];
    let idleRefit = NaN, idleTorch = NaN;
    const torchArgs = ['--run', model, '--config', config, '--batch', String(job.batch), '--threads', String(THREADS), '--reps', String(reps), '--warmup', String(warmup), '--dir', modelDir];
    for (let round = 0; round < ROUNDS; round++) {
      idleRefit = waitQuiet(30);
      refits.push(runChild(['--child', JSON.stringify(job)], false));
      idleTorch = waitQuiet(30);
      torches.push(runChild(torchArgs, true));
      if (torchHeap) { waitQuiet(30); heaps.push(runChild(torchArgs, true, TORCH_HEAP_ENV)); }
    }
    const refit = medianRun(refits), torch = medianRun(torches);
    let row: Row = { model, config, batch: job.batch, refit, torch, ratio: refit.ms / torch.ms, idleRefit, idleTorch, loadavg: readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ') };
    if (torchHeap) row.torchHeap = medianRun(heaps);
    if (ROUNDS > 1) row.runs = { refit: refits.map((r) => r.ms), torch: torches.map((r) => r.ms), ...(torchHeap ? { torchHeap: heaps.map((r) => r.ms) } : {}) };
    // A rerun keeps, per side, the attempt that ran with less contention.
    const old = earlier.get(`${model}/${config}`);
    if (old) {
      const pick = (a: Side, b: Side) => (!b.error && (a.error || (b.otherLoad ?? 1) < (a.otherLoad ?? 1)) ? b : a);
      const rf = pick(refit, old.refit), tr = pick(torch, old.torch);
      row = { ...row, refit: rf, torch: tr, ratio: rf.ms / tr.ms, reruns: (old.reruns ?? 0) + 1 };
    }
    rows.push(row);
    process.stderr.write(`[${((performance.now() - t0) / 1000).toFixed(0)} s] ${model}/${config} b${job.batch}: refit ${refit.ms.toFixed(1)} ms (${refit.peak_rss_mb.toFixed(0)} MB) torch ${torch.ms.toFixed(1)} ms (${torch.peak_rss_mb.toFixed(0)} MB) ratio ${row.ratio.toFixed(2)} idle ${(100 * idleRefit).toFixed(0)}/${(100 * idleTorch).toFixed(0)}% other load during ${(100 * (refit.otherLoad ?? NaN)).toFixed(0)}/${(100 * (torch.otherLoad ?? NaN)).toFixed(0)}% (steal ${(100 * (refit.steal ?? NaN)).toFixed(0)}/${(100 * (torch.steal ?? NaN)).toFixed(0)}%)${refit.error ? ' REFIT ERROR ' + refit.error : ''}${torch.error ? ' TORCH ERROR ' + torch.error : ''}\n`);
    save(out, meta, rows);
  }
  meta.uptimeEnd = uptime();
  rows.sort((a, b) => models.indexOf(a.model) - models.indexOf(b.model) || CONFIGS.indexOf(a.config) - CONFIGS.indexOf(b.config));
  save(out, meta, rows);
  process.stdout.write(readFileSync(`${out}.md`, 'utf8'));
}

/** The run whose ms is the median of the runs without an error (the first run when all failed). */
function medianRun(runs: Side[]): Side {
  const ok = runs.filter((r) => !r.error && Number.isFinite(r.ms)).sort((a, b) => a.ms - b.ms);
  return ok.length ? ok[(ok.length - 1) >> 1]! : runs[0]!;
}

interface Row { runs?: { refit: number[]; torch: number[]; torchHeap?: number[] }; reruns?: number; model: string; config: Cfg; batch: number; refit: Side; torch: Side; torchHeap?: Side; ratio: number; idleRefit: number; idleTorch: number; loadavg: string }

function save(out: string, meta: Record<string, unknown>, rows: Row[]): void {
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(`${out}.json`, JSON.stringify({ meta, rows }, null, 1));
  const f = (v: number | undefined, d = 1) => (v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(d));
  const L: string[] = ['# Foreign-model benchmark (issue 12)', ''];
  L.push(`\`${meta.command}\` on ${String(meta.date).slice(0, 16)} UTC, Node ${meta.node}, ${THREADS} threads on both sides (onnxruntime-node intra-op; PyTorch 1.13 intra-op, OpenBLAS single-threaded inside), 2-core machine${meta.cpu ? ` (${String(meta.cpu)})` : ''}. Median of ${meta.reps} calls after ${meta.warmup} warm-up calls${ROUNDS > 1 ? `; each side ${ROUNDS} child processes per cell, alternating, the median run shown (every run's ms in brackets)` : ''}; "first" is the first call (refit compiles there). Each cell is its own child process; peak RSS is that process's. BatchNorm in train mode for every training step. EATA/SAR margins opened so that every sample updates (see bench/foreign.ts).`, '');
  L.push(`Load: \`${meta.uptimeStart}\` at the start, \`${meta.uptimeEnd || '(running)'}\` at the end. Before each child the benchmark waits (at most 30 s) for a second with ≥ 85% of the CPU idle. "other load" is the CPU time other processes used while the child ran, as a share of both cores over its wall time (/proc/stat busy time minus the child's own user+system time): 0% = the child had the machine alone; above ~10% the row's time is inflated by contention. It includes the hypervisor's steal time (this is a VM), which the JSON also gives apart (\`steal\`).`, '');
  if ((meta.skipped as string[]).length) L.push(`Skipped: ${(meta.skipped as string[]).join(', ')}.`, '');
  // With --torch-heap: PyTorch again with glibc's heap only (TORCH_HEAP_ENV), its ratio and peak RSS beside the default's.
  const heap = rows.some((r) => r.torchHeap);
  if (heap) L.push(`"PyTorch heap": the same PyTorch child with \`${Object.entries(TORCH_HEAP_ENV).map(([k, v]) => `${k}=${v}`).join(' ')}\` (glibc serves every block from its heap and keeps it), a third child per round. "faults": minor page faults per timed call, refit / PyTorch / PyTorch heap.`, '');
  L.push(`| model | batch | config | refit ms | PyTorch ms | refit / PyTorch |${heap ? ' PyTorch heap ms | refit / PyTorch heap |' : ''} refit first call (compile) ms | refit peak RSS MB | PyTorch peak RSS MB | RSS ratio |${heap ? ' PyTorch heap peak RSS MB | faults |' : ''} trainable | other load refit / torch |`, `|${'---|'.repeat(heap ? 16 : 12)}`);
  const runs = (v: number[] | undefined) => (v && v.length > 1 ? ` (${v.map((x) => f(x, 0)).join(', ')})` : '');
  const heapCols = (a: string) => (heap ? a : '');
  for (const r of rows) {
    const h = r.torchHeap;
    L.push(`| ${r.model} | ${r.batch} | ${r.config} | ${f(r.refit.ms)}${runs(r.runs?.refit)} | ${f(r.torch.ms)}${runs(r.runs?.torch)} | ${f(r.ratio, 2)} |${heapCols(` ${f(h?.ms)}${runs(r.runs?.torchHeap)} | ${f(h ? r.refit.ms / h.ms : NaN, 2)} |`)} ${f(r.refit.first_ms, 0)} | ${f(r.refit.peak_rss_mb, 0)} | ${f(r.torch.peak_rss_mb, 0)} | ${f(r.refit.peak_rss_mb / r.torch.peak_rss_mb, 2)} |${heapCols(` ${f(h?.peak_rss_mb, 0)} | ${f(r.refit.minflt_per_call, 0)} / ${f(r.torch.minflt_per_call, 0)} / ${f(h?.minflt_per_call, 0)} |`)} ${r.refit.trainable ?? r.torch.trainable ?? ''} | ${f(100 * (r.refit.otherLoad ?? NaN), 0)}% / ${f(100 * (r.torch.otherLoad ?? NaN), 0)}% |`);
  }
  const errs = rows.filter((r) => r.refit.error || r.torch.error);
  if (errs.length) L.push('', 'Errors:', ...errs.map((r) => `- ${r.model}/${r.config}: ${(r.refit.error ?? r.torch.error ?? '').replace(/\n/g, ' ').slice(-300)}`));
  // Derived: BN-adapt / inference and step / inference on refit's side.
  L.push('', '| model | refit BN-adapt / inference | PyTorch BN-adapt / inference | refit full step / inference | PyTorch full step / inference |', '|---|---|---|---|---|');
  for (const m of [...new Set(rows.map((r) => r.model))]) {
    const g = (c: Cfg) => rows.find((r) => r.model === m && r.config === c);
    const inf = g('infer'), bn = g('bn-adapt'), full = g('full');
    L.push(`| ${m} | ${f(bn && inf ? bn.refit.ms / inf.refit.ms : NaN, 2)} | ${f(bn && inf ? bn.torch.ms / inf.torch.ms : NaN, 2)} | ${f(full && inf ? full.refit.ms / inf.refit.ms : NaN, 1)} | ${f(full && inf ? full.torch.ms / inf.torch.ms : NaN, 1)} |`);
  }
  writeFileSync(`${out}.md`, L.join('\n') + '\n');
}

async function profile(models: string[]): Promise<void> {
  const out = resolve(arg('out', join(here, 'results', 'foreign-profile')));
  mkdirSync(dirname(out), { recursive: true });
  const res: Record<string, unknown> = { date: new Date().toISOString(), uptimeStart: uptime() };
  for (const m of models) {
    const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--profile-child', m, arg('profile-configs', 'tent,full')], { encoding: 'utf8', maxBuffer: 1 << 28 });
    const refit = r.status === 0 ? JSON.parse(r.stdout.trim().split('\n').pop()!) : { error: r.stderr.slice(-800) };
    const t = spawnSync('/usr/bin/python3', [join(here, 'foreign_torch.py'), '--run', m, '--profile', '--batch', String(MODELS[m]!.batch), '--threads', String(THREADS), '--dir', modelDir], { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: String(THREADS), OPENBLAS_NUM_THREADS: '1' } });
    const torch = t.status === 0 ? JSON.parse(t.stdout.trim().split('\n').pop()!) : { error: t.stderr.slice(-800) };
    res[m] = { batch: MODELS[m]!.batch, refit, torch };
    process.stderr.write(`profiled ${m}\n`);
    res.uptimeEnd = uptime();
    writeFileSync(`${out}.json`, JSON.stringify(res, null, 1));
  }
}

await main();
