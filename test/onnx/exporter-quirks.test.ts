// Exporter quirks repaired on load, on real torch.onnx exports (test/fixtures/exports/make_exports.py,
// Debian's torch 1.13): Identity-deduplicated weights, Constant-node weights, buffers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { loadModel, RefitModel } from '../../src/model.ts';
import { parseSafetensors } from '../../src/io/safetensors.ts';
import { readModelFile } from '../../src/onnx/io.ts';
import { decodeModel } from '../../src/onnx/proto.ts';
import { applyExporterQuirks, isWeightConstant } from '../../src/onnx/exporter-quirks.ts';
import * as losses from '../../src/train/losses.ts';
import { withAdapter, lora } from '../../src/peft/index.ts';
import { f32, i64, type Tensor } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { createSession, toOrt, fromOrt } from '../../src/onnx/runtime.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { relErr } from '../helpers/close.ts';
import { diagnoseTraining } from '../../src/autodiff/diagnose.ts';
import { embeddingBagOf, withEmbeddingBags } from '../../src/onnx/embedding-bag.ts';
import { stepSource } from '../../src/train/step-opset.ts';
import { constantValue } from '../../src/onnx/ir.ts';
import { toNumbers } from '../../src/onnx/tensor.ts';
import { signatureOf } from '../../src/onnx/shapes.ts';

const dir = new URL('../fixtures/exports/', import.meta.url);
const path = (name: string) => new URL(`${name}/model.onnx`, dir).pathname;

function fixture(name: string) {
  const { tensors } = parseSafetensors(readFileSync(new URL(`${name}/tensors.safetensors`, dir)));
  const meta = JSON.parse(readFileSync(new URL(`${name}/meta.json`, dir), 'utf8'));
  return { tensors, meta };
}

/** Every grad.<prefix> tensor against refit's gradient, ≤ 1e-4 relative (absolute floor for ~0). */
function checkGrads(tensors: Map<string, Tensor>, grads: Map<string, Float32Array>, prefix: string): number {
  let n = 0;
  for (const [k, t] of tensors) {
    if (!k.startsWith(prefix)) continue;
    const p = k.slice(prefix.length);
    const g = grads.get(p);
    assert.ok(g, `no gradient for '${p}'`);
    const e = t.data as Float32Array;
    const norm = Math.sqrt(e.reduce((s, v) => s + v * v, 0));
    if (norm > 1e-6) assert.ok(relErr(g, e) <= 1e-4, `${p}: relative error ${relErr(g, e).toExponential(2)}`);
    else assert.ok(Math.sqrt(g.reduce((s, v) => s + v * v, 0)) <= 1e-5, `${p}: expected ~0`);
    n++;
  }
  return n;
}

function batch(tensors: Map<string, Tensor>) {
  return { x: tensors.get('input.x')!, y: tensors.get('label.y')! };
}

/** One full step of fixture `name` with `loss`: PyTorch's loss (≤1e-5 relative) and `grads` gradients (checkGrads). */
async function trainsAsTorch(name: string, loss: losses.CrossEntropyOptions, grads: number): Promise<void> {
  const { tensors } = fixture(name);
  const model = await loadModel(path(name), { threads: 1 });
  const step = model.compileTrainStep({ trainable: 'all', loss: losses.crossEntropy(loss) });
  const r = await step.run(batch(tensors));
  const refLoss = (tensors.get('loss')!.data as Float32Array)[0]!;
  assert.ok(Math.abs(r.loss - refLoss) <= 1e-5 * Math.abs(refLoss), `${name}: loss ${r.loss} vs ${refLoss}`);
  assert.equal(checkGrads(tensors, r.grads, 'grad.'), grads);
  await step.release();
  await model.release();
}

test('ResNet block with torch.onnx Identity dedup: every alias is its own parameter, and \'all\' is PyTorch\'s named_parameters', async () => {
  const { meta } = fixture('resnet_dedup');
  const src = readModelFile(path('resnet_dedup'));
  assert.equal(src.graph.nodes.filter((n) => n.opType === 'Identity').length, 20, 'the export has the Identity aliases');
  const model = new RefitModel(src);
  assert.equal(model.ir.graph.nodes.filter((n) => n.opType === 'Identity').length, 0);
  assert.deepEqual(model.parameterNames('all').sort(), [...meta.param_names].sort());
  // The caller's IR is untouched.
  assert.equal(src.graph.nodes.filter((n) => n.opType === 'Identity').length, 20);
  assert.ok(!src.graph.initializers.has('layer1.0.bn1.weight'));
  // Untied: separate storage.
  assert.notEqual(model.param('layer1.0.bn1.weight').data, model.param('bn1.weight').data);
  assert.notEqual(model.param('bn1.running_var').data, model.param('bn1.weight').data);
  // Saved, the untied weights are separate initializers of a valid model with the same outputs.
  const { tensors } = fixture('resnet_dedup');
  const x = tensors.get('input.x')!;
  const again = await loadModel(model.toBytes());
  assert.equal(again.ir.graph.initializers.size, 12 + 20);
  assert.deepEqual((await again.run({ x })).logits!.data, (await model.run({ x })).logits!.data);
  const ref = tensors.get('output.logits')!.data as Float32Array;
  assert.ok(relErr((await again.run({ x })).logits!.data as Float32Array, ref) < 1e-5);
});

for (const mode of ['eval', 'train'] as const) {
  test(`ResNet block with Identity dedup, batchNorm '${mode}': loss and every gradient match PyTorch`, async () => {
    const { tensors } = fixture('resnet_dedup');
    const model = await loadModel(path('resnet_dedup'), { threads: 1 });
    const step = model.compileTrainStep({ trainable: 'all', loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }), batchNorm: mode });
    const r = await step.run(batch(tensors));
    const refLoss = (tensors.get(mode === 'eval' ? 'loss' : 'loss_train')!.data as Float32Array)[0]!;
    assert.ok(Math.abs(r.loss - refLoss) <= 1e-5 * Math.abs(refLoss) + 1e-6, `loss ${r.loss} vs ${refLoss}`);
    const n = checkGrads(tensors, r.grads, mode === 'eval' ? 'grad.' : 'grad_train.');
    assert.equal(n, 20);
    if (mode === 'train') {
      let m = 0;
      for (const [k, t] of tensors) {
        const mm = /^running_(mean|var)\.(.*)$/.exec(k);
        if (!mm) continue;
        const got = r.runningStats.get(mm[2]!);
        assert.ok(got, `no running statistic ${mm[2]}`);
        assert.ok(relErr(got, t.data as Float32Array) <= 1e-4, `${k}`);
        m++;
      }
      assert.equal(m, 12);
    }
    await step.release();
  });
}

test('keepTies keeps torch.onnx\'s aliases as ties; naming an alias or a running statistic is a clear error', async () => {
  const model = await loadModel(path('resnet_dedup'), { threads: 1, keepTies: true });
  const ids = model.ir.graph.nodes.filter((n) => n.opType === 'Identity');
  assert.equal(ids.length, 8, 'the 8 weight/bias aliases stay; the 12 running-statistic aliases are untied regardless');
  assert.ok(ids.every((n) => !/running/.test(n.outputs[0]!)));
  assert.deepEqual(model.parameterNames('all').sort(), ['bn1.bias', 'bn1.weight', 'conv1.weight', 'fc.bias', 'fc.weight', 'layer1.0.conv1.weight', 'layer1.0.conv2.weight', 'layer1.1.bn1.bias', 'layer1.1.bn1.weight', 'layer1.1.conv1.weight', 'layer1.1.conv2.weight', 'layer1.1.downsample.0.weight']);
  assert.throws(() => model.compileTrainStep({ trainable: ['layer1.0.bn1.weight'], loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }) }),
    /'layer1\.0\.bn1\.weight' is an exporter alias: Identity node '[^']+' copies initializer 'bn1\.weight'.*load with keepTies: false/);
  // Tied training still runs in train mode (the statistics have their own tensors).
  const { tensors } = fixture('resnet_dedup');
  const step = model.compileTrainStep({ trainable: 'all', loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }), batchNorm: 'train' });
  const r = await step.run(batch(tensors));
  assert.ok(Number.isFinite(r.loss));
  // A tied bias's gradient is the sum over every alias: not PyTorch's per-tensor gradient.
  const tied = r.grads.get('bn1.bias')!, own = tensors.get('grad_train.bn1.bias')!.data as Float32Array;
  assert.ok(relErr(tied, own) > 0.1, `tied gradient should differ from the untied one (got ${relErr(tied, own)})`);
  await step.release();

  const plain = await loadModel(path('resnet_dedup'));
  assert.throws(() => plain.compileTrainStep({ trainable: ['bn1.running_var'], loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }) }),
    /'bn1\.running_var' is the running variance \(input 4\) of BatchNormalization node '[^']+': a buffer, never trained/);
});

test('GPT-style block at opset 13: \'all\' skips the −inf causal-mask buffer, naming it is a clear error, gradients match PyTorch', async () => {
  const { tensors, meta } = fixture('gpt_opset13');
  const model = await loadModel(path('gpt_opset13'), { threads: 1 });
  const all = model.parameterNames('all');
  assert.equal(all.length, Object.keys(meta.param_names).length);
  assert.deepEqual([...all].sort(), Object.keys(meta.param_names).sort());
  assert.ok(!all.includes('mask'));
  const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
  assert.throws(() => model.compileTrainStep({ trainable: ['mask'], loss }), /'mask' holds a non-finite value \(-Infinity at element 1\): a buffer such as an attention mask/);
  const step = model.compileTrainStep({ trainable: 'all', loss });
  const r = await step.run(batch(tensors));
  const refLoss = (tensors.get('loss')!.data as Float32Array)[0]!;
  assert.ok(Math.abs(r.loss - refLoss) <= 1e-5 * Math.abs(refLoss), `loss ${r.loss} vs ${refLoss}`);
  assert.equal(checkGrads(tensors, r.grads, 'grad.'), 18);
  await step.release();
});

test('weights stored as Constant nodes (paddle2onnx style) become parameters that train; saving writes them as initializers', async () => {
  const { tensors, meta } = fixture('constant_weights');
  const bytes = readFileSync(path('constant_weights'));
  const src = decodeModel(bytes);
  const constants = src.graph.nodes.filter((n) => n.opType === 'Constant').length;
  const model = new RefitModel(src, { threads: 1 });
  assert.equal(src.graph.initializers.size, 0, 'the caller\'s IR keeps its Constant nodes');
  assert.equal(src.graph.nodes.filter((n) => n.opType === 'Constant').length, constants);
  assert.deepEqual(model.parameterNames('all').sort(), [...meta.param_names].sort());
  for (const b of meta.buffers) assert.ok(model.ir.graph.initializers.has(b), `running statistic ${b} is an initializer (a buffer)`);
  const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
  const step = model.compileTrainStep({ trainable: 'all', loss });
  const r = await step.run(batch(tensors));
  assert.ok(Math.abs(r.loss - (tensors.get('loss')!.data as Float32Array)[0]!) <= 1e-5);
  assert.equal(checkGrads(tensors, r.grads, 'grad.'), 6);
  // One SGD step moves the loss down: the Constant-node weights really train.
  const upd: Record<string, Float32Array> = {};
  for (const [k, g] of r.grads) upd[k] = (model.param(k).data as Float32Array).map((v, i) => v - 0.1 * g[i]!);
  model.setParams(upd);
  const r2 = await step.run(batch(tensors));
  assert.ok(r2.loss < r.loss, `loss ${r.loss} → ${r2.loss}`);
  // PEFT finds the converted weights as layers.
  const p = withAdapter(model, 'l', lora({ targets: /fc|conv/, rank: 2 }));
  assert.equal(p.trainableNames().length, 4, 'LoRA A and B on the Conv and on the Gemm');
  // Saved and loaded again: a valid model whose weights are initializers with the trained values.
  const again = await loadModel(model.toBytes(), { threads: 1 });
  assert.equal(again.ir.graph.nodes.filter((n) => n.opType === 'Constant').length, 0);
  const out = await again.run({ x: tensors.get('input.x')! });
  const ref = await model.run({ x: tensors.get('input.x')! });
  assert.deepEqual(out.logits!.data, ref.logits!.data);
  await step.release();
});

test('what counts as a weight among Constant nodes', () => {
  const f = (data: number[], dims = [data.length]) => ({ dtype: 'float32' as const, dims, data: Float32Array.from(data) });
  assert.equal(isWeightConstant(f([0.5, -0.25, 1])), true);
  assert.equal(isWeightConstant(f([2], [])), false, 'a scalar (epsilon, the 2 of Pow) stays a constant');
  assert.equal(isWeightConstant(f([1, 1, 1, 1])), false, 'uniform ones (GroupNorm\'s InstanceNormalization scale) stay constants');
  assert.equal(isWeightConstant(f([0, -Infinity])), false, 'a mask stays a constant');
  assert.equal(isWeightConstant({ dtype: 'int64', dims: [2], data: BigInt64Array.from([1n, 2n]) }), false);
  const src = decodeModel(readFileSync(path('constant_weights')));
  assert.deepEqual(applyExporterQuirks(src).report.constants.length, 8, 'conv w/b, bn w/b/mean/var, fc w/b');
  // A float Constant read only as Resize scales is not a weight: it stays a Constant node.
  const scales = f([1, 1, 2, 2]);
  const m = structuredClone(src);
  m.graph.nodes.push(
    { name: 'scales', opType: 'Constant', domain: '', inputs: [], outputs: ['scales'], attrs: { value: { kind: 'tensor', value: scales } } },
    { name: 'up', opType: 'Resize', domain: '', inputs: ['x', '', 'scales'], outputs: ['up'], attrs: {} },
  );
  const r = applyExporterQuirks(m);
  assert.ok(!r.model.graph.initializers.has('scales'));
  assert.equal(r.report.constants.length, 8);
});

test('a float Constant in a torch.onnx export is a computed buffer (a U-Net\'s timestep frequencies), not a weight: \'all\' leaves it; paddle2onnx\'s Constants are weights', async () => {
  const { ModelBuilder } = await import('../../src/onnx/model-builder.ts');
  const { RefitModel } = await import('../../src/model.ts');
  const { mse } = await import('../../src/train/losses.ts');
  const { f32 } = await import('../../src/onnx/tensor.ts');
  const build = (producer: string) => {
    const m = new ModelBuilder({ opset: 13 }).input('t', 'float32', [2, 1]).initializer('proj', f32([3, 2], [0.1, -0.2, 0.3, 0.4, -0.5, 0.6]))
      .node('Constant', [], ['/Constant_1_output_0'], { value: f32([1, 3], [1, 0.1, 0.01]) }, '/Constant_1')
      .node('Mul', ['t', '/Constant_1_output_0'], ['e']).node('Sin', ['e'], ['s']).node('MatMul', ['s', 'proj'], ['y']).output('y', 'float32', [2, 2]).build();
    m.producerName = producer;
    return new RefitModel(m);
  };
  const feeds = { t: f32([2, 1], [10, 700]), target: f32([2, 2], [0, 1, 1, 0]) };
  const torch = await build('pytorch').compileTrainStep({ trainable: 'all', loss: mse({ output: 'y' }) }).run(feeds);
  assert.deepEqual([...torch.grads.keys()], ['proj']);
  const paddle = await build('PaddlePaddle').compileTrainStep({ trainable: 'all', loss: mse({ output: 'y' }) }).run(feeds);
  assert.deepEqual([...paddle.grads.keys()].sort(), ['/Constant_1_output_0', 'proj']);
  assert.equal(paddle.loss, torch.loss);
});

test('torch.onnx Constants that onnxruntime\'s transformer optimizer stored as initializers (an attention\'s 1/√d) are constants again: \'all\' leaves them, naming one says what it is', async () => {
  const { ModelBuilder } = await import('../../src/onnx/model-builder.ts');
  const { RefitModel } = await import('../../src/model.ts');
  const { mse } = await import('../../src/train/losses.ts');
  const { f32 } = await import('../../src/onnx/tensor.ts');
  const scale = '/m/layer.0/attention/Constant_11_output_0';
  const build = (producer: string) => {
    const m = new ModelBuilder({ opset: 14 }).input('x', 'float32', [2, 2]).initializer('w', f32([2, 2], [0.1, -0.2, 0.3, 0.4])).initializer(scale, f32([], [0.35]))
      .node('MatMul', ['x', 'w'], ['h']).node('Mul', ['h', scale], ['y']).output('y', 'float32', [2, 2]).build();
    m.producerName = producer;
    return new RefitModel(applyExporterQuirks(m).model);
  };
  const feeds = { x: f32([2, 2], [1, 2, 3, 4]), target: f32([2, 2], [0, 1, 1, 0]) };
  for (const producer of ['onnxruntime.transformers', 'pytorch']) {
    const model = build(producer);
    assert.deepEqual(model.parameterNames(), ['w'], producer);
    assert.ok(model.ir.graph.nodes.some((n) => n.opType === 'Constant' && n.outputs[0] === scale), `${producer}: a Constant node again`);
    assert.throws(() => model.compileTrainStep({ trainable: [scale], loss: mse({ output: 'y' }) }), /computed by node/);
    const r = await model.compileTrainStep({ trainable: 'all', loss: mse({ output: 'y' }) }).run(feeds);
    assert.ok(Number.isFinite(r.loss));
  }
  // another tool's file keeps it: the name alone is torch.onnx's habit, not proof
  assert.deepEqual(build('onnx.quantize').parameterNames().sort(), [scale, 'w']);
});

test('batchNorm \'train\' on a BatchNorm whose running statistic is computed: an error naming the node, not a TypeError', async () => {
  const m = decodeModel(readFileSync(path('constant_weights')));
  const bn = m.graph.nodes.find((n) => n.opType === 'BatchNormalization')!;
  const v = bn.inputs[4]!;
  m.graph.nodes.splice(m.graph.nodes.indexOf(bn), 0, { name: 'abs_var', opType: 'Abs', domain: '', inputs: [v], outputs: ['var_abs'], attrs: {} });
  bn.inputs[4] = 'var_abs';
  const model = new RefitModel(m);
  const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
  assert.throws(() => model.compileTrainStep({ trainable: 'all', loss, batchNorm: 'train' }),
    new RegExp(`BatchNormalization node '${bn.name}': its running variance 'var_abs' is computed by node 'abs_var' \\(Abs\\), not an initializer.*batchNorm: 'eval'`));
  assert.ok(model.compileTrainStep({ trainable: 'all', loss, batchNorm: 'eval' }));
});

test('an If on the input\'s rank (torch.onnx\'s LocalResponseNorm) is inlined when a step compiles: PyTorch\'s loss and gradients, and inspect calls the model trainable', async () => {
  const { meta } = fixture('lrn_if');
  const model = await loadModel(path('lrn_if'), { threads: 1 });
  assert.ok(model.ir.graph.nodes.some((n) => n.opType === 'If'), 'the export has its If');
  const d = diagnoseTraining(model.ir);
  assert.ok(d.groups.every((g) => g.trainable), d.summary.join('; '));
  assert.ok(d.lowered.some((l) => l.opType === 'If'));
  assert.deepEqual([...model.parameterNames('all')].sort(), Object.keys(meta.param_names).sort());
  await model.release();
  await trainsAsTorch('lrn_if', { logits: 'logits', labels: 'y' }, 6);
});

test('a torchvision MViT block (tensor_split exported as a Loop building a sequence; an If on the rank whose branches declare wrong dims): the Loop is unrolled, PyTorch\'s loss and every gradient', async () => {
  const model = await loadModel(path('mvit_block'), { threads: 1 });
  for (const op of ['Loop', 'SequenceInsert', 'SequenceAt', 'If']) assert.ok(model.ir.graph.nodes.some((n) => n.opType === op), `the export has its ${op}`);
  const d = diagnoseTraining(model.ir);
  assert.ok(d.groups.every((g) => g.trainable && g.unreached.length === 0), d.summary.join('; '));
  assert.ok(d.lowered.some((l) => l.opType === 'Loop'), 'inspect counts the Loop as unrolled');
  await model.release();
  await trainsAsTorch('mvit_block', { logits: 'logits', labels: 'y' }, Object.keys(fixture('mvit_block').meta.param_names).length);
});

test('repeat_interleave over a dynamic length (a Loop whose trip count the input shape fixes, over a SplitToSequence): unrolled after the fold, PyTorch\'s loss and gradients', async () => {
  const model = await loadModel(path('repeat_interleave'), { threads: 1 });
  for (const op of ['Loop', 'SplitToSequence', 'ConcatFromSequence']) assert.ok(model.ir.graph.nodes.some((n) => n.opType === op), `the export has its ${op}`);
  const d = diagnoseTraining(model.ir);
  assert.ok(d.groups.every((g) => g.trainable && g.unreached.length === 0), d.summary.join('; '));
  await model.release();
  await trainsAsTorch('repeat_interleave', { logits: 'logits', labels: 'y' }, 4);
});

test('detach() is lost in the export; stopGradient on the detached uses gives PyTorch\'s gradients, and without it refit differentiates everything', async () => {
  const { tensors, meta } = fixture('detach');
  const model = await loadModel(path('detach'), { threads: 1 });
  const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
  const run = async (stopGradient?: { tensor: string; into: string }[]) => {
    const step = model.compileTrainStep({ trainable: 'all', loss, ...(stopGradient ? { stopGradient } : {}) });
    const r = await step.run(batch(tensors));
    await step.release();
    return r;
  };
  const cut = await run(meta.stop_gradient);
  assert.equal(checkGrads(tensors, cut.grads, 'grad.'), 6);
  const whole = await run();
  assert.ok(relErr(whole.grads.get('a.weight')!, tensors.get('grad.a.weight')!.data as Float32Array) > 0.05, 'without the cut, a\'s gradient is not PyTorch\'s');
  assert.equal(whole.loss, cut.loss);
  // a whole-tensor stop cuts h's kept use too: a gets no gradient through either
  const both = await run([meta.stop_gradient[0].tensor] as never);
  assert.ok(both.grads.get('a.weight')!.every((v) => v === 0));
  await assert.rejects(model.compileTrainStep({ trainable: 'all', loss, stopGradient: [{ tensor: 'nope', into: '/Mul' }] }).run(batch(tensors)), /stopGradient: 'nope' is not a tensor of the model/);
  await assert.rejects(model.compileTrainStep({ trainable: 'all', loss, stopGradient: [{ tensor: meta.stop_gradient[0].tensor, into: '/Mul' }] }).run(batch(tensors)), /stopGradient: node '\/Mul' does not read '\/Tanh_output_0'/);
  await model.release();
});

test('a segmenter (dilated conv, bilinear upsample) trains on per-pixel cross-entropy with void pixels: PyTorch\'s F.cross_entropy(ignore_index=255) loss and gradients', async () => {
  await trainsAsTorch('segmenter', { logits: 'logits', labels: 'y', ignoreIndex: 255 }, 8);
  assert.throws(() => losses.crossEntropy({ logits: 'logits', ignoreIndex: 1.5 }).build({ em: null as never, shape: () => [2, 4, 8, 8], input: () => 'y' }), /ignoreIndex must be an integer/);
  const { tensors } = fixture('segmenter');
  const model = await loadModel(path('segmenter'), { threads: 1 });
  const soft = model.compileTrainStep({ trainable: 'all', loss: losses.crossEntropy({ logits: 'logits', labels: 'y', labelSmoothing: 0.1 }) });
  await assert.rejects(soft.run(batch(tensors)), /takes integer labels per position, without label smoothing \(those are for \[N, C\] logits\)/);
  await model.release();
});

test('a spatial transformer (F.grid_sample on a predicted grid, opset 16) trains with PyTorch\'s loss and gradients, the localisation net\'s through the grid', async () => {
  await trainsAsTorch('stn_grid_sample', { logits: 'logits', labels: 'y' }, 6);
});

test("keepTies 'auto' (the default): an alias of a tensor of more than one value stays a tie, one of one value is untied, and an equal parameter under its own name unties all", async () => {
  // x → MatMul(x, W) → MatMul(·, Identity(W)) [a folded weight used twice] → Add(b0) → Add(Identity(b0)) [zeros: two biases]
  const build = (named?: 'equal') => {
    const b = new ModelBuilder({ opset: 17 });
    b.input('x', 'float32', [2, 3]);
    b.initializer('onnx::MatMul_7', f32([3, 3], [0.5, -1, 2, 0.25, 1, -0.5, 3, 0.1, -2]));
    b.initializer('b0', f32([3], [0, 0, 0]));
    b.node('Identity', ['onnx::MatMul_7'], ['onnx::MatMul_9']);
    b.node('Identity', ['b0'], ['b1']);
    b.node('MatMul', ['x', 'onnx::MatMul_7'], ['h']).node('MatMul', ['h', 'onnx::MatMul_9'], ['h2']);
    b.node('Add', ['h2', 'b0'], ['h3']).node('Add', ['h3', 'b1'], ['y']);
    if (named) { // layers.1.bias, an equal parameter of its own (a deep-copied, untrained layer)
      b.initializer('layers.0.bias', f32([3], [1, 2, 3]));
      b.node('Identity', ['layers.0.bias'], ['layers.1.bias']);
      b.node('Add', ['y', 'layers.0.bias'], ['y1']).node('Add', ['y1', 'layers.1.bias'], ['out']).output('out', 'float32', [2, 3]);
    } else b.output('y', 'float32', [2, 3]);
    return b.build();
  };
  const auto = applyExporterQuirks(build());
  assert.deepEqual(auto.report.untied, ['b1'], 'the zero bias is untied, the weight used twice is not');
  assert.ok(auto.model.graph.nodes.some((n) => n.opType === 'Identity' && n.outputs[0] === 'onnx::MatMul_9'));
  const model = new RefitModel(build());
  assert.deepEqual(model.parameterNames().sort(), ['b0', 'b1', 'onnx::MatMul_7']);
  // The tie's gradient is the sum over both uses: finite differences on the one tensor.
  const step = model.compileTrainStep({ trainable: 'all', loss: losses.mse({ output: 'y', target: 't' }) });
  const feeds = { x: f32([2, 3], [1, -2, 0.5, 0.3, 0.7, -1]), t: f32([2, 3], [0, 1, 0, 1, 0, 1]) };
  const r = await step.run(feeds);
  const w = Float32Array.from(model.param('onnx::MatMul_7').data as Float32Array); // a copy: setParams writes into the model's array
  const h = 1e-3, k = 4;
  const at = async (v: number) => { const c = Float32Array.from(w); c[k] = v; model.setParams(new Map([['onnx::MatMul_7', c]])); return (await step.run(feeds)).loss; };
  const fd = ((await at(w[k]! + h)) - (await at(w[k]! - h))) / (2 * h);
  assert.ok(Math.abs(r.grads.get('onnx::MatMul_7')![k]! - fd) < 1e-2 * Math.max(1, Math.abs(fd)), `tied gradient ${r.grads.get('onnx::MatMul_7')![k]} vs finite difference ${fd}`);
  await step.release(); await model.release();
  // Separate parameters that are equal under their own names: every tie is undone, as keepTies: false.
  const equal = applyExporterQuirks(build('equal'));
  assert.equal(equal.report.equalParameters, 'layers.1.bias');
  assert.deepEqual(equal.report.untied.sort(), ['b1', 'layers.1.bias', 'onnx::MatMul_9']);
  assert.equal(equal.report.untiedAcrossModules, undefined, 'not a guess between two readings: the names show separate parameters');
  assert.deepEqual(applyExporterQuirks(build(), { keepTies: false }).report.untied.sort(), ['b1', 'onnx::MatMul_9']);
  assert.deepEqual(applyExporterQuirks(build(), { keepTies: true }).report.untied, []);
});

test("keepTies 'auto': an alias read in the module that reads its source stays tied; one read by another layer is a separate parameter", () => {
  // Readers named as torch.onnx names them: a module called twice (key_proj, key_proj_1) or two layers (an untrained Mamba's A_log, equal in every layer).
  const build = (first: string, second: string) => {
    const b = new ModelBuilder({ opset: 17 });
    b.input('x', 'float32', [2, 3]);
    b.initializer('onnx::MatMul_7', f32([3, 3], [0.5, -1, 2, 0.25, 1, -0.5, 3, 0.1, -2]));
    b.node('Identity', ['onnx::MatMul_7'], ['onnx::MatMul_9']);
    b.node('MatMul', ['x', 'onnx::MatMul_7'], ['h'], {}, first).node('MatMul', ['h', 'onnx::MatMul_9'], ['y'], {}, second).output('y', 'float32', [2, 3]);
    return b.build();
  };
  assert.deepEqual(applyExporterQuirks(build('/enc/layer.0/key_proj/MatMul', '/enc/layer.0/key_proj_1/MatMul')).report.tied, [['onnx::MatMul_9', 'onnx::MatMul_7']]);
  assert.deepEqual(applyExporterQuirks(build('/dec/query_pos_head/layers.1/MatMul', '/dec/query_pos_head/layers.1_1/MatMul')).report.tied.length, 1);
  const twoLayers = applyExporterQuirks(build('/backbone/layers.0/mixer/MatMul', '/backbone/layers.1/mixer/MatMul')).report;
  assert.deepEqual(twoLayers.untied, ['onnx::MatMul_9']);
  // said apart from the tensors of one value, so that inspect and train can name --keep-ties (TabNet's shared GLU layers look the same)
  assert.deepEqual(twoLayers.untiedAcrossModules, ['onnx::MatMul_9']);
  assert.deepEqual(applyExporterQuirks(build('/backbone/layers.0/mixer/MatMul', '/backbone/layers.1/mixer/MatMul'), { keepTies: true }).report.tied.length, 1, 'keepTies: true keeps it');
});

test('weight standardization (timm\'s StdConv2d: a training-mode BatchNormalization on the weight) becomes the ops it computes: the raw weight trains, its copy goes, no BatchNorm is left', async () => {
  // As torch.onnx writes F.batch_norm(w.reshape(1, out, -1), None, None, training=True) at opset 13:
  // the statistics from a transposed copy of the weight, five outputs, only the first read.
  const rng = new Rng(2);
  const w = Array.from({ length: 3 * 18 }, () => rng.normal() * 0.5 + 0.1);
  const wT = Array.from({ length: 18 * 3 }, (_, k) => w[(k % 3) * 18 + Math.floor(k / 3)]!);
  const b = new ModelBuilder({ opset: 13 });
  b.input('x', 'float32', [2, 2, 5, 5]);
  b.initializer('onnx::BatchNormalization_7', f32([1, 3, 18], w)).initializer('onnx::ReduceMean_9', f32([1, 18, 3], wT));
  b.node('Constant', [], ['ones'], { value: f32([3], [1, 1, 1]) }).node('Constant', [], ['zeros'], { value: f32([3], [0, 0, 0]) });
  b.node('ReduceMean', ['onnx::ReduceMean_9'], ['mean'], { axes: [0, 1], keepdims: 0 }, '/stem/conv/ReduceMean');
  b.node('Sub', ['onnx::ReduceMean_9', 'mean'], ['d']).node('Mul', ['d', 'd'], ['d2']).node('ReduceMean', ['d2'], ['var'], { axes: [0, 1], keepdims: 0 });
  b.node('BatchNormalization', ['onnx::BatchNormalization_7', 'ones', 'zeros', 'mean', 'var'], ['y', 'rm', 'rv', 'sm', 'sv'], { epsilon: 1e-8, momentum: { kind: 'float', value: 1 } }, '/stem/conv/BatchNormalization');
  b.initializer('shape', i64([4], [3, 2, 3, 3])).node('Reshape', ['y', 'shape'], ['wstd']);
  b.node('Conv', ['x', 'wstd'], ['out'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }).output('out', 'float32', [2, 3, 5, 5]);
  const source = b.build();
  const model = new RefitModel(source, { threads: 1 });
  assert.deepEqual(model.quirks.standardized, ['/stem/conv/BatchNormalization']);
  assert.ok(!model.ir.graph.nodes.some((n) => n.opType === 'BatchNormalization'), 'no BatchNorm left: Tent and BN-adapt do not take it for a layer');
  assert.deepEqual(model.parameterNames(), ['onnx::BatchNormalization_7'], 'the copy the statistics were computed from is gone');
  const x = f32([2, 2, 5, 5], Array.from({ length: 100 }, () => rng.normal()));
  const session = await createSession(source);
  const want = fromOrt((await session.run({ x: toOrt(x) })).out!).data as Float32Array;
  await session.release();
  const got = (await model.run({ x })).out!.data as Float32Array;
  assert.ok(relErr(got, want) < 1e-5, `the same outputs as onnxruntime on the file: ${relErr(got, want)}`);
  const t = f32([2, 3, 5, 5], Array.from({ length: 150 }, () => rng.normal()));
  const step = model.compileTrainStep({ trainable: 'all', loss: losses.mse({ output: 'out', target: 't' }) });
  const r = await step.run({ x, t });
  const w0 = Float32Array.from(model.param('onnx::BatchNormalization_7').data as Float32Array);
  for (const k of [0, 20, 53]) {
    const at = async (v: number) => { const c = Float32Array.from(w0); c[k] = v; model.setParams(new Map([['onnx::BatchNormalization_7', c]])); return (await step.run({ x, t })).loss; };
    const fd = ((await at(w0[k]! + 1e-3)) - (await at(w0[k]! - 1e-3))) / 2e-3;
    const g = r.grads.get('onnx::BatchNormalization_7')![k]!;
    assert.ok(Math.abs(g - fd) < 2e-2 * Math.max(1, Math.abs(fd)), `weight[${k}]: gradient ${g} vs finite difference ${fd}`);
  }
  await step.release(); await model.release();
});

test('EmbeddingBag with per-sample weights (a Loop over the bags, one empty): the step\'s fixed-shape form gives PyTorch\'s loss and gradients, and onnxruntime\'s own Loop output on other bags', async () => {
  const { tensors } = fixture('bag_weighted');
  const model = await loadModel(path('bag_weighted'), { threads: 1 });
  const loop = model.ir.graph.nodes.find((n) => n.opType === 'Loop')!;
  assert.deepEqual({ ...embeddingBagOf(loop, model.ir.graph), starts: undefined, ends: undefined }, { starts: undefined, ends: undefined, ids: 'ids', table: 'bag.weight', weights: 'weights', mode: 'sum' });
  const feeds = { ids: tensors.get('input.ids')!, offsets: tensors.get('input.offsets')!, weights: tensors.get('input.weights')! };
  const step = model.compileTrainStep({ trainable: 'all', loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }), outputs: ['logits'] });
  const r = await step.run({ ...feeds, y: tensors.get('label.y')! });
  const refLoss = (tensors.get('loss')!.data as Float32Array)[0]!;
  assert.ok(Math.abs(r.loss - refLoss) <= 1e-5 * Math.abs(refLoss), `loss ${r.loss} vs ${refLoss}`);
  assert.equal(checkGrads(tensors, r.grads, 'grad.'), 3, 'the table and the Linear\'s two');
  // other bags, the same shapes: the step's logits are onnxruntime's (which runs the Loop itself)
  const other = { ...feeds, offsets: i64([4], [0, 0, 4, 6]) };
  const got = (await step.run({ ...other, y: tensors.get('label.y')! })).outputs.logits!;
  const want = (await model.run(other)).logits!;
  assert.ok(relErr(got.data as Float32Array, want.data as Float32Array) < 1e-6, 'logits on other bags');
  await step.release();
  await model.release();
});

test('an EmbeddingBag over a vocabulary of 256 rows or more: rewritten first, its step is lifted to opset 16 (one ScatterElements add, no one-hot of the vocabulary, no Loop)', async () => {
  const { tensors } = fixture('bag_weighted');
  const ir = readModelFile(path('bag_weighted'));
  ir.graph.initializers.set('bag.weight', f32([300, 5], new Rng(5).fill(new Float32Array(1500), 0.5))); // the same ids, a larger vocabulary
  assert.equal(stepSource(ir).lifted, false, 'as exported: the table is read inside the Loop, and a Loop forbids the lift');
  assert.equal(stepSource(withEmbeddingBags(ir)).lifted, true);
  const model = new RefitModel(ir, { threads: 1 });
  const step = model.compileTrainStep({ trainable: 'all', loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }) });
  const feeds = { ids: tensors.get('input.ids')!, offsets: tensors.get('input.offsets')!, weights: tensors.get('input.weights')! };
  const { graph } = await step.compile(signatureOf(feeds));
  const ops = new Set(graph.model.graph.nodes.map((n) => n.opType));
  assert.equal(graph.model.opsets.find((o) => o.domain === '')?.version, 16);
  assert.ok(ops.has('ScatterElements') && !ops.has('Loop'), [...ops].join(', '));
  // the only OneHot left is the loss's, over the 3 classes (not the table's 300 rows)
  const depths = graph.model.graph.nodes.filter((n) => n.opType === 'OneHot').map((n) => toNumbers(constantValue(graph.model.graph, n.inputs[1]!)!)[0]);
  assert.ok(depths.every((d) => d < 300), `one-hot depths ${depths}`);
  assert.ok(Number.isFinite((await step.run({ ...feeds, y: tensors.get('label.y')! })).loss));
  await step.release();
  await model.release();
});
