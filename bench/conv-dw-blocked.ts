// A convolution's weight gradient as one convolution on onnxruntime's blocked NCHWc kernels
// ('conv-xt' with X reordered to [C, N/16, H, W, 16] and dY as an OIHWBiBo filter, dilation = the
// forward stride) against the form pickDw chooses, on ResNet-18's and cnn28's layers at batch 64:
// median ms of interleaved runs and the largest relative difference. Measured in session 27 and not
// kept (docs/speed.md). The block is 16 (AVX-512); another CPU needs another B.
//
//   npx tsx bench/conv-dw-blocked.ts [rounds, default 20]
import { ModelBuilder } from '../src/onnx/model-builder.ts';
import { Emitter } from '../src/onnx/emitter.ts';
import { encodeModel } from '../src/onnx/proto.ts';
import type { Node } from '../src/onnx/ir.ts';
import { createSession, toOrt } from '../src/onnx/runtime.ts';
import { f32 } from '../src/onnx/tensor.ts';
import { Rng } from '../src/util/rng.ts';
import { convGeom, convDw, pickDw, type ConvGeom } from '../src/autodiff/rules/conv.ts';
import { quantile, relDiff } from './stats.ts';

const B = 16, OPSET = 17;
const ROUNDS = Number(process.argv[2] ?? 20);
interface Case { name: string; N: number; C: number; O: number; H: number; k: number; s: number; p: number }
const cases: Case[] = [
  { name: 'r18 stem 7x7 s2 3→64 64²', N: 64, C: 3, O: 64, H: 64, k: 7, s: 2, p: 3 },
  { name: 'r18 l1 3x3 64 16²', N: 64, C: 64, O: 64, H: 16, k: 3, s: 1, p: 1 },
  { name: 'r18 l2.0 3x3 s2 64→128 16²', N: 64, C: 64, O: 128, H: 16, k: 3, s: 2, p: 1 },
  { name: 'r18 l2 3x3 128 8²', N: 64, C: 128, O: 128, H: 8, k: 3, s: 1, p: 1 },
  { name: 'r18 l3 3x3 256 4²', N: 64, C: 256, O: 256, H: 4, k: 3, s: 1, p: 1 },
  { name: 'r18 l4 3x3 512 2²', N: 64, C: 512, O: 512, H: 2, k: 3, s: 1, p: 1 },
  { name: 'cnn28 3x3 32 28²', N: 64, C: 32, O: 32, H: 28, k: 3, s: 1, p: 1 },
  { name: 'cnn28 3x3 s2 32→64 28²', N: 64, C: 32, O: 64, H: 28, k: 3, s: 2, p: 1 },
  { name: 'cnn28 3x3 64 14²', N: 64, C: 64, O: 64, H: 14, k: 3, s: 1, p: 1 },
  { name: 'r18-224 l1 3x3 64 56² N16', N: 16, C: 64, O: 64, H: 56, k: 3, s: 1, p: 1 },
];
const ints = (v: number[]) => ({ kind: 'ints' as const, value: v });

function build(c: Case, body: (em: Emitter, g: ConvGeom, nodes: (n: Node) => void) => string): Uint8Array {
  const OH = Math.floor((c.H + 2 * c.p - c.k) / c.s) + 1;
  const b = new ModelBuilder({ opset: OPSET });
  b.input('x', 'float32', [c.N, c.C, c.H, c.H]);
  b.input('dy', 'float32', [c.N, c.O, OH, OH]);
  const m = b.build();
  m.opsets.push({ domain: 'com.microsoft.nchwc', version: 1 });
  const em = new Emitter(m.graph, OPSET);
  const node: Node = { name: 'conv', opType: 'Conv', domain: '', inputs: ['x', 'w'], outputs: ['y'], attrs: { pads: ints([c.p, c.p, c.p, c.p]), strides: ints([c.s, c.s]), kernel_shape: ints([c.k, c.k]) } };
  const g = convGeom(node, [c.N, c.C, c.H, c.H], [c.O, c.C, c.k, c.k], [c.N, c.O, OH, OH]);
  const out = body(em, g, (n) => m.graph.nodes.push(n));
  m.graph.nodes.push({ name: 'out_node', opType: 'Identity', domain: '', inputs: [out], outputs: ['out'], attrs: {} });
  b.output('out');
  return encodeModel(m);
}

/** conv-xt with the Conv on the blocked kernels: X as [C, N/b, H, W, b], dY as an OIHWBiBo filter. */
function xtBlocked(em: Emitter, g: ConvGeom, push: (n: Node) => void): string {
  const [N, C, O] = [g.N, g.C, g.O];
  const [H, W] = g.inSp as [number, number];
  const [OH, OW] = g.outSp as [number, number];
  const xb = em.transpose(em.reshape('x', [N / B, B, C, H * W]), [2, 0, 3, 1]); // [C, N/b, HW, b]
  const xb4 = em.reshape(xb, [C, N, H, W]);
  // filter [O/b][N/b][OH][OW][b_in = n][b_out = o] from dY [N, O, L]
  const wb = em.transpose(em.reshape('dy', [N / B, B, O / B, B, OH * OW]), [2, 0, 4, 1, 3]);
  const wb4 = em.reshape(wb, [O, N, OH, OW]);
  const y = em.fresh('xt_out');
  push({ name: 'xt_conv', opType: 'Conv', domain: 'com.microsoft.nchwc', inputs: [xb4, wb4], outputs: [y], attrs: { group: { kind: 'int', value: 1 }, kernel_shape: ints([OH, OW]), dilations: ints(g.strides), strides: ints(g.dil), pads: ints([...g.padB, ...g.padE]) } });
  // y: logical [C, O, kh', kw'], memory [C, O/b, kh'·kw', b]
  const kh2 = H + g.padB[0]! + g.padE[0]! - ((OH - 1) * g.strides[0]! + 1) + 1;
  const kw2 = W + g.padB[1]! + g.padE[1]! - ((OW - 1) * g.strides[1]! + 1) + 1;
  let r = em.transpose(em.reshape(y, [C, O / B, kh2 * kw2, B]), [1, 3, 0, 2]); // [O/b, b, C, K']
  r = em.reshape(r, [O, C, kh2, kw2]);
  if (kh2 !== g.k[0] || kw2 !== g.k[1]) r = em.op('Slice', [r, em.ints([0, 0]), em.ints(g.k), em.ints([2, 3])]);
  return r;
}

const rng = new Rng(1);
for (const c of cases) {
  const cands: { name: string; bytes: Uint8Array }[] = [];
  cands.push({ name: 'chosen', bytes: build(c, (em, g) => convDw(em, g, 'x', 'dy', pickDw(g))) });
  cands.push({ name: 'xt-blocked', bytes: build(c, (em, g, push) => xtBlocked(em, g, push)) });
  const OH = Math.floor((c.H + 2 * c.p - c.k) / c.s) + 1;
  const feeds = {
    x: toOrt(f32([c.N, c.C, c.H, c.H], rng.fill(new Float32Array(c.N * c.C * c.H * c.H), 1, 'normal'))),
    dy: toOrt(f32([c.N, c.O, OH, OH], rng.fill(new Float32Array(c.N * c.O * OH * OH), 1, 'normal'))),
  };
  const live: { name: string; s: Awaited<ReturnType<typeof createSession>>; t: number[]; r: Float32Array | undefined }[] = [];
  for (const k of cands) live.push({ name: k.name, s: await createSession(k.bytes, { threads: 2 }), t: [], r: undefined });
  for (let r = 0; r < 3 + ROUNDS; r++) for (const k of live) {
    const t0 = performance.now();
    const o = await k.s.run(feeds);
    const dt = performance.now() - t0;
    k.r ??= o.out!.data as Float32Array;
    if (r >= 3) k.t.push(dt);
  }
  let g0: ConvGeom | undefined;
  build(c, (_em, g) => { g0 = g; return 'x'; });
  const base = quantile(live[0]!.t, 0.5);
  console.log(`${c.name.padEnd(28)} chosen=${pickDw(g0!)} ${base.toFixed(2)} ms; ` + live.slice(1).map((k) => `${k.name} ${quantile(k.t, 0.5).toFixed(2)} (${(quantile(k.t, 0.5) / base).toFixed(2)}) rel ${relDiff(k.r!, live[0]!.r!).toExponential(1)}`).join('; '));
  for (const k of live) await k.s.release();
}
