// Times each candidate form of the ReLU6/Clip and Relu input gradients and of the MaxPool input
// gradient on the activation shapes of MobileNetV2 (224, batch 16) and ResNet-18 (224 batch 16,
// 64 batch 64), in onnxruntime-node (graph optimization 'all', 2 intra-op threads, opset 13 as
// the torchvision exports), checks every candidate against the old form, and writes
// bench/results/activation-forms.{json,md}. Candidates are built by the functions the rules use.
//
//   npx tsx bench/activation-forms.ts [--rounds 15] [--quick] [--only clip|relu|maxpool]
//   npx tsx bench/activation-forms.ts --tent [--model mobilenet_v2_224] [--rounds 8]
//        the whole Tent step (tta.createAdapter(model, 'tent').predict) of a foreign model from
//        tmp/foreign-models (bench/foreign_torch.py --export), compiled once with the old Clip and
//        Relu rules and once with the new ones, the two adapters alternating in one process.
//
// Rounds interleave the candidates of a case (one run of each per round), so drift in machine
// load hits them alike. Each session runs with onnxruntime's profiler on; 'kernel ms' is the sum
// of the candidate's node kernel times per run (the gradient ops alone, without feeding inputs
// or copying outputs), 'wall ms' the time of session.run with a preallocated output.
// Read the ratios to the old form, not the absolute times, on a shared machine.
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { ModelBuilder } from '../src/onnx/model-builder.ts';
import { Emitter } from '../src/onnx/emitter.ts';
import { encodeModel, decodeModel } from '../src/onnx/proto.ts';
import { toOrt, ort } from '../src/onnx/runtime.ts';
import { f32 } from '../src/onnx/tensor.ts';
import { Rng } from '../src/util/rng.ts';
import { clipDx, CLIP_GRAD_FORM, type ClipGradForm } from '../src/autodiff/rules/activations-extra.ts';
import { reluDx, RELU_GRAD_FORM, type ReluGradForm } from '../src/autodiff/rules/activations.ts';
import { maxPoolDx, pickMaxPoolForm, type PoolGeom } from '../src/autodiff/rules/pool.ts';
import { registerRules, ruleFor, type GradRule } from '../src/autodiff/rule.ts';
import { loadModel } from '../src/model.ts';
import { createAdapter } from '../src/tta/index.ts';
import { quantile, relDiff } from './stats.ts';

const args = process.argv.slice(2);
if (args.includes('--help')) {
  console.log('npx tsx bench/activation-forms.ts [--rounds N] [--quick] [--only clip|relu|maxpool]\nnpx tsx bench/activation-forms.ts --tent [--model mobilenet_v2_224] [--rounds 8]');
  process.exit(0);
}
const argOf = (k: string) => (args.includes(k) ? args[args.indexOf(k) + 1] : undefined);
const ROUNDS = Number(argOf('--rounds') ?? 0) || (args.includes('--quick') ? 5 : 15);
const WARMUP = 2;
const ONLY = argOf('--only');
const OPSET = 13;
const THREADS = 2;
const root = new URL('..', import.meta.url).pathname;
const profDir = join(root, 'tmp', 'activation-forms-profile');

type Dims = Record<string, number[]>;
interface Candidate { form: string; bytes: Uint8Array; old: boolean; chosen: boolean; exact: boolean; note?: string; outputs?: Dims }
interface Case { group: 'clip' | 'relu' | 'maxpool'; name: string; inputs: Dims; feeds: () => Record<string, Float32Array>; outputs: Dims; candidates: Candidate[] }

/** A model with float inputs and the float outputs `outs` built by `body`. */
function model(opset: number, inputs: Dims, body: (em: Emitter) => string[]): Uint8Array {
  const b = new ModelBuilder({ opset });
  for (const [n, d] of Object.entries(inputs)) b.input(n, 'float32', d);
  const m = b.build();
  const em = new Emitter(m.graph, opset);
  body(em).forEach((o, i) => {
    m.graph.nodes.push({ name: `out_node${i}`, opType: 'Identity', domain: '', inputs: [o], outputs: [`out${i}`], attrs: {} });
    b.output(`out${i}`);
  });
  return encodeModel(m);
}

const prod = (xs: number[]) => xs.reduce((a, b) => a * b, 1);

/** x with values exactly at lo and hi (and at 0) mixed in, its clip y, and a dY. */
function activationFeeds(shape: number[], lo: number | undefined, hi: number | undefined) {
  return () => {
    const n = prod(shape), rng = new Rng(7);
    const x = rng.fill(new Float32Array(n), 4, 'normal'), dy = rng.fill(new Float32Array(n), 1, 'normal');
    for (let i = 0; i < n; i += 53) x[i] = lo ?? 0;
    for (let i = 7; i < n; i += 59) x[i] = hi ?? 0;
    const y = x.map((v) => Math.min(hi ?? Infinity, Math.max(lo ?? -Infinity, v)));
    return { x, y, dy };
  };
}

function clipCase(name: string, shape: number[], lo: number | undefined, hi: number | undefined): Case {
  const inputs = { x: shape, y: shape, dy: shape };
  const forms: [ClipGradForm, 'x' | 'y'][] = [['where', 'x'], ['mul', 'x'], ['mul', 'y'], ['where', 'y']];
  const candidates = forms.map(([f, src]) => ({
    form: `${f}(${src})`, old: f === 'where' && src === 'x', chosen: f === CLIP_GRAD_FORM && src === 'y', exact: true,
    bytes: model(OPSET, inputs, (em) => [clipDx(em, src, lo === undefined ? undefined : em.scalar(lo), hi === undefined ? undefined : em.scalar(hi), 'dy', f)]),
  }));
  return { group: 'clip', name, inputs, outputs: { out0: shape }, feeds: activationFeeds(shape, lo, hi), candidates };
}

function reluCase(name: string, shape: number[]): Case {
  const inputs = { x: shape, y: shape, dy: shape };
  const forms: [ReluGradForm, 'x' | 'y'][] = [['mul', 'x'], ['mul', 'y'], ['where', 'x']];
  const candidates = forms.map(([f, src]) => ({
    form: `${f}(${src})`, old: f === 'mul' && src === 'x', chosen: f === RELU_GRAD_FORM && src === 'y', exact: true,
    bytes: model(OPSET, inputs, (em) => [reluDx(em, src, 'dy', f)]),
  }));
  return { group: 'relu', name, inputs, outputs: { out0: shape }, feeds: activationFeeds(shape, 0, undefined), candidates };
}

/**
 * MaxPool's Indices plus one overwrite-scatter per phase: outputs ⌈k/s⌉ apart on every axis have
 * disjoint windows, so no index repeats within one scatter (valid before opset 16); summed.
 */
function scatterPhases(em: Emitter, g: PoolGeom, dY: string, indices: string): string {
  const P = g.k.map((k, i) => Math.ceil(((k - 1) * g.dil[i]! + 1) / g.strides[i]!));
  const zeros = em.op('ConstantOfShape', [em.ints([g.N * g.C * prod(g.inSp)])], { value: f32([1], [0]) });
  const axes = g.inSp.map((_, i) => i + 2);
  const parts: string[] = [];
  for (let q = 0; q < prod(P); q++) {
    const start: number[] = [];
    for (let i = g.nd - 1, r = q; i >= 0; i--) { start[i] = r % P[i]!; r = Math.floor(r / P[i]!); }
    const sl = (t: string) => em.op('Slice', [t, em.ints(start), em.ints(g.outSp), em.ints(axes), em.ints(P)]);
    parts.push(em.op('ScatterElements', [zeros, em.reshape(sl(indices), [-1]), em.reshape(sl(dY), [-1])], { axis: 0 }));
  }
  return em.reshape(em.op('Sum', parts), [g.N, g.C, ...g.inSp]);
}

function maxPoolCase(name: string, N: number, C: number, H: number): Case {
  const Ho = Math.floor((H + 2 - 3) / 2) + 1;
  const g: PoolGeom = { nd: 2, N, C, inSp: [H, H], outSp: [Ho, Ho], k: [3, 3], strides: [2, 2], dil: [1, 1], padB: [1, 1], padE: [1, 1] };
  const attrs = { kernel_shape: g.k, strides: g.strides, pads: [...g.padB, ...g.padE] };
  const xs = [N, C, H, H], ys = [N, C, Ho, Ho];
  const inputs = { x: xs, dy: ys };
  const picked = pickMaxPoolForm(g, OPSET);
  const candidates: Candidate[] = [
    {
      form: 'onehot-argmax', old: true, chosen: picked === 'onehot-argmax', exact: true,
      bytes: model(OPSET, inputs, (em) => { const y = em.op('MaxPool', ['x'], attrs); return [maxPoolDx(em, g, 'x', 'dy', null, 'onehot-argmax'), y]; }),
    },
    {
      form: 'indices + scatter per phase', old: false, chosen: false, exact: true,
      bytes: model(OPSET, inputs, (em) => { const [y, i] = em.emit('MaxPool', ['x'], attrs, 2); return [scatterPhases(em, g, 'dy', i!), y!]; }),
    },
    {
      form: 'indices + scatter-add (opset 16)', old: false, chosen: false, exact: true, note: 'needs opset ≥ 16; the torchvision exports are opset 13',
      bytes: model(16, inputs, (em) => { const [y, i] = em.emit('MaxPool', ['x'], attrs, 2); return [maxPoolDx(em, g, 'x', 'dy', i!, 'scatter-add'), y!]; }),
    },
    { form: 'forward MaxPool only', old: false, chosen: false, exact: false, outputs: { out0: ys }, bytes: model(OPSET, { x: xs }, (em) => [em.op('MaxPool', ['x'], attrs)]) },
  ];
  const feeds = () => {
    // Post-ReLU-like input: a third exact zeros (all-zero windows: ties), small integers (ties).
    const rng = new Rng(3);
    const x = rng.fill(new Float32Array(prod(xs)), 1, 'normal').map((v) => Math.max(0, Math.round(v * 4)));
    return { x, dy: rng.fill(new Float32Array(prod(ys)), 1, 'normal') };
  };
  return { group: 'maxpool', name, inputs, outputs: { out0: xs, out1: ys }, feeds, candidates };
}

const CASES: (() => Case)[] = [
  () => clipCase('ReLU6 [16,96,112,112]', [16, 96, 112, 112], 0, 6),
  () => clipCase('ReLU6 [16,144,56,56]', [16, 144, 56, 56], 0, 6),
  () => clipCase('ReLU6 [16,192,28,28]', [16, 192, 28, 28], 0, 6),
  () => clipCase('Clip min only [16,144,56,56]', [16, 144, 56, 56], 0, undefined),
  () => clipCase('Clip max only [16,144,56,56]', [16, 144, 56, 56], undefined, 6),
  () => reluCase('Relu [16,64,112,112]', [16, 64, 112, 112]),
  () => reluCase('Relu [64,64,32,32]', [64, 64, 32, 32]),
  () => reluCase('Relu [16,144,56,56]', [16, 144, 56, 56]),
  () => maxPoolCase('MaxPool 3x3 s2 p1 [16,64,112,112]', 16, 64, 112),
  () => maxPoolCase('MaxPool 3x3 s2 p1 [64,64,32,32]', 64, 64, 32),
];

// ---------------------------------------------------------------- timing



interface Row { form: string; kernelMs: number; wallMs: number; kernelVsOld: number; wallVsOld: number; maxRelDiff: number | null; old: boolean; chosen: boolean; nodes: Record<string, number>; note?: string }

/** Per-run kernel ms of one profile, by node and in total (the output Identity left out). */
function readProfile(prefix: string, runs: number): { total: number[]; byNode: Record<string, number> } {
  const file = readdirSync(profDir).filter((f) => f.startsWith(`${prefix}_20`)).sort().pop();
  if (!file) throw new Error(`no profile written for ${prefix} in ${profDir}`);
  const ev = JSON.parse(readFileSync(join(profDir, file), 'utf8')) as { cat: string; name: string; dur: number; args?: { op_name?: string } }[];
  const kernels = ev.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time') && !e.name.startsWith('out_node'));
  // Runs are the model_run spans in order; a node's events fall inside one.
  const spans = ev.filter((e) => e.cat === 'Session' && e.name === 'model_run') as unknown as { ts: number; dur: number }[];
  const total = spans.map((s) => kernels.filter((k) => (k as unknown as { ts: number }).ts >= s.ts && (k as unknown as { ts: number }).ts <= s.ts + s.dur).reduce((a, k) => a + k.dur, 0) / 1000);
  const byNode: Record<string, number[]> = {};
  for (const k of kernels) (byNode[`${k.args?.op_name}:${k.name.replace('_kernel_time', '')}`] ??= []).push(k.dur / 1000);
  return { total: total.slice(-runs), byNode: Object.fromEntries(Object.entries(byNode).map(([n, v]) => [n, quantile(v.slice(-runs), 0.5)])) };
}

async function benchCase(c: Case, idx: number): Promise<Row[]> {
  const data = c.feeds();
  const feeds: Record<string, ort.Tensor> = {};
  for (const [n, d] of Object.entries(c.inputs)) feeds[n] = toOrt(f32(d, data[n]!));
  const live = [];
  for (const [j, cand] of c.candidates.entries()) {
    const prefix = `case${idx}-${j}`;
    const session = await ort.InferenceSession.create(cand.bytes, {
      graphOptimizationLevel: 'all', executionProviders: ['cpu'], intraOpNumThreads: THREADS, interOpNumThreads: 1,
      enableProfiling: true, profileFilePrefix: join(profDir, prefix),
      extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
    });
    const fetches: Record<string, ort.Tensor> = {};
    const outs = cand.outputs ?? c.outputs;
    for (const o of session.outputNames) fetches[o] = new ort.Tensor('float32', new Float32Array(prod(outs[o]!)), outs[o]!);
    live.push({ ...cand, prefix, session, fetches, wall: [] as number[], result: undefined as Float32Array | undefined });
  }
  for (let r = 0; r < WARMUP + ROUNDS; r++) {
    for (const l of live) {
      const inputs: Record<string, ort.Tensor> = {};
      for (const n of l.session.inputNames) inputs[n] = feeds[n]!;
      const t0 = performance.now();
      const out = await l.session.run(inputs, l.fetches);
      const dt = performance.now() - t0;
      if (r >= WARMUP) l.wall.push(dt);
      l.result ??= (out.out0!.data as Float32Array).slice();
    }
  }
  const rows: Row[] = [];
  for (const l of live) {
    (l.session as unknown as { endProfiling(): void }).endProfiling();
    await new Promise((res) => setTimeout(res, 200));
    const prof = readProfile(l.prefix, ROUNDS);
    await l.session.release();
    rows.push({
      form: l.form, kernelMs: quantile(prof.total, 0.5), wallMs: quantile(l.wall, 0.5), kernelVsOld: 0, wallVsOld: 0,
      maxRelDiff: l.exact ? relDiff(l.result!, live.find((o) => o.old)!.result!) : null, old: l.old, chosen: l.chosen, nodes: prof.byNode, note: l.note,
    });
  }
  const old = rows.find((r) => r.old)!;
  for (const r of rows) { r.kernelVsOld = r.kernelMs / old.kernelMs; r.wallVsOld = r.wallMs / old.wallMs; }
  return rows;
}

/**
 * What onnxruntime makes of Conv → Clip/Relu plus the mask read off the activation's input x or
 * output y (graph optimization 'all', optimizedModelFilePath): the op types it keeps, with the
 * activation it fused into a Conv in brackets.
 */
async function fusion(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const act of ['Clip', 'Relu']) {
    for (const src of ['x', 'y']) {
      const b = new ModelBuilder({ opset: OPSET });
      b.input('inp', 'float32', [2, 8, 16, 16]).input('dy', 'float32', [2, 8, 16, 16]);
      b.initializer('w', f32([8, 8, 3, 3], new Rng(2).fill(new Float32Array(576), 0.1, 'normal')));
      const m = b.build();
      const em = new Emitter(m.graph, OPSET);
      const x = em.op('Conv', ['inp', 'w'], { pads: [1, 1, 1, 1] });
      const y = act === 'Clip' ? em.op('Clip', [x, em.scalar(0), em.scalar(6)]) : em.op('Relu', [x]);
      const s = src === 'x' ? x : y;
      const dx = act === 'Clip' ? clipDx(em, s, em.scalar(0), em.scalar(6), 'dy', 'mul') : reluDx(em, s, 'dy', 'mul');
      m.graph.nodes.push({ name: 'o_y', opType: 'Identity', domain: '', inputs: [y], outputs: ['out_y'], attrs: {} });
      m.graph.nodes.push({ name: 'o_dx', opType: 'Identity', domain: '', inputs: [dx], outputs: ['out_dx'], attrs: {} });
      b.output('out_y').output('out_dx');
      const path = join(profDir, `fusion-${act}-${src}.onnx`);
      const session = await ort.InferenceSession.create(encodeModel(m), { graphOptimizationLevel: 'all', executionProviders: ['cpu'], optimizedModelFilePath: path, logSeverityLevel: 3 });
      await session.release();
      const opt = decodeModel(readFileSync(path));
      out[`Conv → ${act}, mask read off ${src}`] = opt.graph.nodes.map((n) => {
        const a = n.attrs.activation;
        return a && a.kind === 'string' ? `${n.opType}[${a.value}]` : n.opType;
      }).join(' ');
    }
  }
  return out;
}

async function main() {
  rmSync(profDir, { recursive: true, force: true });
  mkdirSync(profDir, { recursive: true });
  const results: { group: string; case: string; rows: Row[] }[] = [];
  const load0 = os.loadavg();
  for (const [i, make] of CASES.entries()) {
    const c = make();
    if (ONLY && c.group !== ONLY) continue;
    const rows = await benchCase(c, i);
    results.push({ group: c.group, case: c.name, rows });
    console.log(`\n${c.name}   (load ${os.loadavg().map((x) => x.toFixed(1)).join(' ')})`);
    for (const r of rows) {
      console.log(`  ${r.form.padEnd(32)} kernel ${r.kernelMs.toFixed(1).padStart(7)} ms ×old ${r.kernelVsOld.toFixed(2)}   wall ${r.wallMs.toFixed(1).padStart(7)} ms ×old ${r.wallVsOld.toFixed(2)}   diff ${r.maxRelDiff === null ? '-' : r.maxRelDiff.toExponential(1)}${r.old ? '  (old)' : ''}${r.chosen ? '  ← chosen' : ''}`);
    }
  }
  const fused = await fusion();
  for (const [k, v] of Object.entries(fused)) console.log(`${k}: ${v}`);
  const mismatches = results.flatMap((res) => res.rows.filter((r) => r.maxRelDiff !== null && r.maxRelDiff > 1e-6).map((r) => `${res.case} ${r.form}: ${r.maxRelDiff}`));
  const meta = {
    date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, cpu: os.cpus()[0]?.model, loadavgStart: load0, loadavgEnd: os.loadavg(),
    onnxruntime: ort.env.versions.node ?? 'unknown', threads: THREADS, graphOptimizationLevel: 'all', opset: OPSET, rounds: ROUNDS, warmup: WARMUP,
  };
  const dir = new URL('./results/', import.meta.url);
  mkdirSync(dir, { recursive: true });
  const tag = argOf('--tag') ? `-${argOf('--tag')}` : '';
  writeFileSync(new URL(`activation-forms${tag}.json`, dir), JSON.stringify({ meta, results, fusion: fused, mismatches }, null, 2) + '\n');
  const md: string[] = [
    '# Activation-mask and MaxPool gradient forms',
    '',
    `onnxruntime-node ${meta.onnxruntime}, ${meta.cpus} CPUs (${meta.cpu}), ${THREADS} intra-op threads, graph optimization 'all', opset ${OPSET} (the torchvision exports' opset). ` +
      `${ROUNDS} interleaved runs per candidate after ${WARMUP} warm-up runs; load average ${load0.map((x) => x.toFixed(1)).join(' ')} at the start, ${meta.loadavgEnd.map((x) => x.toFixed(1)).join(' ')} at the end ` +
      '(the machine was shared: read the ratios, not the absolute times). ' +
      "kernel ms: median over runs of the sum of the candidate's node kernel times (onnxruntime profiler); wall ms: median session.run time with a preallocated output. " +
      '×old: over the old form of the same case in the same run. diff: max abs difference to the old form relative to its max abs value ' +
      '(inputs include values exactly at the clip bounds and at 0; MaxPool inputs have tied maxima). Generated by `npx tsx bench/activation-forms.ts`.',
    '',
    '| case | form | kernel ms | ×old | wall ms | ×old | diff | |',
    '|---|---|---:|---:|---:|---:|---:|---|',
  ];
  for (const res of results) {
    for (const r of res.rows) {
      md.push(`| ${res.case} | ${r.form} | ${r.kernelMs.toFixed(1)} | ${r.kernelVsOld.toFixed(2)} | ${r.wallMs.toFixed(1)} | ${r.wallVsOld.toFixed(2)} | ${r.maxRelDiff === null ? '' : r.maxRelDiff.toExponential(1)} | ${[r.old ? 'old' : '', r.chosen ? '**chosen**' : '', r.note ?? ''].filter(Boolean).join(', ')} |`);
    }
  }
  md.push('', '## What onnxruntime fuses', '', 'Conv (constant weights) → Clip(0, 6) or Relu, and the mask of the gradient read off the activation input x or output y; the op types of the graph onnxruntime optimizes (optimizedModelFilePath), a fused activation in brackets:', '');
  for (const [k, v] of Object.entries(fused)) md.push(`- ${k}: ${v}`);
  md.push('', 'Nothing fuses the mask ops themselves (Greater/Less/And/Cast/Mul or Where stay separate kernels). Reading the mask off y leaves x with one consumer, so onnxruntime fuses the activation into the Conv; reading it off x keeps the activation a separate pass (and, for Relu, an extra ReorderOutput).');
  md.push('', '## Kernel ms per node (median per run)', '');
  for (const res of results) {
    md.push(`- ${res.case}`);
    for (const r of res.rows) md.push(`  - ${r.form}: ${Object.entries(r.nodes).filter(([, v]) => v >= 0.05).map(([n, v]) => `${n.split(':')[0]} ${v.toFixed(1)}`).join(', ')}`);
  }
  if (mismatches.length) md.push('', `**Mismatches:** ${mismatches.join('; ')}`);
  writeFileSync(new URL(`activation-forms${tag}.md`, dir), md.join('\n') + '\n');
  if (mismatches.length) { console.error('mismatching candidates:\n' + mismatches.join('\n')); process.exitCode = 1; }
}

/** The rules before bench/activation-forms.ts: Where over a mask of Clip's input; Relu's mask of its input. */
let oldRuleCalls = 0;
const OLD_RULES: Record<string, GradRule> = {
  Clip: (ctx, node, [dY], needs) => {
    oldRuleCalls++;
    if (needs[1] || needs[2]) throw new Error('the old-rule Tent comparison supports constant Clip bounds only');
    return [clipDx(ctx.em, node.inputs[0]!, node.inputs[1] || undefined, node.inputs[2] || undefined, dY!, 'where'), null, null];
  },
  Relu: (ctx, node, [dY]) => (oldRuleCalls++, [reluDx(ctx.em, node.inputs[0]!, dY!, 'mul')]),
};

async function tentAB() {
  const name = argOf('--model') ?? 'mobilenet_v2_224';
  const rounds = Number(argOf('--rounds') ?? 0) || 8;
  const file = join(root, 'tmp', 'foreign-models', `${name}.onnx`);
  const rng = new Rng(5);
  const batch = name.startsWith('cnn28') || name === 'resnet18_64' ? 64 : 16;
  const [c, h] = name.startsWith('cnn28') ? [1, 28] : name === 'resnet18_64' ? [3, 64] : [3, 224];
  const x = f32([batch, c, h, h], rng.fill(new Float32Array(batch * c * h * h), 1, 'normal'));
  const make = async (old: boolean) => {
    const saved = Object.fromEntries(Object.keys(OLD_RULES).map((op) => [op, ruleFor(op)!]));
    if (old) registerRules(OLD_RULES);
    try {
      const a = createAdapter(await loadModel(file, { threads: THREADS }), 'tent');
      await a.predict(x); // compiles the step with the rules registered now
      return a;
    } finally {
      registerRules(saved);
    }
  };
  const sides = [{ label: 'old rules', a: await make(true), t: [] as number[] }];
  if (oldRuleCalls === 0) throw new Error(`${name}: the old Clip/Relu rules were never called while compiling (no Clip or Relu on the gradient path?)`);
  sides.push({ label: 'new rules', a: await make(false), t: [] });
  console.log(`old rules used ${oldRuleCalls} times while compiling`);
  const load0 = os.loadavg();
  for (let r = 0; r < WARMUP + rounds; r++) {
    for (const s of sides) {
      const t0 = performance.now();
      await s.a.predict(x);
      if (r >= WARMUP) s.t.push(performance.now() - t0);
    }
  }
  const med = sides.map((s) => quantile(s.t, 0.5));
  console.log(`${name} Tent step, batch ${batch}, ${THREADS} threads, ${rounds} alternating calls each after ${WARMUP} warm-up; load ${load0.map((v) => v.toFixed(1)).join(' ')} → ${os.loadavg().map((v) => v.toFixed(1)).join(' ')}`);
  for (const [i, s] of sides.entries()) console.log(`  ${s.label.padEnd(10)} median ${med[i]!.toFixed(0)} ms  min ${Math.min(...s.t).toFixed(0)} ms`);
  console.log(`  new / old: median ${(med[1]! / med[0]!).toFixed(2)}, min ${(Math.min(...sides[1]!.t) / Math.min(...sides[0]!.t)).toFixed(2)}`);
}

if (args.includes('--tent')) await tentAB();
else await main();
