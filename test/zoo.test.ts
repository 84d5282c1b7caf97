// The model zoo (issue 10, item 7): real architectures exported as users export them
// (test/fixtures/zoo/make_zoo.py: torchvision ResNet-18, MobileNetV2, EfficientNet-B0, a nanoGPT
// decoder and a BERT encoder with dynamic axes, a U-Net with ConvTranspose and Resize, a
// paddle2onnx-style opset-11 model with Constant-node weights, and an int8 QDQ twin of each; then
// torchvision ConvNeXt, MobileNetV3-small, ShuffleNetV2, DenseNet, SqueezeNet 1.1, RegNetY, ViT and
// Swin, an LSTM classifier, RoBERTa- and DistilBERT-style encoders, and text decoders with a KV
// cache: GPT-2 merged by optimum's rule (an If on use_cache_branch) and a Llama with
// past_key_values inputs, trained through withoutKvCache), width-reduced. Every folder with a meta.json is picked up.
// For each: trainable 'all', one step per reference case, loss and every gradient against
// PyTorch ≤ 1e-4 relative (int8 twins against their dequantized float model with
// straight-through fake quantization; a parameter the exporter rearranged, as Swin's gathered
// relative position bias or the LSTM's reordered gates, through its index map in read.ts);
// then LoRA on its linear and convolution layers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel, type RefitModel } from '../src/model.ts';
import { withoutKvCache } from '../src/onnx/kv-cache.ts';
import { NCHWC_DOMAIN, nchwcBlockSize } from '../src/onnx/nchwc.ts';
import { blockedStep } from '../src/onnx/nchwc-step.ts';
import { ort } from '../src/onnx/runtime.ts';
import { attrInt } from '../src/onnx/ir.ts';
import * as peft from '../src/peft/index.ts';
import { listZoo, readZoo, batchOf, lossOf, torchGrad, type ZooFixture } from './fixtures/zoo/read.ts';
import { assertCloseToTorch } from './helpers/close.ts';

/** The fixture's model as refit trains it: a KV-cache decoder without its cache. */
async function zooModel(f: ZooFixture): Promise<RefitModel> {
  const m = await loadModel(f.modelPath, { threads: 1 });
  return f.meta.kv_cache ? withoutKvCache(m) : m;
}

async function checkAgainstTorch(f: ZooFixture) {
  const { meta } = f;
  const model = await zooModel(f);
  const quantized = new Set(meta.quantized_weights);
  // Holders the loaded model computes from another (ties kept by default: a tied lm_head's copy as a Transpose of the embedding)
  const computed = new Set(model.ir.graph.nodes.filter((n) => n.opType === 'Transpose' || n.opType === 'Identity').flatMap((n) => n.outputs));
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
          const { grad, missing } = torchGrad(f, p, r.grads, (t) => computed.has(t));
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
  const base = await zooModel(f);
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

// Models saved by onnxruntime's optimizer (optimizedModelFilePath), as users ship them. 'extended':
// MatmulTransposeFusion folds nn.MultiheadAttention's batch-axis Transposes into FusedMatMul
// transBatchA / transBatchB (src/autodiff/lower/contrib.ts). 'all' (onnxruntime's default level)
// adds its CPU-specific blocked NCHWc layout: nchwc Conv / pools with reordered, padded weights
// (src/autodiff/lower/nchwc.ts). The optimizer also drops the exporter's Identity aliases, so
// deduplicated tensors (zero biases, unit LayerNorm scales) become one shared tensor whose PyTorch
// gradient is the sum over the parameters aliased to it. At 'all' some readers of such a shared
// tensor get a rewritten copy (a bias padded to whole blocks) and the sum no longer applies, so
// there only untied tensors are compared. Tensors the optimizer rewrote (reordered conv weights,
// BatchNorm folded into convs) have no PyTorch counterpart and are left out; the loss is compared whole.
async function checkOptimized(name: string, level: 'extended' | 'all', expect: (m: RefitModel) => string | undefined, minCompared: number) {
  const f = readZoo(name);
  const dir = mkdtempSync(join(tmpdir(), 'refit-zoo-ort-'));
  try {
    const out = join(dir, `${name}.onnx`);
    const s = await ort.InferenceSession.create(f.modelPath, { graphOptimizationLevel: level, optimizedModelFilePath: out, executionProviders: ['cpu'], logSeverityLevel: 3 });
    await s.release();
    const model = await loadModel(out, { threads: 1 }).then((m) => (f.meta.kv_cache ? withoutKvCache(m) : m));
    const missingForm = expect(model);
    assert.equal(missingForm, undefined, `onnxruntime did not write the form this test checks: ${missingForm}`);
    const step = model.compileTrainStep({ trainable: 'all', loss: lossOf(f.meta), outputs: [f.meta.output] });
    try {
      const c = f.meta.cases.find((x) => x.batchNorm === 'eval')!.name;
      const r = await step.run(batchOf(f, c));
      const refLoss = (f.tensors.get(`${c}.loss`)!.data as Float32Array)[0]!;
      assert.ok(Math.abs(r.loss - refLoss) <= 1e-4 * Math.abs(refLoss), `${name} (${level}): loss ${r.loss} vs PyTorch ${refLoss}`);
      const sums = new Map<string, Float32Array>();
      for (const [p, holders] of Object.entries(f.meta.params)) {
        const { dims, data } = f.tensors.get(`${c}.grad.${p}`)!;
        const ref = data as Float32Array;
        for (const [o, transposed] of holders) {
          const src = f.meta.identity_aliases[o] ?? o;
          const acc = sums.get(src) ?? new Float32Array(ref.length);
          const [rows, cols] = dims as [number, number]; // a transposed holder is [cols, rows] in ONNX
          for (let i = 0; i < ref.length; i++) acc[transposed ? (i % cols) * rows + Math.floor(i / cols) : i]! += ref[i]!;
          sums.set(src, acc);
        }
      }
      const holders = new Map<string, number>();
      for (const hs of Object.values(f.meta.params)) for (const [o] of hs) { const src = f.meta.identity_aliases[o] ?? o; holders.set(src, (holders.get(src) ?? 0) + 1); }
      let compared = 0;
      for (const [t, ref] of sums) {
        if (level === 'all' && holders.get(t) !== 1) continue;
        const g = r.grads.get(t);
        if (!g || !model.ir.graph.initializers.has(t) || g.length !== ref.length) continue; // rewritten by the optimizer
        assertCloseToTorch(`${name} (${level}) grad ${t}`, g, { dtype: 'float32', dims: [ref.length], data: ref });
        compared++;
      }
      assert.ok(compared >= minCompared, `${name} (${level}): ${compared} gradients compared`);
    } finally {
      await step.release();
      await model.release();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const hasNode = (m: RefitModel, pred: (n: RefitModel['ir']['graph']['nodes'][number]) => boolean, what: string) => (m.ir.graph.nodes.some(pred) ? undefined : `no ${what}`);

test('zoo vit saved by onnxruntime\'s optimizer at \'extended\' (FusedMatMul transBatchA/B): loss and every tied gradient match PyTorch', async () => {
  await checkOptimized('vit', 'extended', (m) => hasNode(m, (n) => n.opType === 'FusedMatMul' && !!(attrInt(n, 'transBatchA', 0) || attrInt(n, 'transBatchB', 0)), 'FusedMatMul with transBatchA/B'), 14);
});

test('zoo llama saved by onnxruntime\'s optimizer at \'extended\' (SimplifiedLayerNormalization for RMSNorm, QuickGelu for SiLU, FusedMatMul), trained without its KV cache: loss and every gradient it kept match PyTorch; norm-affine finds the fused RMSNorms', async () => {
  await checkOptimized('llama', 'extended', (m) => hasNode(m, (n) => n.opType === 'SimplifiedLayerNormalization', 'SimplifiedLayerNormalization') ?? (peft.withAdapter(m, 'n', peft.normAffine()).trainableNames('n').length === 5 ? undefined : 'norm-affine on the 5 fused RMSNorms'), 15);
});

test('zoo gpt_int8 saved at \'extended\' (QDQ MatMuls fused into MatMulIntegerToFloat, int8 activations moved across Transpose/Reshape): loss and every tied gradient match PyTorch', async () => {
  await checkOptimized('gpt_int8', 'extended', (m) => hasNode(m, (n) => n.opType === 'MatMulIntegerToFloat', 'MatMulIntegerToFloat'), 10);
});

test('zoo convnext, mobilenet_v3_small and unet saved at onnxruntime\'s default level \'all\' (blocked NCHWc convs, pools, upsampling): loss and the gradients of the tensors it kept match PyTorch', { skip: (await nchwcBlockSize()) === null ? 'onnxruntime has no NCHWc kernels on this CPU' : false }, async () => {
  const blockedConv = (m: RefitModel) => hasNode(m, (n) => n.domain === NCHWC_DOMAIN && n.opType === 'Conv', 'nchwc Conv');
  // ConvNeXt: the LayerNorm scales and Linear weights it kept sit upstream of blocked convs, so their gradients cross them
  await checkOptimized('convnext', 'all', blockedConv, 10);
  // MobileNetV3: BatchNorm folded into the convs, HardSwish fused into them; the classifier is what stays
  await checkOptimized('mobilenet_v3_small', 'all', (m) => blockedConv(m) ?? hasNode(m, (n) => n.domain === NCHWC_DOMAIN && n.attrs.activation?.value === 'HardSwish', 'nchwc Conv with HardSwish'), 2);
  // U-Net: nearest and bilinear Resize become nchwc Upsample; the ConvTranspose stays standard
  await checkOptimized('unet', 'all', (m) => hasNode(m, (n) => n.domain === NCHWC_DOMAIN && n.opType === 'Upsample', 'nchwc Upsample'), 1);
});

// Frozen-conv steps (Tent's, norm-affine's) take their constant 1×1 convs as MatMuls where
// onnxruntime blocks convs (src/train/pointwise-matmul.ts): on the zoo's CNNs with 1×1 convs and
// squeeze-excitation gates, the BN-affine gradients of a train-mode step whose convs are all
// frozen match PyTorch's (which do not depend on what else trains).
test('zoo mobilenet_v2, mobilenet_v3_small, efficientnet_b0 and regnet_y: BN-affine steps in the blocked layout, and with frozen 1×1 convs as MatMuls, match PyTorch\'s BN gradients', { skip: (await nchwcBlockSize()) === null ? 'onnxruntime has no NCHWc kernels on this CPU: the rewrites are off' : false }, async () => {
  const saved = blockedStep.current;
  try { for (const blocked of [true, false]) { blockedStep.current = blocked; await zooBnAffine(blocked); } } finally { blockedStep.current = saved; }
});

/** The zoo's BN-affine steps against PyTorch; `blocked`: the blocked step (nchwc-step.ts) is on, else the 1×1 convs must be MatMuls. */
async function zooBnAffine(blocked: boolean): Promise<void> {
  for (const name of ['mobilenet_v2', 'mobilenet_v3_small', 'efficientnet_b0', 'regnet_y']) {
    const f = readZoo(name);
    const c = f.meta.cases.find((k) => k.batchNorm === 'train');
    assert.ok(c, `${name}: no train-mode BatchNorm case`);
    const model = await zooModel(f);
    const bnParams = new Set(model.ir.graph.nodes.filter((n) => n.opType === 'BatchNormalization').flatMap((n) => n.inputs.slice(1, 3)));
    const step = model.compileTrainStep({ trainable: (p: string) => bnParams.has(p), loss: lossOf(f.meta), batchNorm: 'train', outputs: [f.meta.output] });
    try {
      const batch = batchOf(f, c.name);
      const { graph } = await step.compile(Object.fromEntries(Object.entries(batch).filter(([k]) => model.inputs.some((i) => i.name === k)).map(([k, t]) => [k, { dtype: t.dtype, dims: t.dims }])));
      const pointwise = model.ir.graph.nodes.filter((n) => n.opType === 'Conv' && model.ir.graph.initializers.get(n.inputs[1]!)?.dims.slice(2).every((d) => d === 1) && (n.attrs.strides?.value as number[] | undefined ?? [1, 1]).every((s) => s === 1) && (n.attrs.group?.value ?? 1) === 1);
      const left = graph.model.graph.nodes.filter((n) => pointwise.some((p) => p.name === n.name && n.opType === 'Conv'));
      if (!blocked) assert.ok(pointwise.length > 0 && left.length === 0, `${name}: ${left.length} of ${pointwise.length} 1×1 convs left as Convs`);
      const r = await step.run(batch);
      const refLoss = (f.tensors.get(`${c.name}.loss`)!.data as Float32Array)[0]!;
      assert.ok(Math.abs(r.loss - refLoss) <= 1e-4 * Math.abs(refLoss) + 1e-6, `${name}: loss ${r.loss} vs PyTorch ${refLoss}`);
      let n = 0;
      for (const p of Object.keys(f.meta.params)) {
        if (!f.meta.params[p]!.some(([onnx]) => bnParams.has(onnx))) continue;
        const { grad } = torchGrad(f, p, r.grads);
        if (!grad) continue;
        assertCloseToTorch(`${name} ${c.name} grad ${p}`, grad, f.tensors.get(`${c.name}.grad.${p}`)!);
        n++;
      }
      assert.ok(n >= 10, `${name}: only ${n} BN gradients compared`);
    } finally {
      await step.release();
      await model.release();
    }
  }
}
