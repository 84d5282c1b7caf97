import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NetBuilder } from '../../src/nn/index.ts';
import { RefitModel } from '../../src/model.ts';
import { Rng } from '../../src/util/rng.ts';
import { randn } from './helpers.ts';

const N = 2, T = 3, D = 4, H = 2, DH = D / H;

/** x·W + b for x [T, D] rows, W [D, D] stored [in, out] as the builder does. */
function linear(x: number[][], w: Float32Array, b: Float32Array): number[][] {
  return x.map((row) => Array.from({ length: D }, (_, o) => row.reduce((s, v, i) => s + v * w[i * D + o]!, b[o]!)));
}

/** Plain multi-head self-attention, one sample: softmax(q_h k_hᵀ / √dh) v_h per head, heads concatenated, then Wo. */
function reference(x: number[][], p: (n: string) => Float32Array): number[][] {
  const q = linear(x, p('attn.q.weight'), p('attn.q.bias'));
  const k = linear(x, p('attn.k.weight'), p('attn.k.bias'));
  const v = linear(x, p('attn.v.weight'), p('attn.v.bias'));
  const merged = x.map(() => new Array<number>(D).fill(0));
  for (let h = 0; h < H; h++) {
    const cols = Array.from({ length: DH }, (_, j) => h * DH + j);
    for (let i = 0; i < T; i++) {
      const scores = Array.from({ length: T }, (_, j) => cols.reduce((s, c) => s + q[i]![c]! * k[j]![c]!, 0) / Math.sqrt(DH));
      const m = Math.max(...scores);
      const e = scores.map((s) => Math.exp(s - m));
      const z = e.reduce((a, b) => a + b, 0);
      for (const c of cols) merged[i]![c] = e.reduce((s, w, j) => s + (w / z) * v[j]![c]!, 0);
    }
  }
  return linear(merged, p('attn.out.weight'), p('attn.out.bias'));
}

test('multi-head self-attention matches a plain TypeScript reference (≤ 1e-5)', async () => {
  const net = new NetBuilder({ seed: 4 });
  net.output(net.selfAttention(net.input('x', ['N', 'T', D]), { name: 'attn', heads: H }), 'y');
  const model = new RefitModel(net.build());
  assert.deepEqual(model.parameterNames(), ['q', 'k', 'v', 'out'].flatMap((l) => [`attn.${l}.weight`, `attn.${l}.bias`]));
  // Non-zero biases, so the bias path is checked too.
  const rng = new Rng(9);
  model.setParams(Object.fromEntries(['q', 'k', 'v', 'out'].map((l) => [`attn.${l}.bias`, rng.fill(new Float32Array(D), 0.5)])));
  const x = randn([N, T, D], 11);
  const y = (await model.run({ x })).y!;
  assert.deepEqual(y.dims, [N, T, D]);
  const p = (n: string) => model.param(n).data as Float32Array;
  let worst = 0;
  for (let b = 0; b < N; b++) {
    const rows = Array.from({ length: T }, (_, t) => Array.from(x.data.slice((b * T + t) * D, (b * T + t + 1) * D) as Float32Array));
    reference(rows, p).forEach((row, t) => row.forEach((want, d) => { worst = Math.max(worst, Math.abs((y.data[(b * T + t) * D + d] as number) - want)); }));
  }
  assert.ok(worst <= 1e-5, `max abs error ${worst}`);
  // A symbolic token count: the same graph runs on a longer sequence.
  assert.deepEqual((await model.run({ x: randn([1, 7, D], 2) })).y!.dims, [1, 7, D]);
});
