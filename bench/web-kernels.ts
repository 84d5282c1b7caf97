// Where a step's time goes in onnxruntime-web's wasm against onnxruntime-node (issue 14: why the
// page is more than 1.5× Node). Both runtimes run inside this Node process, one thread each, on
// the same step graph (the portable standard-op graph a page gets):
//   1. kernel throughput: MatMul and 3×3 Conv shapes of the shipped models, GFLOP/s in each runtime;
//   2. a per-op profile of whole steps (onnxruntime's profiler in both; onnxruntime-web writes its
//      events to stdout, which is captured here), kernel ms per step by op type.
//
//   npx tsx bench/web-kernels.ts [--cases cnn-tent,vit-lora] [--batch 32] [--runs 15] [--out bench/results/web-kernels]
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as ortNode from 'onnxruntime-node';
import * as ortWeb from 'onnxruntime-web';
import * as refit from '../src/index.ts';
import { ModelBuilder } from '../src/onnx/model-builder.ts';
import { encodeModel } from '../src/onnx/proto.ts';
import type { Model } from '../src/onnx/ir.ts';
import { median } from './stats.ts';

const arg = (k: string, d: string) => { const i = process.argv.indexOf(`--${k}`); return i > 0 ? process.argv[i + 1]! : d; };
const cases = arg('cases', 'cnn-tent,vit-lora').split(',');
const batch = Number(arg('batch', '32'));
const runs = Number(arg('runs', '15'));
const out = arg('out', 'bench/results/web-kernels');
const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
ortWeb.env.wasm.numThreads = 1;

type Ort = typeof ortNode;
type Feeds = Record<string, unknown>;

async function timeRuns(session: { run(f: Feeds): Promise<unknown> }, feeds: Feeds, n: number): Promise<number[]> {
  for (let i = 0; i < 3; i++) await session.run(feeds);
  const ms: number[] = [];
  for (let i = 0; i < n; i++) { const t = performance.now(); await session.run(feeds); ms.push(performance.now() - t); }
  return ms;
}

const nodeSession = (bytes: Uint8Array, extra: Record<string, unknown> = {}) =>
  ortNode.InferenceSession.create(bytes, { intraOpNumThreads: 1, graphOptimizationLevel: 'all', enableMemPattern: false, ...extra });
const webSession = (bytes: Uint8Array, extra: Record<string, unknown> = {}) =>
  ortWeb.InferenceSession.create(bytes, { executionProviders: ['wasm'], graphOptimizationLevel: 'all', enableMemPattern: false, ...extra });

if (process.argv.includes('--child')) {
  const { model, feeds } = await stepGraph(arg('child', ''));
  const sw = await webSession(encodeModel(model), { enableProfiling: true });
  const ms = await timeRuns(sw, feeds(ortWeb as unknown as Ort), runs);
  await sw.endProfiling();
  await sw.release();
  console.log(`TIMES ${JSON.stringify(ms)}`);
  process.exit(0);
}

// ---- 1. kernel throughput ----------------------------------------------------------------------
function kernelModel(kind: 'matmul' | 'conv', s: number[]): { bytes: Uint8Array; x: number[]; flops: number } {
  const b = new ModelBuilder({ opset: 17 });
  const fill = (n: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i));
  if (kind === 'matmul') {
    const [M, K, N] = s as [number, number, number];
    b.input('x', 'float32', [M, K]);
    b.initializer('w', { dtype: 'float32', dims: [K, N], data: fill(K * N) });
    b.node('MatMul', ['x', 'w'], ['y']);
    b.output('y');
    return { bytes: encodeModel(b.build()), x: [M, K], flops: 2 * M * K * N };
  }
  const [N, C, H, Co] = s as [number, number, number, number];
  b.input('x', 'float32', [N, C, H, H]);
  b.initializer('w', { dtype: 'float32', dims: [Co, C, 3, 3], data: fill(Co * C * 9) });
  b.node('Conv', ['x', 'w'], ['y'], { pads: [1, 1, 1, 1], kernel_shape: [3, 3] });
  b.output('y');
  return { bytes: encodeModel(b.build()), x: [N, C, H, H], flops: 2 * N * Co * C * 9 * H * H };
}

const kernels: { kind: 'matmul' | 'conv'; shape: number[]; what: string }[] = [
  { kind: 'matmul', shape: [batch * 50, 64, 64], what: 'ViT attention projection (d 64)' },
  { kind: 'matmul', shape: [batch * 50, 64, 256], what: 'ViT MLP up' },
  { kind: 'matmul', shape: [batch * 50, 256, 64], what: 'ViT MLP down' },
  { kind: 'conv', shape: [batch, 32, 28, 32], what: 'CNN layer1 3×3' },
  { kind: 'conv', shape: [batch, 64, 14, 64], what: 'CNN layer2 3×3' },
  { kind: 'conv', shape: [batch, 128, 7, 128], what: 'CNN layer3 3×3' },
];

const kernelRows: Record<string, unknown>[] = [];
for (const k of kernels) {
  const m = kernelModel(k.kind, k.shape);
  const data = Float32Array.from({ length: m.x.reduce((a, b) => a * b, 1) }, (_, i) => Math.cos(i));
  const sn = await nodeSession(m.bytes), sw = await webSession(m.bytes);
  const nMs = median(await timeRuns(sn, { x: new ortNode.Tensor('float32', data, m.x) }, 2 * runs));
  const wMs = median(await timeRuns(sw, { x: new ortWeb.Tensor('float32', data, m.x) }, 2 * runs));
  await sn.release(); await sw.release();
  const row = { kernel: `${k.kind === 'conv' ? 'Conv' : 'MatMul'} ${k.shape.join('×')}`, what: k.what, nodeMs: nMs, webMs: wMs, nodeGflops: m.flops / nMs / 1e6, webGflops: m.flops / wMs / 1e6, ratio: wMs / nMs, load: load() };
  kernelRows.push(row);
  console.log(`${row.kernel} (${k.what}): node ${nMs.toFixed(2)} ms ${row.nodeGflops.toFixed(1)} GFLOP/s, web ${wMs.toFixed(2)} ms ${row.webGflops.toFixed(1)} GFLOP/s, web/node ${row.ratio.toFixed(2)}`);
}

// ---- 2. per-op profile of whole steps ----------------------------------------------------------
interface ProfileEvent { cat?: string; name?: string; ts: number; dur: number; args?: { op_name?: string } }

/** Kernel ms per run by op type, over the last `n` runs in the profile. */
function byOp(events: ProfileEvent[], n: number): Map<string, number> {
  const last = events.filter((e) => e.name === 'model_run').slice(-n);
  const by = new Map<string, number>();
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name?.endsWith('_kernel_time') || !last.some((r) => e.ts >= r.ts && e.ts <= r.ts + r.dur)) continue;
    const op = e.args?.op_name ?? '?';
    by.set(op, (by.get(op) ?? 0) + e.dur / 1000 / n);
  }
  return by;
}

async function stepGraph(c: string): Promise<{ model: Model; feeds: (ort: Ort) => Feeds }> {
  const [name, kind] = c.split('-') as [string, string];
  const source = await refit.loadModel(new Uint8Array(readFileSync(`models/fmnist-${name}.onnx`)));
  let owner = source;
  let step: refit.TrainStep;
  if (kind === 'tent') {
    const a = refit.tta.createAdapter(source, 'tent') as unknown as { step: refit.TrainStep; model: refit.RefitModel };
    step = a.step; owner = a.model;
  } else if (kind === 'lora') {
    const p = refit.peft.withAdapter(source, 'w', refit.peft.lora({ targets: name === 'cnn' ? /conv$/ : /attn\.(q|v)$/, rank: 4, alpha: 8, seed: 1 }));
    step = p.compileTrainStep({ trainable: p.trainableNames('w'), loss: refit.losses.crossEntropy({ logits: 'logits' }), batchNorm: 'train' });
    owner = p;
  } else {
    step = source.compileTrainStep({ trainable: source.parameterNames(), loss: refit.losses.crossEntropy({ logits: 'logits' }), batchNorm: 'train' });
  }
  const { graph } = await step.compile({ x: { dtype: 'float32', dims: [batch, 1, 28, 28] } });
  const x = Float32Array.from({ length: batch * 784 }, (_, i) => ((i * 7919) % 1000) / 1000);
  const y = BigInt64Array.from({ length: batch }, (_, i) => BigInt(i % 10));
  const feeds = (ort: Ort): Feeds => Object.fromEntries(graph.model.graph.inputs.map((inp) => {
    if (graph.paramInputs.includes(inp.name)) { const t = owner.param(inp.name); return [inp.name, new ort.Tensor('float32', t.data as Float32Array, t.dims)]; }
    if (inp.name === 'x') return [inp.name, new ort.Tensor('float32', x, [batch, 1, 28, 28])];
    return [inp.name, new ort.Tensor('int64', y, [batch])]; // the labels
  }));
  return { model: graph.model, feeds };
}

const work = mkdtempSync(join(tmpdir(), 'refit-web-kernels-'));
const stepRows: Record<string, unknown>[] = [];
for (const c of cases) {
  const { model, feeds } = await stepGraph(c);
  const bytes = encodeModel(model);
  const sn = await nodeSession(bytes, { enableProfiling: true, profileFilePrefix: join(work, 'node') });
  const nMs = await timeRuns(sn, feeds(ortNode as Ort), runs);
  await sn.endProfiling();
  await sn.release();
  const file = readdirSync(work).find((f) => f.startsWith('node') && f.endsWith('.json'))!;
  const nodeOps = byOp(JSON.parse(readFileSync(join(work, file), 'utf8')) as ProfileEvent[], runs);
  rmSync(join(work, file));
  // onnxruntime-web's wasm prints each profile event as a line of JSON to the process's stdout,
  // past any JavaScript hook: run it in a child process and read its output.
  const child = spawnSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), '--child', c, '--batch', String(batch), '--runs', String(runs)], { encoding: 'utf8', maxBuffer: 1 << 30 });
  if (child.status !== 0) throw new Error(`the wasm profile of ${c} failed: ${child.stderr}`);
  const lines = child.stdout.split('\n').map((l) => l.trim().replace(/,$/, ''));
  const wMs = JSON.parse(lines.find((l) => l.startsWith('TIMES '))!.slice(6)) as number[];
  const events = lines.filter((l) => l.startsWith('{"cat"')).map((l) => JSON.parse(l) as ProfileEvent);
  const webOps = byOp(events, runs);
  const sum = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);
  const ops = [...new Set([...nodeOps.keys(), ...webOps.keys()])].sort((a, b) => (webOps.get(b) ?? 0) - (webOps.get(a) ?? 0));
  const row = { case: `${c}-b${batch}`, nodeMs: median(nMs), webMs: median(wMs), ratio: median(wMs) / median(nMs), nodeKernelMs: sum(nodeOps), webKernelMs: sum(webOps),
    ops: ops.map((op) => ({ op, nodeMs: nodeOps.get(op) ?? 0, webMs: webOps.get(op) ?? 0 })), load: load() };
  stepRows.push(row);
  console.log(`${row.case}: node ${row.nodeMs.toFixed(1)} ms, web ${row.webMs.toFixed(1)} ms (profiled), web/node ${row.ratio.toFixed(2)}; kernel ms node ${row.nodeKernelMs.toFixed(1)}, web ${row.webKernelMs.toFixed(1)}`);
  for (const o of row.ops.slice(0, 8)) console.log(`  ${o.op.padEnd(20)} node ${o.nodeMs.toFixed(2).padStart(8)}  web ${o.webMs.toFixed(2).padStart(8)}`);
}
rmSync(work, { recursive: true, force: true });

const f = (v: number, d = 1) => v.toFixed(d);
const md = [`# onnxruntime-web (wasm) against onnxruntime-node, kernel by kernel`, '',
  `\`npx tsx bench/web-kernels.ts ${process.argv.slice(2).join(' ')}\` (${new Date().toISOString()}); both runtimes in one Node process, 1 thread each, optimization 'all'; medians.`, '',
  '## Kernel throughput', '', '| kernel | what | Node ms | wasm ms | Node GFLOP/s | wasm GFLOP/s | wasm / Node | load |', '|---|---|---:|---:|---:|---:|---:|---|',
  ...kernelRows.map((r) => `| ${r.kernel} | ${r.what} | ${f(r.nodeMs as number, 2)} | ${f(r.webMs as number, 2)} | ${f(r.nodeGflops as number)} | ${f(r.webGflops as number)} | ${f(r.ratio as number, 2)} | ${r.load} |`), '',
  '## Steps: kernel ms per step by op type (profiler on)', '',
  ...stepRows.flatMap((r) => {
    const ops = r.ops as { op: string; nodeMs: number; webMs: number }[];
    return [`### ${r.case}: Node ${f(r.nodeMs as number)} ms, wasm ${f(r.webMs as number)} ms, wasm / Node ${f(r.ratio as number, 2)} (load ${r.load})`, '',
      '| op | Node ms | wasm ms | wasm / Node | share of wasm kernel time |', '|---|---:|---:|---:|---:|',
      ...ops.filter((o) => o.webMs >= 0.5 || o.nodeMs >= 0.5).map((o) => `| ${o.op} | ${f(o.nodeMs, 2)} | ${f(o.webMs, 2)} | ${o.nodeMs > 0 ? f(o.webMs / o.nodeMs, 1) : '–'} | ${f((100 * o.webMs) / (r.webKernelMs as number))} % |`), ''];
  })];
writeFileSync(`${out}.md`, md.join('\n'));
writeFileSync(`${out}.json`, JSON.stringify({ command: `npx tsx bench/web-kernels.ts ${process.argv.slice(2).join(' ')}`, date: new Date().toISOString(), kernels: kernelRows, steps: stepRows }, null, 2));
console.log(`wrote ${out}.md and .json`);
