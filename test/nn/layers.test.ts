import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NetBuilder, NetError } from '../../src/nn/index.ts';
import { RefitModel } from '../../src/model.ts';
import { checkLayer, randn } from './helpers.ts';

const close = (a: number, b: number, tol = 1e-5) => assert.ok(Math.abs(a - b) <= tol, `${a} vs ${b}`);

test('conv2d: stride, pad, groups, bias; PyTorch-style parameter names', async () => {
  const { model } = await checkLayer(['N', 3, 9, 9], (net, x) => net.conv2d(x, { name: 'stem.conv', out: 4, kernel: 3, stride: 2, pad: 1 }), ['N', 4, 5, 5]);
  assert.deepEqual(model.param('stem.conv.weight').dims, [4, 3, 3, 3]);
  assert.deepEqual(model.param('stem.conv.bias').dims, [4]);
  const g = await checkLayer(['N', 4, 6, 6], (net, x) => net.conv2d(x, { name: 'dw', out: 8, kernel: [3, 1], groups: 2, bias: false }), ['N', 8, 4, 6]);
  assert.deepEqual(g.model.parameterNames(), ['dw.weight']);
  assert.deepEqual(g.model.param('dw.weight').dims, [8, 2, 3, 1]);
});

test('batchNorm: inference form with running statistics, PyTorch momentum 0.1 stored as 0.9', async () => {
  const { model, x, y } = await checkLayer(['N', 4, 3, 3], (net, v) => net.batchNorm(v, { name: 'bn' }), ['N', 4, 3, 3]);
  assert.deepEqual([...model.ir.graph.initializers.keys()], ['bn.weight', 'bn.bias', 'bn.running_mean', 'bn.running_var']);
  assert.deepEqual(model.parameterNames(), ['bn.weight', 'bn.bias'], 'running statistics are buffers, not parameters');
  const node = model.ir.graph.nodes.find((n) => n.opType === 'BatchNormalization')!;
  assert.deepEqual(node.attrs.momentum, { kind: 'float', value: 0.9 });
  assert.deepEqual(node.attrs.epsilon, { kind: 'float', value: 1e-5 });
  // Fresh statistics (mean 0, var 1): y = x / sqrt(1 + eps).
  for (let i = 0; i < 20; i++) close(y.data[i] as number, (x.data[i] as number) / Math.sqrt(1 + 1e-5));
});

test('relu and gelu (exact Erf form) match a reference', async () => {
  const r = await checkLayer(['N', 6], (net, x) => net.relu(x), ['N', 6]);
  r.x.data.forEach((v, i) => close(r.y.data[i] as number, Math.max(0, v as number), 0));
  const g = await checkLayer(['N', 6], (net, x) => net.gelu(x), ['N', 6]);
  g.x.data.forEach((v, i) => close(g.y.data[i] as number, 0.5 * (v as number) * (1 + erf((v as number) / Math.SQRT2))));
  assert.deepEqual(g.model.ir.graph.nodes.filter((n) => n.opType !== 'Constant' && n.opType !== 'Identity').map((n) => n.opType), ['Div', 'Erf', 'Add', 'Mul', 'Mul']);
  assert.equal(g.model.ir.graph.initializers.size, 0, 'constants are Constant nodes, never trainable initializers');
});

test('maxPool, avgPool (count_include_pad like PyTorch), globalAvgPool, flatten', async () => {
  await checkLayer(['N', 2, 7, 7], (net, x) => net.maxPool(x, { kernel: 2 }), ['N', 2, 3, 3]);
  const a = await checkLayer(['N', 1, 4, 4], (net, x) => net.avgPool(x, { kernel: 3, stride: 1, pad: 1 }), ['N', 1, 4, 4]);
  const x = a.x.data as Float32Array;
  close(a.y.data[0] as number, (x[0]! + x[1]! + x[4]! + x[5]!) / 9); // corner: 4 real values, 5 zero pads
  const gp = await checkLayer(['N', 3, 5, 5], (net, v) => net.flatten(net.globalAvgPool(v)), ['N', 3]);
  close(gp.y.data[0] as number, Array.from(gp.x.data.slice(0, 25) as Float32Array).reduce((s, v) => s + v, 0) / 25);
  await checkLayer(['N', 3, 4, 5], (net, v) => net.flatten(v), ['N', 60]);
});

test('linear: MatMul with a [in, out] weight + Add, on 2-D and 3-D inputs', async () => {
  const { model, x, y } = await checkLayer(['N', 6], (net, v) => net.linear(v, { name: 'head', out: 3 }), ['N', 3]);
  assert.deepEqual(model.param('head.weight').dims, [6, 3]);
  const w = model.param('head.weight').data as Float32Array;
  for (let o = 0; o < 3; o++) close(y.data[o] as number, Array.from({ length: 6 }, (_, i) => (x.data[i] as number) * w[i * 3 + o]!).reduce((s, v) => s + v, 0));
  const t = await checkLayer(['N', 4, 6], (net, v) => net.linear(v, { name: 'fc', out: 5, bias: false }), ['N', 4, 5]);
  assert.deepEqual(t.model.parameterNames(), ['fc.weight']);
});

test('layerNorm over the last axis (LayerNormalization, opset 17)', async () => {
  const { y } = await checkLayer(['N', 3, 8], (net, x) => net.layerNorm(x, { name: 'norm' }), ['N', 3, 8]);
  const row = Array.from(y.data.slice(0, 8) as Float32Array);
  close(row.reduce((s, v) => s + v, 0) / 8, 0);
  close(row.reduce((s, v) => s + v * v, 0) / 8, 1, 1e-3);
  const net = new NetBuilder({ seed: 0, opset: 13 });
  assert.throws(() => net.layerNorm(net.input('x', ['N', 8]), { name: 'norm' }), /needs opset 17/);
});

test('selfAttention, patchEmbed, posEmbed, classToken, takeToken, meanTokens', async () => {
  await checkLayer(['N', 5, 8], (net, x) => net.selfAttention(x, { name: 'attn', heads: 2 }), ['N', 5, 8]);
  const p = await checkLayer(['N', 1, 8, 8], (net, x) => net.posEmbed(net.patchEmbed(x, { name: 'patch_embed', patch: 4, dim: 6 }), { name: 'pos_embed' }), ['N', 4, 6]);
  assert.deepEqual(p.model.parameterNames(), ['patch_embed.weight', 'patch_embed.bias', 'pos_embed']);
  assert.deepEqual(p.model.param('pos_embed').dims, [1, 4, 6]);
  await checkLayer(['N', 4, 6], (net, x) => net.classToken(x, { name: 'cls_token' }), ['N', 5, 6]);
  const c = await checkLayer(['N', 4, 6], (net, x) => net.takeToken(net.classToken(x, { name: 'cls_token' }), 0), ['N', 6]);
  const tok = c.model.param('cls_token').data as Float32Array;
  for (let b = 0; b < 5; b++) for (let d = 0; d < 6; d++) close(c.y.data[b * 6 + d] as number, tok[d]!, 0);
  const m = await checkLayer(['N', 4, 6], (net, x) => net.meanTokens(x), ['N', 6]);
  close(m.y.data[0] as number, [0, 1, 2, 3].reduce((s, t) => s + (m.x.data[t * 6] as number), 0) / 4);
  await checkLayer(['N', 4, 6], (net, x) => net.meanTokens(x), ['N', 6], { opset: 18 }); // axes as an input
});

test('residual add, dropout (identity at inference), names under scopes', async () => {
  const { model, x, y } = await checkLayer(['N', 4], (net, v) => net.scope('blocks.0', () => net.add(v, net.dropout(net.linear(v, { name: 'fc', out: 4 }), 0.1))), ['N', 4]);
  assert.deepEqual(model.parameterNames(), ['blocks.0.fc.weight', 'blocks.0.fc.bias']);
  assert.ok(model.ir.graph.nodes.some((n) => n.opType === 'Dropout'));
  const w = model.param('blocks.0.fc.weight').data as Float32Array;
  for (let o = 0; o < 4; o++) close(y.data[o] as number, (x.data[o] as number) + [0, 1, 2, 3].reduce((s, i) => s + (x.data[i] as number) * w[i * 4 + o]!, 0));
  const d = new NetBuilder({ seed: 0 });
  const v = d.input('x', ['N', 4]);
  assert.equal(d.dropout(v, 0), v, 'p = 0 emits nothing');
});

test('bad input fails loudly, naming the layer and the shapes', () => {
  const net = new NetBuilder({ seed: 0 });
  const x = net.input('x', ['N', 3, 8, 8]);
  assert.throws(() => net.linear(net.input('t', ['N', 'T']), { name: 'fc', out: 2 }), /linear 'fc' needs a static size for axis -1 of 't'/);
  assert.throws(() => net.selfAttention(x, { name: 'attn', heads: 2 }), /selfAttention 'attn' expects \[N, T, D\]/);
  assert.throws(() => net.add(x, net.conv2d(x, { name: 'c', out: 4, kernel: 1 })), (e: Error) => e instanceof NetError && /\[N, 3, 8, 8\] but .* \[N, 4, 8, 8\]/.test(e.message));
  assert.throws(() => net.conv2d(x, { name: 'c', out: 4, kernel: 1 }), /parameter 'c.weight' already exists/);
  assert.throws(() => net.conv2d(x, { name: 'g', out: 4, kernel: 1, groups: 2 }), /groups=2 must divide in channels 3/);
  assert.throws(() => net.patchEmbed(x, { name: 'pe', patch: 3, dim: 4 }), /divisible by patch 3/);
  assert.throws(() => new NetBuilder({ seed: 0 }).build(), /no outputs/);
  net.output(x, 'y');
  net.build();
  assert.throws(() => net.relu(x), /already built/);
});

/** Abramowitz & Stegun 7.1.26: |error| ≤ 1.5e-7. */
function erf(x: number): number {
  const s = Math.sign(x), a = Math.abs(x), t = 1 / (1 + 0.3275911 * a);
  const y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-a * a);
  return s * y;
}

test('the example at the top of net-builder.ts runs as written', async () => {
  const net = new NetBuilder({ name: 'mlp', seed: 0 });
  const x = net.input('x', ['N', 784]);
  const h = net.relu(net.linear(x, { out: 128, name: 'fc1', init: 'kaiming_normal' }));
  net.output(net.linear(h, { out: 10, name: 'head' }), 'logits');
  const model = new RefitModel(net.build());
  assert.deepEqual(model.parameterNames(), ['fc1.weight', 'fc1.bias', 'head.weight', 'head.bias']);
  assert.deepEqual((await model.run({ x: randn([3, 784], 1) })).logits!.dims, [3, 10]);
});
