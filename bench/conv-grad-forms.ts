// Times each candidate formulation of the Conv input (dX) and weight (dW) gradients, and of the
// pooling input gradients, in onnxruntime-node (graph optimization 'all', 2 intra-op threads),
// checks the candidates against each other, and writes bench/results/conv-grad-forms.{json,md}.
// The candidates are built by the same functions the gradient rules use.
//
//   npx tsx bench/conv-grad-forms.ts [--rounds 40] [--quick] [--only conv|pool] [--set base|depthwise|flip]
//        [--baked] [--match <layer name substrings, comma-separated>] [--forms <forms, comma-separated>]
//        [--tag <suffix of the results files>]
//
// --set base: the layers of refit's own CNNs at N = 64 (the default; conv and pooling).
// --set depthwise: MobileNetV2 (3×3) and EfficientNet-B0 (5×5) depthwise layers at N = 16,
//      stride 1 and 2, 32–960 channels, 112…7 spatial: the depthwise dW and dX forms.
// --set flip: ResNet-18 3×3 stride-1 layers (64×64 input at N = 64, 224×224 at N = 16): how the
//      fed weight is flipped for the stride-1 dX ('wflip' rows: the weight preparation alone),
//      and whether onnxruntime folds each flip when the weight is a constant (printed).
// --baked: the weight is an initializer (a constant, as in Tent or LoRA), not a graph input.
//
// Rounds interleave the candidates of a layer (one run of each per round), so drift in machine
// load hits them alike. With other work on the machine the medians scatter; the minimum and the
// 25th percentile are the steadier estimates of what a form costs.
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { ModelBuilder } from '../src/onnx/model-builder.ts';
import { Emitter } from '../src/onnx/emitter.ts';
import { decodeModel, encodeModel } from '../src/onnx/proto.ts';
import { createSession, toOrt, ort } from '../src/onnx/runtime.ts';
import { f32 } from '../src/onnx/tensor.ts';
import { Rng } from '../src/util/rng.ts';
import {
  type ConvGeom, type DxForm, type DwForm, type FlipHow, convGeom, convDx, convDw, dxApplies, dwApplies, pickDx, pickDw, isPointwise,
  transposeWeight,
} from '../src/autodiff/rules/conv.ts';
import {
  type PoolGeom, type MaxPoolGradForm, maxPoolDx, averagePoolDx, pickMaxPoolForm, maxPoolFormApplies, maxPoolFormNeedsIndices,
} from '../src/autodiff/rules/pool.ts';
import { quantile, relDiff } from './stats.ts';

const args = process.argv.slice(2);
const argOf = (k: string) => (args.includes(k) ? args[args.indexOf(k) + 1] : undefined);
const ROUNDS = Number(argOf('--rounds') ?? 0) || (args.includes('--quick') ? 6 : 40);
const WARMUP = 3;
const ONLY = argOf('--only');
const SET = argOf('--set') ?? 'base';
const BAKED = args.includes('--baked');
const MATCH = argOf('--match')?.split(',');
const FORMS = argOf('--forms')?.split(',');
const OPSET = 17;

// ---------------------------------------------------------------- layers

interface ConvCase { name: string; N: number; C: number; O: number; H: number; k: number; s: number; p: number; g: number }
const CONV_CASES: ConvCase[] = [
  { name: 'conv 3x3 s1 C=O=64 14x14', N: 64, C: 64, O: 64, H: 14, k: 3, s: 1, p: 1, g: 1 },
  { name: 'conv 3x3 s1 C=O=32 28x28', N: 64, C: 32, O: 32, H: 28, k: 3, s: 1, p: 1, g: 1 },
  { name: 'conv 3x3 s2 32→64 28x28', N: 64, C: 32, O: 64, H: 28, k: 3, s: 2, p: 1, g: 1 },
  { name: 'conv 3x3 s2 C=O=64 14x14', N: 64, C: 64, O: 64, H: 14, k: 3, s: 2, p: 1, g: 1 },
  { name: 'conv 3x3 s1 C=O=128 7x7', N: 64, C: 128, O: 128, H: 7, k: 3, s: 1, p: 1, g: 1 },
  { name: 'conv 1x1 s1 C=O=64 14x14', N: 64, C: 64, O: 64, H: 14, k: 1, s: 1, p: 0, g: 1 },
  { name: 'conv 1x1 s2 32→64 28x28', N: 64, C: 32, O: 64, H: 28, k: 1, s: 2, p: 0, g: 1 },
  { name: 'conv 3x3 s1 groups=4 C=O=64 14x14', N: 64, C: 64, O: 64, H: 14, k: 3, s: 1, p: 1, g: 4 },
  { name: 'conv 3x3 s1 depthwise C=64 14x14', N: 64, C: 64, O: 64, H: 14, k: 3, s: 1, p: 1, g: 64 },
  { name: 'conv 3x3 s2 depthwise C=64 28x28', N: 64, C: 64, O: 64, H: 28, k: 3, s: 2, p: 1, g: 64 },
];
// MobileNetV2 at 224×224 (3×3) and EfficientNet-B0 (5×5): every distinct depthwise geometry.
const dw = (k: number, s: number, C: number, H: number, N = 16): ConvCase => ({ name: `dw ${k}x${k} s${s} C=${C} ${H}x${H} N=${N}`, N, C, O: C, H, k, s, p: (k - 1) / 2, g: C });
const DEPTHWISE_CASES: ConvCase[] = [
  dw(3, 1, 32, 112), dw(3, 2, 96, 112), dw(3, 1, 144, 56), dw(3, 2, 144, 56), dw(3, 1, 192, 28), dw(3, 2, 192, 28),
  dw(3, 1, 384, 14), dw(3, 1, 576, 14), dw(3, 2, 576, 14), dw(3, 1, 960, 7), dw(3, 1, 480, 14),
  dw(5, 2, 144, 56), dw(5, 1, 240, 28), dw(5, 2, 240, 28), dw(5, 1, 480, 14), dw(5, 1, 672, 14), dw(5, 2, 672, 14), dw(5, 1, 1152, 7),
];
const dense = (C: number, H: number, N: number): ConvCase => ({ name: `conv 3x3 s1 C=O=${C} ${H}x${H} N=${N}`, N, C, O: C, H, k: 3, s: 1, p: 1, g: 1 });
const FLIP_CASES: ConvCase[] = [dense(64, 16, 64), dense(128, 8, 64), dense(256, 4, 64), dense(512, 2, 64), dense(64, 56, 16), dense(256, 14, 16), dense(512, 7, 16)];
const DX_FORMS: DxForm[] = ['conv-flip', 'conv-flip-matmul', 'conv-flip-gather', 'convtranspose', 'conv-zero-insert', 'polyphase', 'phases'];
const DW_FORMS: DwForm[] = [
  'onehot-gemm', 'onehot-matmul', 'slices-gemm', 'slices-matmul', 'onehot-mulsum', 'slices-mulsum', 'gather-matmul', 'gather-mulsum', 'conv-xt', 'conv-nc', 'taps-gemm',
];
/** Which forms each set times (the base set keeps its original candidates). */
const SET_FORMS: Record<string, { dx: DxForm[]; dw: DwForm[]; wflip: boolean }> = {
  base: { dx: ['conv-flip', 'conv-flip-matmul', 'convtranspose', 'conv-zero-insert', 'polyphase', 'phases'], dw: DW_FORMS, wflip: false },
  // Gemm over N·L is 7× slower than the batched MatMul with groups (base set), so it is left out.
  depthwise: { dx: ['conv-flip', 'conv-flip-matmul', 'convtranspose', 'conv-zero-insert', 'polyphase', 'phases'], dw: DW_FORMS.filter((f) => !f.endsWith('-gemm')), wflip: false },
  flip: { dx: ['conv-flip', 'conv-flip-matmul', 'conv-flip-gather', 'convtranspose'], dw: [], wflip: true },
};

interface PoolCase { name: string; op: 'MaxPool' | 'AveragePool'; N: number; C: number; H: number; k: number; s: number; p: number }
const POOL_CASES: PoolCase[] = [
  { name: 'MaxPool 2x2 s2 C=32 28x28', op: 'MaxPool', N: 64, C: 32, H: 28, k: 2, s: 2, p: 0 },
  { name: 'MaxPool 3x3 s2 pad 1 C=64 28x28', op: 'MaxPool', N: 64, C: 64, H: 28, k: 3, s: 2, p: 1 },
  { name: 'AveragePool 2x2 s2 C=32 28x28', op: 'AveragePool', N: 64, C: 32, H: 28, k: 2, s: 2, p: 0 },
  { name: 'AveragePool 3x3 s2 pad 1 C=64 28x28', op: 'AveragePool', N: 64, C: 64, H: 28, k: 3, s: 2, p: 1 },
];
const MAXPOOL_FORMS: MaxPoolGradForm[] = ['scatter', 'scatter-add', 'onehot-argmax'];

// ---------------------------------------------------------------- models

type Dims = Record<string, number[]>;

/** A model with float graph inputs `inputs` and one output 'out' built by `body`. */
/** Further float outputs (e.g. a forward result that must be computed too) follow the first. */
function model(inputs: Dims, body: (em: Emitter) => string | string[]): Uint8Array {
  const b = new ModelBuilder({ opset: OPSET });
  for (const [n, d] of Object.entries(inputs)) b.input(n, 'float32', d);
  const m = b.build();
  const em = new Emitter(m.graph, OPSET);
  const [out, ...more] = [body(em)].flat();
  m.graph.nodes.push({ name: 'out_node', opType: 'Identity', domain: '', inputs: [out!], outputs: ['out'], attrs: {} });
  b.output('out');
  for (const o of more) b.output(o);
  return encodeModel(m);
}

interface Candidate { kind: string; form: string; bytes: Uint8Array; chosen: boolean; reference?: boolean }
interface Layer { name: string; inputs: Dims; candidates: Candidate[]; note?: string }

/** With --baked: the weight as a random initializer, not a graph input. */
function bakeWeight(bytes: Uint8Array, w: number[]): Uint8Array {
  const m = decodeModel(bytes);
  m.graph.inputs = m.graph.inputs.filter((i) => i.name !== 'w');
  m.graph.initializers.set('w', f32(w, new Rng(7).fill(new Float32Array(w.reduce((a, b) => a * b, 1)), 1, 'normal')));
  return encodeModel(m);
}

const ints = (v: number[]) => ({ kind: 'ints' as const, value: v });

function convLayer(c: ConvCase, forms = SET_FORMS[SET]!): Layer {
  const out = Math.floor((c.H + 2 * c.p - c.k) / c.s) + 1;
  const node = { name: 'conv', opType: 'Conv', attrs: { strides: ints([c.s, c.s]), pads: ints([c.p, c.p, c.p, c.p]), group: { kind: 'int' as const, value: c.g } } };
  const g: ConvGeom = convGeom(node, [c.N, c.C, c.H, c.H], [c.O, c.C / c.g, c.k, c.k], [c.N, c.O, out, out]);
  const inputs = { x: [g.N, g.C, ...g.inSp], w: [g.O, g.C / g.group, ...g.k], dy: [g.N, g.O, ...g.outSp] };
  const cands: Candidate[] = [{
    kind: 'forward', form: 'Conv', chosen: false, reference: true,
    bytes: model(inputs, (em) => em.op('Conv', ['x', 'w'], { strides: g.strides, pads: [...g.padB, ...g.padE], group: g.group, kernel_shape: g.k })),
  }];
  const dx = pickDx(g), dw = pickDw(g);
  if (forms.wflip) {
    for (const how of ['slice', 'matmul', 'gather'] as FlipHow[]) {
      cands.push({ kind: 'wflip', form: how, chosen: DX_FORMS.includes(dx) && dx === `conv-flip${how === 'slice' ? '' : `-${how}`}`, bytes: model(inputs, (em) => transposeWeight(em, g, 'w', true, how)) });
    }
  }
  for (const f of forms.dx) {
    // With stride 1 the zero-insert form is the very same graph as conv-flip.
    if (!dxApplies(g, f) || (f === 'conv-zero-insert' && g.strides.every((x) => x === 1))) continue;
    cands.push({ kind: 'dX', form: f, chosen: f === dx, bytes: model(inputs, (em) => convDx(em, g, 'dy', 'w', f)) });
  }
  if (BAKED) for (const c of cands) if (c.kind === 'dX' || c.kind === 'forward') c.bytes = bakeWeight(c.bytes, inputs.w);
  for (const f of forms.dw) {
    // A pointwise conv needs no im2col, so the one-hot and slice forms coincide.
    if (!dwApplies(g, f) || (f.startsWith('slices') && isPointwise(g))) continue;
    cands.push({ kind: 'dW', form: f, chosen: f === dw, bytes: model(inputs, (em) => convDw(em, g, 'x', 'dy', f)) });
  }
  return { name: c.name, inputs, candidates: cands };
}

function poolLayer(c: PoolCase): Layer {
  const out = Math.floor((c.H + 2 * c.p - c.k) / c.s) + 1;
  const g: PoolGeom = {
    nd: 2, N: c.N, C: c.C, inSp: [c.H, c.H], outSp: [out, out], k: [c.k, c.k], strides: [c.s, c.s], dil: [1, 1], padB: [c.p, c.p], padE: [c.p, c.p],
  };
  const inputs = { x: [g.N, g.C, ...g.inSp], dy: [g.N, g.C, ...g.outSp] };
  const attrs = { kernel_shape: g.k, strides: g.strides, pads: [...g.padB, ...g.padE] };
  const cands: Candidate[] = [{ kind: 'forward', form: c.op, chosen: false, reference: true, bytes: model(inputs, (em) => em.op(c.op, ['x'], attrs)) }];
  if (c.op === 'MaxPool') {
    // Each candidate computes the forward MaxPool too (with Indices where the form reads them),
    // since asking for Indices changes the cost of the forward op.
    const pick = pickMaxPoolForm(g, OPSET);
    for (const f of MAXPOOL_FORMS) {
      if (!maxPoolFormApplies(g, f, OPSET)) continue;
      cands.push({
        kind: 'fwd+dX', form: f, chosen: f === pick,
        bytes: model(inputs, (em) => {
          const [y, idx] = em.emit('MaxPool', ['x'], attrs, maxPoolFormNeedsIndices(f) ? 2 : 1);
          return [maxPoolDx(em, g, 'x', 'dy', idx ?? null, f), y!];
        }),
      });
    }
    return { name: c.name, inputs, candidates: cands, note: 'fwd+dX: the forward MaxPool (with Indices where the form reads them) and the input gradient in one graph.' };
  }
  cands.push({ kind: 'dX', form: 'col2im', chosen: true, bytes: model(inputs, (em) => averagePoolDx(em, g, 'dy', false)) });
  return { name: c.name, inputs, candidates: cands };
}

// ---------------------------------------------------------------- timing

interface Row { kind: string; form: string; medianMs: number; p25Ms: number; minMs: number; vsForward: number; maxRelDiff: number | null; chosen: boolean }


async function benchLayer(layer: Layer): Promise<Row[]> {
  const rng = new Rng(1);
  const feeds: Record<string, ort.Tensor> = {};
  for (const [n, d] of Object.entries(layer.inputs)) feeds[n] = toOrt(f32(d, rng.fill(new Float32Array(d.reduce((a, b) => a * b, 1)), 1, 'normal')));
  const live: (Candidate & { session: ort.InferenceSession; times: number[]; result?: Float32Array })[] = [];
  for (const c of layer.candidates) live.push({ ...c, session: await createSession(c.bytes, { threads: 2 }), times: [] });
  for (let r = 0; r < WARMUP + ROUNDS; r++) {
    for (const c of live) {
      const inputs: Record<string, ort.Tensor> = {};
      for (const n of c.session.inputNames) inputs[n] = feeds[n]!;
      const t0 = performance.now();
      const out = await c.session.run(inputs);
      const dt = performance.now() - t0;
      c.result ??= out.out!.data as Float32Array;
      if (r >= WARMUP) c.times.push(dt);
    }
  }
  for (const c of live) await c.session.release();
  const fwd = quantile(live.find((c) => c.reference)!.times, 0.25);
  return live.map((c) => {
    // Each candidate is checked against the first candidate of its kind (forward kinds differ in what they return).
    const ref = live.find((o) => o.kind === c.kind)!;
    return {
      kind: c.kind, form: c.form, medianMs: quantile(c.times, 0.5), p25Ms: quantile(c.times, 0.25), minMs: Math.min(...c.times),
      vsForward: quantile(c.times, 0.25) / fwd,
      maxRelDiff: c.kind === 'forward' ? null : relDiff(c.result!, ref.result!),
      chosen: c.chosen,
    };
  });
}

/**
 * With the weight a constant, onnxruntime should fold every flip form: optimize each dX graph
 * (optimizedModelFilePath) and list the op types left besides the Conv.
 */
async function checkFolding(c: ConvCase) {
  const { mkdtempSync, readFileSync } = await import('node:fs');
  const { join } = await import('node:path');
  const dir = mkdtempSync(join(os.tmpdir(), 'conv-fold-'));
  const l = convLayer(c, { dx: ['conv-flip', 'conv-flip-matmul', 'conv-flip-gather'], dw: [], wflip: false });
  for (const cand of l.candidates.filter((x) => x.kind === 'dX')) {
    for (const baked of [true, false]) {
      const file = join(dir, `${cand.form}.onnx`);
      const s = await ort.InferenceSession.create(baked ? bakeWeight(cand.bytes, l.inputs.w) : cand.bytes, { graphOptimizationLevel: 'all', optimizedModelFilePath: file });
      await s.release();
      const ops = decodeModel(new Uint8Array(readFileSync(file))).graph.nodes.map((n) => n.opType);
      console.log(`optimized graph, weight ${baked ? 'constant' : 'fed'}, ${c.name} dX ${cand.form}: ${ops.join(', ')}`);
    }
  }
}

async function main() {
  const convCases = SET === 'depthwise' ? DEPTHWISE_CASES : SET === 'flip' ? FLIP_CASES : CONV_CASES;
  const layers = [
    ...(ONLY === 'pool' ? [] : convCases.map((c) => convLayer(c))),
    ...(ONLY === 'conv' || SET !== 'base' ? [] : POOL_CASES.map(poolLayer)),
  ].filter((l) => !MATCH || MATCH.some((m) => l.name.includes(m)));
  // --forms keeps the forward reference and the listed forms.
  if (FORMS) for (const l of layers) l.candidates = l.candidates.filter((c) => c.reference || FORMS.includes(c.form));
  if (SET === 'flip') await checkFolding(FLIP_CASES[0]!);
  if (args.includes('--fold-only')) return;
  const results: { layer: string; note?: string; rows: Row[] }[] = [];
  for (const layer of layers) {
    const rows = await benchLayer(layer);
    results.push({ layer: layer.name, note: layer.note, rows });
    console.log(`\n${layer.name}`);
    for (const r of rows) {
      console.log(`  ${r.kind.padEnd(11)} ${r.form.padEnd(18)} p25 ${r.p25Ms.toFixed(2).padStart(6)} ms  min ${r.minMs.toFixed(2).padStart(6)}  median ${r.medianMs.toFixed(2).padStart(6)}  ×fwd ${r.vsForward.toFixed(2)}  diff ${r.maxRelDiff === null ? '-' : r.maxRelDiff.toExponential(1)}${r.chosen ? '  ← chosen' : ''}`);
    }
  }
  const mismatches = results.flatMap((res) => res.rows.filter((r) => r.maxRelDiff !== null && r.maxRelDiff > 1e-4).map((r) => `${res.layer} ${r.kind} ${r.form}: ${r.maxRelDiff}`));
  const meta = {
    date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, cpu: os.cpus()[0]?.model, loadavg: os.loadavg(),
    onnxruntime: ort.env.versions.node ?? 'unknown', threads: 2, graphOptimizationLevel: 'all', opset: OPSET, rounds: ROUNDS, warmup: WARMUP,
  };
  const dir = new URL('./results/', import.meta.url);
  mkdirSync(dir, { recursive: true });
  const tag = argOf('--tag') ? `-${argOf('--tag')}` : '';
  writeFileSync(new URL(`conv-grad-forms${tag}.json`, dir), JSON.stringify({ meta, results, mismatches }, null, 2) + '\n');
  const md: string[] = [
    '# Conv and pooling gradient formulations',
    '',
    `onnxruntime-node ${meta.onnxruntime}, ${meta.cpus} CPUs (${meta.cpu}), 2 intra-op threads, graph optimization 'all', opset ${OPSET}, ${SET === 'base' ? 'N = 64' : 'N in the layer name'}; ` +
      `set '${SET}'${BAKED ? ', weights baked as initializers for the forward and dX rows' : ', weights fed as graph inputs'}. ` +
      `${ROUNDS} interleaved runs per candidate after ${WARMUP} warm-up runs; load average at the end ${meta.loadavg.map((x) => x.toFixed(2)).join(' ')}. ` +
      '×fwd is the p25 time over the p25 time of the forward op of the same layer in the same run. ' +
      'diff is the max abs difference to the first candidate of the same kind, relative to its max abs value. ' +
      '✓ marks what the gradient rule emits for that layer. wflip rows: the C↔O swap and flip of the fed weight alone. ' +
      `Generated by \`npx tsx bench/conv-grad-forms.ts ${args.join(' ')}\`.`,
    '',
    '| layer | gradient | form | ms p25 | ms min | ms median | ×fwd | diff | chosen |',
    '|---|---|---|---:|---:|---:|---:|---:|:---:|',
  ];
  for (const res of results) {
    for (const r of res.rows) {
      md.push(`| ${res.layer} | ${r.kind} | ${r.form} | ${r.p25Ms.toFixed(2)} | ${r.minMs.toFixed(2)} | ${r.medianMs.toFixed(2)} | ${r.vsForward.toFixed(2)} | ${r.maxRelDiff === null ? '' : r.maxRelDiff.toExponential(1)} | ${r.chosen ? '✓' : ''} |`);
    }
  }
  const notes = [...new Set(results.map((r) => r.note).filter(Boolean))];
  if (notes.length) md.push('', ...notes.map((n) => `- ${n}`));
  if (mismatches.length) md.push('', `**Mismatches:** ${mismatches.join('; ')}`);
  writeFileSync(new URL(`conv-grad-forms${tag}.md`, dir), md.join('\n') + '\n');
  if (mismatches.length) { console.error('mismatching candidates:\n' + mismatches.join('\n')); process.exitCode = 1; }
}

await main();
