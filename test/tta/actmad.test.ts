// ActMAD against its reference code's definition: the source statistics are per-element batch
// moments of the BatchNorm outputs (unbiased variance) averaged over source batches; the loss is
// ½ Σ_layers (mean |Δμ| + mean |Δσ²|) with BatchNorm on its running statistics; its gradient
// matches finite differences; steps pull the stream's statistics toward the source's; bad options
// are refused by name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { RefitModel } from '../../src/model.ts';
import { createAdapter } from '../../src/tta/index.ts';
import { actmadLoss } from '../../src/tta/actmad.ts';
import { gradCheck } from '../../src/autodiff/gradcheck.ts';
import { f32, type Tensor } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';

/** Conv 2→3 (3×3) → BN → Relu → Conv 3→2 (1×1) → BN: a dense output, as a detector head's. */
function model(): RefitModel {
  const r = new Rng(3);
  const w = (dims: number[], s = 0.4) => f32(dims, Array.from({ length: dims.reduce((a, b) => a * b) }, () => r.normal() * s));
  const b = new ModelBuilder({ opset: 13 }).input('x', 'float32', ['N', 2, 4, 4]);
  b.initializer('w1', w([3, 2, 3, 3])).initializer('w2', w([2, 3, 1, 1]));
  for (const [k, c] of [['bn1', 3], ['bn2', 2]] as const) {
    b.initializer(`${k}_s`, f32([c], Array.from({ length: c }, () => 1 + 0.2 * r.normal()))).initializer(`${k}_b`, w([c], 0.1))
      .initializer(`${k}_m`, w([c], 0.1)).initializer(`${k}_v`, f32([c], Array.from({ length: c }, () => 1 + 0.3 * r.next())));
  }
  b.node('Conv', ['x', 'w1'], ['c1'], { pads: [1, 1, 1, 1] }).node('BatchNormalization', ['c1', 'bn1_s', 'bn1_b', 'bn1_m', 'bn1_v'], ['n1'])
    .node('Relu', ['n1'], ['a1']).node('Conv', ['a1', 'w2'], ['c2']).node('BatchNormalization', ['c2', 'bn2_s', 'bn2_b', 'bn2_m', 'bn2_v'], ['out']).output('out');
  return new RefitModel(b.build());
}

const batch = (n: number, seed: number, shift = 0, scale = 1) => { const r = new Rng(seed); return f32([n, 2, 4, 4], Array.from({ length: n * 32 }, () => shift + scale * r.normal())); };

function moments(t: Tensor): { mean: number[]; variance: number[] } {
  const n = t.dims[0]!, per = t.data.length / n, x = t.data as Float32Array;
  const mean = Array.from({ length: per }, (_, k) => { let s = 0; for (let i = 0; i < n; i++) s += x[i * per + k]!; return s / n; });
  const variance = mean.map((m, k) => { let s = 0; for (let i = 0; i < n; i++) s += (x[i * per + k]! - m) ** 2; return s / (n - 1); });
  return { mean, variance };
}

test('ActMAD: the loss is the reference code\'s (source moments averaged over batches, unbiased batch variance, ½ Σ mean L1) and steps lower it', async () => {
  const m = model();
  const source = f32([8, 2, 4, 4], new Float32Array([...batch(4, 1).data as Float32Array, ...batch(4, 2).data as Float32Array]));
  const target = batch(6, 9, 1.5, 2); // a brighter, higher-contrast camera
  // By hand: the layers' outputs from plain inference (BatchNorm on running statistics).
  const layers = ['n1', 'out'];
  const src = await Promise.all([0, 1].map((b) => m.run({ x: f32([4, 2, 4, 4], (source.data as Float32Array).subarray(b * 128, (b + 1) * 128)) }, { outputs: layers })));
  const tgt = await m.run({ x: target }, { outputs: layers });
  let want = 0;
  for (const t of layers) {
    const s = src.map((o) => moments(o[t]!)), g = moments(tgt[t]!);
    const per = g.mean.length;
    let dm = 0, dv = 0;
    for (let k = 0; k < per; k++) {
      dm += Math.abs(g.mean[k]! - (s[0]!.mean[k]! + s[1]!.mean[k]!) / 2);
      dv += Math.abs(g.variance[k]! - (s[0]!.variance[k]! + s[1]!.variance[k]!) / 2);
    }
    want += (dm + dv) / per;
  }
  want *= 0.5;
  const a = createAdapter(m, 'actmad', { sourceData: source, sourceBatch: 4, lr: 0.01 });
  const first = await a.predict(target);
  assert.ok(Math.abs(first.info.loss! - want) < 1e-5 * want, `loss ${first.info.loss} vs ${want}`);
  assert.deepEqual(first.logits.dims, [6, 2, 4, 4], 'the prediction is the model\'s own output, whatever its shape');
  let last = first.info.loss!;
  for (let i = 0; i < 15; i++) last = (await a.predict(target)).info.loss!;
  assert.ok(last < 0.7 * first.info.loss!, `loss ${first.info.loss} → ${last}`);
  await a.release();
});

test('ActMAD: the gradient of its loss matches finite differences, BatchNorm on running statistics', async () => {
  const m = model();
  const stats: Record<string, Tensor> = {};
  ['n1', 'out'].forEach((t, i) => {
    const per = t === 'n1' ? 3 * 16 : 2 * 16, dims = t === 'n1' ? [3, 4, 4] : [2, 4, 4], r = new Rng(20 + i);
    stats[`actmad_mean_${i}`] = f32(dims, Array.from({ length: per }, () => r.normal() * 0.3));
    stats[`actmad_var_${i}`] = f32(dims, Array.from({ length: per }, () => 0.5 + r.next()));
  });
  const report = await gradCheck(m.ir, { x: batch(5, 4, 0.5, 1.5), ...stats }, { params: ['w1', 'w2', 'bn1_s', 'bn2_b'], loss: actmadLoss(['n1', 'out']), batchNorm: 'eval', eps: 1e-3, tol: 2e-2 });
  for (const r of report) assert.ok(r.relError < 2e-2, `${r.param}: ${r.relError}`);
});

test('ActMAD: no BatchNorm without layers, unknown layers, missing or too little source data are refused by name', () => {
  const m = model();
  const src = batch(8, 1);
  assert.throws(() => createAdapter(m, 'actmad', {}), /sourceData/);
  assert.throws(() => createAdapter(m, 'actmad', { sourceData: src, layers: ['nope'] }), /'layers' names tensors no node computes: nope/);
  assert.throws(() => createAdapter(m, 'actmad', { sourceData: src, sourceBatch: 16 }), /sourceData has 8 samples, fewer than one source batch/);
  const plain = new ModelBuilder({ opset: 13 }).input('x', 'float32', ['N', 2]).initializer('w', f32([2, 2], [1, 0, 0, 1])).node('MatMul', ['x', 'w'], ['y']).output('y').build();
  assert.throws(() => createAdapter(new RefitModel(plain), 'actmad', { sourceData: f32([4, 2], [1, 2, 3, 4, 5, 6, 7, 8]), sourceBatch: 2 }), /this model has none; name the tensors to match with 'layers'/);
});
