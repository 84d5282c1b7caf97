// Opset 1–12 models become opset 13 and compute exactly what they computed before
// (src/onnx/opset-upgrade.ts): every changed op at every opset where its old form exists, real
// torch.onnx exports at opsets 9 and 11 (and with weights as Constant nodes), and the refusals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { upgradeOpset, OpsetUpgradeError } from '../../src/onnx/opset-upgrade.ts';
import { REWRITES } from '../../src/onnx/upgrade/rewrites.ts';
import { compareOutputs } from '../../src/onnx/upgrade/verify.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { encodeModel } from '../../src/onnx/proto.ts';
import { readModelFile } from '../../src/onnx/io.ts';
import { opsetVersion, floatAttr, type Model } from '../../src/onnx/ir.ts';
import { loadModel, RefitModel } from '../../src/model.ts';
import * as losses from '../../src/train/losses.ts';
import { f32, i64, type Tensor } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';

const FIX = fileURLToPath(new URL('../fixtures/opset/', import.meta.url));

interface Case {
  name: string;
  opsets: number[];
  /** Expected rewritten op types at the lowest listed opset (checks the rewrite really ran). */
  rewrites?: (opset: number) => string[];
  /** Writes nodes from 'h' (x times the trainable w, or x itself) to output 'y'. */
  body(b: ModelBuilder, opset: number): void;
  shape?: (string | number)[];
  /** The op has no gradient rule: w multiplies after it (and x feeds it directly). */
  wAfter?: boolean;
}

const CASES: Case[] = [
  {
    name: 'Softmax on a non-last axis (old 2-D coercion)', opsets: [9, 11, 12], rewrites: () => ['Softmax'],
    body: (b) => b.node('Softmax', ['h'], ['y'], { axis: 1 }),
  },
  {
    name: 'LogSoftmax on axis 0 (everything one row)', opsets: [9, 12], rewrites: () => ['LogSoftmax'],
    body: (b) => b.node('LogSoftmax', ['h'], ['y'], { axis: 0 }),
  },
  {
    name: 'Softmax with the default axis 1 on a 2-D tensor (kept as is)', opsets: [9, 12], shape: ['N', 5], rewrites: () => ['Softmax'],
    body: (b) => b.node('Softmax', ['h'], ['y']),
  },
  {
    name: 'Hardmax on axis -2', opsets: [9, 11], wAfter: true, rewrites: () => ['Hardmax'],
    body: (b) => b.node('Hardmax', ['h'], ['y'], { axis: -2 }),
  },
  {
    name: 'Clip (ReLU6 and one-sided bounds)', opsets: [9, 10, 11], rewrites: (o) => (o < 11 ? ['Clip', 'Clip'] : []),
    body: (b, o) => {
      if (o < 11) {
        b.node('Clip', ['h'], ['c'], { min: floatAttr(0), max: 0.6 });
        b.node('Clip', ['c'], ['y'], { min: 0.1 });
      } else {
        b.initializer('lo', f32([], [0])).initializer('hi', f32([], [0.6]));
        b.node('Clip', ['h', 'lo', 'hi'], ['y']);
      }
    },
  },
  {
    name: 'Slice (negative start, INT64_MAX end, axes)', opsets: [9, 10, 11], rewrites: (o) => (o < 10 ? ['Slice'] : []),
    body: (b, o) => {
      if (o < 10) b.node('Slice', ['h'], ['y'], { starts: [-3, 1], ends: [9223372036854775807, 3], axes: [2, 1] });
      else {
        b.initializer('st', i64([2], [-3, 1])).initializer('en', i64([2], [1000, 3])).initializer('ax', i64([2], [2, 1]));
        b.node('Slice', ['h', 'st', 'en', 'ax'], ['y']);
      }
    },
  },
  {
    name: 'Squeeze and Unsqueeze axes', opsets: [9, 11, 12], rewrites: () => ['Unsqueeze', 'Squeeze'],
    body: (b) => {
      b.node('Unsqueeze', ['h'], ['u'], { axes: [0, 3] });
      b.node('Squeeze', ['u'], ['y'], { axes: [0] });
    },
  },
  {
    name: 'Split sizes', opsets: [9, 12], rewrites: () => ['Split'],
    body: (b) => {
      b.node('Split', ['h'], ['a', 'c'], { axis: 2, split: [1, 3] });
      b.node('ReduceMean', ['c'], ['m'], { axes: [2], keepdims: 1 });
      b.node('Mul', ['a', 'm'], ['y']);
    },
  },
  {
    name: 'ReduceSum axes', opsets: [9, 12], rewrites: () => ['ReduceSum'],
    body: (b) => b.node('ReduceSum', ['h'], ['y'], { axes: [1, 2], keepdims: 0 }),
  },
  {
    name: 'Pad with a constant value', opsets: [9, 10, 11], rewrites: (o) => (o < 11 ? ['Pad'] : []),
    body: (b, o) => {
      if (o < 11) b.node('Pad', ['h'], ['y'], { pads: [0, 1, 0, 0, 0, 2], value: 0.5 });
      else {
        b.initializer('pads', i64([6], [0, 1, 0, 0, 0, 2])).initializer('pv', f32([], [0.5]));
        b.node('Pad', ['h', 'pads', 'pv'], ['y']);
      }
    },
  },
  {
    name: 'Pad reflect and edge', opsets: [9, 10], wAfter: true, rewrites: () => ['Pad', 'Pad'],
    body: (b) => {
      b.node('Pad', ['h'], ['p'], { pads: [0, 0, 1, 0, 0, 1], mode: 'reflect' });
      b.node('Pad', ['p'], ['y'], { pads: [0, 1, 0, 0, 2, 0], mode: 'edge' });
    },
  },
  {
    name: 'TopK k', opsets: [9, 10], wAfter: true, rewrites: (o) => (o < 10 ? ['TopK'] : []),
    body: (b, o) => {
      if (o < 10) b.node('TopK', ['h'], ['y', 'idx'], { k: 2, axis: -1 });
      else {
        b.initializer('k', i64([1], [2]));
        b.node('TopK', ['h', 'k'], ['y', 'idx'], { axis: -1 });
      }
      b.output('idx', 'int64');
    },
  },
  {
    name: 'Upsample nearest → Resize', opsets: [9], wAfter: true, shape: ['N', 2, 3, 3], rewrites: () => ['Upsample'],
    body: (b) => {
      b.initializer('scales', f32([4], [1, 1, 2, 3]));
      b.node('Upsample', ['h', 'scales'], ['y'], { mode: 'nearest' });
    },
  },
  {
    name: 'Upsample linear → Resize', opsets: [9], wAfter: true, shape: ['N', 2, 3, 3], rewrites: () => ['Upsample'],
    body: (b) => {
      b.initializer('scales', f32([4], [1, 1, 2, 2]));
      b.node('Upsample', ['h', 'scales'], ['y'], { mode: 'linear' });
    },
  },
  {
    name: 'Upsample-7 with scales as an attribute', opsets: [7, 8], wAfter: true, shape: ['N', 2, 3, 3], rewrites: () => ['Upsample'],
    body: (b) => b.node('Upsample', ['h'], ['y'], { mode: 'nearest', scales: { kind: 'floats', value: [1, 1, 3, 2] } }),
  },
  {
    name: 'Resize-10 (nearest up, linear down)', opsets: [10], wAfter: true, shape: ['N', 2, 4, 4], rewrites: () => ['Resize', 'Resize'],
    body: (b) => {
      b.initializer('up', f32([4], [1, 1, 2, 1.5])).initializer('down', f32([4], [1, 1, 0.5, 0.5]));
      b.node('Resize', ['h', 'up'], ['r'], { mode: 'nearest' });
      b.node('Resize', ['r', 'down'], ['y'], { mode: 'linear' });
    },
  },
  {
    name: 'Resize-10 nearest down-sampling (rounds up) from computed scales', opsets: [10], wAfter: true, shape: ['N', 2, 5, 5], rewrites: () => ['Resize'],
    body: (b) => {
      b.initializer('s1', f32([2], [1, 1])).initializer('s2', f32([2], [0.6, 0.5]));
      b.node('Concat', ['s1', 's2'], ['scales'], { axis: 0 });
      b.node('Resize', ['h', 'scales'], ['y'], { mode: 'nearest' });
    },
  },
  {
    name: 'Dropout ratio (inference: identity)', opsets: [9, 10, 11], rewrites: () => ['Dropout'],
    body: (b) => {
      b.node('Dropout', ['h'], ['d', 'mask'], { ratio: 0.3 });
      b.node('Tanh', ['d'], ['y']);
    },
  },
  {
    name: 'BatchNormalization (spatial dropped at 9)', opsets: [8, 9, 12], shape: ['N', 2, 3, 2], rewrites: (o) => (o < 9 ? ['BatchNormalization'] : []),
    body: (b, o) => {
      b.initializer('g', f32([2], [1.5, 0.5])).initializer('be', f32([2], [0.1, -0.2]));
      b.initializer('mu', f32([2], [0.2, -0.1])).initializer('var', f32([2], [0.8, 1.3]));
      b.node('BatchNormalization', ['h', 'g', 'be', 'mu', 'var'], ['y'], o < 9 ? { spatial: 1, epsilon: 1e-3 } : { epsilon: 1e-3 });
    },
  },
  {
    name: 'Scatter → ScatterElements', opsets: [9, 10], wAfter: true, rewrites: () => ['Scatter'],
    body: (b) => {
      b.initializer('ind', i64([1, 1, 4], [2, 0, 1, 2])).initializer('upd', f32([1, 1, 4], [9, 8, 7, 6]));
      b.node('Scatter', ['h', 'ind', 'upd'], ['y'], { axis: 1 });
    },
  },
  {
    name: 'unchanged ops carry over (MaxPool ceil_mode, ArgMax, Gemm, Cast)', opsets: [10, 12], shape: ['N', 2, 3, 3], rewrites: () => [],
    body: (b) => {
      b.node('MaxPool', ['h'], ['p'], { kernel_shape: [2, 2], strides: [2, 2], ceil_mode: 1 });
      b.node('Flatten', ['p'], ['f'], { axis: 1 });
      b.initializer('gw', f32([8, 3], new Rng(3).fill(new Float32Array(24), 0.5)));
      b.initializer('gb', f32([3], [0.1, 0, -0.1]));
      b.node('Gemm', ['f', 'gw', 'gb'], ['y']);
      b.node('ArgMax', ['y'], ['am'], { axis: 1, keepdims: 0 });
      b.node('Cast', ['am'], ['amf'], { to: 1 });
      b.output('amf');
    },
  },
];

function caseModel(c: Case, opset: number): Model {
  const shape = c.shape ?? ['N', 3, 4];
  const b = new ModelBuilder({ opset });
  b.input('x', 'float32', shape);
  const wDims = shape.slice(1).map(Number);
  const w = f32([1, ...wDims], new Rng(7).fill(new Float32Array(wDims.reduce((a, d) => a * d, 1)), 0.5).map((v) => v + 1));
  if (c.wAfter) {
    c.body(b, opset);
    const y = b.model.graph.nodes.flatMap((n) => n.outputs).includes('y');
    assert.ok(y);
    // rename the body's output 'y' to 'pre' and multiply by a scalar-broadcast w after it
    for (const n of b.model.graph.nodes) n.outputs = n.outputs.map((o) => (o === 'y' ? 'pre' : o));
    for (const n of b.model.graph.nodes) n.inputs = n.inputs.map((i) => (i === 'h' ? 'x' : i));
    b.initializer('w', f32([], [1.25]));
    b.node('Mul', ['pre', 'w'], ['y']);
  } else {
    b.initializer('w', w);
    b.node('Mul', ['x', 'w'], ['h']);
    c.body(b, opset);
  }
  const outs = b.model.graph.outputs;
  b.model.graph.outputs = [{ name: 'y', dtype: 'float32', shape: null }, ...outs];
  return b.build();
}

const batch = (dims: number[], seed: number) => f32(dims, new Rng(seed).fill(new Float32Array(dims.reduce((a, d) => a * d, 1))));

async function lossAt(m: RefitModel, feeds: Record<string, Tensor>) {
  const step = m.compileTrainStep({ trainable: ['w'], loss: losses.mse({ output: 'y' }) });
  return step.run(feeds);
}

for (const c of CASES) {
  for (const opset of c.opsets) {
    test(`opset ${opset} → 13: ${c.name}: same outputs in onnxruntime, and a training step descends`, async () => {
      const original = caseModel(c, opset);
      const { model, report } = await upgradeOpset(original);
      assert.equal(opsetVersion(model), 13);
      const expected = c.rewrites?.(opset) ?? [];
      const counts: Record<string, number> = {};
      for (const op of expected) counts[op] = (counts[op] ?? 0) + 1;
      assert.deepEqual(report.rewritten, counts);
      // The rewrites reach the same kernels: bit-exact, not merely within the 1e-6 tolerance.
      for (const o of report.outputs) assert.equal(o.verdict, 'exact', JSON.stringify(o));
      // A second, independent check on a larger batch than the verification used, with real data.
      const dims = (c.shape ?? ['N', 3, 4]).map((d) => (typeof d === 'number' ? d : 3));
      const x = batch(dims, 11);
      const before = await new RefitModel(model).run({ x });
      const raw = await loadModel(encodeModel(model)); // round trip through bytes: the file form works too
      const after = await raw.run({ x });
      assert.deepEqual(after.y!.data, before.y!.data);

      // One SGD step on w, compiled on the converted graph, lowers the loss.
      const m = new RefitModel(model);
      const target = f32(before.y!.dims, new Float32Array(before.y!.data.length));
      const s0 = await lossAt(m, { x, target });
      const g = s0.grads.get('w')!;
      assert.ok(s0.finite && g.every(Number.isFinite), `loss ${s0.loss}`);
      const norm = Math.sqrt(g.reduce((a, v) => a + v * v, 0));
      assert.ok(norm > 0, 'gradient is zero');
      const w = m.param('w').data as Float32Array;
      const lr = 1e-3 / Math.max(norm, 1);
      m.setParams({ w: w.map((v, i) => v - lr * g[i]!) });
      const s1 = await lossAt(m, { x, target });
      assert.ok(s1.loss < s0.loss, `loss ${s0.loss} → ${s1.loss}`);
    });
  }
}

// ---- real exports: torch.onnx at opsets 9 and 11, and weights as Constant nodes ----

const ref = JSON.parse(readFileSync(`${FIX}reference.json`, 'utf8')) as Record<string, { dims: number[]; data: number[] }>;
const refX = f32(ref.x!.dims, Float32Array.from(ref.x!.data));

for (const [file, opset, rewritten] of [
  ['cnn_opset9.onnx', 9, ['Upsample', 'Pad', 'Clip', 'Slice', 'Split', 'Softmax', 'Unsqueeze', 'Squeeze']],
  ['cnn_opset11.onnx', 11, ['Split', 'Softmax', 'Unsqueeze', 'Squeeze']],
  ['cnn_opset11_constants.onnx', 11, ['Split', 'Softmax', 'Unsqueeze', 'Squeeze']],
] as const) {
  test(`torch.onnx export ${file}: loadModel upgrades it, outputs match the original and PyTorch, and it trains`, async () => {
    const ir = readModelFile(`${FIX}${file}`);
    assert.equal(opsetVersion(ir), opset);
    let report;
    const m = await loadModel(`${FIX}${file}`, { onUpgrade: (r) => { report = r; } });
    assert.ok(report);
    const r = report as Awaited<ReturnType<typeof upgradeOpset>>['report'];
    assert.deepEqual(Object.keys(r.rewritten).sort(), [...rewritten].sort());
    assert.deepEqual(r.outputs.map((o) => [o.output, o.verdict]), [['logits', 'exact'], ['probs', 'exact']]);
    const out = await m.run({ x: refX });
    for (const k of ['logits', 'probs']) {
      const got = out[k]!.data as Float32Array;
      const want = ref[k]!.data;
      let max = 0;
      for (let i = 0; i < want.length; i++) max = Math.max(max, Math.abs(got[i]! - want[i]!));
      assert.ok(max < 1e-5, `${k}: max |refit − torch| = ${max}`);
    }
    const step = m.compileTrainStep({ trainable: /conv|fc|bn\.weight|bn\.bias/, loss: losses.crossEntropy({ logits: 'logits' }) });
    const s = await step.run({ x: refX, y: i64([3], [0, 1, 2]) });
    assert.ok(s.finite);
    for (const name of ['conv.weight', 'fc1.weight', 'fc2.bias']) {
      const g = s.grads.get(name);
      assert.ok(g && g.some((v) => v !== 0), `no gradient for ${name}`);
    }
  });
}

// ---- refusals ----

test('an If whose branches hold Squeeze and Unsqueeze with attribute axes (torchvision\'s detectors at opset 11) is rewritten inside, and verified', async () => {
  const INT = 2, INTS = 7; // AttributeProto types
  const b = new ModelBuilder({ opset: 11 });
  b.input('x', 'float32', ['N', 3]).input('flag', 'bool', []);
  const then = { name: 't', node: [
    { name: 'up', opType: 'Unsqueeze', input: ['x'], output: ['x3'], attribute: [{ name: 'axes', type: INTS, ints: [0] }] },
    { name: 'sum', opType: 'ReduceSum', input: ['x3'], output: ['s'], attribute: [{ name: 'axes', type: INTS, ints: [0] }, { name: 'keepdims', type: INT, i: 1 }] },
    { name: 'down', opType: 'Squeeze', input: ['s'], output: ['t_out'], attribute: [{ name: 'axes', type: INTS, ints: [0] }] },
  ], output: [{ name: 't_out', type: { tensorType: { elemType: 1 } } }] };
  const other = { name: 'e', node: [{ name: 'neg', opType: 'Neg', input: ['x'], output: ['e_out'] }], output: [{ name: 'e_out', type: { tensorType: { elemType: 1 } } }] };
  b.model.graph.nodes.push({ name: 'branch', opType: 'If', domain: '', inputs: ['flag'], outputs: ['y'], attrs: { then_branch: { kind: 'opaque', value: { name: 'then_branch', type: 5, g: then } }, else_branch: { kind: 'opaque', value: { name: 'else_branch', type: 5, g: other } } } });
  b.output('y');
  const x = f32([2, 3], [1, 2, 3, 4, 5, 6]);
  const r = await upgradeOpset(b.build(), { feeds: { x, flag: { dtype: 'bool', dims: [], data: new Uint8Array([1]) } } });
  assert.deepEqual(r.report.rewritten, { Unsqueeze: 1, ReduceSum: 1, Squeeze: 1 });
  assert.ok(r.report.outputs.every((o) => o.verdict === 'exact'));
  const m = await loadModel(encodeModel(r.model), { upgradeOpset: false });
  assert.deepEqual([...(await m.run({ x, flag: { dtype: 'bool', dims: [], data: new Uint8Array([1]) } })).y!.data], [1, 2, 3, 4, 5, 6]);
});

test('unconvertible nodes are all named at once, with op, node and why', async () => {
  const b = new ModelBuilder({ opset: 9 });
  b.input('x', 'float32', ['N', 3, 4, 4]);
  b.node('ImageScaler', ['x'], ['s'], { scale: 2 }, 'scaler');
  b.node('Upsample', ['s', 'sc'], ['u'], { mode: 'cubic' }, 'up_cubic');
  b.initializer('sc', f32([4], [1, 1, 2, 2]));
  b.output('u');
  // A Loop whose body holds a Softmax on axis 1 (opset 9's 2-D coercion): its rewrite needs the input's rank, which a body's tensors do not show.
  b.initializer('trip', i64([], [2])).initializer('cond', { dtype: 'bool', dims: [], data: new Uint8Array([1]) });
  const body = { name: 'body', type: 5, g: { name: 'b', node: [{ name: 'inner_softmax', opType: 'Softmax', input: ['v'], output: ['v2'], attribute: [{ name: 'axis', type: 2, i: 1 }] }] } };
  b.model.graph.nodes.push({ name: 'loop', opType: 'Loop', domain: '', inputs: ['trip', 'cond', 'x'], outputs: ['lo'], attrs: { body: { kind: 'opaque', value: body } } });
  await assert.rejects(upgradeOpset(b.build()), (e: Error) => {
    assert.ok(e instanceof OpsetUpgradeError);
    assert.match(e.message, /from opset 9 to 13/);
    assert.match(e.message, /node 'scaler' \(ImageScaler\): op ImageScaler is not in refit's opset 9 → 13 table/);
    assert.match(e.message, /node 'loop' \(Loop\): its body holds Softmax \(node 'inner_softmax'\), whose rewrite to opset 13 needs its input's rank or type/);
    return true;
  });
  // Found only when the rewrite runs (needs the graph to run first): the Upsample mode.
  const b2 = new ModelBuilder({ opset: 9 });
  b2.input('x', 'float32', ['N', 3, 4, 4]).initializer('sc', f32([4], [1, 1, 2, 2]));
  b2.node('Upsample', ['x', 'sc'], ['u'], { mode: 'cubic' }, 'up_cubic').output('u');
  await assert.rejects(upgradeOpset(b2.build()), /node 'up_cubic' \(Upsample\): mode 'cubic' has no exact Resize equivalent/);
  // Resize-10 nearest that up-samples one axis and down-samples another: no single nearest_mode.
  const b3 = new ModelBuilder({ opset: 10 });
  b3.input('x', 'float32', ['N', 3, 4, 4]).initializer('sc', f32([4], [1, 1, 2, 0.5]));
  b3.node('Resize', ['x', 'sc'], ['u'], { mode: 'nearest' }, 'mixed').output('u');
  await assert.rejects(upgradeOpset(b3.build()), /node 'mixed' \(Resize\): scales \[1, 1, 2, 0.5\] up-sample some axes and down-sample others/);
});

test('opsets 1–6: what onnxruntime still runs is converted and verified, the rest refused with the op named; RefitModel refuses old opsets with the way to upgrade', async () => {
  // Reshape-1 (shape as an attribute, consumed_inputs) and Transpose-1: converted and verified.
  const b = new ModelBuilder({ opset: 4 });
  b.input('x', 'float32', ['N', 6]);
  b.node('Reshape', ['x'], ['r'], { shape: [-1, 2, 3], consumed_inputs: [0] }).node('Transpose', ['r'], ['y'], { perm: [0, 2, 1] }).output('y');
  const r = await upgradeOpset(b.build());
  assert.deepEqual(r.report.rewritten, { Reshape: 1 });
  assert.ok(r.report.outputs.every((o) => o.verdict === 'exact'));
  assert.equal(opsetVersion(r.model), 13);
  assert.ok(!r.model.graph.nodes.some((n) => n.attrs.consumed_inputs || n.attrs.shape));
  // Add-6 with the legacy broadcast attribute: onnxruntime has no kernel, so nothing can verify a conversion.
  const legacy = new ModelBuilder({ opset: 6 });
  legacy.input('x', 'float32', [2, 3, 4]).initializer('b', f32([3], [1, 2, 3]));
  legacy.node('Add', ['x', 'b'], ['y'], { broadcast: 1, axis: 1 }).output('y');
  await assert.rejects(upgradeOpset(legacy.build()), /from opset 6 to 13: onnxruntime has no kernel for Add-6 .*cannot verify a conversion.*convert_version/);
  // An op whose early form means something else is refused by name before anything runs.
  const gru = new ModelBuilder({ opset: 3 });
  gru.input('x', 'float32', [2, 1, 3]).initializer('W', f32([1, 6, 3])).initializer('R', f32([1, 6, 2]));
  gru.node('GRU', ['x', 'W', 'R'], ['y'], { hidden_size: 2 }, 'old_gru').output('y');
  await assert.rejects(upgradeOpset(gru.build()), /node 'old_gru' \(GRU\): opset 3's GRU differs from its opset 7 form/);
  const c = caseModel(CASES[0]!, 11);
  assert.throws(() => new RefitModel(c), /opset 11.*loadModel\(path\).*upgradeOpset\(ir\)/);
  await assert.rejects(loadModel(encodeModel(c), { upgradeOpset: false }), /opset 11.*loadModel/);
  const m = await loadModel(encodeModel(c));
  assert.equal(opsetVersion(m.ir), 13);
});

test('a model that does not run on synthetic inputs is refused, not accepted unverified; given feeds verify it', async () => {
  // Runs only when the dynamic batch is a multiple of 3: synthetic batches of 2 and 1 fail.
  const b = new ModelBuilder({ opset: 9 });
  b.input('x', 'float32', ['N', 4]).initializer('shape', i64([2], [3, -1]));
  b.node('Reshape', ['x', 'shape'], ['r']).node('Softmax', ['r'], ['y'], { axis: 1 }).output('y');
  await assert.rejects(upgradeOpset(b.build()), /could not be verified, because the original does not run on x: float32\[2, 4\][^]*cannot be reshaped[^]*Pass `feeds`/);
  const { report } = await upgradeOpset(b.build(), { feeds: { x: batch([3, 4], 1) } });
  assert.match(report.verifiedOn, /x: float32\[3, 4\] \(given\)/);
  assert.equal(report.outputs[0]!.verdict, 'exact');
  await assert.rejects(loadModel(encodeModel(b.build())), /could not be verified/);
  const m = await loadModel(encodeModel(b.build()), { upgradeOpset: { feeds: { x: batch([6, 4], 2) } } });
  assert.equal(opsetVersion(m.ir), 13);
});

test('a detector\'s dynamic height and width: verified on a batch of 1 at 64 when 2 and 1 do not run', async () => {
  // A 5×5 convolution without padding needs at least 5 pixels: YOLO's exports (opset 12, height and
  // width dynamic) need 32, and loadModel refused them before this third synthetic size.
  const b = new ModelBuilder({ opset: 12 });
  b.input('x', 'float32', ['N', 1, 'H', 'W']).initializer('w', f32([2, 1, 5, 5], Array.from({ length: 50 }, (_, i) => (i % 7) / 10 - 0.3)));
  b.node('Conv', ['x', 'w'], ['c']).node('Softmax', ['c'], ['y'], { axis: 1 }).output('y');
  const { model, report } = await upgradeOpset(b.build());
  assert.equal(opsetVersion(model), 13);
  assert.match(report.verifiedOn, /x: float32\[1, 1, 64, 64\] \(synthetic, seed 0, symbolic dims 1 on the first axis and 64 on the others\)/);
});

test('a torch.onnx export below opset 11 with bilinear Upsample: the upgrade notes that the file is not what PyTorch computed; other producers get no note', async () => {
  const build = (producer: string) => {
    const b = new ModelBuilder({ opset: 9 });
    b.input('x', 'float32', ['N', 1, 4, 4]).initializer('scales', f32([4], [1, 1, 2, 2]));
    b.node('Upsample', ['x', 'scales'], ['y'], { mode: 'linear' }, '/Upsample').output('y');
    const m = b.build();
    m.producerName = producer;
    return m;
  };
  const { report } = await upgradeOpset(build('pytorch'));
  assert.equal(report.notes?.length, 1);
  assert.match(report.notes![0]!, /1 Upsample node \('\/Upsample'\) resize bilinearly with opset 9's asymmetric coordinates, where PyTorch's .* half-pixel .* Export at opset 11 or later/);
  assert.equal((await upgradeOpset(build('tf2onnx'))).report.notes, undefined, 'TensorFlow\'s bilinear resize is asymmetric: the file is what its model computed');
});

test('output comparison: exact, within 1e-6 relative, different; NaN equals NaN only', () => {
  const t = (v: number[]) => f32([v.length], v);
  assert.equal(compareOutputs('y', t([1, NaN, -2]), t([1, NaN, -2])).verdict, 'exact');
  const close = compareOutputs('y', t([1, 1e6]), t([1, 1e6 + 0.5]));
  assert.equal(close.verdict, 'close');
  assert.ok(Math.abs(close.maxRelDiff - 5e-7) < 1e-9);
  assert.equal(compareOutputs('y', t([1, 1e6]), t([1, 1e6 + 2])).verdict, 'different');
  assert.equal(compareOutputs('y', t([NaN]), t([0])).verdict, 'different');
  assert.equal(compareOutputs('y', i64([1], [3]), i64([1], [4])).verdict, 'different');
  assert.match(compareOutputs('y', t([1, 2]), f32([1, 2], [1, 2])).detail!, /shape \[2\] became \[1, 2\]/);
});

test('verification catches a wrong rewrite: naming the output and the difference', async () => {
  // A broken Softmax rewrite that only bumps the opset (new per-axis meaning instead of the old 2-D one).
  const real = REWRITES.Softmax!;
  REWRITES.Softmax = { below: 13, apply: (_ctx, node) => [node] };
  try {
    await assert.rejects(upgradeOpset(caseModel(CASES[0]!, 11)), /verification failed on x: float32\[2, 3, 4\] \(synthetic, seed 0, symbolic dims 2\): output 'y' differs by up to \d/);
  } finally {
    REWRITES.Softmax = real;
  }
});
