// BN-adapt in the blocked NCHWc layout (src/onnx/nchwc-batchstats.ts) must give the numbers of the
// portable lowering (src/train/batchnorm-train.ts: onnxruntime's training-mode BatchNormalization,
// two-pass moments): ≤ 1e-5 relative on the logits, on a small MobileNetV2/ResNet-style model that
// has every form the pass writes (stem on 3 channels, depthwise 3×3 stride 1 and 2, 1×1 expansion
// convs whose statistics come from the input's moments, 1×1 projections, a residual Add fused as
// the blocked conv's Sum input, Relu and Clip fused as its activation, a 24-channel layer that is not
// a multiple of the block and stays NCHW), with a source prior, and with activations whose mean is
// 100 times their spread (where E[x²] − E[x]² without the shift would be off by ~6e-4).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { RefitModel } from '../../src/model.ts';
import { batchStatModel, bnAdaptForm } from '../../src/tta/bn-adapt.ts';
import { blockBatchStats, pointwiseStats } from '../../src/onnx/nchwc-batchstats.ts';
import { nchwcBlockSize, NCHWC_DOMAIN } from '../../src/onnx/nchwc.ts';
import { probeShapes, signatureOf } from '../../src/onnx/shapes.ts';
import { cloneModel } from '../../src/onnx/ir.ts';
import { f32, type Tensor } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';

const block = await nchwcBlockSize();
const skip = block === null && 'onnxruntime-node has no blocked kernels on this CPU: the pass is off';

/**
 * The test model; `bigMean` makes the stem's output and the expansion conv's input mean 100 with a spread of about 1: the one-pass
 * E[y²] − E[y]² would lose about 1e4 × float32 rounding (~6e-4 relative) there. (Much larger means
 * say nothing: a float32 activation of mean 1e4 is itself quantised to 1e-3 of its spread.)
 */
function model(b: number, bigMean = false): RefitModel {
  const rng = new Rng(7);
  const mb = new ModelBuilder({ opset: 13 });
  mb.input('x', 'float32', ['N', 3, 16, 16]);
  let k = 0;
  const randn = (dims: number[], s: number) => f32(dims, Float32Array.from({ length: dims.reduce((p, d) => p * d, 1) }, () => rng.normal() * s));
  const conv = (x: string, cin: number, cout: number, ks: number, stride: number, group = 1, bias?: number) => {
    const w = `w${k}`, y = `conv${k++}`;
    mb.initializer(w, randn([cout, cin / group, ks, ks], Math.sqrt(2 / ((cin / group) * ks * ks))));
    const inputs = [x, w];
    if (bias !== undefined) { mb.initializer(`${w}_b`, f32([cout], new Float32Array(cout).fill(bias))); inputs.push(`${w}_b`); }
    const p = (ks - 1) / 2;
    mb.node('Conv', inputs, [y], { kernel_shape: [ks, ks], strides: [stride, stride], pads: [p, p, p, p], group });
    return y;
  };
  const bn = (x: string, c: number, mean = 0, beta = 0) => {
    const y = `bn${k++}`;
    mb.initializer(`${y}_s`, f32([c], Float32Array.from({ length: c }, () => 0.5 + rng.next())));
    mb.initializer(`${y}_b`, f32([c], Float32Array.from({ length: c }, () => rng.normal() * 0.2 + beta)));
    mb.initializer(`${y}_m`, f32([c], Float32Array.from({ length: c }, () => mean + rng.normal() * 0.1)));
    mb.initializer(`${y}_v`, f32([c], Float32Array.from({ length: c }, () => 0.5 + rng.next())));
    mb.node('BatchNormalization', [x, `${y}_s`, `${y}_b`, `${y}_m`, `${y}_v`], [y], { epsilon: 1e-5 });
    return y;
  };
  const relu6 = (x: string) => { const y = `clip${k++}`; mb.node('Clip', [x, 'zero', 'six'], [y]); return y; };
  mb.initializer('zero', f32([], [0])).initializer('six', f32([], [6]));
  const C = 2 * b;
  let h = relu6(bn(conv('x', 3, C, 3, 2, 1, bigMean ? 100 : undefined), C, bigMean ? 100 : 0)); // stem: 3 channels in, NCHW input
  h = relu6(bn(conv(h, C, C, 3, 1, C), C)); // depthwise
  const narrow = bn(conv(h, C, b, 1, 1), b, 0, bigMean ? 100 : 0); // projection, no activation (bigMean: the expansion's input has mean 100)
  let e = relu6(bn(conv(narrow, b, 4 * b, 1, 1), 4 * b)); // expansion: statistics from the input's moments
  e = relu6(bn(conv(e, 4 * b, 4 * b, 3, 1, 4 * b), 4 * b));
  const proj = bn(conv(e, 4 * b, b, 1, 1), b);
  const res = `add${k++}`;
  mb.node('Add', [proj, narrow], [res]); // residual: fused as the Sum input
  const odd = `relu${k++}`;
  mb.node('Relu', [bn(conv(res, b, 24, 1, 1), 24)], [odd]); // 24 channels: not a block multiple, stays NCHW
  let r = relu6(bn(conv(odd, 24, C, 3, 2), C)); // 3×3 stride 2 on an NCHW input
  mb.node('GlobalAveragePool', [r], ['gap']);
  mb.node('Flatten', ['gap'], ['flat'], { axis: 1 });
  mb.initializer('fc', randn([C, 10], 0.3));
  mb.node('MatMul', ['flat', 'fc'], ['logits']);
  mb.output('logits');
  r = '';
  return new RefitModel(mb.build());
}

async function logits(m: RefitModel, x: Tensor, form: 'standard' | 'blocked', prior = 0, pointwise = true): Promise<Float32Array> {
  const saved = [bnAdaptForm.current, pointwiseStats.current] as const;
  bnAdaptForm.current = form;
  pointwiseStats.current = pointwise;
  try {
    const v = await batchStatModel(m, { x }, prior);
    try { return (await v.run({ x }, { outputs: ['logits'] })).logits!.data as Float32Array; } finally { await v.release(); }
  } finally { [bnAdaptForm.current, pointwiseStats.current] = saved; }
}

function relErr(a: Float32Array, ref: Float32Array): number {
  let d = 0, s = 0;
  for (let i = 0; i < a.length; i++) { d = Math.max(d, Math.abs(a[i]! - ref[i]!)); s = Math.max(s, Math.abs(ref[i]!)); }
  return d / s;
}

const input = (n: number, scale = 1) => { const rng = new Rng(3); return f32([n, 3, 16, 16], Float32Array.from({ length: n * 3 * 256 }, () => rng.normal() * scale)); };

test('blocked BN-adapt rewrites every blocked-size conv and BN, and leaves one reorder per exit from the layout', { skip }, async () => {
  const m = model(block!);
  const x = input(4);
  const ir = cloneModel(m.ir);
  const shapes = await probeShapes(m.ir, signatureOf({ x }));
  const r = blockBatchStats(ir, (t) => shapes.get(t)?.dims, block!);
  // 6 of the 8 convs and their BNs (the 24-channel conv and the one reading its output stay).
  assert.deepEqual(r, { convs: 6, batchNorms: 6 });
  const ops = ir.graph.nodes.map((n) => `${n.domain === NCHWC_DOMAIN ? 'nchwc.' : ''}${n.opType}`);
  assert.equal(ops.filter((o) => o === 'BatchNormalization').length, 2, 'the BNs of the two NCHW convs are left to the standard lowering');
  assert.equal(ops.filter((o) => o === 'nchwc.ReorderOutput').length, 1, `one exit from the layout (to the 24-channel conv): ${ops.join(' ')}`);
  assert.equal(ops.filter((o) => o === 'Clip').length, 1, 'every Clip after a blocked BN fuses into its conv (the last one follows an NCHW conv)');
  // The residual Add fused as a Sum input: what writes its output now is that exit's reorder.
  const res = ir.graph.nodes.find((n) => n.outputs.some((o) => /^add\d+$/.test(o)));
  assert.equal(res?.opType, 'ReorderOutput');
});

test('blocked BN-adapt gives the standard lowering\'s logits (≤ 1e-5 relative), with and without the pointwise statistics', { skip }, async () => {
  const m = model(block!);
  const x = input(4);
  const ref = await logits(m, x, 'standard');
  for (const pointwise of [true, false]) {
    const e = relErr(await logits(m, x, 'blocked', 0, pointwise), ref);
    assert.ok(e <= 1e-5, `pointwise ${pointwise}: ${e}`);
  }
});

test('blocked BN-adapt with a source prior N = 8 matches the standard lowering', { skip }, async () => {
  const m = model(block!);
  const x = input(4);
  const e = relErr(await logits(m, x, 'blocked', 8), await logits(m, x, 'standard', 8));
  assert.ok(e <= 1e-5, `${e}`);
  // The prior is not ignored: it moves the logits.
  assert.ok(relErr(await logits(m, x, 'blocked', 8), await logits(m, x, 'blocked', 0)) > 1e-3);
});

test('blocked BN-adapt: activations with mean 100 and spread ~1 keep their variance (shifted sums, no cancellation)', { skip }, async () => {
  const m = model(block!, true);
  const x = input(4);
  const ref = await logits(m, x, 'standard');
  const e = relErr(await logits(m, x, 'blocked'), ref);
  assert.ok(e <= 1e-5, `${e}`);
});
