// Weight-gradient (dW) forms of a Conv at stride 1 and 2, and stride-2 input-gradient (dX) forms,
// timed at a chosen intra-op thread count (default 1, as the continual controller's sessions run),
// interleaved run by run, with each form's largest difference from the one-hot im2col form. The rule's
// forms come from src/autodiff/rules/conv.ts; the candidates below that lost are kept here only.
// Written for session 6 (the tap-by-tap Gemm dW, docs/continual.md "Overhead after the deep-learner
// speedups"); bench/conv-grad-forms.ts is the 2-thread table of every rule form.
//
//   nice -n 5 npx tsx bench/conv-dw-taps.ts [--threads 1] [--rounds 22] [--only 64x16,512x2 (C x H)]
import { readFileSync, writeFileSync } from 'node:fs';
import { ModelBuilder } from '../src/onnx/model-builder.ts';
import { Emitter } from '../src/onnx/emitter.ts';
import { encodeModel } from '../src/onnx/proto.ts';
import { createSession, toOrt, type ort } from '../src/onnx/runtime.ts';
import { f32, i64 } from '../src/onnx/tensor.ts';
import { Rng } from '../src/util/rng.ts';
import { type ConvGeom, type DxForm, convGeom, convDw, convDx, dxApplies, pickDw, pickDx, im2col } from '../src/autodiff/rules/conv.ts';

const args = process.argv.slice(2);
const opt = (k: string, d: string) => { const i = args.indexOf(`--${k}`); return i >= 0 ? args[i + 1]! : d; };
const threads = Number(opt('threads', '1')), rounds = Number(opt('rounds', '22'));
const OPSET = 17;
const CASES = [
  { N: 64, C: 1, O: 32, H: 28, k: 3, s: 1, p: 1 },
  { N: 64, C: 3, O: 32, H: 28, k: 3, s: 1, p: 1 },
  { N: 64, C: 8, O: 32, H: 28, k: 3, s: 1, p: 1 },
  { N: 64, C: 16, O: 32, H: 28, k: 3, s: 1, p: 1 },
  { N: 64, C: 32, O: 32, H: 28, k: 3, s: 1, p: 1 },
  { N: 64, C: 32, O: 64, H: 28, k: 3, s: 2, p: 1 },
  { N: 64, C: 64, O: 64, H: 14, k: 3, s: 1, p: 1 },
  { N: 64, C: 64, O: 128, H: 14, k: 3, s: 2, p: 1 },
  { N: 64, C: 128, O: 128, H: 7, k: 3, s: 1, p: 1 },
  // ResNet-18 at 64×64 (its stride-1 3×3 layers)
  { N: 64, C: 64, O: 64, H: 16, k: 3, s: 1, p: 1 },
  { N: 64, C: 128, O: 128, H: 8, k: 3, s: 1, p: 1 },
  { N: 64, C: 256, O: 256, H: 4, k: 3, s: 1, p: 1 },
  { N: 64, C: 512, O: 512, H: 2, k: 3, s: 1, p: 1 },
];
const only = opt('only', '');
// Candidate: taps of the transposed, padded X ([C, N, ...]) then one Gemm per tap over N·L.
function tapGemms(em: Emitter, g: ConvGeom, x: string, dY: string, concat: boolean): string {
  const L = g.outSp.reduce((a, b) => a * b, 1), K = g.k.reduce((a, b) => a * b, 1);
  const xt = em.transpose(x, [1, 0, 2, 3]);
  const xp = em.op('Pad', [xt, em.ints([0, 0, ...g.padB, 0, 0, ...g.padE])]);
  const dy2 = em.reshape(em.transpose(dY, [1, 0, 2, 3]), [g.O, g.N * L]);
  const taps: string[] = [];
  for (let t = 0; t < K; t++) {
    const idx = [Math.floor(t / g.k[1]!), t % g.k[1]!];
    const ends = idx.map((s0, i) => s0 + (g.outSp[i]! - 1) * g.strides[i]! + 1);
    taps.push(em.reshape(em.op('Slice', [xp, em.ints(idx), em.ints(ends), em.ints([2, 3]), em.ints(g.strides)]), [g.C, g.N * L]));
  }
  if (concat) {
    const cols = em.op('Concat', taps, { axis: 0 }); // [K·C, N·L]
    const r = em.op('Gemm', [dy2, cols], { transB: 1 }); // [O, K·C]
    return em.transpose(em.reshape(r, [g.O, K, g.C]), [0, 2, 1]);
  }
  const per = taps.map((t) => em.unsqueeze(em.op('Gemm', [dy2, t], { transB: 1 }), [2])); // [O, C, 1]
  return em.op('Concat', per, { axis: 2 });
}
// Candidate: X row-padded (one extra bottom row) and flattened per (c, n), so each tap is one contiguous
// run; dY zero-padded to the same row width, so the run's extra columns add nothing.
function tapsFlat(em: Emitter, g: ConvGeom, x: string, dY: string): string {
  const [OH, OW] = g.outSp as [number, number];
  const Hp = g.inSp[0]! + g.padB[0]! + g.padE[0]!, Wp = g.inSp[1]! + g.padB[1]! + g.padE[1]!;
  const K = g.k[0]! * g.k[1]!;
  const xt = em.transpose(x, [1, 0, 2, 3]);
  // one more bottom row so the last tap's run stays inside
  const xp = em.reshape(em.op('Pad', [xt, em.ints([0, 0, g.padB[0]!, g.padB[1]!, 0, 0, g.padE[0]! + 1, g.padE[1]!])]), [g.C, g.N, (Hp + 1) * Wp]);
  const dyp = em.reshape(em.op('Pad', [em.transpose(dY, [1, 0, 2, 3]), em.ints([0, 0, 0, 0, 0, 0, 0, Wp - OW])]), [g.O, g.N * OH * Wp]);
  const per: string[] = [];
  for (let t = 0; t < K; t++) {
    const i = Math.floor(t / g.k[1]!), j = t % g.k[1]!;
    const off = i * Wp + j;
    const sl = em.reshape(em.op('Slice', [xp, em.ints([off]), em.ints([off + OH * Wp]), em.ints([2])]), [g.C, g.N * OH * Wp]);
    per.push(em.unsqueeze(em.op('Gemm', [dyp, sl], { transB: 1 }), [2]));
  }
  return em.op('Concat', per, { axis: 2 });
}
// Candidate: X spatial-first [H, W, N, C], padded, rows gathered per (tap, output position): [K, L·N, C]; one MatMul with dYᵀ [O, L·N].
function gatherRows(em: Emitter, g: ConvGeom, x: string, dY: string): string {
  const [OH, OW] = g.outSp as [number, number];
  const Hp = g.inSp[0]! + g.padB[0]! + g.padE[0]!, Wp = g.inSp[1]! + g.padB[1]! + g.padE[1]!;
  const K = g.k[0]! * g.k[1]!, L = OH * OW;
  const xs = em.transpose(x, [2, 3, 0, 1]); // [H, W, N, C]
  const xp = em.reshape(em.op('Pad', [xs, em.ints([g.padB[0]!, g.padB[1]!, 0, 0, g.padE[0]!, g.padE[1]!, 0, 0])]), [Hp * Wp, g.N * g.C]);
  const idx: number[] = [];
  for (let ky = 0; ky < g.k[0]!; ky++) for (let kx = 0; kx < g.k[1]!; kx++) for (let oy = 0; oy < OH; oy++) for (let ox = 0; ox < OW; ox++) idx.push((oy * g.strides[0]! + ky * g.dil[0]!) * Wp + ox * g.strides[1]! + kx * g.dil[1]!);
  const cols = em.reshape(em.op('Gather', [xp, em.constant(i64([K * L], idx), 'rows')], { axis: 0 }), [K, L * g.N, g.C]);
  const dyt = em.reshape(em.transpose(dY, [1, 2, 3, 0]), [g.O, L * g.N]); // [O, H', W', N]
  const m = em.op('MatMul', [dyt, cols]); // [K, O, C]
  return em.transpose(m, [1, 2, 0]);
}
// Candidate: cols as the MatMul's A ([N, CK, L] · dYᵀ [N, L, O]), sum over N, transpose.
function swapped(em: Emitter, g: ConvGeom, x: string, dY: string): string {
  const L = g.outSp.reduce((a, b) => a * b, 1), K = g.k.reduce((a, b) => a * b, 1);
  const cols = im2col(em, g, x, 'onehot');
  const dyt = em.transpose(em.reshape(dY, [g.N, g.O, L]), [0, 2, 1]);
  const m = em.reduce('ReduceSum', em.op('MatMul', [em.reshape(cols, [g.N, g.C * K, L]), dyt]), [0], false); // [CK, O]
  return em.transpose(m, [1, 0]);
}
function model(inputs: Record<string, number[]>, body: (em: Emitter) => string): Uint8Array {
  const b = new ModelBuilder({ opset: OPSET });
  for (const [n, d] of Object.entries(inputs)) b.input(n, 'float32', d);
  const m = b.build();
  const em = new Emitter(m.graph, OPSET);
  const out = body(em);
  m.graph.nodes.push({ name: 'out_node', opType: 'Reshape', domain: '', inputs: [out, em.ints([-1])], outputs: ['out'], attrs: {} });
  b.output('out');
  return encodeModel(m);
}

async function time(inputs: Record<string, number[]>, forms: Record<string, Uint8Array>) {
  const rng = new Rng(1);
  const feeds: Record<string, ort.Tensor> = {};
  for (const [n, d] of Object.entries(inputs)) feeds[n] = toOrt(f32(d, rng.fill(new Float32Array(d.reduce((a, b) => a * b, 1)), 1, 'normal')));
  const live = await Promise.all(Object.entries(forms).map(async ([form, bytes]) => ({ form, s: await createSession(bytes, { threads }), t: [] as number[], r: null as Float32Array | null })));
  for (let r = 0; r < rounds + 3; r++) for (const l of live) {
    const t0 = performance.now();
    const o = await l.s.run(feeds);
    if (r >= 3) l.t.push(performance.now() - t0);
    l.r ??= o.out!.data as Float32Array;
  }
  const ref = live[0]!.r!;
  let scale = 0;
  for (const v of ref) scale = Math.max(scale, Math.abs(v));
  const med = (v: number[]) => [...v].sort((a, b) => a - b)[v.length >> 1]!;
  const rows = live.map((l) => {
    let d = 0;
    for (let i = 0; i < ref.length; i++) d = Math.max(d, Math.abs(ref[i]! - l.r![i]!));
    return { form: l.form, medianMs: med(l.t), vsFirst: med(l.t) / med(live[0]!.t), maxRelDiff: d / scale };
  });
  for (const l of live) await l.s.release();
  return rows;
}

const ints = (v: number[]) => ({ kind: 'ints' as const, value: v });
const results: unknown[] = [];
for (const c of CASES.filter((c) => !only || only.split(',').includes(`${c.C}x${c.H}`))) {
  const out = Math.floor((c.H + 2 * c.p - c.k) / c.s) + 1;
  const node = { name: 'conv', opType: 'Conv', attrs: { strides: ints([c.s, c.s]), pads: ints([c.p, c.p, c.p, c.p]), group: { kind: 'int' as const, value: 1 } } };
  const g = convGeom(node, [c.N, c.C, c.H, c.H], [c.O, c.C, c.k, c.k], [c.N, c.O, out, out]);
  const name = `${c.C}->${c.O} ${c.H}x${c.H} s${c.s}`;
  const inputs = { x: [g.N, g.C, ...g.inSp], dy: [g.N, g.O, ...g.outSp] };
  const dw = await time(inputs, {
    'onehot-matmul': model(inputs, (em) => convDw(em, g, 'x', 'dy', 'onehot-matmul')),
    'onehot-gemm': model(inputs, (em) => convDw(em, g, 'x', 'dy', 'onehot-gemm')),
    'taps-gemm': model(inputs, (em) => convDw(em, g, 'x', 'dy', 'taps-gemm')),
    'taps-concat-gemm (candidate)': model(inputs, (em) => tapGemms(em, g, 'x', 'dy', true)),
    ...(c.s === 1 ? { 'taps-flat (candidate)': model(inputs, (em) => tapsFlat(em, g, 'x', 'dy')) } : {}),
    'gather-rows (candidate)': model(inputs, (em) => gatherRows(em, g, 'x', 'dy')),
    'swapped (candidate)': model(inputs, (em) => swapped(em, g, 'x', 'dy')),
  });
  console.log(`dW ${name} (picked: ${pickDw(g)}): ` + dw.map((r) => `${r.form} ${r.medianMs.toFixed(2)} (${r.vsFirst.toFixed(2)}, ${r.maxRelDiff.toExponential(1)})`).join(' | '));
  results.push({ kind: 'dW', layer: name, picked: pickDw(g), rows: dw });
  if (c.s > 1) {
    const dxIn = { w: [g.O, g.C, ...g.k], dy: inputs.dy };
    const forms = (['convtranspose', 'polyphase', 'phases', 'conv-zero-insert'] as DxForm[]).filter((f) => dxApplies(g, f));
    const dx = await time(dxIn, Object.fromEntries(forms.map((f) => [f, model(dxIn, (em) => convDx(em, g, 'dy', 'w', f))])));
    console.log(`dX ${name} (picked: ${pickDx(g)}): ` + dx.map((r) => `${r.form} ${r.medianMs.toFixed(2)} (${r.vsFirst.toFixed(2)})`).join(' | '));
    results.push({ kind: 'dX', layer: name, picked: pickDx(g), rows: dx });
  }
}
const out = { threads, rounds, loadavg: readFileSync('/proc/loadavg', 'utf8').trim(), results };
writeFileSync(`bench/results/conv-dw-taps-t${threads}${only ? '-' + only.replace(/,/g, '_') : ''}.json`, JSON.stringify(out, null, 1));
