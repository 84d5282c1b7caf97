// Train refit's shipped source models on the full Fashion-MNIST training set, with refit itself.
//
//   npx tsx scripts/train-source.ts cnn  [--epochs 12] [--seed 0]
//   npx tsx scripts/train-source.ts vit  [--epochs 30] [--seed 0]
//
// Needs the Debian package dataset-fashion-mnist for the 60k training images. Writes
// models/fmnist-<kind>.onnx and models/fmnist-<kind>.json (training record for the model card).
import { writeFileSync, mkdirSync } from 'node:fs';
import { RefitModel } from '../src/model.ts';
import { resnetCnn, vit } from '../src/nn/index.ts';
import { loadFashionMnist } from '../src/data/fashion-mnist.ts';
import { augmentBatch } from '../src/data/augment.ts';
import * as losses from '../src/train/losses.ts';
import * as optim from '../src/train/optim/index.ts';
import { Trainer } from '../src/train/trainer.ts';
import { f32, i64 } from '../src/onnx/tensor.ts';
import { Rng } from '../src/util/rng.ts';
import { evaluate } from '../src/data/evaluate.ts';

const args = process.argv.slice(2);
const kind = args[0] === 'vit' ? 'vit' : 'cnn';
const flag = (name: string, dflt: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const epochs = flag('epochs', kind === 'cnn' ? 12 : 30);
const seed = flag('seed', 0);
const batch = flag('batch', 128);
const lr = flag('lr', kind === 'cnn' ? 2e-3 : 1e-3);
const threads = flag('threads', 2);
const patch = flag('patch', 7);

const train = loadFashionMnist('train');
const testSet = loadFashionMnist('test');
const ir = kind === 'cnn' ? resnetCnn({ width: 32, seed }) : vit({ patch, depth: 6, dim: 96, heads: 4, seed });
const model = new RefitModel(ir, { threads });
const stepsPerEpoch = Math.floor(train.n / batch);
const total = epochs * stepsPerEpoch;
const step = model.compileTrainStep({ trainable: 'all', loss: losses.crossEntropy({ logits: 'logits', labels: 'y', labelSmoothing: 0.1 }), batchNorm: 'train' });
const trainer = new Trainer(step, optim.adamw({
  lr, weightDecay: 5e-2,
  groups: [{ params: /bias|bn|norm|pos_embed/, weightDecay: 0 }],
  schedule: optim.warmupCosine({ warmupSteps: stepsPerEpoch, totalSteps: total, minLrRatio: 0.01 }),
}), { clipNorm: 5 });

const rng = new Rng(seed + 1);
const xb = new Float32Array(batch * 784);
const t0 = performance.now();
const log: { epoch: number; loss: number; testAccuracy: number; seconds: number }[] = [];
for (let e = 0; e < epochs; e++) {
  const order = Array.from({ length: train.n }, (_, i) => i);
  for (let i = order.length - 1; i > 0; i--) { const j = rng.int(i + 1); [order[i], order[j]] = [order[j]!, order[i]!]; }
  let lossSum = 0;
  for (let s = 0; s < stepsPerEpoch; s++) {
    const idx = order.slice(s * batch, (s + 1) * batch);
    augmentBatch(train.images, idx, 28, 28, xb, rng);
    const y = i64([batch], idx.map((i) => train.labels[i]!));
    const r = await trainer.step({ x: f32([batch, 1, 28, 28], xb), y });
    lossSum += r.loss;
    if (s % 50 === 0) process.stderr.write(`\repoch ${e + 1}/${epochs} step ${s}/${stepsPerEpoch} loss ${r.loss.toFixed(3)} (${((performance.now() - t0) / 1000).toFixed(0)} s)   `);
  }
  const acc = await evaluate(model, testSet.images, testSet.labels, testSet.n);
  const seconds = (performance.now() - t0) / 1000;
  log.push({ epoch: e + 1, loss: lossSum / stepsPerEpoch, testAccuracy: acc, seconds });
  process.stderr.write(`\repoch ${e + 1}/${epochs}: train loss ${(lossSum / stepsPerEpoch).toFixed(4)}, clean test accuracy ${(acc * 100).toFixed(2)}% (${seconds.toFixed(0)} s)\n`);
}
mkdirSync('models', { recursive: true });
model.ir.metadata = { ...model.ir.metadata, 'refit.source': `scripts/train-source.ts ${kind}`, 'refit.seed': String(seed) };
await model.save(`models/fmnist-${kind}.onnx`);
writeFileSync(`models/fmnist-${kind}.json`, JSON.stringify({
  kind, command: `npx tsx scripts/train-source.ts ${args.join(' ')}`, seed, epochs, batch, lr, threads, ...(kind === 'vit' ? { patch } : {}),
  parameters: model.parameterNames().reduce((s, n) => s + model.param(n).data.length, 0),
  wallSeconds: (performance.now() - t0) / 1000, cleanTestAccuracy: log.at(-1)!.testAccuracy, log,
}, null, 2));
