// The shipped CNN's full training step (every parameter, cross-entropy, BatchNorm in training mode,
// batch 64, one intra-op thread) with the conv weight gradient in the one-hot im2col form and in the
// tap-by-tap Gemm form (src/autodiff/rules/conv.ts dwTaps): peak RSS and median step time, each
// form in its own child process (memory is per process), the two alternating `--rounds` times.
//
//   nice -n 5 npx tsx bench/conv-dw-taps-step.ts [--rounds 2]
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../src/model.ts';
import { dwTaps } from '../src/autodiff/rules/conv.ts';
import * as losses from '../src/train/losses.ts';
import { f32, i64 } from '../src/onnx/tensor.ts';
import { Rng } from '../src/data/random.ts';

const args = process.argv.slice(2);
if (args[0] === '--child') {
  dwTaps.current = args[1] === 'taps';
  const m = await loadModel('models/fmnist-cnn.onnx', { threads: 1 });
  const step = m.compileTrainStep({ trainable: m.parameterNames('all'), loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }), batchNorm: 'train' });
  const r = Rng.xoshiro(1);
  const x = f32([64, 1, 28, 28], Float32Array.from({ length: 64 * 784 }, () => r.uniform(0, 1)));
  const y = i64([64], Array.from({ length: 64 }, (_, i) => i % 10));
  const t: number[] = [];
  for (let i = 0; i < 8; i++) { const s = performance.now(); await step.run({ x, y }); t.push(performance.now() - s); }
  t.sort((a, b) => a - b);
  console.log(JSON.stringify({ form: args[1], peakRssMb: process.resourceUsage().maxRSS / 1024, medianMs: t[4] }));
} else {
  const rounds = Number(args[args.indexOf('--rounds') + 1] ?? 2) || 2;
  const rows: unknown[] = [];
  for (let i = 0; i < rounds; i++) for (const form of ['onehot', 'taps']) {
    const c = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', form], { encoding: 'utf8' });
    const row = JSON.parse(c.stdout.trim().split('\n').pop()!);
    console.log(JSON.stringify(row));
    rows.push(row);
  }
  writeFileSync('bench/results/conv-dw-taps-step.json', JSON.stringify({ loadavg: readFileSync('/proc/loadavg', 'utf8').trim(), rows }, null, 1));
}
