// A 3×3 pad-1 convolution with constant weights on a tiny image (ResNet-18's layer4 at 64×64
// input: [64, 512, 2, 2]) is a dense linear map of C·H·W inputs to C'·H·W outputs; most of its
// taps read padding (4 of 9 are real on 2×2). This times the Conv against the same map as one
// MatMul with a constant [C·H·W, C'·H·W] matrix (built here from the weights), alternating in one
// process (order flips each round), 2 threads, and reports their max relative difference.
//
//   npx tsx bench/tiny-conv-dense.ts [--shapes 64x512x2x2,64x256x4x4] [--rounds 30]
import { readFileSync } from 'node:fs';
import { ModelBuilder } from '../src/onnx/model-builder.ts';
import { encodeModel } from '../src/onnx/proto.ts';
import { createSession, toOrt } from '../src/onnx/runtime.ts';
import { f32 } from '../src/onnx/tensor.ts';
import { Rng } from '../src/util/rng.ts';
import { quantile, relDiff } from './stats.ts';

const args = process.argv.slice(2);
const argOf = (k: string) => (args.includes(k) ? args[args.indexOf(k) + 1] : undefined);
const shapes = (argOf('--shapes') ?? '64x512x2x2,64x256x4x4').split(',').map((s) => s.split('x').map(Number));
const ROUNDS = Number(argOf('--rounds') ?? 30);
const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

for (const [N, C, H, W] of shapes as [number, number, number, number][]) {
  const Co = C, k = 3;
  const rng = new Rng(2);
  const w = rng.fill(new Float32Array(Co * C * k * k), 0.05);
  // Dense map: out[co, oh, ow] = Σ_{ci, kh, kw} w[co, ci, kh, kw] · in[ci, oh + kh − 1, ow + kw − 1].
  const I = C * H * W, O = Co * H * W;
  const dense = new Float32Array(I * O); // [I, O] so that y = x · dense
  for (let co = 0; co < Co; co++) for (let oh = 0; oh < H; oh++) for (let ow = 0; ow < W; ow++) {
    const o = (co * H + oh) * W + ow;
    for (let ci = 0; ci < C; ci++) for (let kh = 0; kh < k; kh++) for (let kw = 0; kw < k; kw++) {
      const ih = oh + kh - 1, iw = ow + kw - 1;
      if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
      dense[((ci * H + ih) * W + iw) * O + o] = w[((co * C + ci) * k + kh) * k + kw]!;
    }
  }
  const conv = new ModelBuilder({ opset: 13 });
  conv.input('x', 'float32', [N, C, H, W]);
  conv.initializer('w', f32([Co, C, k, k], w));
  conv.node('Conv', ['x', 'w'], ['y'], { kernel_shape: [k, k], pads: [1, 1, 1, 1] });
  conv.output('y');
  const mm = new ModelBuilder({ opset: 13 });
  mm.input('x', 'float32', [N, C, H, W]);
  mm.initializer('m', f32([I, O], dense));
  mm.initializer('s_in', { dtype: 'int64', dims: [2], data: new BigInt64Array([BigInt(N), BigInt(I)]) } as never);
  mm.initializer('s_out', { dtype: 'int64', dims: [4], data: new BigInt64Array([BigInt(N), BigInt(Co), BigInt(H), BigInt(W)]) } as never);
  mm.node('Reshape', ['x', 's_in'], ['xf']);
  mm.node('MatMul', ['xf', 'm'], ['yf']);
  mm.node('Reshape', ['yf', 's_out'], ['y']);
  mm.output('y');
  const sess = { conv: await createSession(encodeModel(conv.build()), { threads: 2 }), dense: await createSession(encodeModel(mm.build()), { threads: 2 }) };
  const x = toOrt(f32([N, C, H, W], rng.fill(new Float32Array(N * C * H * W), 1)));
  const yc = (await sess.conv.run({ x })).y!.data as Float32Array;
  const yd = (await sess.dense.run({ x })).y!.data as Float32Array;
  const ms: Record<string, number[]> = { conv: [], dense: [] };
  for (let i = 0; i < 3; i++) { await sess.conv.run({ x }); await sess.dense.run({ x }); }
  const l0 = load();
  for (let r = 0; r < ROUNDS; r++) for (const kk of (r % 2 ? ['dense', 'conv'] : ['conv', 'dense']) as ('conv' | 'dense')[]) {
    const t = performance.now();
    await sess[kk].run({ x });
    ms[kk]!.push(performance.now() - t);
  }
  const c = quantile(ms.conv!, 0.5), d = quantile(ms.dense!, 0.5);
  console.log(`[${N},${C},${H},${W}] 3x3 pad 1, ${Co} out: conv ${c.toFixed(2)} ms, dense MatMul ${d.toFixed(2)} ms, dense / conv ${(d / c).toFixed(2)}, matrix ${(I * O * 4 / 2 ** 20).toFixed(0)} MB vs kernel ${(w.length * 4 / 2 ** 20).toFixed(1)} MB, max rel diff ${relDiff(yd, yc).toExponential(1)}, load ${l0} → ${load()}`);
  await sess.conv.release(); await sess.dense.release();
}
