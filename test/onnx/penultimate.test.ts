// model.withFeatures(): the penultimate features of classifiers exported from PyTorch (the zoo
// fixtures have only their logits), for RMT, T3A, LAME and the continual controller.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/model.ts';
import { createAdapter } from '../../src/tta/index.ts';
import { f32, type Tensor } from '../../src/onnx/tensor.ts';
import { readZoo, inputsOf } from '../fixtures/zoo/read.ts';
import { Rng } from '../../src/util/rng.ts';

const zooModel = (name: string) => loadModel(readZoo(name).modelPath, { threads: 1 });

function randomImages(n: number, dims: number[], seed: number): Tensor {
  const rng = new Rng(seed);
  const per = dims.reduce((a, b) => a * b, 1);
  return f32([n, ...dims], Float32Array.from({ length: n * per }, () => rng.next()));
}

test('withFeatures: the input of the Gemm head, whose product with the head weights gives the logits (ResNet-18, ConvNeXt, ViT, MobileNetV3)', async () => {
  for (const name of ['resnet18', 'convnext', 'vit', 'mobilenet_v3_small']) {
    const f = readZoo(name);
    const model = await zooModel(name);
    const before = model.outputs.map((o) => o.name);
    const w = model.withFeatures();
    assert.deepEqual(model.outputs.map((o) => o.name), before, `${name}: the source model keeps its outputs`);
    const feat = w.outputs.find((o) => o.name === 'features');
    assert.ok(feat && feat.shape?.length === 2 && typeof feat.shape[1] === 'number', `${name}: features output [batch, D], got ${JSON.stringify(feat)}`);
    const head = w.ir.graph.nodes.find((n) => n.opType === 'Gemm' && w.ir.graph.nodes.some((m) => m.opType === 'Identity' && m.outputs[0] === 'features' && m.inputs[0] === n.inputs[0]))!;
    assert.ok(head, `${name}: a Gemm reads the features`);
    const case0 = f.meta.cases[0]!;
    const r = await w.run(inputsOf(f, case0.name), { outputs: [f.meta.output, 'features'] });
    const L = r[f.meta.output]!, F = r.features!;
    const W = w.param(head.inputs[1]!).data as Float32Array, B = w.param(head.inputs[2]!).data as Float32Array;
    const [n, C] = L.dims as [number, number], D = F.dims[1]!;
    assert.equal(D, feat.shape![1]);
    // Gemm with transB = 1 (torch's Linear): logits = F·Wᵀ + b
    for (let i = 0; i < n; i++) for (let c = 0; c < C; c++) {
      let s = B[c]!;
      for (let d = 0; d < D; d++) s += (F.data as Float32Array)[i * D + d]! * W[c * D + d]!;
      const l = (L.data as Float32Array)[i * C + c]!;
      assert.ok(Math.abs(s - l) <= 1e-4 * (1 + Math.abs(l)), `${name}: logits[${i}, ${c}] ${l} vs features·Wᵀ + b ${s}`);
    }
    assert.equal(w.withFeatures(), w, 'a model with a features output is returned as it is');
    assert.equal(w.param(head.inputs[1]!).data, model.param(head.inputs[1]!).data, 'the copy shares the parameters (copy-on-write)');
    await Promise.all([w.release(), model.release()]);
  }
});

test('withFeatures: through int8 QDQ heads the float features before quantization; a BERT pooler; refusals say why', async () => {
  const q = (await zooModel('resnet18_int8')).withFeatures();
  const id = q.ir.graph.nodes.find((n) => n.outputs[0] === 'features')!;
  const producer = q.ir.graph.nodes.find((n) => n.outputs.includes(id.inputs[0]!))!;
  assert.notEqual(producer.opType, 'DequantizeLinear', 'the features are the float tensor, not its fake-quantized copy');
  assert.deepEqual(q.outputs.find((o) => o.name === 'features')!.shape, ['batch', 32]);
  assert.deepEqual((await zooModel('bert')).withFeatures().outputs.find((o) => o.name === 'features')!.shape, ['batch', 16]);
  await assert.rejects(async () => (await zooModel('squeezenet1_1')).withFeatures(), /withFeatures: output 'logits' comes from GlobalAveragePool node .*not from a linear layer/);
  await assert.rejects(async () => (await zooModel('gpt')).withFeatures(), /output 'logits' is not \[batch, classes\] \(shape \[batch, sequence, 32\]\)/);
  await assert.rejects(async () => (await zooModel('resnet18')).withFeatures({ logits: 'nope' }), /the model has no output 'nope'/);
});

test('RMT and T3A on a torchvision ResNet export: refused without features, run with withFeatures()', async () => {
  const model = await zooModel('resnet18');
  const src = randomImages(16, [3, 64, 64], 1);
  const labels = Uint8Array.from({ length: 16 }, (_, i) => i % 5);
  assert.throws(() => createAdapter(model, 'rmt', { sourceData: src, sourceLabels: labels }), /no output 'features'.*withFeatures\(\)/);
  assert.throws(() => createAdapter(model, 't3a'), /no output 'features'.*withFeatures\(\)/);
  const w = model.withFeatures();
  for (const method of ['rmt', 't3a']) {
    const ad = createAdapter(w, method, method === 'rmt' ? { sourceData: src, sourceLabels: labels, warmupSamples: 8, sourceBatchSize: 8 } : {});
    for (let b = 0; b < 2; b++) {
      const r = await ad.predict(randomImages(8, [3, 64, 64], 10 + b));
      assert.deepEqual(r.logits.dims, [8, 5]);
      assert.ok((r.logits.data as Float32Array).every(Number.isFinite), `${method}: finite logits`);
    }
    await ad.release();
  }
});
