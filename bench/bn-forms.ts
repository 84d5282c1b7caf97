// Times the candidate formulations of train-mode BatchNorm in onnxruntime-node (graph
// optimization 'all', 2 intra-op threads) on the BN layers of cnn28, ResNet-18 and MobileNetV2,
// checks them against each other, and writes bench/results/bn-forms.{json,md}.
//
//   npx tsx bench/bn-forms.ts [--rounds 30] [--quick] [--only fwd|bwd|adapt]
//   npx tsx bench/bn-forms.ts --steps cnn28,mobilenet_v2_224 [--configs infer,bn-adapt,tent]
//        [--rounds 4] [--reps 5]
//        whole models (tmp/foreign-models, see bench/foreign.ts): the same calls compiled with the
//        old forms ('decomposed' statistics, Mul/Add gradient) and the chosen ones, each in its own
//        child process, the two alternating; per-call wall and process CPU time →
//        bench/results/bn-forms-steps.md.
//
// - fwd: batch moments + normalisation, as lowerBatchNormTrain emits them ('decomposed' before,
//   'bn-train' now), outputs Y and the two updated running statistics.
// - bwd: the batch-statistics gradient (dX, dScale, dB) in each BnGradForm of norm.ts.
// - adapt: the BN-adapt block Conv → BN → activation with constant weights, as inference
//   (BN folded into the conv, activation fused) and with each statistics form.
// Rounds interleave the candidates of a layer (one run of each per round), so drift in machine
// load hits them alike; ratios are of medians (and of 25th percentiles) within one layer.
import { mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import { ModelBuilder } from '../src/onnx/model-builder.ts';
import { Emitter } from '../src/onnx/emitter.ts';
import { encodeModel } from '../src/onnx/proto.ts';
import { createSession, toOrt, ort } from '../src/onnx/runtime.ts';
import { f32 } from '../src/onnx/tensor.ts';
import { Rng } from '../src/util/rng.ts';
import { lowerBatchNormTrain, batchStatsForm, type BatchStatsForm } from '../src/train/batchnorm-train.ts';
import { emitBatchStatisticsGrad, pickBnGradForm, OLD_BN_GRAD_FORM, type BnGradForm } from '../src/autodiff/rules/norm.ts';
import { quantile, relDiff as relDiffOne } from './stats.ts';

const args = process.argv.slice(2);
const argOf = (k: string) => (args.includes(k) ? args[args.indexOf(k) + 1] : undefined);
const ROUNDS = Number(argOf('--rounds') ?? 0) || (args.includes('--quick') ? 6 : 30);
const WARMUP = 3;
const ONLY = argOf('--only');
const OPSET = 17;

interface Geo { model: string; N: number; C: number; H: number; act: 'Relu' | 'Clip'; k: number; cin: number }
/** BN layers of the measured models (with the conv in front of each, for the adapt block). */
const GEOS: Geo[] = [
  { model: 'cnn28', N: 64, C: 32, H: 28, act: 'Relu', k: 3, cin: 32 },
  { model: 'ResNet-18 64×64', N: 64, C: 64, H: 16, act: 'Relu', k: 3, cin: 64 },
  { model: 'ResNet-18 224', N: 16, C: 64, H: 56, act: 'Relu', k: 3, cin: 64 },
  { model: 'MobileNetV2 224', N: 16, C: 96, H: 112, act: 'Clip', k: 1, cin: 16 },
  { model: 'MobileNetV2 224', N: 16, C: 144, H: 56, act: 'Clip', k: 1, cin: 24 },
  { model: 'ResNet-18 224', N: 16, C: 512, H: 7, act: 'Relu', k: 3, cin: 512 },
];
const dimsOf = (g: Geo) => [g.N, g.C, g.H, g.H];
const tag = (g: Geo) => `[${dimsOf(g)}]`;

type Dims = Record<string, number[]>;
interface Candidate { kind: string; form: string; bytes: Uint8Array; chosen: boolean; reference?: boolean }

/** A model with float inputs, initializers from `inits`, and outputs out0.. built by `body`. */
function model(inputs: Dims, inits: Record<string, Float32Array>, body: (em: Emitter, m: ReturnType<ModelBuilder['build']>) => string[]): Uint8Array {
  const b = new ModelBuilder({ opset: OPSET });
  for (const [n, d] of Object.entries(inputs)) b.input(n, 'float32', d);
  for (const [n, v] of Object.entries(inits)) b.initializer(n, f32([v.length], v));
  const m = b.build();
  const em = new Emitter(m.graph, OPSET);
  const outs = body(em, m);
  outs.forEach((o, i) => m.graph.nodes.push({ name: `out_node${i}`, opType: 'Identity', domain: '', inputs: [o], outputs: [`out${i}`], attrs: {} }));
  outs.forEach((_, i) => b.output(`out${i}`));
  return encodeModel(m);
}

const stat = (C: number, v: number) => new Float32Array(C).fill(v);
const bnInits = (C: number) => ({ scale: stat(C, 1.1), bias: stat(C, 0.1), rmean: stat(C, 0.2), rvar: stat(C, 1.5) });

/** lowerBatchNormTrain on a graph holding one BatchNormalization node. */
function lowered(em: Emitter, m: ReturnType<ModelBuilder['build']>, x: string, dims: number[], form: BatchStatsForm, prior = 0): string[] {
  const y = em.fresh('y');
  m.graph.nodes.push({ name: 'bn', opType: 'BatchNormalization', domain: '', inputs: [x, 'scale', 'bias', 'rmean', 'rvar'], outputs: [y], attrs: { epsilon: { kind: 'float', value: 1e-5 }, momentum: { kind: 'float', value: 0.9 } } });
  const saved = batchStatsForm.current;
  batchStatsForm.current = form;
  try {
    const shapes = new Map([[x, dims]]);
    const updates = lowerBatchNormTrain(m.graph, em, (t) => shapes.get(t)!, { prior });
    return [y, ...updates.map((u) => u.updated)];
  } finally { batchStatsForm.current = saved; }
}

const STATS_FORMS: BatchStatsForm[] = ['decomposed', 'bn-train'];

function forwardLayer(g: Geo): Candidate[] {
  return STATS_FORMS.map((f, i) => ({
    kind: 'fwd', form: f, chosen: f === 'bn-train', reference: i === 0,
    bytes: model({ x: dimsOf(g) }, bnInits(g.C), (em, m) => lowered(em, m, 'x', dimsOf(g), f)),
  }));
}

const GRAD_FORMS: BnGradForm[] = [
  OLD_BN_GRAD_FORM,
  { sumGX: 'mul-reduce', dX: 'bn-affine' },
  ...[8, 16, 32].flatMap((block): BnGradForm[] => [{ sumGX: 'diag-matmul', block, dX: 'mul-add' }, { sumGX: 'diag-matmul', block, dX: 'bn-affine' }]),
];
const formName = (f: BnGradForm) => `${f.sumGX}${f.sumGX === 'diag-matmul' ? `/${f.block}` : ''} + ${f.dX}`;
const sameForm = (a: BnGradForm, b: BnGradForm) => formName(a) === formName(b);

function backwardLayer(g: Geo): Candidate[] {
  const d = dimsOf(g);
  const pick = pickBnGradForm(d);
  return GRAD_FORMS.filter((f) => f.sumGX !== 'diag-matmul' || g.C % f.block! === 0).map((f, i) => ({
    kind: 'bwd', form: formName(f), chosen: sameForm(f, pick), reference: i === 0,
    bytes: model({ x: d, gy: d, bmean: [g.C], bvar: [g.C] }, { scale: stat(g.C, 1.1) }, (em) => {
      const r = emitBatchStatisticsGrad(em, { x: 'x', g: 'gy', scale: 'scale', mean: 'bmean', variance: 'bvar', eps: 1e-5, dims: d }, { dX: true }, f);
      return [r.dX!, r.dScale, r.dB];
    }),
  }));
}

function adaptLayer(g: Geo): Candidate[] {
  const C = g.C, rng = new Rng(3);
  const W = rng.fill(new Float32Array(C * g.cin * g.k * g.k), Math.sqrt(2 / (g.cin * g.k * g.k)));
  const conv = (em: Emitter) => em.op('Conv', ['x', em.constant(f32([C, g.cin, g.k, g.k], W), 'W')], { kernel_shape: [g.k, g.k], pads: g.k === 3 ? [1, 1, 1, 1] : [0, 0, 0, 0] });
  const act = (em: Emitter, y: string) => (g.act === 'Relu' ? em.op('Relu', [y]) : em.op('Clip', [y, em.scalar(0), em.scalar(6)]));
  const inp = { x: [g.N, g.cin, g.H, g.H] };
  const convDims = dimsOf(g);
  return [
    {
      kind: 'adapt', form: 'inference (running stats)', chosen: false, reference: true,
      bytes: model(inp, bnInits(C), (em) => {
        const y = em.fresh('y');
        em.graph.nodes.push({ name: 'bn', opType: 'BatchNormalization', domain: '', inputs: [conv(em), 'scale', 'bias', 'rmean', 'rvar'], outputs: [y], attrs: {} });
        return [act(em, y)];
      }),
    },
    ...STATS_FORMS.map((f) => ({
      kind: 'adapt', form: `batch stats: ${f}`, chosen: f === 'bn-train',
      bytes: model(inp, bnInits(C), (em, m) => [act(em, lowered(em, m, conv(em), convDims, f)[0]!)]),
    })),
  ];
}

// ---------------------------------------------------------------- timing

interface Row { kind: string; form: string; cpuMs: number; vsRefCpu: number; medianMs: number; p25Ms: number; minMs: number; vsRef: number; vsRefP25: number; maxRelDiff: number | null; chosen: boolean }

/** Max over outputs of max |a − ref| / max |ref|. */
function relDiff(a: Float32Array[], ref: Float32Array[]): number {
  let worst = 0;
  for (let k = 0; k < Math.min(a.length, ref.length); k++) worst = Math.max(worst, relDiffOne(a[k]!, ref[k]!));
  return worst;
}

async function bench(g: Geo, cands: Candidate[]): Promise<Row[]> {
  const rng = new Rng(1);
  const feeds: Record<string, ort.Tensor> = {};
  const make = (n: string, d: number[], f: (v: number) => number) => { feeds[n] = toOrt(f32(d, rng.fill(new Float32Array(d.reduce((a, b) => a * b, 1)), 1).map(f))); };
  // Activations with a mean of 2 and std 1; gradients of std 1; moments of those activations.
  make('x', cands[0]!.kind === 'adapt' ? [g.N, g.cin, g.H, g.H] : dimsOf(g), (v) => v + 2);
  make('gy', dimsOf(g), (v) => v);
  feeds.bmean = toOrt(f32([g.C], stat(g.C, 2)));
  feeds.bvar = toOrt(f32([g.C], stat(g.C, 1)));
  const live: (Candidate & { session: ort.InferenceSession; times: number[]; cpu: number[]; result?: Float32Array[] })[] = [];
  for (const c of cands) live.push({ ...c, session: await createSession(c.bytes, { threads: 2 }), times: [], cpu: [] });
  for (let r = 0; r < WARMUP + ROUNDS; r++) {
    for (const c of live) {
      const inputs: Record<string, ort.Tensor> = {};
      for (const n of c.session.inputNames) inputs[n] = feeds[n]!;
      const t0 = performance.now(), u0 = process.cpuUsage();
      const out = await c.session.run(inputs);
      const dt = performance.now() - t0, du = process.cpuUsage(u0);
      c.result ??= c.session.outputNames.map((n) => Float32Array.from(out[n]!.data as Float32Array));
      if (r >= WARMUP) { c.times.push(dt); c.cpu.push((du.user + du.system) / 1000); }
    }
  }
  for (const c of live) await c.session.release();
  const ref = live.find((c) => c.reference)!;
  const checkRef = live.find((c) => c.kind === 'adapt' && !c.reference) ?? ref; // adapt: batch-stat forms compare with each other
  return live.map((c) => ({
    kind: c.kind, form: c.form, cpuMs: quantile(c.cpu, 0.5), vsRefCpu: quantile(c.cpu, 0.5) / quantile(ref.cpu, 0.5), medianMs: quantile(c.times, 0.5), p25Ms: quantile(c.times, 0.25), minMs: Math.min(...c.times),
    vsRef: quantile(c.times, 0.5) / quantile(ref.times, 0.5), vsRefP25: quantile(c.times, 0.25) / quantile(ref.times, 0.25),
    maxRelDiff: c.reference && c.kind === 'adapt' ? null : relDiff(c.result!, checkRef.result!),
    chosen: c.chosen,
  }));
}

async function main() {
  const results: { layer: string; model: string; kind: string; rows: Row[] }[] = [];
  for (const g of GEOS) {
    const kinds: [string, () => Candidate[]][] = [['fwd', () => forwardLayer(g)], ['bwd', () => backwardLayer(g)], ['adapt', () => adaptLayer(g)]];
    for (const [kind, build] of kinds) {
      if (ONLY && ONLY !== kind) continue;
      const rows = await bench(g, build());
      results.push({ layer: tag(g), model: g.model, kind, rows });
      console.log(`\n${tag(g)} ${g.model} ${kind}`);
      for (const r of rows) {
        console.log(`  ${r.form.padEnd(30)} median ${r.medianMs.toFixed(2).padStart(7)} ms  p25 ${r.p25Ms.toFixed(2).padStart(7)}  min ${r.minMs.toFixed(2).padStart(7)}  ×ref ${r.vsRef.toFixed(2)} (p25 ${r.vsRefP25.toFixed(2)})  cpu ${r.cpuMs.toFixed(1).padStart(7)} ms ×ref ${r.vsRefCpu.toFixed(2)}  diff ${r.maxRelDiff === null ? '-' : r.maxRelDiff.toExponential(1)}${r.chosen ? '  ← chosen' : ''}`);
      }
    }
  }
  const mismatches = results.flatMap((res) => res.rows.filter((r) => r.maxRelDiff !== null && r.maxRelDiff > 1e-4).map((r) => `${res.layer} ${r.kind} ${r.form}: ${r.maxRelDiff}`));
  const meta = {
    date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, cpu: os.cpus()[0]?.model, loadavgEnd: os.loadavg(),
    onnxruntime: ort.env.versions.node ?? 'unknown', threads: 2, graphOptimizationLevel: 'all', opset: OPSET, rounds: ROUNDS, warmup: WARMUP,
  };
  const dir = new URL('./results/', import.meta.url);
  mkdirSync(dir, { recursive: true });
  const suffix = argOf('--tag') ? `-${argOf('--tag')}` : '';
  writeFileSync(new URL(`bn-forms${suffix}.json`, dir), JSON.stringify({ meta, results, mismatches }, null, 2) + '\n');
  const md: string[] = [
    '# Train-mode BatchNorm formulations',
    '',
    `onnxruntime-node ${meta.onnxruntime}, ${meta.cpus} CPUs (${meta.cpu}), 2 intra-op threads, graph optimization 'all', opset ${OPSET}. ` +
      `${ROUNDS} interleaved runs per candidate after ${WARMUP} warm-up runs; load average at the end ${meta.loadavgEnd.map((x) => x.toFixed(2)).join(' ')} ` +
      '(the machine was shared with other work: read the ratios, not the absolute times). ' +
      '×ref is the median over the median of the first candidate of the same layer and kind (p25: the same with 25th percentiles). ' +
      'diff is the max abs difference to that candidate (adapt: to the decomposed batch-statistics form) over its max abs value, worst output. ' +
      'CPU ms: user + system time of the process (both onnxruntime threads; spinning is off) over the run, median: less sensitive to waiting for a core than wall time, still inflated by memory-bandwidth contention. ' +
      '✓ marks what refit emits. fwd: moments, normalisation and running-statistic updates; bwd: dX, dScale, dB; ' +
      'adapt: Conv → BN → activation with constant weights (inference folds the BN into the conv). Generated by `npx tsx bench/bn-forms.ts`.',
    '',
    '| layer | model | kind | form | ms median | ms p25 | ms min | ×ref | ×ref p25 | CPU ms median | ×ref CPU | diff | chosen |',
    '|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|',
  ];
  for (const res of results) for (const r of res.rows) {
    md.push(`| ${res.layer} | ${res.model} | ${r.kind} | ${r.form} | ${r.medianMs.toFixed(2)} | ${r.p25Ms.toFixed(2)} | ${r.minMs.toFixed(2)} | ${r.vsRef.toFixed(2)} | ${r.vsRefP25.toFixed(2)} | ${r.cpuMs.toFixed(1)} | ${r.vsRefCpu.toFixed(2)} | ${r.maxRelDiff === null ? '' : r.maxRelDiff.toExponential(1)} | ${r.chosen ? '✓' : ''} |`);
  }
  if (mismatches.length) md.push('', `**Mismatches:** ${mismatches.join('; ')}`);
  writeFileSync(new URL(`bn-forms${suffix}.md`, dir), md.join('\n') + '\n');
  if (mismatches.length) { console.error('mismatching candidates:\n' + mismatches.join('\n')); process.exitCode = 1; }
}

// ---------------------------------------------------------------- whole models, old forms vs chosen

const STEP_MODELS: Record<string, { chw: number[]; batch: number }> = {
  cnn28: { chw: [1, 28, 28], batch: 64 }, resnet18_64: { chw: [3, 64, 64], batch: 64 },
  resnet18_224: { chw: [3, 224, 224], batch: 16 }, mobilenet_v2_224: { chw: [3, 224, 224], batch: 16 },
};

/** One child: the model's `cfg` call compiled with the old or the chosen forms; per-call wall and CPU ms. */
async function stepChild(variant: 'old' | 'new', modelName: string, cfg: string, reps: number) {
  const { loadModel } = await import('../src/model.ts');
  const { createAdapter } = await import('../src/tta/index.ts');
  const { bnGradForm } = await import('../src/autodiff/rules/norm.ts');
  if (variant === 'old') { batchStatsForm.current = 'decomposed'; bnGradForm.current = OLD_BN_GRAD_FORM; }
  const m = STEP_MODELS[modelName]!;
  const model = await loadModel(new URL(`../tmp/foreign-models/${modelName}.onnx`, import.meta.url).pathname, { threads: 2 });
  const rng = new Rng(1);
  const x = f32([m.batch, ...m.chw], rng.fill(new Float32Array(m.batch * m.chw.reduce((a, b) => a * b, 1)), 1));
  const adapter = cfg === 'infer' ? null : createAdapter(model, cfg as never, {});
  const fn = () => (adapter ? adapter.predict(x) : model.run({ x }, { outputs: ['logits'] }));
  const t0 = performance.now();
  await fn();
  const first = performance.now() - t0;
  await fn();
  const wall: number[] = [], cpu: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t = performance.now(), u = process.cpuUsage();
    await fn();
    const du = process.cpuUsage(u);
    wall.push(performance.now() - t); cpu.push((du.user + du.system) / 1000);
  }
  return { wall, cpu, first };
}

async function steps() {
  const models = argOf('--steps')!.split(','), configs = (argOf('--configs') ?? 'infer,bn-adapt,tent').split(',');
  const rounds = Number(argOf('--rounds') ?? 4), reps = Number(argOf('--reps') ?? 5);
  const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  const rows: Record<string, unknown>[] = [];
  const md = [
    '# Train-mode BatchNorm forms on whole models',
    '',
    `\`npx tsx bench/bn-forms.ts ${args.join(' ')}\` on ${new Date().toISOString().slice(0, 16)} UTC: each (model, configuration) compiled with the old forms ` +
      "('decomposed' batch statistics, Mul/Add gradient) and with the chosen ones, each in its own child process, the two alternating for " +
      `${rounds} rounds of ${reps} calls (after one compiling call and one warm-up call). 2 onnxruntime threads. The machine (2 cores) was shared with other jobs: ` +
      'the load average is given per row; CPU ms (user + system of the child per call) is the steadier figure, the fastest call the least disturbed one. ' +
      "'infer' runs the same graph on both sides (no BatchNorm lowering): its new/old ratios show how far the noise alone moves a ratio.",
    '',
    '| model | config | wall median old | new | new/old | fastest old | new | new/old | CPU median old | new | new/old | load average start → end |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
  ];
  const med = (xs: number[]) => quantile(xs, 0.5);
  for (const model of models) for (const cfg of configs) {
    const acc = { old: { wall: [] as number[], cpu: [] as number[] }, new: { wall: [] as number[], cpu: [] as number[] } };
    const l0 = load();
    for (let r = 0; r < rounds; r++) for (const v of (r % 2 ? ['old', 'new'] : ['new', 'old']) as ('old' | 'new')[]) {
      const p = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--step-child', v, model, cfg, String(reps)], { encoding: 'utf8', maxBuffer: 1 << 26 });
      if (p.status !== 0) throw new Error(`${model}/${cfg} (${v}) failed: ${p.stderr.slice(-1500)}`);
      const j = JSON.parse(p.stdout.trim().split('\n').pop()!);
      acc[v].wall.push(...j.wall); acc[v].cpu.push(...j.cpu);
    }
    const o = acc.old, n = acc.new, l1 = load();
    const row = { model, config: cfg, old: o, new: n, loadStart: l0, loadEnd: l1 };
    rows.push(row);
    const f = (v: number) => v.toFixed(1), q = (a: number, b: number) => (a / b).toFixed(2);
    const line = `| ${model} | ${cfg} | ${f(med(o.wall))} | ${f(med(n.wall))} | ${q(med(n.wall), med(o.wall))} | ${f(Math.min(...o.wall))} | ${f(Math.min(...n.wall))} | ${q(Math.min(...n.wall), Math.min(...o.wall))} | ${f(med(o.cpu))} | ${f(med(n.cpu))} | ${q(med(n.cpu), med(o.cpu))} | ${l0} → ${l1} |`;
    md.push(line);
    console.log(line);
  }
  const dir = new URL('./results/', import.meta.url);
  writeFileSync(new URL('bn-forms-steps.json', dir), JSON.stringify({ date: new Date().toISOString(), rows }, null, 1) + '\n');
  writeFileSync(new URL('bn-forms-steps.md', dir), md.join('\n') + '\n');
}

if (args[0] === '--step-child') process.stdout.write(JSON.stringify(await stepChild(args[1] as 'old' | 'new', args[2]!, args[3]!, Number(args[4]))) + '\n');
else if (argOf('--steps')) await steps();
else await main();
