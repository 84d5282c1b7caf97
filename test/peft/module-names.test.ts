// Module names for weights the exporter named itself: torch.onnx writes a Linear applied to a 3-D
// input as MatMul with a transposed copy of its weight, `onnx::MatMul_652`; refit names that layer
// from its node, `/layers.0/self_attn/q_proj/MatMul` → `layers.0.self_attn.q_proj`, as PyTorch and
// HF PEFT name it, so `target_modules: ['q_proj', 'v_proj']` works on such exports and adapter
// files carry PyTorch's module names. Files written with the old names still load.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/model.ts';
import { parseSafetensors, serializeSafetensors } from '../../src/io/safetensors.ts';
import { withAdapter, lora, withAdapterFiles, adapterFiles } from '../../src/peft/index.ts';
import { findSites, modulePathOfNode } from '../../src/peft/sites.ts';
import { i64 } from '../../src/onnx/tensor.ts';
import { withoutKvCache } from '../../src/onnx/kv-cache.ts';
import { maxDiff, perturb } from './helpers.ts';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTrain } from '../../src/cli/train.ts';
import { npy } from '../helpers/cli.ts';

const llama = new URL('../fixtures/zoo/llama/model.onnx', import.meta.url).pathname;

test('module paths from torch.onnx node names', () => {
  assert.equal(modulePathOfNode('/layers.0/self_attn/q_proj/MatMul'), 'layers.0.self_attn.q_proj');
  assert.equal(modulePathOfNode('/encoder/layers/encoder_layer_0/mlp/mlp.0/MatMul'), 'encoder.layers.encoder_layer_0.mlp.0', 'a called container written once');
  assert.equal(modulePathOfNode('/lm_head/MatMul'), 'lm_head');
  for (const other of ['MatMul_12', '/MatMul', 'node_under_test', '//x/MatMul']) assert.equal(modulePathOfNode(other), undefined, other);
});

test('an exported Llama\'s projections are named as PyTorch names them, and HF PEFT\'s usual target_modules select them', async () => {
  const m = await loadModel(llama, { threads: 1 });
  const sites = findSites(m.ir.graph);
  const q = sites.find((s) => s.node === '/layers.0/self_attn/q_proj/MatMul')!;
  assert.ok(q.weight.startsWith('onnx::MatMul_'), 'the export folded the weight into a transposed copy');
  assert.equal(q.module, 'layers.0.self_attn.q_proj');
  assert.equal(q.alias, q.weight);
  const p = withAdapter(m, 'qv', lora({ targets: ['q_proj', 'v_proj'], rank: 2 }));
  assert.deepEqual([...p.planOf('qv').fileConfig.target_modules as string[]].sort(), ['layers.0.self_attn.q_proj', 'layers.0.self_attn.v_proj', 'layers.1.self_attn.q_proj', 'layers.1.self_attn.v_proj']);
  const keys = [...parseSafetensors(adapterFiles(p, 'qv').weights).tensors.keys()];
  assert.ok(keys.includes('base_model.model.layers.0.self_attn.q_proj.lora_A.weight'), keys.slice(0, 3).join(', '));
  await m.release();
});

test('an adapter file that names modules by their weights (written before) loads onto the same layers', async () => {
  const m = withoutKvCache(await loadModel(llama, { threads: 1 }));
  const p = withAdapter(m, 'qv', lora({ targets: ['q_proj', 'v_proj'], rank: 2 }));
  perturb(p, 'qv');
  const now = adapterFiles(p, 'qv');
  const byAlias = new Map(findSites(m.ir.graph).filter((s) => s.alias).map((s) => [s.module, s.alias!]));
  // the same file as an older refit wrote it: keys and target_modules under the weights' names
  const old = new Map([...parseSafetensors(now.weights).tensors].map(([k, t]) => {
    const mod = /^base_model\.model\.(.+)\.lora_[AB]\.weight$/.exec(k)![1]!;
    return [k.replace(mod, byAlias.get(mod)!), t];
  }));
  const cfg = JSON.parse(now.config);
  cfg.target_modules = cfg.target_modules.map((t: string) => byAlias.get(t) ?? t);
  const loaded = withAdapterFiles(m, 'qv', { weights: serializeSafetensors(old), config: JSON.stringify(cfg) });
  const ids = i64([1, 5], [3, 1, 4, 1, 5]);
  const feeds = { input_ids: ids, attention_mask: i64([1, 5], [1, 1, 1, 1, 1]), position_ids: i64([1, 5], [0, 1, 2, 3, 4]) };
  const want = (await p.run(feeds as never, { outputs: ['logits'] })).logits!;
  const got = (await loaded.run(feeds as never, { outputs: ['logits'] })).logits!;
  assert.ok(maxDiff(got, want) < 1e-6, `outputs differ by ${maxDiff(got, want)}`);
  await m.release();
});

test('refit train --adapter lora --targets q_proj,v_proj on the exported Llama (the usual PEFT recipe from the command line)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'refit-qv-'));
  try {
    writeFileSync(join(dir, 'ids.npy'), npy('<i8', [16, 6], BigInt64Array.from({ length: 96 }, (_, i) => BigInt(1 + ((i * 7) % 30)))));
    await runTrain(llama, { task: 'next-token', data: join(dir, 'ids.npy'), adapter: 'lora', targets: 'q_proj,v_proj', rank: 2, out: join(dir, 'qv'), json: true });
    const cfg = JSON.parse(readFileSync(join(dir, 'qv', 'adapter_config.json'), 'utf8'));
    assert.deepEqual([...cfg.target_modules].sort(), ['layers.0.self_attn.q_proj', 'layers.0.self_attn.v_proj', 'layers.1.self_attn.q_proj', 'layers.1.self_attn.v_proj']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('weights torch exported as Constant nodes (its quantized models: `/conv1/Constant_2_output_0`) are named after their layer; LoRA without targets and \'all\' on a model whose weights are all quantized get clear errors', async () => {
  const { ModelBuilder } = await import('../../src/onnx/model-builder.ts');
  const { RefitModel } = await import('../../src/model.ts');
  const { f32, tensor } = await import('../../src/onnx/tensor.ts');
  const m = new ModelBuilder({ opset: 13 }).input('x', 'float32', [2, 4])
    .node('Constant', [], ['/fc/Constant_2_output_0'], { value: f32([4, 3], Array.from({ length: 12 }, (_, i) => i / 10)) }, '/fc/Constant_2')
    .node('MatMul', ['x', '/fc/Constant_2_output_0'], ['y'], {}, '/fc/MatMul').output('y', 'float32', [2, 3]).build();
  const model = new RefitModel(m);
  assert.deepEqual(findSites(model.ir.graph).map((s) => s.module), ['fc']);
  assert.throws(() => withAdapter(model, 'a', lora({ rank: 2 } as never)), /lora: give targets, the layers to adapt .* Candidates: fc/);
  // every weight int8 behind DequantizeLinear: 'all' finds no float parameter and says what to do
  const q = new ModelBuilder({ opset: 13 }).input('x', 'float32', [2, 4])
    .initializer('w_q', tensor('int8', [4, 3], Array.from({ length: 12 }, (_, i) => i - 6))).initializer('s', f32([], [0.05])).initializer('z', tensor('int8', [], [0]))
    .node('DequantizeLinear', ['w_q', 's', 'z'], ['w'], {}, '/fc/DequantizeLinear').node('MatMul', ['x', 'w'], ['y'], {}, '/fc/MatMul').output('y', 'float32', [2, 3]).build();
  const { mse } = await import('../../src/train/losses.ts');
  assert.throws(() => new RefitModel(q).compileTrainStep({ trainable: 'all', loss: mse({ output: 'y' }) }), /matched no parameter: the model has no float parameters \(its weights are stored quantized, and those stay frozen\): train an adapter/);
});

test('a Linear called by F.linear inside its parent (Swin V2\'s qkv and proj: one node scope, `attn`) takes its name from its bias, also a bias computed from constants; a residual addend names nothing', async () => {
  const { ModelBuilder } = await import('../../src/onnx/model-builder.ts');
  const { RefitModel } = await import('../../src/model.ts');
  const { f32 } = await import('../../src/onnx/tensor.ts');
  const w = (n: number) => f32([4, n], Array.from({ length: 4 * n }, (_, i) => i / 10));
  const m = new ModelBuilder({ opset: 13 }).input('x', 'float32', [2, 4])
    .initializer('onnx::MatMul_1', w(4)).initializer('onnx::MatMul_2', w(4)).initializer('onnx::MatMul_3', w(4))
    .initializer('blk.attn.qkv.bias', f32([4], [1, 2, 3, 4])).initializer('blk.attn.proj.bias', f32([4], [0, 0, 0, 0])).initializer('half', f32([4], [1, 1, 0, 0]))
    .node('MatMul', ['x', 'onnx::MatMul_1'], ['q'], {}, '/blk/attn/MatMul')
    .node('Mul', ['blk.attn.qkv.bias', 'half'], ['qkv_bias'], {}, '/blk/attn/Mul') // the bias with its key part zeroed, from constants only
    .node('Add', ['qkv_bias', 'q'], ['h'], {}, '/blk/attn/Add')
    .node('MatMul', ['h', 'onnx::MatMul_2'], ['p'], {}, '/blk/attn/MatMul_1')
    .node('Add', ['blk.attn.proj.bias', 'p'], ['o'], {}, '/blk/attn/Add_1')
    .node('MatMul', ['o', 'onnx::MatMul_3'], ['r'], {}, '/blk/attn/MatMul_2')
    .node('Add', ['r', 'o'], ['y'], {}, '/blk/attn/Add_2') // a residual: `o` comes from the input, and proj's bias must not name this layer
    .node('MatMul', ['y', 'onnx::MatMul_2'], ['p2'], {}, '/blk/attn_1/MatMul_1') // proj called again (ALBERT's shared layer): one module
    .node('Add', ['blk.attn.proj.bias', 'p2'], ['y2'], {}, '/blk/attn_1/Add_1')
    .output('y2', 'float32', [2, 4]).build();
  const sites = findSites(new RefitModel(m).ir.graph);
  assert.deepEqual(sites.map((s) => s.module), ['blk.attn.qkv', 'blk.attn.proj', 'blk.attn', 'blk.attn.proj'], 'the third, alone in its scope without a bias of its own, takes the scope');
  assert.equal(sites[1]!.bias, 'blk.attn.proj.bias');
});

test('a model whose attention onnxruntime\'s optimizer packed into com.microsoft Attention: LoRA on query/value says why nothing matched and what to do', async () => {
  const { ModelBuilder } = await import('../../src/onnx/model-builder.ts');
  const { RefitModel } = await import('../../src/model.ts');
  const { f32 } = await import('../../src/onnx/tensor.ts');
  const D = 4;
  const m = new ModelBuilder({ opset: 14 }).input('x', 'float32', [1, 3, D])
    .initializer('Attention_0_qkv_weight', f32([D, 3 * D], Array.from({ length: 3 * D * D }, (_, i) => (i % 7) / 10)))
    .initializer('Attention_0_qkv_bias', f32([3 * D], new Array(3 * D).fill(0.1)))
    .initializer('layer.0.attention.output.dense.weight', f32([D, D], Array.from({ length: D * D }, (_, i) => i / 20)))
    .node('Attention', ['x', 'Attention_0_qkv_weight', 'Attention_0_qkv_bias'], ['a'], { num_heads: 2 }, 'Attention_0')
    .node('MatMul', ['a', 'layer.0.attention.output.dense.weight'], ['y'], {}, '/layer.0/attention/output/dense/MatMul')
    .output('y', 'float32', [1, 3, D]).build();
  m.graph.nodes[0]!.domain = 'com.microsoft';
  m.opsets.push({ domain: 'com.microsoft', version: 1 });
  const model = new RefitModel(m);
  for (const targets of [/(query|value)$/, ['query', 'value']]) {
    assert.throws(() => withAdapter(model, 'ad', lora({ rank: 2, targets })), /packed into 1 com\.microsoft Attention node \(Attention_0\) by onnxruntime's transformer optimizer.*[Cc]andidates: layer\.0\.attention\.output\.dense/s);
  }
  assert.equal(withAdapter(model, 'ad', lora({ rank: 2, targets: /dense$/ })).trainableNames().length, 2, 'the other layers still take adapters');
});

test('a model whose convolutions standardize their weight in the graph (BiT\'s and NFNet\'s StdConv2d): LoRA attaches as a branch equal to B·A added to the computed weight, trains, saves, reloads and merges by baking; the other adapters say why not', async () => {
  const { ModelBuilder } = await import('../../src/onnx/model-builder.ts');
  const { RefitModel } = await import('../../src/model.ts');
  const { f32, i64: int64 } = await import('../../src/onnx/tensor.ts');
  const { computedWeightNodes } = await import('../../src/peft/sites.ts');
  const { ia3 } = await import('../../src/peft/index.ts');
  const { gradCheck } = await import('../../src/autodiff/gradcheck.ts');
  const { Rng } = await import('../../src/util/rng.ts');
  // timm's ScaledStdConv2d as torch.onnx writes it: Reshape(W, [1, O, -1]) → BatchNormalization
  // (training mode, the gain as its scale) → Reshape back → Conv; then a Linear head on the pooled map
  const stdConv = (stored?: Float32Array) => {
    const b = new ModelBuilder({ opset: 14 }).input('x', 'float32', ['N', 2, 5, 5])
      .initializer('head.fc.weight', f32([3, 3], Array.from({ length: 9 }, (_, i) => i / 9))).initializer('head.fc.bias', f32([3], [0, 0, 0]));
    if (stored) b.initializer('stem.conv.weight', f32([3, 2, 3, 3], stored));
    else {
      b.initializer('stem.conv.weight', f32([3, 2, 3, 3], Array.from({ length: 54 }, (_, i) => Math.sin(i))))
        .initializer('stem.conv.gain', f32([3], [1, 0.5, 2])).initializer('zeros', f32([3], [0, 0, 0])).initializer('ones', f32([3], [1, 1, 1]))
        .initializer('flat', int64([3], [1, 3, -1])).initializer('back', int64([4], [3, 2, 3, 3]))
        .node('Reshape', ['stem.conv.weight', 'flat'], ['w1'], {}, '/stem/conv/Reshape')
        .node('BatchNormalization', ['w1', 'stem.conv.gain', 'zeros', 'zeros', 'ones'], ['w2', 'bn_mean', 'bn_var'], { training_mode: 1, epsilon: 1e-6 }, '/stem/conv/BatchNormalization')
        .node('Reshape', ['w2', 'back'], ['w'], {}, '/stem/conv/Reshape_1');
    }
    return b.node('Conv', ['x', stored ? 'stem.conv.weight' : 'w'], ['h'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, '/stem/conv/Conv')
      .node('Tanh', ['h'], ['t'], {}, '/act/Tanh')
      .node('GlobalAveragePool', ['t'], ['p'], {}, '/head/pool/GlobalAveragePool')
      .node('Flatten', ['p'], ['f'], {}, '/head/Flatten')
      .node('Gemm', ['f', 'head.fc.weight', 'head.fc.bias'], ['y'], { transB: 1 }, '/head/fc/Gemm')
      .output('y', 'float32', ['N', 3]).build();
  };
  const model = new RefitModel(stdConv(), { threads: 1 });
  assert.deepEqual(computedWeightNodes(model.ir.graph).map((n) => n.name), ['/stem/conv/Conv'], 'the head\'s stored weight and the data path are no computed weights');
  const x = f32([2, 2, 5, 5], new Rng(5).fill(new Float32Array(100)));
  const p = withAdapter(model, 'ad', lora({ rank: 2, targets: ['stem.conv'] }));
  assert.deepEqual(p.trainableNames(), ['ad.lora_A.stem.conv', 'ad.lora_B.stem.conv']);
  assert.ok(maxDiff((await p.run({ x })).y, (await model.run({ x })).y) === 0, 'B starts at zero: the output is the base model\'s');
  perturb(p, 'ad', 0.3);
  // Finite differences (eps 1e-2 in float32, through a Tanh): 1e-2 is the bound the other LoRA gradient checks use.
  for (const g of await gradCheck(p.ir, { x }, { params: p.trainableNames(), eps: 1e-2 })) assert.ok(g.relError < 1e-2, `${g.param}: ${g.relError}`);
  // The branch is ΔW = s·B·A on the weight the conv sees: the same adapter folded into a model that
  // stores that standardized weight gives the same output.
  const w = (await model.run({ x }, { outputs: ['w'] })).w!;
  const stored = withAdapter(new RefitModel(stdConv(w.data as Float32Array), { threads: 1 }), 'ad', lora({ rank: 2, targets: ['stem.conv'] }));
  for (const [k, t] of p.adapterValues('ad')) (stored.adapterValues('ad').get(k)!.data as Float32Array).set(t.data as Float32Array);
  stored.touch(stored.adapter('ad').trainable);
  const adapted = (await p.run({ x })).y!;
  assert.ok(maxDiff((await stored.merge('ad').run({ x })).y!, adapted) < 1e-5);
  assert.ok(maxDiff(adapted, (await model.run({ x })).y!) > 1e-3, 'the perturbed adapter changes the output');
  // Merging has no stored weight to fold into: the branch is baked into the graph, exactly.
  const merged = p.merge('ad');
  assert.ok(maxDiff((await merged.run({ x })).y!, adapted) < 1e-6);
  assert.ok(maxDiff((await merged.unmerge('ad').run({ x })).y!, adapted) < 1e-6);
  // Saved in HF PEFT's layout under PyTorch's module name, and loaded back.
  const files = adapterFiles(p, 'ad');
  assert.deepEqual(JSON.parse(files.config).target_modules, ['stem.conv']);
  assert.deepEqual([...parseSafetensors(files.weights, 'w').tensors.keys()].sort(), ['base_model.model.stem.conv.lora_A.weight', 'base_model.model.stem.conv.lora_B.weight']);
  assert.ok(maxDiff((await withAdapterFiles(model, 'back', files).run({ x })).y!, adapted) < 1e-6);
  // Adapters that read or scale the stored weight are refused on it, with the reason.
  assert.throws(() => withAdapter(model, 'ad', ia3({ targets: /conv/ })), /targets \/conv\/ matched no .*1 Conv layer of this model \(stem\.conv\) computes the weight in the graph from parameters \(weight standardization.*only LoRA attaches there.*Candidates: head\.fc/s);
  assert.throws(() => withAdapter(model, 'ad', lora({ rank: 2, targets: /conv/, init: 'pissa' })), /PiSSA starts from the singular vectors of stem\.conv's weight, which this graph computes/);
  const { encodeModel } = await import('../../src/onnx/proto.ts');
  const { inspectModel } = await import('../../src/cli/inspect.ts');
  const dir = mkdtempSync(join(tmpdir(), 'refit-stdconv-'));
  try {
    writeFileSync(join(dir, 'm.onnx'), encodeModel(stdConv()));
    assert.match((await inspectModel(join(dir, 'm.onnx'))).exportNotes?.join('\n') ?? '', /1 Conv layer computes the weight in the graph from parameters/);
  } finally { rmSync(dir, { recursive: true, force: true }); }
});
