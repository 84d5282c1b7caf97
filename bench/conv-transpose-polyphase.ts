// The stride-2 input gradient of a frozen 3×3 pad-1 convolution: onnxruntime's ConvTranspose
// (no blocked kernel) against the polyphase form (polyphaseDx below; measured 1.13-2.15x the
// ConvTranspose on cnn28's and ResNet-18's geometries, so refit does not use it): one stride-1 Conv
// with 2×2 taps producing the four output phases as channels (constant weights, so onnxruntime
// runs it on its blocked NCHWc kernel), DepthToSpace to interleave them, Slice to crop. 1.78× the
// multiply-adds (16 taps for 9). Alternating in one process, 2 threads; max relative difference.
//
//   npx tsx bench/conv-transpose-polyphase.ts [--shapes 64x64x14x14x32,64x512x2x2x256] [--rounds 30]
import { readFileSync } from 'node:fs';
import { ModelBuilder } from '../src/onnx/model-builder.ts';
import { encodeModel } from '../src/onnx/proto.ts';
import { cloneModel } from '../src/onnx/ir.ts';
import { createSession, toOrt } from '../src/onnx/runtime.ts';
import { f32, i64 } from '../src/onnx/tensor.ts';
import { Rng } from '../src/util/rng.ts';
import type { Model, Node } from '../src/onnx/ir.ts';
import { attrInt, attrInts, attrString } from '../src/onnx/ir.ts';
import { quantile, relDiff } from './stats.ts';

const args = process.argv.slice(2);
const argOf = (k: string) => (args.includes(k) ? args[args.indexOf(k) + 1] : undefined);
const shapes = (argOf('--shapes') ?? '64x64x14x14x32,64x64x7x7x64,64x512x2x2x256,64x256x4x4x128,64x128x8x8x64,16x512x7x7x256,16x128x28x28x64').split(',').map((s) => s.split('x').map(Number));
const ROUNDS = Number(argOf('--rounds') ?? 30);
const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

// The rewrite: a strided ConvTranspose with a constant weight as its s² output phases: one
// stride-1 Conv over dY with T = ⌈k/s⌉ taps per axis whose s²·C output channels are the phases
// (phase (r, q), tap (a, b) carries W[·, ·, r + s(T−1−a), q + s(T−1−b)]), DepthToSpace(s, CRD)
// to interleave them into the full transposed convolution, and a Slice to crop its pads.


/** Why a ConvTranspose keeps its form, or null. */
function keep(n: Node, m: Model): string | null {
  if ((n.domain && n.domain !== 'ai.onnx') || n.opType !== 'ConvTranspose') return 'not a ConvTranspose';
  const w = m.graph.initializers.get(n.inputs[1] ?? '');
  if (!w || w.dtype !== 'float32' || w.dims.length !== 4) return 'weight not a float32 4-D constant';
  if (n.inputs[2]) return 'bias';
  if (attrInt(n, 'group', 1) !== 1) return 'grouped';
  if (attrInts(n, 'output_shape')) return 'output_shape';
  if (attrString(n, 'auto_pad', 'NOTSET') !== 'NOTSET') return 'auto_pad';
  const s = attrInts(n, 'strides', [1, 1]);
  if (s[0] !== s[1] || s[0]! < 2) return 'stride not equal and > 1 on both axes';
  if (attrInts(n, 'dilations', [1, 1]).some((d) => d !== 1)) return 'dilated';
  const k = w.dims.slice(2), T = k.map((x) => Math.ceil(x / s[0]!));
  if (k.some((x) => x < s[0]!)) return 'kernel smaller than stride (mostly-zero phases)';
  const p = attrInts(n, 'pads', [0, 0, 0, 0]), op = attrInts(n, 'output_padding', [0, 0]);
  if (k.some((x, i) => op[i]! + x - p[i + 2]! > s[0]! * T[i]!)) return 'crop beyond the phases';
  return null;
}

/** Rewrite every qualifying ConvTranspose of `m` in place; returns their names. */
function polyphaseDx(m: Model): string[] {
  const done: string[] = [];
  const g = m.graph;
  const names = new Set([...g.initializers.keys(), ...g.nodes.flatMap((n) => [...n.inputs, ...n.outputs, n.name])]);
  const fresh = (base: string) => { let k = base, i = 0; while (names.has(k)) k = `${base}_${++i}`; names.add(k); return k; };
  const out: Node[] = [];
  for (const n of g.nodes) {
    if (keep(n, m) !== null) { out.push(n); continue; }
    const w = g.initializers.get(n.inputs[1]!)!;
    const [Co, Ci, kh, kw] = w.dims as [number, number, number, number];
    const s = attrInts(n, 'strides')![0]!;
    const Th = Math.ceil(kh / s), Tw = Math.ceil(kw / s);
    const wd = w.data as Float32Array;
    const P = new Float32Array(s * s * Ci * Co * Th * Tw);
    for (let c = 0; c < Ci; c++) for (let r = 0; r < s; r++) for (let q = 0; q < s; q++) {
      const oc = (c * s + r) * s + q;
      for (let co = 0; co < Co; co++) for (let a = 0; a < Th; a++) {
        const i = r + s * (Th - 1 - a);
        if (i >= kh) continue;
        for (let b = 0; b < Tw; b++) {
          const j = q + s * (Tw - 1 - b);
          if (j >= kw) continue;
          P[((oc * Co + co) * Th + a) * Tw + b] = wd[((co * Ci + c) * kh + i) * kw + j]!;
        }
      }
    }
    const pName = fresh(`${n.name || 'convT'}_phases_w`);
    g.initializers.set(pName, f32([s * s * Ci, Co, Th, Tw], P));
    const phases = fresh(`${n.name}_phases`), full = fresh(`${n.name}_full`);
    out.push({ name: fresh(`${n.name}_phase_conv`), opType: 'Conv', domain: '', inputs: [n.inputs[0]!, pName], outputs: [phases], attrs: { kernel_shape: { kind: 'ints', value: [Th, Tw] }, pads: { kind: 'ints', value: [Th - 1, Tw - 1, Th - 1, Tw - 1] } } });
    out.push({ name: fresh(`${n.name}_interleave`), opType: 'DepthToSpace', domain: '', inputs: [phases], outputs: [full], attrs: { blocksize: { kind: 'int', value: s }, mode: { kind: 'string', value: 'CRD' } } });
    // dX[i] = full[i + padBegin]; its end, counted from full's end: op + k − padEnd − s·T (≤ 0).
    const p = attrInts(n, 'pads', [0, 0, 0, 0]), op = attrInts(n, 'output_padding', [0, 0]);
    const endOff = [op[0]! + kh - p[2]! - s * Th, op[1]! + kw - p[3]! - s * Tw];
    const BIG = 2 ** 31 - 1;
    const starts = fresh(`${n.name}_crop_starts`), ends = fresh(`${n.name}_crop_ends`), axes = fresh(`${n.name}_crop_axes`);
    g.initializers.set(starts, i64([2], [p[0]!, p[1]!]));
    g.initializers.set(ends, i64([2], endOff.map((e) => (e === 0 ? BIG : e))));
    g.initializers.set(axes, i64([2], [2, 3]));
    out.push({ name: fresh(`${n.name}_crop`), opType: 'Slice', domain: '', inputs: [full, starts, ends, axes], outputs: [n.outputs[0]!], attrs: {} });
    done.push(n.name);
  }
  g.nodes = out;
  return done;
}

for (const [N, Co, Hp, Wp, Ci] of shapes as [number, number, number, number, number][]) {
  const rng = new Rng(3);
  const w = f32([Co, Ci, 3, 3], rng.fill(new Float32Array(Co * Ci * 9), 0.05));
  const H = 2 * Hp, W = 2 * Wp; // forward input size (even): 3×3 stride 2 pad 1 gives Hp×Wp
  const ct = new ModelBuilder({ opset: 13 });
  ct.input('g', 'float32', [N, Co, Hp, Wp]);
  ct.initializer('w', w);
  ct.node('ConvTranspose', ['g', 'w'], ['dx'], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], output_padding: [1, 1] }, 'ct');
  ct.output('dx');
  const ctModel = ct.build();
  const pp = cloneModel(ctModel);
  const ok = polyphaseDx(pp);
  if (ok.length !== 1) throw new Error('polyphase rewrite did not apply');
  const sess = { ct: await createSession(encodeModel(ctModel), { threads: 2 }), poly: await createSession(encodeModel(pp), { threads: 2 }) };
  const g = toOrt(f32([N, Co, Hp, Wp], rng.fill(new Float32Array(N * Co * Hp * Wp), 1)));
  const a = (await sess.ct.run({ g })).dx!, b = (await sess.poly.run({ g })).dx!;
  if (a.dims.join() !== [N, Ci, H, W].join() || b.dims.join() !== a.dims.join()) throw new Error(`dims ${a.dims} / ${b.dims}`);
  const ms: Record<string, number[]> = { ct: [], poly: [] };
  for (let i = 0; i < 3; i++) { await sess.ct.run({ g }); await sess.poly.run({ g }); }
  const l0 = load();
  for (let r = 0; r < ROUNDS; r++) for (const k of (r % 2 ? ['poly', 'ct'] : ['ct', 'poly']) as ('ct' | 'poly')[]) {
    const t = performance.now();
    await sess[k].run({ g });
    ms[k]!.push(performance.now() - t);
  }
  const c = quantile(ms.ct!, 0.5), p = quantile(ms.poly!, 0.5);
  console.log(`dY [${N},${Co},${Hp},${Wp}] -> dX [${N},${Ci},${H},${W}]: ConvTranspose ${c.toFixed(2)} ms, polyphase ${p.toFixed(2)} ms, poly / ct ${(p / c).toFixed(2)}, max rel diff ${relDiff(b.data as Float32Array, a.data as Float32Array).toExponential(1)}, load ${l0} → ${load()}`);
  await sess.ct.release(); await sess.poly.release();
}
