// Torchvision models beyond the zoo, as a user exports them (bench/torchvision_extra.py: torch.onnx,
// opset 13, random weights): does refit's full step ('all') give PyTorch's loss and every
// gradient, and does Tent adapt them? Classifiers with cross-entropy; DeepLabV3, LR-ASPP and FCN
// with per-pixel cross-entropy (crossEntropy on [N, C, H, W] logits); the video models (r3d_18,
// mc3_18, r2plus1d_18: Conv3d and BatchNorm3d; mvit_v2_s: attention pooled by Conv3d, with
// torch.tensor_split's Loop) on [N, 3, T, H, W] clips.
//
//   npx tsx bench/torchvision-extra.ts [--only googlenet,maxvit_t] [--out bench/results/torchvision-extra]
//
// Exports into tmp/torchvision-extra first (Debian's python3-torch and python3-torchvision) when a
// model is missing there. One batch of 2; the step's first call (which compiles) and the median of
// 3 later calls; gradients compared as ‖refit − PyTorch‖ / ‖PyTorch‖ per tensor, the worst reported.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as losses from '../src/train/losses.ts';
import { createAdapter } from '../src/tta/index.ts';
import { exportMissing, stepAgainstTorch, parityTable, describeRow, type ParityRow } from './parity.ts';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
const dir = join(root, 'tmp', 'torchvision-extra');
const ALL = ['googlenet', 'mnasnet0_5', 'resnext50_32x4d', 'vgg11_bn', 'alexnet', 'efficientnet_v2_s', 'regnet_x_400mf', 'maxvit_t', 'inception_v3',
  'deeplabv3_mobilenet_v3_large', 'lraspp_mobilenet_v3_large', 'fcn_resnet50', 'r3d_18', 'mc3_18', 'r2plus1d_18', 'mvit_v2_s'];
const arg = (k: string, d: string) => { const i = process.argv.indexOf(`--${k}`); return i >= 0 ? process.argv[i + 1]! : d; };
const names = arg('only', ALL.join(',')).split(',');
const out = arg('out', join(root, 'bench/results/torchvision-extra'));
exportMissing(join(here, 'torchvision_extra.py'), dir, names, 'python3-torch python3-torchvision python3-onnx');

const rows: (ParityRow & { tent: string })[] = [];
for (const name of names) {
  const ref = JSON.parse(readFileSync(join(dir, `${name}.json`), 'utf8')) as { loss: number; params: number };
  let tent = '';
  const row = await stepAgainstTorch(dir, name, {
    loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }), torchLoss: ref.loss, params: ref.params,
    feeds: ({ x, y }) => ({ x, y }),
    after: async (model, { x }) => {
      try {
        await createAdapter(model, 'tent').predict(x);
        tent = '✓';
      } catch (e) { tent = `✗ ${(e as Error).message.slice(0, 120)}`; }
    },
  });
  rows.push({ ...row, tent });
  console.log(`${describeRow(row)}, Tent ${tent}`);
}
const lines = [`# Torchvision models beyond the zoo (${new Date().toISOString()})`, '',
  `\`npx tsx bench/torchvision-extra.ts ${process.argv.slice(2).join(' ')}\`: torch.onnx exports (opset 13, random weights, bench/torchvision_extra.py), refit's full step against PyTorch's cross-entropy (per pixel for the segmenters) on one batch of 2; 2 threads.`, '',
  ...parityTable(rows, [{ head: 'Tent', cell: (r) => (r as ParityRow & { tent: string }).tent }])];
writeFileSync(`${out}.md`, lines.join('\n') + '\n');
writeFileSync(`${out}.json`, JSON.stringify({ date: new Date().toISOString(), rows }, null, 1));
console.log(`wrote ${out}.md and .json`);
