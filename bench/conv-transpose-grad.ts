// Times the ConvTranspose gradient (src/autodiff/rules/conv-transpose.ts) against its forward on a
// realistic decoder layer, and the dW formulations conv.ts offers on the adjoint geometry, in
// onnxruntime-node (graph optimization 'all', 2 intra-op threads). Rounds interleave the
// candidates. Prints a table; the numbers are quoted in conv-transpose.ts.
//
//   npx tsx bench/conv-transpose-grad.ts [--rounds 20] [--k 4 --s 2 --p 1 --op 0]
import { ModelBuilder } from '../src/onnx/model-builder.ts';
import { Emitter } from '../src/onnx/emitter.ts';
import { encodeModel } from '../src/onnx/proto.ts';
import { createSession, toOrt } from '../src/onnx/runtime.ts';
import { f32 } from '../src/onnx/tensor.ts';
import { Rng } from '../src/util/rng.ts';
import { convDw, dwApplies, pickDw, type DwForm } from '../src/autodiff/rules/conv.ts';
import { convTransposeGeom } from '../src/autodiff/rules/conv-transpose.ts';
import type { Node } from '../src/onnx/ir.ts';

const args = process.argv.slice(2);
const ROUNDS = Number(args.includes('--rounds') ? args[args.indexOf('--rounds') + 1] : 20);
const num = (k: string, d: number) => (args.includes(k) ? Number(args[args.indexOf(k) + 1]) : d);
const N = 8, C = 64, O = 32, H = 32, K = num('--k', 4), S = num('--s', 2), P = num('--p', 1), OP = num('--op', 0);
const OH = (H - 1) * S + K - 2 * P + OP; // 64 for the default k=4 s=2 p=1
const attrs = { strides: [S, S], pads: [P, P, P, P], kernel_shape: [K, K], ...(OP ? { output_padding: [OP, OP] } : {}) };
const rng = new Rng(1);
const rand = (d: number[]) => f32(d, rng.fill(new Float32Array(d.reduce((a, b) => a * b, 1))));
const xs = [N, C, H, H], ws = [C, O, K, K], ys = [N, O, OH, OH];
const feeds = { x: rand(xs), w: rand(ws), dy: rand(ys) };
const node: Node = { name: 'ct', opType: 'ConvTranspose', domain: '', inputs: ['x', 'w'], outputs: ['y'], attrs: {} };
const em0 = new ModelBuilder({ opset: 17 });
em0.node('ConvTranspose', ['x', 'w'], ['y'], attrs);
Object.assign(node, { attrs: em0.build().graph.nodes[0]!.attrs });
const { conv: g } = convTransposeGeom(node, xs, ws, ys);

function model(build: (em: Emitter) => string): Uint8Array {
  const b = new ModelBuilder({ opset: 17 });
  b.input('x', 'float32', xs).input('w', 'float32', ws).input('dy', 'float32', ys);
  const m = b.build();
  const em = new Emitter(m.graph, 17);
  const out = build(em);
  m.graph.outputs.push({ name: out, dtype: 'float32', shape: null } as never);
  return encodeModel(m);
}

const cands: [string, Uint8Array][] = [
  ['forward ConvTranspose', model((em) => em.op('ConvTranspose', ['x', 'w'], attrs))],
  ['dX = Conv(dY, W) (the rule)', model((em) => em.op('Conv', ['dy', 'w'], { strides: g.strides, pads: [...g.padB, ...g.padE], kernel_shape: g.k }))],
];
const forms: DwForm[] = ['onehot-matmul', 'onehot-gemm', 'slices-matmul', 'slices-gemm', 'gather-matmul', 'conv-xt', 'conv-nc'];
for (const f of forms.filter((f) => dwApplies(g, f))) cands.push([`dW ${f}${f === pickDw(g) ? ' (the rule)' : ''}`, model((em) => convDw(em, g, 'dy', 'x', f))]);

const sessions = await Promise.all(cands.map(([, bytes]) => createSession(bytes, { threads: 2 })));
const times = cands.map(() => [] as number[]);
for (let r = 0; r < ROUNDS + 3; r++) {
  for (let i = 0; i < sessions.length; i++) {
    const s = sessions[i]!;
    const f = Object.fromEntries(s.inputNames.map((n) => [n, toOrt(feeds[n as keyof typeof feeds])]));
    const t0 = performance.now();
    await s.run(f);
    if (r >= 3) times[i]!.push(performance.now() - t0);
  }
}
const q = (a: number[], p: number) => [...a].sort((u, v) => u - v)[Math.floor(p * (a.length - 1))]!;
console.log(`N=${N} ${C}→${O} ${H}x${H}→${OH}x${OH} k=${K} s=${S} p=${P} output_padding=${OP}, ${ROUNDS} rounds, ms`);
console.log('| what | min | p25 | median |\n|---|---|---|---|');
cands.forEach(([name], i) => console.log(`| ${name} | ${q(times[i]!, 0).toFixed(1)} | ${q(times[i]!, 0.25).toFixed(1)} | ${q(times[i]!, 0.5).toFixed(1)} |`));
for (const s of sessions) await s.release();
