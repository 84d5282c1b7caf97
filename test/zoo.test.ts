// The model zoo (issue 10, item 7): real architectures exported as users export them
// (test/fixtures/zoo/make_zoo.py: torchvision ResNet-18, MobileNetV2, EfficientNet-B0, a nanoGPT
// decoder and a BERT encoder with dynamic axes, a U-Net with ConvTranspose and Resize, a
// paddle2onnx-style opset-11 model with Constant-node weights, and an int8 QDQ twin of each; then
// torchvision ConvNeXt, MobileNetV3-small, ShuffleNetV2, DenseNet, SqueezeNet 1.1, RegNetY, ViT and
// Swin, and an LSTM classifier), width-reduced. Every folder with a meta.json is picked up.
// For each: trainable 'all', one step per reference case, loss and every gradient against
// PyTorch ≤ 1e-4 relative (int8 twins against their dequantized float model with
// straight-through fake quantization; a parameter the exporter rearranged, as Swin's gathered
// relative position bias or the LSTM's reordered gates, through its index map in read.ts);
// then LoRA on its linear and convolution layers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../src/model.ts';
import * as peft from '../src/peft/index.ts';
import { listZoo, readZoo, batchOf, lossOf, torchGrad, type ZooFixture } from './fixtures/zoo/read.ts';
import { assertCloseToTorch } from './helpers/close.ts';

async function checkAgainstTorch(f: ZooFixture) {
  const { meta } = f;
  const model = await loadModel(f.modelPath, { threads: 1 });
  const quantized = new Set(meta.quantized_weights);
  const buffers = new Set(meta.buffers);
  for (const bn of ['eval', 'train'] as const) {
    const cases = meta.cases.filter((c) => c.batchNorm === bn);
    if (cases.length === 0) continue;
    // one compiled step per BatchNorm mode; each case (sequence length) is its own input signature
    const step = model.compileTrainStep({ trainable: 'all', loss: lossOf(meta), batchNorm: bn, outputs: [meta.output] });
    try {
      for (const c of cases) {
        const r = await step.run(batchOf(f, c.name));
        const refLoss = (f.tensors.get(`${c.name}.loss`)!.data as Float32Array)[0]!;
        assert.ok(Math.abs(r.loss - refLoss) <= 1e-4 * Math.abs(refLoss) + 1e-6, `${f.name} ${c.name}: loss ${r.loss} vs PyTorch ${refLoss}`);
        const trainedBuffers = [...r.grads.keys()].filter((k) => buffers.has(k));
        assert.deepEqual(trainedBuffers, [], `${f.name}: 'all' selected buffers`);
        let n = 0;
        for (const p of Object.keys(meta.params)) {
          const ref = f.tensors.get(`${c.name}.grad.${p}`)!;
          const { grad, missing } = torchGrad(f, p, r.grads);
          // a quantized weight (int8 behind DequantizeLinear) is frozen: no gradient is fine; one given must match
          const needed = missing.filter((m) => !quantized.has(m));
          assert.deepEqual(needed, [], `${f.name} ${c.name}: refit computed no gradient for ${needed.join(', ')} (PyTorch parameter ${p})`);
          if (!grad) continue;
          assertCloseToTorch(`${f.name} ${c.name} grad ${p}`, grad, ref);
          n++;
        }
        assert.ok(n > 0, `${f.name}: no gradient compared`);
      }
    } finally {
      await step.release();
    }
  }
  await model.release();
}

async function checkLora(f: ZooFixture) {
  const base = await loadModel(f.modelPath, { threads: 1 });
  // every linear and convolution layer LoRA supports: group 1 and wide enough for rank 2
  const m = peft.withAdapter(base, 'zoo', peft.lora({ targets: (s) => (s.group ?? 1) === 1 && Math.min(s.dIn, s.dOut) >= 2, rank: 2, alpha: 4 }));
  const step = m.compileTrainStep({ trainable: m.trainableNames(), loss: lossOf(f.meta), outputs: [f.meta.output] });
  try {
    const r = await step.run(batchOf(f, f.meta.cases[0]!.name));
    assert.ok(Number.isFinite(r.loss), `${f.name} LoRA: loss ${r.loss}`);
    let nonzero = false;
    for (const g of r.grads.values()) if (g.some((v) => v !== 0)) nonzero = true;
    assert.ok(nonzero, `${f.name} LoRA: every gradient is zero`);
  } finally {
    await step.release();
    await m.release();
  }
}

for (const name of listZoo()) {
  const f = readZoo(name);
  test(`zoo ${name}: 'all', loss and every gradient match PyTorch (${f.meta.description.split(':')[0]})`, async () => {
    await checkAgainstTorch(f);
  });
  test(`zoo ${name}: LoRA on its linear and conv layers compiles and steps`, async () => {
    await checkLora(f);
  });
}
