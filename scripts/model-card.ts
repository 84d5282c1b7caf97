// Write models/fmnist-<kind>.md: architecture, training command, seed, clean accuracy, and the
// source error per corruption at severity 5 (measured here, on the bundled 10k test set).
//
//   npx tsx scripts/model-card.ts cnn|vit
import { readFileSync, writeFileSync } from 'node:fs';
import { loadModel } from '../src/model.ts';
import { loadFashionMnist } from '../src/data/fashion-mnist.ts';
import { CORRUPTIONS, corrupt } from '../src/data/corruptions/index.ts';
import { evaluate } from '../src/data/evaluate.ts';
import { parameterTable } from '../src/nn/index.ts';

const kind = process.argv[2] === 'vit' ? 'vit' : 'cnn';
const rec = JSON.parse(readFileSync(`models/fmnist-${kind}.json`, 'utf8'));
const model = await loadModel(`models/fmnist-${kind}.onnx`, { threads: 2 });
const test = loadFashionMnist('test');
const clean = await evaluate(model, test.images, test.labels, test.n);
const rows: string[] = [];
let sum = 0;
for (const c of CORRUPTIONS) {
  const x = corrupt(test.images, test.n, 28, 28, c, 5, 0);
  const err = 1 - (await evaluate(model, x, test.labels, test.n));
  sum += err;
  rows.push(`| ${c} | ${(100 * err).toFixed(1)} |`);
  process.stderr.write(`${c}: ${(100 * err).toFixed(1)}%\n`);
}
const arch = kind === 'cnn'
  ? 'ResNet-style CNN (`resnetCnn({ width: 32 })` in `src/nn/models.ts`): stem conv3×3-BN-ReLU, three basic residual blocks at widths 32/64/128 (stride-2 downsampling with 1×1 projection shortcuts), global average pool (`features`, 128-d), linear head (`logits`).'
  : `Small ViT (\`vit({ patch: ${rec.patch}, depth: 6, dim: 96, heads: 4 })\` in \`src/nn/models.ts\`): ${rec.patch}×${rec.patch} patch embedding (${(28 / rec.patch) ** 2} tokens), learned positional embedding, 6 pre-LN blocks (4-head self-attention, GELU MLP ×2), final LayerNorm, mean over tokens (\`features\`, 96-d), linear head (\`logits\`).`;
const md = `# fmnist-${kind}.onnx

${arch}

- Parameters: ${rec.parameters.toLocaleString('en')} trainable${kind === 'cnn' ? ' (plus BatchNorm running statistics)' : ''}
- Input \`x\`: float32 [N, 1, 28, 28] in [0, 1]; outputs \`logits\` [N, 10] and \`features\`
- Trained by refit itself on the 60k Fashion-MNIST training images (Debian \`dataset-fashion-mnist\`):
  \`${rec.command}\`
- Seed ${rec.seed}; ${rec.epochs} epochs, batch ${rec.batch}, AdamW lr ${rec.lr} (weight decay 0.05, none on norms/biases), 1 epoch warmup then cosine, label smoothing 0.1, clip norm 5; augmentation: random shift ±2 px and horizontal flip
- Training wall time: ${(rec.wallSeconds / 60).toFixed(1)} min on this 2-core machine (${rec.threads} onnxruntime thread${rec.threads > 1 ? 's' : ''}; the machine was shared with other jobs during training — load average 4–6 — so this is an upper bound)
- **Clean test accuracy: ${(100 * clean).toFixed(2)}%** (10k test set)

## Source error at severity 5 (Fashion-MNIST-C, \`npx tsx scripts/model-card.ts ${kind}\`)

| corruption | error % |
|---|---|
${rows.join('\n')}
| **mean** | **${(100 * sum / CORRUPTIONS.length).toFixed(1)}** |

## Training curve

| epoch | train loss | clean test accuracy % | elapsed s |
|---|---|---|---|
${rec.log.map((l: { epoch: number; loss: number; testAccuracy: number; seconds: number }) => `| ${l.epoch} | ${l.loss.toFixed(4)} | ${(100 * l.testAccuracy).toFixed(2)} | ${l.seconds.toFixed(0)} |`).join('\n')}

## Parameters

| tensor | shape | size |
|---|---|---|
${parameterTable(model.ir).map((p) => `| ${p.name} | [${p.dims.join(', ')}] | ${p.size} |`).join('\n')}
`;
writeFileSync(`models/fmnist-${kind}.md`, md);
console.log(md);
