// Normalization layers found fused or decomposed (src/onnx/norm-layers.ts), on real torch.onnx
// exports below opset 17 (test/fixtures/exports/make_exports.py), and used by PEFT and TTA.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { loadModel, RefitModel } from '../../src/model.ts';
import { parseSafetensors } from '../../src/io/safetensors.ts';
import { findNormLayers } from '../../src/onnx/norm-layers.ts';
import type { Model, Node } from '../../src/onnx/ir.ts';
import { withAdapter, normAffine, bitfit } from '../../src/peft/index.ts';
import { Tent } from '../../src/tta/tent.ts';
import * as losses from '../../src/train/losses.ts';
import type { Tensor } from '../../src/onnx/tensor.ts';

const dir = new URL('../fixtures/exports/', import.meta.url);
const path = (name: string) => new URL(`${name}/model.onnx`, dir).pathname;
const tensorsOf = (name: string) => parseSafetensors(readFileSync(new URL(`${name}/tensors.safetensors`, dir))).tensors;

function relErr(a: Float32Array, e: Float32Array): number {
  let d2 = 0, e2 = 0;
  for (let i = 0; i < e.length; i++) { d2 += (a[i]! - e[i]!) ** 2; e2 += e[i]! ** 2; }
  return Math.sqrt(d2) / Math.sqrt(e2);
}

function checkGrads(tensors: Map<string, Tensor>, grads: Map<string, Float32Array>): number {
  let n = 0;
  for (const [k, t] of tensors) {
    if (!k.startsWith('grad.')) continue;
    const g = grads.get(k.slice(5));
    if (!g) continue;
    const e = t.data as Float32Array;
    if (Math.hypot(...e) < 1e-6) assert.ok(Math.hypot(...g) < 1e-5, `${k}: expected ~0 (a norm removes it), got ‖g‖ ${Math.hypot(...g)}`);
    else assert.ok(relErr(g, e) <= 1e-4, `${k}: relative error ${relErr(g, e)}`);
    n++;
  }
  return n;
}

const LN = ['ln1.weight', 'ln1.bias', 'ln2.weight', 'ln2.bias', 'ln_f.weight', 'ln_f.bias'];

test('torch.onnx LayerNorm at opset 13 (ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add) is found with its affine parameters', async () => {
  const model = await loadModel(path('gpt_opset13'));
  const layers = findNormLayers(model.ir.graph);
  assert.deepEqual(layers.map((l) => [l.kind, l.op, l.scale, l.bias]), [
    ['layer', 'decomposed', 'ln1.weight', 'ln1.bias'], ['layer', 'decomposed', 'ln2.weight', 'ln2.bias'], ['layer', 'decomposed', 'ln_f.weight', 'ln_f.bias'],
  ]);
  const ops = layers[0]!.nodes.map((n) => model.ir.graph.nodes.find((m) => m.name === n)!.opType);
  assert.deepEqual(ops, ['ReduceMean', 'Sub', 'Pow', 'ReduceMean', 'Add', 'Sqrt', 'Div', 'Mul', 'Add']);
  // x and y are the layer's boundary tensors.
  const first = model.ir.graph.nodes.find((m) => m.name === layers[0]!.nodes[0])!;
  assert.equal(first.inputs[0], layers[0]!.x);
  // Stored as initializers (as tf2onnx does), ε and the exponent 2 are still no parameters.
  const ir = structuredClone(model.ir);
  const inner = new Set(layers.flatMap((l) => l.constants ?? []));
  assert.equal(inner.size, 6, 'ε and the exponent of each of the 3 LayerNorms');
  for (const n of ir.graph.nodes.filter((k) => k.opType === 'Constant' && inner.has(k.outputs[0]!))) {
    const v = n.attrs.value!;
    if (v.kind === 'tensor') ir.graph.initializers.set(n.outputs[0]!, v.value);
  }
  ir.graph.nodes = ir.graph.nodes.filter((k) => !ir.graph.initializers.has(k.outputs[0]!));
  // a tf2onnx file (a torch.onnx or onnxruntime-optimizer file's Constant-named initializers are
  // Constant nodes again on load: src/onnx/exporter-quirks.ts)
  ir.producerName = 'tf2onnx';
  const asInits = new RefitModel(ir);
  const eps = layers[0]!.constants!.find((c) => ir.graph.initializers.get(c)?.data[0] !== 2)!;
  assert.ok(ir.graph.initializers.has(eps));
  assert.deepEqual(asInits.parameterNames('all').sort(), model.parameterNames('all').sort());
  assert.throws(() => asInits.compileTrainStep({ trainable: [eps], loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }) }),
    /is the epsilon or exponent of the normalization written as primitive ops starting at node '\/ln1\/ReduceMean'/);
  // A ReduceMean that is only a mean (the pooling over tokens in the float model) is no norm layer.
  const ln = await loadModel(path('layernorm_opset13'));
  assert.deepEqual(findNormLayers(ln.ir.graph).map((l) => l.scale), ['ln1.weight', 'ln2.weight']);
});

test('GroupNorm (Reshape/InstanceNormalization/Reshape/Mul/Add at opset 13) and InstanceNorm with and without affine', async () => {
  const model = await loadModel(path('groupnorm_opset13'), { threads: 1 });
  const meta = JSON.parse(readFileSync(new URL('groupnorm_opset13/meta.json', dir), 'utf8'));
  const layers = findNormLayers(model.ir.graph);
  assert.deepEqual(layers.map((l) => [l.kind, l.op, l.scale && meta.param_names[l.scale], l.bias && meta.param_names[l.bias]]), [
    ['group', 'decomposed', 'gn.weight', 'gn.bias'], ['instance', 'InstanceNormalization', undefined, undefined], ['instance', 'InstanceNormalization', 'inorm.weight', 'inorm.bias'],
  ]);
  // 'all' is PyTorch's named_parameters (the uniform Constant ones/zeros inside the GroupNorm stay constants),
  // and every gradient matches PyTorch's.
  assert.deepEqual(model.parameterNames('all').sort(), Object.keys(meta.param_names).sort());
  const tensors = tensorsOf('groupnorm_opset13');
  const step = model.compileTrainStep({ trainable: 'all', loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }) });
  const r = await step.run({ x: tensors.get('input.x')!, y: tensors.get('label.y')! });
  assert.equal(checkGrads(tensors, r.grads), 10);
  await step.release();
  assert.equal(layers[0]!.x, '/conv/Conv_output_0');
  const resnet = await loadModel(path('resnet_dedup'));
  assert.deepEqual(findNormLayers(resnet.ir.graph).map((l) => l.kind), Array(6).fill('batch'));
});

test('variants: Cast nodes, Mul by Reciprocal, Mul(d, d), an Unsqueezed weight, and decomposed GroupNorm between Reshapes', async () => {
  const model = await loadModel(path('layernorm_opset13'));
  const m: Model = structuredClone(model.ir);
  const g = m.graph;
  const byOp = (op: string, k = 0) => g.nodes.filter((n) => n.opType === op)[k]!;
  // ln1: Cast to float before the statistics and after the division (as mixed-precision exports do),
  // Div(d, s) → Mul(d, Reciprocal(s)), Pow(d, 2) → Mul(d, d), 
  const div = byOp('Div', 0), pow = byOp('Pow', 0), mean = byOp('ReduceMean', 0);
  const cast = (name: string, input: string, output: string): Node => ({ name, opType: 'Cast', domain: '', inputs: [input], outputs: [output], attrs: { to: { kind: 'int', value: 1 } } });
  const x = mean.inputs[0]!;
  g.nodes.splice(g.nodes.indexOf(mean), 0, cast('c_in', x, 'x_cast'));
  for (const n of g.nodes) if (n !== g.nodes.find((k) => k.name === 'c_in')) n.inputs = n.inputs.map((i) => (i === x && (n === mean || n.opType === 'Sub') ? 'x_cast' : i));
  const s = div.inputs[1]!;
  g.nodes.splice(g.nodes.indexOf(div), 1,
    { name: 'rec', opType: 'Reciprocal', domain: '', inputs: [s], outputs: ['rec'], attrs: {} },
    { name: 'mul_rec', opType: 'Mul', domain: '', inputs: [div.inputs[0]!, 'rec'], outputs: ['normed'], attrs: {} },
    cast('c_out', 'normed', div.outputs[0]!));
  Object.assign(pow, { opType: 'Mul', inputs: [pow.inputs[0]!, pow.inputs[0]!] });
  const layers = findNormLayers(g);
  assert.equal(layers.length, 2);
  assert.equal(layers[0]!.scale, 'ln1.weight');
  assert.equal(layers[0]!.bias, 'ln1.bias');
  assert.equal(layers[0]!.x, 'x_cast');
  for (const n of ['rec', 'mul_rec', 'c_out']) assert.ok(layers[0]!.nodes.includes(n), n);

  // ln2 as a decomposed GroupNorm: Reshape before and after, weight through Unsqueeze.
  const mean2 = byOp('ReduceMean', 2); // [0] ln1 mean, [1] ln1 variance, [2] ln2 mean
  const x2 = mean2.inputs[0]!;
  g.initializers.set('gshape', { dtype: 'int64', dims: [3], data: BigInt64Array.from([0n, 2n, -1n]) });
  g.initializers.set('back', { dtype: 'int64', dims: [3], data: BigInt64Array.from([0n, 4n, 8n]) });
  g.nodes.splice(g.nodes.indexOf(mean2), 0, { name: 'to_groups', opType: 'Reshape', domain: '', inputs: [x2, 'gshape'], outputs: ['grouped'], attrs: {} });
  for (const n of g.nodes) if (n.name !== 'to_groups') n.inputs = n.inputs.map((i) => (i === x2 && (n === mean2 || (n.opType === 'Sub' && n.inputs[1] === mean2.outputs[0])) ? 'grouped' : i));
  const mul2 = g.nodes.find((n) => n.opType === 'Mul' && n.inputs[1] === 'ln2.weight')!;
  g.nodes.splice(g.nodes.indexOf(mul2), 0, { name: 'from_groups', opType: 'Reshape', domain: '', inputs: [mul2.inputs[0]!, 'back'], outputs: ['ungrouped'], attrs: {} },
    { name: 'unsq', opType: 'Unsqueeze', domain: '', inputs: ['ln2.weight', 'axes0'], outputs: ['w_unsq'], attrs: {} });
  g.initializers.set('axes0', { dtype: 'int64', dims: [1], data: BigInt64Array.from([0n]) });
  mul2.inputs = ['ungrouped', 'w_unsq'];
  const l2 = findNormLayers(g)[1]!;
  assert.deepEqual([l2.kind, l2.scale, l2.bias, l2.x], ['group', 'ln2.weight', 'ln2.bias', x2]);
});

test('peft.normAffine and BitFit find the decomposed LayerNorm\'s parameters; their gradients match PyTorch', async () => {
  const model = await loadModel(path('gpt_opset13'), { threads: 1 });
  const p = withAdapter(model, 'n', normAffine());
  assert.deepEqual(p.trainableNames().sort(), [...LN].sort());
  const bf = withAdapter(model, 'b', bitfit());
  for (const b of ['ln1.bias', 'ln2.bias', 'ln_f.bias']) assert.ok(bf.trainableNames().includes(b), b);
  const tensors = tensorsOf('gpt_opset13');
  const step = p.compileTrainStep({ trainable: p.trainableNames(), loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }) });
  const r = await step.run({ x: tensors.get('input.x')!, y: tensors.get('label.y')! });
  assert.equal(checkGrads(tensors, r.grads), 6);
  await step.release();
});

test('Tent adapts the decomposed LayerNorm\'s affine parameters (entropy gradients match PyTorch)', async () => {
  const model = await loadModel(path('layernorm_opset13'), { threads: 1 });
  const tensors = tensorsOf('layernorm_opset13');
  const x = tensors.get('input.x')!;
  const tent = new Tent(model, { lr: 0.05 });
  assert.deepEqual([...tent.trainable].sort(), ['ln1.bias', 'ln1.weight', 'ln2.bias', 'ln2.weight']);
  const step = model.compileTrainStep({ trainable: tent.trainable, loss: losses.softmaxEntropy({ logits: 'logits' }) });
  const r = await step.run({ x });
  assert.ok(Math.abs(r.loss - (tensors.get('loss')!.data as Float32Array)[0]!) <= 1e-5);
  assert.equal(checkGrads(tensors, r.grads), 4);
  const before = (tent.model.param('ln1.weight').data as Float32Array).slice();
  const fc = (tent.model.param('fc1.bias').data as Float32Array).slice();
  await tent.predict(x);
  assert.notDeepEqual(tent.model.param('ln1.weight').data, before, 'the LayerNorm scale moved');
  assert.deepEqual(tent.model.param('fc1.bias').data, fc, 'nothing else moved');
  await step.release();
  await tent.release();
});

test('RMSNorm as torch.onnx writes HF Llama\'s (Cast, Pow 2, ReduceMean, Add ε, Sqrt, Div(1, ·), Mul, Cast, Mul weight): found, and norm-affine\'s gradients are the zoo\'s PyTorch ones', async () => {
  const { readZoo, batchOf, lossOf, torchGrad } = await import('../fixtures/zoo/read.ts');
  const { withoutKvCache } = await import('../../src/onnx/kv-cache.ts');
  const f = readZoo('llama');
  const m = withoutKvCache(await loadModel(f.modelPath, { threads: 1 }));
  const layers = findNormLayers(m.ir.graph);
  assert.deepEqual(layers.map((l) => [l.kind, l.scale, l.bias]), [
    ['rms', 'model.layers.0.input_layernorm.weight', undefined], ['rms', 'model.layers.0.post_attention_layernorm.weight', undefined],
    ['rms', 'model.layers.1.input_layernorm.weight', undefined], ['rms', 'model.layers.1.post_attention_layernorm.weight', undefined],
    ['rms', 'model.norm.weight', undefined],
  ]);
  assert.ok(layers.every((l) => l.constants?.length === 2), 'the exponent and ε are constants, never parameters');
  const pm = withAdapter(m, 'n', normAffine());
  assert.deepEqual(pm.trainableNames('n').sort(), layers.map((l) => l.scale!).sort());
  const step = pm.compileTrainStep({ trainable: pm.trainableNames('n'), loss: lossOf(f.meta), outputs: [f.meta.output] });
  const c = f.meta.cases[0]!.name;
  const r = await step.run(batchOf(f, c));
  for (const l of layers) {
    const ref = f.tensors.get(`${c}.grad.${l.scale}`)!.data as Float32Array;
    const { grad } = torchGrad(f, l.scale!, r.grads);
    assert.ok(grad && relErr(grad, ref) < 1e-4, `${l.scale}: relative error ${grad && relErr(grad, ref)}`);
  }
  await step.release();
  await pm.release();
});

test('RMSNorm variants: Mul(x, Reciprocal(r)) and Div(x, r), Mul(x, x) for the square; a Pow by 3 is not one', async () => {
  const { ModelBuilder } = await import('../../src/onnx/model-builder.ts');
  const { f32 } = await import('../../src/onnx/tensor.ts');
  const rms = (scaling: 'reciprocal' | 'div', square: 'pow' | 'mul', exponent = 2) => {
    const b = new ModelBuilder({ opset: 14 }).input('x', 'float32', [2, 4])
      .initializer('two', f32([], [exponent])).initializer('eps', f32([], [1e-6])).initializer('w', f32([4], [1, 2, 3, 4]));
    b.node(square === 'pow' ? 'Pow' : 'Mul', square === 'pow' ? ['x', 'two'] : ['x', 'x'], ['sq'])
      .node('ReduceMean', ['sq'], ['ms'], { axes: [-1], keepdims: 1 }).node('Add', ['ms', 'eps'], ['v']).node('Sqrt', ['v'], ['r']);
    if (scaling === 'div') b.node('Div', ['x', 'r'], ['n']);
    else b.node('Reciprocal', ['r'], ['inv']).node('Mul', ['x', 'inv'], ['n']);
    return b.node('Mul', ['n', 'w'], ['y']).output('y').build().graph;
  };
  for (const [scaling, square] of [['reciprocal', 'pow'], ['div', 'mul'], ['div', 'pow']] as const) {
    const layers = findNormLayers(rms(scaling, square));
    assert.deepEqual(layers.map((l) => [l.kind, l.scale, l.x, l.y]), [['rms', 'w', 'x', 'y']], `${scaling}, ${square}`);
    assert.deepEqual(layers[0]!.constants, square === 'pow' ? ['two', 'eps'] : ['eps']);
  }
  assert.deepEqual(findNormLayers(rms('div', 'pow', 3)), []);
});

test('onnxruntime\'s fused norms: SimplifiedLayerNormalization (RMSNorm), com.microsoft SkipLayerNormalization and SkipSimplifiedLayerNormalization, with gamma (and beta) found', async () => {
  const { ModelBuilder } = await import('../../src/onnx/model-builder.ts');
  const { f32 } = await import('../../src/onnx/tensor.ts');
  const b = new ModelBuilder({ opset: 17 }).input('x', 'float32', [2, 4]).input('s', 'float32', [2, 4])
    .initializer('g1', f32([4], [1, 2, 3, 4])).initializer('g2', f32([4], [1, 1, 2, 2])).initializer('b2', f32([4], [0, 1, 0, 1])).initializer('g3', f32([4], [2, 2, 2, 2]));
  b.node('SimplifiedLayerNormalization', ['x', 'g1'], ['y1'], { axis: -1, epsilon: 1e-6 });
  const g = b.output('y3').build().graph;
  g.nodes.push({ name: 'skipln', opType: 'SkipLayerNormalization', domain: 'com.microsoft', inputs: ['y1', 's', 'g2', 'b2'], outputs: ['y2'], attrs: {} });
  g.nodes.push({ name: 'skipsln', opType: 'SkipSimplifiedLayerNormalization', domain: 'com.microsoft', inputs: ['y2', 's', 'g3'], outputs: ['y3'], attrs: {} });
  assert.deepEqual(findNormLayers(g).map((l) => [l.kind, l.op, l.scale, l.bias]), [
    ['rms', 'SimplifiedLayerNormalization', 'g1', undefined],
    ['layer', 'SkipLayerNormalization', 'g2', 'b2'],
    ['rms', 'SkipSimplifiedLayerNormalization', 'g3', undefined],
  ]);
});

test('opset 23\'s RMSNormalization is an rms layer: its scale found, norm-affine trains it', async () => {
  const { ModelBuilder } = await import('../../src/onnx/model-builder.ts');
  const { f32 } = await import('../../src/onnx/tensor.ts');
  const { RefitModel } = await import('../../src/model.ts');
  const peft = await import('../../src/peft/index.ts');
  const b = new ModelBuilder({ opset: 23 }).input('x', 'float32', [2, 4]).initializer('g', f32([4], [1, 2, 3, 4])).initializer('w', f32([4, 3], Array.from({ length: 12 }, (_, i) => i / 10)));
  b.node('RMSNormalization', ['x', 'g'], ['n'], { epsilon: 1e-6 });
  b.node('MatMul', ['n', 'w'], ['y']);
  const m = b.output('y', 'float32', [2, 3]).build();
  assert.deepEqual(findNormLayers(m.graph).map((l) => [l.kind, l.op, l.scale]), [['rms', 'RMSNormalization', 'g']]);
  const p = peft.withAdapter(new RefitModel(m, { threads: 1 }), 'na', peft.normAffine());
  assert.deepEqual(p.trainableNames('na').length > 0, true);
  const { randomProjectionLoss } = await import('../../src/autodiff/gradcheck.ts');
  const r = await p.compileTrainStep({ trainable: p.trainableNames('na'), loss: randomProjectionLoss(['y'], 1) }).run({ x: f32([2, 4], [1, -2, 3, 0.5, 2, 2, -1, 0]) });
  assert.ok(p.trainableNames('na').every((n) => r.grads.get(n)!.some((v) => v !== 0)));
});
