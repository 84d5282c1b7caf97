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
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../src/model.ts';
import * as losses from '../src/train/losses.ts';
import { createAdapter } from '../src/tta/index.ts';
import { f32, i64 } from '../src/onnx/tensor.ts';
import { parseNpy } from '../src/cli/data-files.ts';
import { parseSafetensors } from '../src/io/safetensors.ts';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
const dir = join(root, 'tmp', 'torchvision-extra');
const ALL = ['googlenet', 'mnasnet0_5', 'resnext50_32x4d', 'vgg11_bn', 'alexnet', 'efficientnet_v2_s', 'regnet_x_400mf', 'maxvit_t', 'inception_v3',
  'deeplabv3_mobilenet_v3_large', 'lraspp_mobilenet_v3_large', 'fcn_resnet50', 'r3d_18', 'mc3_18', 'r2plus1d_18', 'mvit_v2_s'];
const arg = (k: string, d: string) => { const i = process.argv.indexOf(`--${k}`); return i >= 0 ? process.argv[i + 1]! : d; };
const names = arg('only', ALL.join(',')).split(',');
const out = arg('out', join(root, 'bench/results/torchvision-extra'));
const missing = names.filter((n) => !existsSync(join(dir, `${n}.grads.safetensors`)));
if (missing.length) {
  const r = spawnSync('/usr/bin/python3', [join(here, 'torchvision_extra.py'), '--out', dir, '--only', missing.join(',')], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error('bench/torchvision_extra.py failed (Debian: apt-get install python3-torch python3-torchvision python3-onnx)');
}
const relErr = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let d = 0, n = 0;
  for (let i = 0; i < b.length; i++) { d += (a[i]! - b[i]!) ** 2; n += b[i]! ** 2; }
  return Math.sqrt(d) / Math.max(Math.sqrt(n), 1e-12);
};
const ZERO_NORM = 1e-6;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
const npy = (f: string) => parseNpy(new Uint8Array(readFileSync(f)), f);

interface Row { model: string; params: number; input: string; loss: number; torchLoss: number; grads: string; worstGrad: number; firstMs: number; stepMs: number; tent: string; error?: string }
const rows: Row[] = [];
for (const name of names) {
  const ref = JSON.parse(readFileSync(join(dir, `${name}.json`), 'utf8')) as { loss: number; shape?: number[]; hw: number; dense: boolean; params: number };
  const torchGrads = parseSafetensors(readFileSync(join(dir, `${name}.grads.safetensors`))).tensors;
  const xa = npy(join(dir, `${name}.x.npy`)), ya = npy(join(dir, `${name}.y.npy`));
  const x = f32(xa.shape, Float32Array.from(xa.values as ArrayLike<number>));
  const y = i64(ya.shape, Array.from(ya.values as ArrayLike<number>, Number));
  const model = await loadModel(join(dir, `${name}.onnx`), { threads: 2 });
  const row: Row = { model: name, params: ref.params, input: (ref.shape ?? [2, 3, ref.hw, ref.hw]).join('×'), loss: NaN, torchLoss: ref.loss, grads: '', worstGrad: NaN, firstMs: NaN, stepMs: NaN, tent: '' };
  try {
    const step = model.compileTrainStep({ trainable: 'all', loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }) });
    let t = performance.now();
    const r = await step.run({ x, y });
    row.firstMs = performance.now() - t;
    const times: number[] = [];
    for (let i = 0; i < 3; i++) { t = performance.now(); await step.run({ x, y }); times.push(performance.now() - t); }
    row.stepMs = median(times);
    row.loss = r.loss;
    let compared = 0, worst = 0, zero = 0;
    for (const [p, want] of torchGrads) {
      const got = r.grads.get(p);
      if (!got) continue;
      compared++;
      // A gradient that is zero in exact arithmetic (a key projection's bias under softmax) is
      // float noise on both sides; its relative error says nothing.
      const w = want.data as Float32Array;
      if (Math.sqrt(w.reduce((a, v) => a + v * v, 0)) < ZERO_NORM) { zero++; continue; }
      worst = Math.max(worst, relErr(got, w));
    }
    row.grads = `${compared}/${torchGrads.size} (refit: ${r.grads.size}${zero ? `; ${zero} of norm < ${ZERO_NORM} not in the worst` : ''})`;
    row.worstGrad = worst;
    await step.release();
  } catch (e) { row.error = (e as Error).message.split('\n')[0]!.slice(0, 200); }
  try {
    await createAdapter(model, 'tent').predict(x);
    row.tent = '✓';
  } catch (e) { row.tent = `✗ ${(e as Error).message.slice(0, 120)}`; }
  await model.release();
  rows.push(row);
  console.log(`${name}: loss ${row.loss.toFixed(5)} / PyTorch ${row.torchLoss.toFixed(5)}, gradients ${row.grads}, worst relative error ${row.worstGrad.toExponential(1)}, first ${row.firstMs.toFixed(0)} ms, step ${row.stepMs.toFixed(0)} ms, Tent ${row.tent}${row.error ? `, ERROR ${row.error}` : ''}`);
}
const lines = [`# Torchvision models beyond the zoo (${new Date().toISOString()})`, '',
  `\`npx tsx bench/torchvision-extra.ts ${process.argv.slice(2).join(' ')}\`: torch.onnx exports (opset 13, random weights, bench/torchvision_extra.py), refit's full step against PyTorch's cross-entropy (per pixel for the segmenters) on one batch of 2; 2 threads.`, '',
  '| model | parameters | input | loss refit / PyTorch | gradients compared | worst gradient relative error | first call ms | step ms | Tent |', '|---|---:|---|---|---|---:|---:|---:|---|'];
for (const r of rows) lines.push(`| ${r.model} | ${r.params.toLocaleString('en-US')} | ${r.input} | ${r.error ? `✗ ${r.error}` : `${r.loss.toFixed(5)} / ${r.torchLoss.toFixed(5)}`} | ${r.grads} | ${r.worstGrad.toExponential(1)} | ${r.firstMs.toFixed(0)} | ${r.stepMs.toFixed(0)} | ${r.tent} |`);
writeFileSync(`${out}.md`, lines.join('\n') + '\n');
writeFileSync(`${out}.json`, JSON.stringify({ date: new Date().toISOString(), rows }, null, 1));
console.log(`wrote ${out}.md and .json`);
