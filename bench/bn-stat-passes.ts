// The passes a batch-statistics BatchNorm can be built from, each alone, on activations of the
// foreign CNNs' BN layers: what decided the blocked BN-adapt form (src/onnx/nchwc-batchstats.ts).
// Each candidate is its own one-node-ish session; they alternate run by run (15 rounds, 2 threads).
//
//   npx tsx bench/bn-stat-passes.ts [N,C,H ...]   (default: 64,32,28 16,96,112 16,144,56)
//
// - reduce-02: ReduceSum and ReduceSumSquare of the blocked [N, C/b, H·W, b] view over axes 0, 2
//   (onnxruntime's generic strided reduction)
// - krk+rk: the same sums as [N·C/b, H·W, b] over axis 1 (its fast keep-reduce-keep path), then over N
// - krk-sq-mul: as krk+rk with the squares as Mul + ReduceSum
// - krk-sq-gram: as krk+rk with the squares as the diagonal of a batched Gram product vᵀv of each
//   [H·W, b] slice (b× the multiply-adds, but no squared tensor written and read back)
// - matmul-ones: the sums as a MatMul of a ones row against [N·C/b, H·W, b]
// - nchw-rkr: the same sums on NCHW as [N, C, H·W] over axes 0, 2 (reduce-keep-reduce)
// - bn-nchw: the whole training-mode BatchNormalization kernel on NCHW (moments + normalisation, one thread)
// - sub-centered: x − mean alone (the pass a two-pass or shifted decomposition adds)
// - affine-mul-add-relu: a·x + β then Relu as three elementwise ops on the blocked view
// - affine-dwconv-relu: the same as one blocked depthwise 1×1 Conv with fused Relu (com.microsoft.nchwc)
import { ModelBuilder } from '../src/onnx/model-builder.ts';
import { Emitter } from '../src/onnx/emitter.ts';
import { encodeModel } from '../src/onnx/proto.ts';
import { createSession, toOrt, type ort } from '../src/onnx/runtime.ts';
import { nchwcBlockSize, NCHWC_DOMAIN } from '../src/onnx/nchwc.ts';
import { f32 } from '../src/onnx/tensor.ts';
import { Rng } from '../src/util/rng.ts';
import { quantile } from './stats.ts';

const b = (await nchwcBlockSize()) ?? 16;
const args = process.argv.slice(2);
const geos = (args.length ? args : ['64,32,28', '16,96,112', '16,144,56']).map((s) => s.split(',').map(Number) as [number, number, number]);
console.log(`block ${b}; median ms of 15 alternating runs, 2 threads`);
for (const [N, C, H] of geos) {
  const HW = H * H, cb = C / b;
  const forms: Record<string, (em: Emitter) => string[]> = {
    'reduce-02': (em) => { const v = em.reshape('x', [N, cb, HW, b]); return [em.reduce('ReduceSum', v, [0, 2], false), em.reduce('ReduceSumSquare', v, [0, 2], false)]; },
    'krk+rk': (em) => {
      const v = em.reshape('x', [N * cb, HW, b]);
      return (['ReduceSum', 'ReduceSumSquare'] as const).map((op) => em.reduce('ReduceSum', em.reshape(em.reduce(op, v, [1], false), [N, C]), [0], false));
    },
    'krk-sq-mul': (em) => {
      const v = em.reshape('x', [N * cb, HW, b]);
      return [v, em.mul(v, v)].map((t) => em.reduce('ReduceSum', em.reshape(em.reduce('ReduceSum', t, [1], false), [N, C]), [0], false));
    },
    'krk-sq-gram': (em) => {
      const v = em.reshape('x', [N * cb, HW, b]);
      const eye = em.constant(f32([b, b], Float32Array.from({ length: b * b }, (_, i) => (i % (b + 1) === 0 ? 1 : 0))));
      const sq = em.reduce('ReduceSum', em.mul(em.op('MatMul', [em.transpose(v, [0, 2, 1]), v]), eye), [2], false);
      return [em.reduce('ReduceSum', v, [1], false), sq].map((t) => em.reduce('ReduceSum', em.reshape(t, [N, C]), [0], false));
    },
    'matmul-ones': (em) => {
      const v = em.reshape('x', [N * cb, HW, b]);
      const ones = em.constant(f32([1, HW], new Float32Array(HW).fill(1)));
      return [v, em.mul(v, v)].map((t) => em.reduce('ReduceSum', em.reshape(em.op('MatMul', [ones, t]), [N, C]), [0], false));
    },
    'nchw-rkr': (em) => { const v = em.reshape('x', [N, C, HW]); return [em.reduce('ReduceSum', v, [0, 2], false), em.reduce('ReduceSumSquare', v, [0, 2], false)]; },
    'bn-nchw': (em) => [em.emit('BatchNormalization', ['x', 'sc', 'bi', em.mul('sc', em.scalar(0)), em.mul('bi', em.scalar(0))], { momentum: { kind: 'float', value: 0 }, training_mode: 1 }, 3)[0]!],
    'sub-centered': (em) => [em.sub(em.reshape('x', [N, cb, HW, b]), 'm4')],
    'affine-mul-add-relu': (em) => [em.op('Relu', [em.add(em.mul(em.reshape('x', [N, cb, HW, b]), 'a4'), 'b4')])],
    'affine-dwconv-relu': (em) => {
      const y = em.fresh('y');
      em.graph.nodes.push({ name: 'dw', opType: 'Conv', domain: NCHWC_DOMAIN, inputs: ['x', em.reshape('sc', [C, 1, 1, 1]), 'bi'], outputs: [y], attrs: { group: { kind: 'int', value: C }, kernel_shape: { kind: 'ints', value: [1, 1] }, activation: { kind: 'string', value: 'Relu' } } });
      return [y];
    },
  };
  const sessions: Record<string, ort.InferenceSession> = {};
  for (const [k, body] of Object.entries(forms)) {
    const mb = new ModelBuilder({ opset: 15 });
    mb.input('x', 'float32', [N, C, H, H]);
    const vec = (v: number, dims: number[]) => f32(dims, new Float32Array(C).fill(v));
    mb.initializer('sc', vec(1.1, [C])).initializer('bi', vec(0.1, [C]));
    mb.initializer('m4', vec(0.3, [1, cb, 1, b])).initializer('a4', vec(1.3, [1, cb, 1, b])).initializer('b4', vec(0.2, [1, cb, 1, b]));
    const m = mb.build();
    if (k.includes('dwconv')) m.opsets.push({ domain: NCHWC_DOMAIN, version: 1 });
    const em = new Emitter(m.graph, 15);
    body(em).forEach((o, i) => {
      m.graph.nodes.push({ name: `o${i}`, opType: 'Identity', domain: '', inputs: [o], outputs: [`out${i}`], attrs: {} });
      m.graph.outputs.push({ name: `out${i}`, dtype: 'float32', shape: null });
    });
    sessions[k] = await createSession(encodeModel(m), { threads: 2 });
  }
  const x = toOrt(f32([N, C, H, H], new Rng(1).fill(new Float32Array(N * C * HW), 1)));
  const t: Record<string, number[]> = {};
  for (const k of Object.keys(forms)) { t[k] = []; await sessions[k]!.run({ x }); }
  for (let r = 0; r < 15; r++) for (const k of Object.keys(forms)) { const t0 = performance.now(); await sessions[k]!.run({ x }); t[k]!.push(performance.now() - t0); }
  console.log(`[${N},${C},${H},${H}]`, Object.keys(forms).map((k) => `${k} ${quantile(t[k]!, 0.5).toFixed(2)}`).join(' | '));
  for (const s of Object.values(sessions)) await s.release();
}
