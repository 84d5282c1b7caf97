// The stride-2 input gradient of a frozen 3×3 pad-1 convolution (a Tent/EATA/SAR step's dX of a
// downsampling conv) in three forms, alternating in one process at 2 threads:
//   ct     onnxruntime's ConvTranspose (what the gradient rule writes; no blocked kernel)
//   poly   one stride-1 Conv with 2×2 taps whose 4·C output channels are the phases (16 taps for 9
//          multiply-adds), DepthToSpace, Slice (bench/conv-transpose-polyphase.ts, session 5)
//   four   the four output phases as four stride-1 Convs with exactly their taps (1×1, 1×2, 2×1,
//          2×2: 9 multiply-adds for 9, each on the blocked kernel), Concat, DepthToSpace (DCR)
// For output phase (a, b) (row parity a, column parity b): row taps p = 1 if a = 0, else p = 2 at
// dY row u and p = 0 at row u + 1 (a bottom pad of 1); columns alike.
//
//   npx tsx bench/conv-transpose-phases.ts [--shapes 64x64x14x14x32,64x64x7x7x64] [--rounds 30]
import { ModelBuilder } from '../src/onnx/model-builder.ts';
import { encodeModel } from '../src/onnx/proto.ts';
import { createSession, toOrt } from '../src/onnx/runtime.ts';
import { f32 } from '../src/onnx/tensor.ts';
import { Rng } from '../src/util/rng.ts';
import { quantile, relDiff } from './stats.ts';

const args = process.argv.slice(2);
const argOf = (k: string) => (args.includes(k) ? args[args.indexOf(k) + 1] : undefined);
const shapes = (argOf('--shapes') ?? '64x64x14x14x32,64x64x7x7x64,16x128x28x28x64,64x256x4x4x128').split(',').map((s) => s.split('x').map(Number)) as [number, number, number, number, number][];
const ROUNDS = Number(argOf('--rounds') ?? 30);

/** Phase (a, b)'s taps of W [K, C, 3, 3] as a Conv weight [C, K, th, tw] over dY. */
function phaseWeight(w: Float32Array, K: number, C: number, a: number, b: number): { data: Float32Array; dims: [number, number, number, number] } {
  const rows = a === 0 ? [1] : [2, 0], cols = b === 0 ? [1] : [2, 0];
  const th = rows.length, tw = cols.length;
  const out = new Float32Array(C * K * th * tw);
  for (let c = 0; c < C; c++) for (let k = 0; k < K; k++) for (let i = 0; i < th; i++) for (let j = 0; j < tw; j++) {
    out[((c * K + k) * th + i) * tw + j] = w[((k * C + c) * 3 + rows[i]!) * 3 + cols[j]!]!;
  }
  return { data: out, dims: [C, K, th, tw] };
}

for (const [N, K, Hp, Wp, C] of shapes) {
  const rng = new Rng(3);
  const wData = rng.fill(new Float32Array(K * C * 9), 0.05);
  const ct = new ModelBuilder({ opset: 13 });
  ct.input('g', 'float32', [N, K, Hp, Wp]);
  ct.initializer('w', f32([K, C, 3, 3], wData));
  ct.node('ConvTranspose', ['g', 'w'], ['dx'], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], output_padding: [1, 1] }, 'ct');
  ct.output('dx');

  const four = new ModelBuilder({ opset: 13 });
  four.input('g', 'float32', [N, K, Hp, Wp]);
  const phases: string[] = [];
  for (const a of [0, 1]) for (const b of [0, 1]) {
    const pw = phaseWeight(wData, K, C, a, b);
    four.initializer(`w${a}${b}`, f32(pw.dims, pw.data));
    four.node('Conv', ['g', `w${a}${b}`], [`p${a}${b}`], { kernel_shape: [pw.dims[2], pw.dims[3]], pads: [0, 0, a, b] }, `conv${a}${b}`);
    phases.push(`p${a}${b}`);
  }
  four.node('Concat', phases, ['cat'], { axis: 1 }, 'cat');
  four.node('DepthToSpace', ['cat'], ['dx'], { blocksize: 2, mode: 'DCR' }, 'd2s');
  four.output('dx');

  const sess = { ct: await createSession(encodeModel(ct.build()), { threads: 2 }), four: await createSession(encodeModel(four.build()), { threads: 2 }) };
  const g = toOrt(f32([N, K, Hp, Wp], rng.fill(new Float32Array(N * K * Hp * Wp), 1)));
  const x = (await sess.ct.run({ g })).dx!, y = (await sess.four.run({ g })).dx!;
  if (x.dims.join() !== y.dims.join()) throw new Error(`dims ${x.dims} / ${y.dims}`);
  const ms: Record<'ct' | 'four', number[]> = { ct: [], four: [] };
  for (let i = 0; i < 3; i++) { await sess.ct.run({ g }); await sess.four.run({ g }); }
  for (let r = 0; r < ROUNDS; r++) for (const k of (r % 2 ? ['four', 'ct'] : ['ct', 'four']) as ('ct' | 'four')[]) {
    const t = performance.now();
    await sess[k].run({ g });
    ms[k].push(performance.now() - t);
  }
  const c = quantile(ms.ct, 0.5), f = quantile(ms.four, 0.5);
  console.log(`dY [${N},${K},${Hp},${Wp}] -> dX [${N},${C},${2 * Hp},${2 * Wp}]: ConvTranspose ${c.toFixed(2)} ms, four phase convs ${f.toFixed(2)} ms, four / ct ${(f / c).toFixed(2)}, max rel diff ${relDiff(y.data as Float32Array, x.data as Float32Array).toExponential(1)}`);
  await sess.ct.release(); await sess.four.release();
}
