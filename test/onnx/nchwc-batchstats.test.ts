// BN-adapt in the blocked NCHWc layout (src/onnx/nchwc-batchstats.ts) must give the numbers of the
// portable lowering (src/train/batchnorm-train.ts: onnxruntime's training-mode BatchNormalization,
// two-pass moments): ≤ 1e-5 relative on the logits, on a small MobileNetV2/ResNet-style model that
// has every form the pass writes (stem on 3 channels, depthwise 3×3 stride 1 and 2, 1×1 expansion
// convs whose statistics come from the input's moments, 1×1 projections, a residual Add fused as
// the blocked conv's Sum input, Relu and Clip fused as its activation, a 24-channel layer padded to
// whole blocks), with a source prior; x·HardSigmoid(x) fused as HardSwish; SiLU and
// squeeze-excitation kept in the layout; and, against a float64 reference, on activations whose mean
// is 1000 times their spread (where E[x²] − E[x]² without the shift would lose most digits).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { RefitModel } from '../../src/model.ts';
import { batchStatModel, bnAdaptForm } from '../../src/tta/bn-adapt.ts';
import { blockBatchStats, pointwiseStats, pointwiseStatsPay } from '../../src/onnx/nchwc-batchstats.ts';
import { nchwcBlockSize, NCHWC_DOMAIN } from '../../src/onnx/nchwc.ts';
import { probeShapes, signatureOf } from '../../src/onnx/shapes.ts';
import { cloneModel, type Node } from '../../src/onnx/ir.ts';
import { f32, type Tensor } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';

const block = await nchwcBlockSize();
const skip = block === null && 'onnxruntime-node has no blocked kernels on this CPU: the pass is off';

/** The test model (block size b). */
function model(b: number): RefitModel {
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
  // One bound an initializer, the other a Constant node (as torch.onnx writes ReLU6's).
  mb.initializer('zero', f32([], [0])).node('Constant', [], ['six'], { value: f32([], [6]) });
  const C = 2 * b;
  let h = relu6(bn(conv('x', 3, C, 3, 2), C)); // stem: 3 channels in, NCHW input
  h = relu6(bn(conv(h, C, C, 3, 1, C), C)); // depthwise
  h = relu6(bn(conv(h, C, 2 * C, 1, 1), 2 * C)); // expansion from two blocks (its input is transposed to rows)
  const narrow = bn(conv(h, 2 * C, b, 1, 1), b); // projection, no activation
  let e = relu6(bn(conv(narrow, b, 4 * b, 1, 1), 4 * b)); // expansion: statistics from the input's moments
  e = relu6(bn(conv(e, 4 * b, 4 * b, 3, 1, 4 * b), 4 * b));
  const proj = bn(conv(e, 4 * b, b, 1, 1), b);
  const res = `add${k++}`;
  mb.node('Add', [proj, narrow], [res]); // residual: fused as the Sum input
  const odd = `relu${k++}`;
  mb.node('Relu', [bn(conv(res, b, 24, 1, 1), 24)], [odd]); // 24 channels: not a block multiple (padded)
  let r = relu6(bn(conv(odd, 24, C, 3, 2), C)); // 3×3 stride 2 on the padded input
  mb.node('GlobalAveragePool', [r], ['gap']);
  mb.node('Flatten', ['gap'], ['flat'], { axis: 1 });
  mb.initializer('fc', randn([C, 10], 0.3));
  mb.node('MatMul', ['flat', 'fc'], ['logits']);
  mb.output('logits');
  r = '';
  return new RefitModel(mb.build());
}

async function logits(m: RefitModel, x: Tensor, form: 'standard' | 'blocked', prior = 0, pointwise = true): Promise<Float32Array> {
  const saved = [bnAdaptForm.current, pointwiseStats.current, pointwiseStats.maxCost] as const;
  bnAdaptForm.current = form;
  pointwiseStats.current = pointwise;
  pointwiseStats.maxCost = Infinity; // every widening 1×1 conv of the small test model takes the Gram route
  try {
    const v = await batchStatModel(m, { x }, prior);
    try { return (await v.run({ x }, { outputs: ['logits'] })).logits!.data as Float32Array; } finally { await v.release(); }
  } finally { [bnAdaptForm.current, pointwiseStats.current, pointwiseStats.maxCost] = saved; }
}

function relErr(a: Float32Array, ref: Float32Array): number {
  let d = 0, s = 0;
  for (let i = 0; i < a.length; i++) { d = Math.max(d, Math.abs(a[i]! - ref[i]!)); s = Math.max(s, Math.abs(ref[i]!)); }
  return d / s;
}

const input = (n: number, scale = 1) => { const rng = new Rng(3); return f32([n, 3, 16, 16], Float32Array.from({ length: n * 3 * 256 }, () => rng.normal() * scale)); };

test('blocked BN-adapt rewrites every blocked-size conv and BN, and the pooling head reads the blocked layout', { skip }, async () => {
  const m = model(block!);
  const x = input(4);
  const ir = cloneModel(m.ir);
  const shapes = await probeShapes(m.ir, signatureOf({ x }));
  // Every widening 1×1 conv on the Gram route, whatever the cost gate says of these small maps.
  const r = blockBatchStats(ir, (t) => shapes.get(t)?.dims, block!, { pointwiseMaxCost: Infinity });
  // Every conv and BN (the 24-channel layer padded to whole blocks).
  assert.deepEqual(r, { convs: 9, batchNorms: 9 });
  const ops = ir.graph.nodes.map((n) => `${n.domain === NCHWC_DOMAIN ? 'nchwc.' : ''}${n.opType}`);
  assert.equal(ops.filter((o) => o === 'BatchNormalization').length, 0);
  // The pooling head reads the blocked tensor (its channels fill whole blocks): no exit at all.
  assert.equal(ops.filter((o) => o === 'nchwc.ReorderOutput').length, 0, `no exit from the layout: ${ops.join(' ')}`);
  assert.equal(ops.filter((o) => o === 'GlobalAveragePool').length, 0);
  assert.equal(ops.filter((o) => o === 'nchwc.ReorderInput').length, 0, 'the stem reads the NCHW input itself');
  assert.equal(ops.filter((o) => o === 'Clip').length, 0, 'every Clip fuses into its conv');
  // The fused Clips' bounds leave the graph with them (onnxruntime would warn of each unused one).
  const read = new Set(ir.graph.nodes.flatMap((n) => n.inputs));
  assert.deepEqual([...ir.graph.initializers.keys()].filter((t) => !read.has(t)), [], 'initializers no node reads');
  assert.deepEqual(ir.graph.nodes.filter((n) => n.opType === 'Constant' && !n.outputs.some((o) => read.has(o))).map((n) => n.outputs[0]), [], 'Constant nodes no node reads');
  // The residual Add fused as a Sum input: no node writes its output.
  assert.ok(!ir.graph.nodes.some((n) => n.outputs.some((o) => /^add\d+$/.test(o))));
  // Each BN's shift K is the mean of its conv's outputs on a grid over every sample (nchwc-shift.ts):
  // the same conv with strides times k and top/left pads grown by (k − ⌊k/2⌋)·stride, the first
  // output row and column dropped. Batch 4: the stem (3×3, stride 2, pad 1, 8×8 out) and the
  // depthwise 3×3 (stride 1, pad 1, 8×8) have 256 outputs a channel, so k = 2; a 4×4 map has 64: k = 1.
  const ints = (n: Node, a: string) => (n.attrs[a] as { value: number[] }).value;
  const grids = ir.graph.nodes.filter((n) => n.domain === NCHWC_DOMAIN && n.outputs[0]!.endsWith('_grid'));
  assert.equal(grids.length, 6, 'the three 1×1 expansions take their statistics from their inputs');
  assert.deepEqual([ints(grids[0]!, 'strides'), ints(grids[0]!, 'pads')], [[4, 4], [3, 3, 1, 1]]);
  assert.deepEqual([ints(grids[1]!, 'strides'), ints(grids[1]!, 'pads')], [[2, 2], [2, 2, 1, 1]]);
  assert.deepEqual([ints(grids[5]!, 'strides'), ints(grids[5]!, 'pads')], [[2, 2], [3, 3, 1, 1]], 'k = 1: the conv\'s own strides, every output but the dropped first');
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

/**
 * Two layers whose inputs have mean ~1000 and spread ~1: a 1×1 expansion fed x directly (statistics
 * from the input's moments) and a 3×3 conv with bias ~1000 (statistics from its output). Without the
 * shifts, E[y²] − E[y]² loses about 1e6 × float32 rounding there.
 */
function bigMeanModel(b: number): RefitModel {
  const rng = new Rng(5);
  const mb = new ModelBuilder({ opset: 13 });
  const randn = (n: number, s: number, m = 0) => Float32Array.from({ length: n }, () => m + rng.normal() * s);
  mb.input('x', 'float32', ['N', b, 8, 8]);
  mb.initializer('w1', f32([2 * b, b, 1, 1], randn(2 * b * b, 0.3)));
  mb.initializer('w2', f32([2 * b, 2 * b, 3, 3], randn(36 * b * b, 0.05)));
  mb.initializer('b2', f32([2 * b], randn(2 * b, 0, 1000)));
  for (const l of ['1', '2']) {
    mb.initializer(`s${l}`, f32([2 * b], randn(2 * b, 0.2, 1))).initializer(`t${l}`, f32([2 * b], randn(2 * b, 0.2)));
    mb.initializer(`m${l}`, f32([2 * b], randn(2 * b, 0.1))).initializer(`v${l}`, f32([2 * b], randn(2 * b, 0.1, 1)));
  }
  mb.node('Conv', ['x', 'w1'], ['c1'], { kernel_shape: [1, 1] });
  mb.node('BatchNormalization', ['c1', 's1', 't1', 'm1', 'v1'], ['n1']);
  mb.node('Relu', ['n1'], ['r1']);
  mb.node('Conv', ['r1', 'w2', 'b2'], ['c2'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] });
  mb.node('BatchNormalization', ['c2', 's2', 't2', 'm2', 'v2'], ['logits']);
  mb.output('logits');
  return new RefitModel(mb.build());
}

/** bigMeanModel's BN-adapt forward in float64 (the reference). */
function bigMeanReference(m: RefitModel, x: Float32Array, N: number, b: number): Float64Array {
  const P = (k: string) => m.param(k).data as Float32Array;
  const C = 2 * b, S = 64;
  const bn = (c: Float64Array, l: string) => {
    const [s, t] = [P(`s${l}`), P(`t${l}`)];
    for (let o = 0; o < C; o++) {
      let mean = 0, v = 0;
      for (let n = 0; n < N; n++) for (let i = 0; i < S; i++) mean += c[(n * C + o) * S + i]!;
      mean /= N * S;
      for (let n = 0; n < N; n++) for (let i = 0; i < S; i++) v += (c[(n * C + o) * S + i]! - mean) ** 2;
      const r = 1 / Math.sqrt(v / (N * S) + 1e-5);
      for (let n = 0; n < N; n++) for (let i = 0; i < S; i++) { const j = (n * C + o) * S + i; c[j] = s[o]! * (c[j]! - mean) * r + t[o]!; }
    }
    return c;
  };
  const c1 = new Float64Array(N * C * S), w1 = P('w1');
  for (let n = 0; n < N; n++) for (let o = 0; o < C; o++) for (let i = 0; i < b; i++) for (let p = 0; p < S; p++) c1[(n * C + o) * S + p]! += w1[o * b + i]! * x[(n * b + i) * S + p]!;
  const r1 = bn(c1, '1').map((v) => Math.max(0, v));
  const c2 = new Float64Array(N * C * S), w2 = P('w2'), b2 = P('b2');
  for (let n = 0; n < N; n++) for (let o = 0; o < C; o++) for (let h = 0; h < 8; h++) for (let w = 0; w < 8; w++) {
    let acc = b2[o]!;
    for (let i = 0; i < C; i++) for (let kh = 0; kh < 3; kh++) for (let kw = 0; kw < 3; kw++) {
      const hh = h + kh - 1, ww = w + kw - 1;
      if (hh >= 0 && hh < 8 && ww >= 0 && ww < 8) acc += w2[((o * C + i) * 3 + kh) * 3 + kw]! * r1[(n * C + i) * S + hh * 8 + ww]!;
    }
    c2[(n * C + o) * S + h * 8 + w] = acc;
  }
  return bn(c2, '2');
}

test('blocked BN-adapt: inputs with mean 1000 and spread ~1 keep their variance as the two-pass kernel does (shifted sums, no cancellation)', { skip }, async () => {
  const m = bigMeanModel(block!);
  const rng = new Rng(9);
  const x = f32([4, block!, 8, 8], Float32Array.from({ length: 4 * block! * 64 }, () => 1000 + rng.normal()));
  const ref = bigMeanReference(m, x.data as Float32Array, 4, block!);
  const err = (a: Float32Array) => { let d = 0, s = 0; for (let i = 0; i < a.length; i++) { d = Math.max(d, Math.abs(a[i]! - ref[i]!)); s = Math.max(s, Math.abs(ref[i]!)); } return d / s; };
  const blockedErr = err(await logits(m, x, 'blocked'));
  const standardErr = err(await logits(m, x, 'standard'));
  // Against float64 both are limited by the float32 convs themselves (sums of terms of magnitude
  // ~1000 round at ~1e-4 of the spread): the blocked form must be as close as the two-pass kernel.
  assert.ok(standardErr <= 1e-3, `standard ${standardErr}`);
  assert.ok(blockedErr <= 1.5 * standardErr, `blocked ${blockedErr}, standard ${standardErr}`);
});

test('a constant weight reordered by one 5-D Transpose (reorderConstantWeight) has the two-transpose layout, element for element', async () => {
  const { Emitter } = await import('../../src/onnx/emitter.ts');
  const { reorderConstantWeight, reorderWeight } = await import('../../src/onnx/nchwc-batchstats.ts');
  for (const [b, O, I, k] of [[8, 16, 24, 3], [16, 32, 16, 1], [4, 8, 12, 3]] as const) {
    for (const filter of ['OIHWBiBo', 'OIHWBo'] as const) {
      const mb = new ModelBuilder({ opset: 13 });
      mb.initializer('w', f32([O, I, k, k], Float32Array.from({ length: O * I * k * k }, (_, i) => i + 0.5)));
      mb.input('x', 'float32', [1]);
      mb.node('Identity', ['x'], ['y']);
      mb.output('y');
      const ir = mb.build();
      const em = new Emitter(ir.graph, 13);
      const one = reorderConstantWeight(em, 'w', [O, I, k, k], filter, b);
      const two = reorderWeight(em, 'w', [O, I, k, k], filter, b);
      ir.graph.outputs = [...ir.graph.outputs, { name: one, dtype: 'float32', shape: null }, { name: two, dtype: 'float32', shape: null }];
      const out = await new RefitModel(ir, { threads: 1 }).run({ x: f32([1], [0]) }, { outputs: [one, two] });
      const a = out[one]!.data as Float32Array, c = out[two]!.data as Float32Array;
      assert.equal(a.length, O * I * k * k);
      assert.ok(a.every((v, i) => v === c[i]), `${filter} b=${b} [${O}, ${I}, ${k}, ${k}]`);
      if (filter === 'OIHWBiBo') assert.ok(a.some((v, i) => v !== i + 0.5), 'the layout moved something');
    }
  }
});

test('blocked BN-adapt: a conv whose input has a channel count that is no multiple of 4 (a Concat of 16 + 8 + 3, as in MODNet) stays standard and matches', { skip }, async () => {
  // onnxruntime's ReorderInput refuses such inputs ("(channels % 4) == 0 was false").
  const rng = new Rng(5);
  const randn = (dims: number[], s: number) => f32(dims, Float32Array.from({ length: dims.reduce((p, d) => p * d, 1) }, () => rng.normal() * s));
  const mb = new ModelBuilder({ opset: 13 });
  mb.input('x', 'float32', ['N', 3, 16, 16]);
  const convBn = (x: string, cin: number, cout: number, name: string) => {
    mb.initializer(`${name}_w`, randn([cout, cin, 3, 3], Math.sqrt(2 / (cin * 9))));
    mb.node('Conv', [x, `${name}_w`], [`${name}_c`], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] });
    for (const [k, v] of [['s', 1], ['b', 0], ['m', 0], ['v', 1]] as const) mb.initializer(`${name}_${k}`, f32([cout], new Float32Array(cout).fill(v)));
    mb.node('BatchNormalization', [`${name}_c`, `${name}_s`, `${name}_b`, `${name}_m`, `${name}_v`], [`${name}_bn`], { epsilon: 1e-5 });
    mb.node('Relu', [`${name}_bn`], [name]);
    return name;
  };
  const a = convBn('x', 3, 16, 'a'), b = convBn(a, 16, 8, 'b');
  mb.node('Concat', [a, b, 'x'], ['cat'], { axis: 1 }); // 27 channels
  const c = convBn('cat', 27, 16, 'c');
  mb.node('GlobalAveragePool', [c], ['gap']).node('Flatten', ['gap'], ['flat'], { axis: 1 });
  mb.initializer('fc', randn([16, 4], 0.3)).node('MatMul', ['flat', 'fc'], ['logits']).output('logits');
  const m = new RefitModel(mb.build());
  const x = input(4);
  const standard = await logits(m, x, 'standard');
  const blocked = await logits(m, x, 'blocked');
  assert.ok(relErr(blocked, standard) <= 1e-5, `blocked vs standard: ${relErr(blocked, standard)}`);
  await m.release();
});

test('pointwiseStatsPay: the Gram route for MobileNet-style expansions on large maps, not for equal widths or late narrow maps', () => {
  // MobileNetV2's first expansion (16 → 96 channels on 112², batch 16) and a 24 → 144 one on 56².
  assert.ok(pointwiseStatsPay(16, 96, 16 * 112 * 112));
  assert.ok(pointwiseStatsPay(32, 144, 16 * 56 * 56));
  // RegNetY-400MF's 1×1 convs keep the width (48 → 48 on 56²): the Gram product costs the conv again.
  assert.ok(!pointwiseStatsPay(48, 48, 16 * 56 * 56));
  // MobileNetV2's last expansion (160 → 960 on 7²): W·Σ·Wᵀ alone costs more than the output's passes.
  assert.ok(!pointwiseStatsPay(160, 960, 16 * 7 * 7));
  // Narrowing convs never take it; Infinity takes every widening one.
  assert.ok(!pointwiseStatsPay(96, 16, 16 * 112 * 112, Infinity));
  assert.ok(pointwiseStatsPay(160, 960, 16 * 7 * 7, Infinity));
});

test('blocked BN-adapt fuses x·HardSigmoid(x) with HardSwish\'s constants (MobileNetV3 below opset 14) into the conv as HardSwish, and matches', { skip }, async () => {
  const rng = new Rng(11);
  const randn = (dims: number[], s: number) => f32(dims, Float32Array.from({ length: dims.reduce((p, d) => p * d, 1) }, () => rng.normal() * s));
  const build = (alpha: number) => {
    const mb = new ModelBuilder({ opset: 13 });
    mb.input('x', 'float32', ['N', 3, 16, 16]);
    let h = 'x', cin = 3;
    for (const [name, cout, group] of [['a', 2 * block!, 1], ['b', 2 * block!, 2 * block!]] as const) {
      mb.initializer(`${name}_w`, randn([cout, cin / group, 3, 3], Math.sqrt(2 / ((cin / group) * 9))));
      mb.node('Conv', [h, `${name}_w`], [`${name}_c`], { kernel_shape: [3, 3], pads: [1, 1, 1, 1], group });
      for (const [k, v] of [['s', 2.5], ['b', 0.3], ['m', 0], ['v', 1]] as const) mb.initializer(`${name}_${k}`, f32([cout], new Float32Array(cout).fill(v)));
      mb.node('BatchNormalization', [`${name}_c`, `${name}_s`, `${name}_b`, `${name}_m`, `${name}_v`], [`${name}_bn`], { epsilon: 1e-5 });
      mb.node('HardSigmoid', [`${name}_bn`], [`${name}_hs`], { alpha });
      mb.node('Mul', name === 'a' ? [`${name}_bn`, `${name}_hs`] : [`${name}_hs`, `${name}_bn`], [name]); // either operand order
      h = name; cin = cout;
    }
    mb.node('GlobalAveragePool', [h], ['gap']).node('Flatten', ['gap'], ['logits'], { axis: 1 });
    mb.output('logits');
    return new RefitModel(mb.build());
  };
  const x = input(4, 2);
  for (const [alpha, fused] of [[1 / 6, 2], [0.2, 0]] as const) {
    const m = build(alpha);
    const ir = cloneModel(m.ir);
    const shapes = await probeShapes(m.ir, signatureOf({ x }));
    blockBatchStats(ir, (t) => shapes.get(t)?.dims, block!);
    const swish = ir.graph.nodes.filter((n) => n.domain === NCHWC_DOMAIN && n.opType === 'Conv' && n.attrs.activation?.kind === 'string' && n.attrs.activation.value === 'HardSwish');
    assert.equal(swish.length, fused, `alpha ${alpha}`);
    assert.equal(ir.graph.nodes.filter((n) => n.opType === 'HardSigmoid').length, 2 - fused);
    const e = relErr(await logits(m, x, 'blocked'), await logits(m, x, 'standard'));
    assert.ok(e <= 1e-5, `alpha ${alpha}: ${e}`);
  }
});

test('blocked BN-adapt keeps SiLU and squeeze-excitation (pooling, gate Mul as a conv over the batch; Sigmoid or HardSigmoid gate) in the layout, and matches', { skip }, async () => {
  const rng = new Rng(13);
  const randn = (dims: number[], s: number) => f32(dims, Float32Array.from({ length: dims.reduce((p, d) => p * d, 1) }, () => rng.normal() * s));
  const C = 2 * block!;
  const build = (gate: 'Sigmoid' | 'HardSigmoid') => {
    const mb = new ModelBuilder({ opset: 13 });
    mb.input('x', 'float32', ['N', 3, 16, 16]);
    let k = 0;
    const conv = (x: string, cin: number, cout: number, ks: number, stride = 1, group = 1, bias = false) => {
      const w = `w${k}`, y = `c${k++}`;
      mb.initializer(w, randn([cout, cin / group, ks, ks], Math.sqrt(2 / ((cin / group) * ks * ks))));
      if (bias) mb.initializer(`${w}_b`, randn([cout], 0.2));
      const p = (ks - 1) / 2;
      mb.node('Conv', bias ? [x, w, `${w}_b`] : [x, w], [y], { kernel_shape: [ks, ks], strides: [stride, stride], pads: [p, p, p, p], group });
      return y;
    };
    const bn = (x: string, c: number) => {
      const y = `bn${k++}`;
      for (const [s, v] of [['s', 1.1], ['b', 0.2], ['m', 0], ['v', 1]] as const) mb.initializer(`${y}_${s}`, f32([c], new Float32Array(c).fill(v)));
      mb.node('BatchNormalization', [x, `${y}_s`, `${y}_b`, `${y}_m`, `${y}_v`], [y], { epsilon: 1e-5 });
      return y;
    };
    const silu = (x: string) => { const s = `sg${k++}`, y = `silu${k++}`; mb.node('Sigmoid', [x], [s]).node('Mul', [x, s], [y]); return y; };
    let h = silu(bn(conv('x', 3, C, 3, 2), C)); // stem
    h = silu(bn(conv(h, C, C, 3, 1, C), C)); // depthwise
    mb.node('GlobalAveragePool', [h], ['se_pool']);
    const squeezed = silu(conv('se_pool', C, 4, 1, 1, 1, true)); // 4 channels: not a whole block, leaves the layout (tiny)
    const g = `gate${k++}`;
    mb.node(gate, [conv(squeezed, 4, C, 1, 1, 1, true)], [g], gate === 'HardSigmoid' ? { alpha: 1 / 6 } : {});
    mb.node('Mul', [g, h], ['excited']); // the gate first: either operand order
    h = bn(conv('excited', C, block!, 1), block!); // projection
    mb.node('GlobalAveragePool', [h], ['gap']).node('Flatten', ['gap'], ['logits'], { axis: 1 });
    mb.output('logits');
    return new RefitModel(mb.build());
  };
  const x = input(4, 2);
  for (const gate of ['Sigmoid', 'HardSigmoid'] as const) {
    const m = build(gate);
    const ir = cloneModel(m.ir);
    const shapes = await probeShapes(m.ir, signatureOf({ x }));
    blockBatchStats(ir, (t) => shapes.get(t)?.dims, block!);
    // Reorders only of the squeezed [N, 4, 1, 1] tensors: none of an activation map.
    const maps = ir.graph.nodes.filter((n) => n.domain === NCHWC_DOMAIN && n.opType.startsWith('Reorder')).map((n) => n.opType === 'ReorderOutput' ? n.outputs[0]! : n.inputs[0]!)
      .filter((t) => { const d = shapes.get(t)?.dims; return !d || d[2]! * d[3]! > 1; });
    assert.deepEqual(maps, [], `${gate}: activation maps reordered`);
    assert.ok(!ir.graph.nodes.some((n) => n.opType === 'GlobalAveragePool'), 'both poolings read the blocked layout');
    // The gate's Mul as a depthwise 1×1 conv over the batch-folded [1, N·C, H, W] view (nchwc.ts gateConv).
    assert.equal(ir.graph.nodes.filter((n) => n.domain === NCHWC_DOMAIN && n.opType === 'Conv' && n.attrs.group?.value === 4 * C).length, 1, `${gate}: the gate conv`);
    const e = relErr(await logits(m, x, 'blocked'), await logits(m, x, 'standard'));
    assert.ok(e <= 1e-5, `${gate}: ${e}`);
  }
});
