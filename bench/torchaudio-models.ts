// Speech models from torchaudio, as a user exports them (bench/torchaudio_models.py: torch.onnx,
// opset 14, random weights): does refit's full step ('all') give PyTorch's loss and every
// gradient, computed in float64 (and how far is PyTorch's own float32 step from it)? wav2vec 2.0
// with a CTC head and the CTC loss (losses.ctc against F.ctc_loss), a Conformer encoder and
// DeepSpeech (a bidirectional ReLU RNN) with frame-level cross-entropy, Wav2Letter with
// cross-entropy over [N, C, T], Conv-TasNet with the mean squared error against target sources.
//
//   npx tsx bench/torchaudio-models.ts [--only wav2vec2_base,conformer] [--out bench/results/torchaudio-models]
//
// Exports into tmp/torchaudio first (Debian's python3-torch, python3-torchaudio, python3-onnx)
// when a model is missing there. One batch of 2, the first call (which compiles) and the median of
// 3 later calls.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as losses from '../src/train/losses.ts';
import type { LossSpec } from '../src/train/loss-spec.ts';
import { exportMissing, stepAgainstTorch, parityTable, describeRow } from './parity.ts';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
const dir = join(root, 'tmp', 'torchaudio');
const ALL = ['wav2vec2_base', 'conformer', 'deepspeech', 'wav2letter', 'conv_tasnet'];
const arg = (k: string, d: string) => { const i = process.argv.indexOf(`--${k}`); return i >= 0 ? process.argv[i + 1]! : d; };
const names = arg('only', ALL.join(',')).split(',');
const out = arg('out', join(root, 'bench/results/torchaudio-models'));
exportMissing(join(here, 'torchaudio_models.py'), dir, names, 'python3-torch python3-torchaudio python3-onnx');

const LOSS: Record<string, LossSpec> = {
  ctc: losses.ctc({ logits: 'out', labels: 'y', maxLabelLength: 12 }),
  frames: losses.tokenCrossEntropy({ logits: 'out', labels: 'y' }),
  channels: losses.crossEntropy({ logits: 'out', labels: 'y' }),
  mse: losses.mse({ output: 'out', target: 'y' }),
};
const rows = [];
for (const name of names) {
  const ref = JSON.parse(readFileSync(join(dir, `${name}.json`), 'utf8')) as { loss: number; params: number; kind: string; missing: string[]; torch32_worst: number };
  const row = await stepAgainstTorch(dir, name, { loss: LOSS[ref.kind]!, torchLoss: ref.loss, params: ref.params, feeds: ({ x, y }) => ({ x, y }) });
  rows.push({ ...row, unnamed: ref.missing.length, torch32: ref.torch32_worst });
  console.log(describeRow(row));
}
const lines = [`# Speech models from torchaudio (${new Date().toISOString()})`, '',
  `\`npx tsx bench/torchaudio-models.ts ${process.argv.slice(2).join(' ')}\`: torch.onnx exports (opset 14, random weights, bench/torchaudio_models.py), refit's full step against PyTorch's loss and gradients computed in float64 (CTC for wav2vec 2.0, rows of 12 and 7 labels over 49 frames; frame-level cross-entropy; mean squared error for Conv-TasNet) on one batch of 2; 2 threads. "PyTorch float32 worst": PyTorch's own float32 step against the same float64 reference. "unnamed": PyTorch parameters whose ONNX initializer the script could not match by name or value (weight-norm pairs, LSTM gates reordered by the exporter), so not compared.`, '',
  ...parityTable(rows, [
    { head: 'PyTorch float32 worst', cell: (r) => (r as unknown as { torch32: number }).torch32.toExponential(1) },
    { head: 'unnamed', cell: (r) => String((r as unknown as { unnamed: number }).unnamed) },
  ])];
writeFileSync(`${out}.md`, lines.join('\n') + '\n');
writeFileSync(`${out}.json`, JSON.stringify({ date: new Date().toISOString(), rows }, null, 1));
console.log(`wrote ${out}.md and .json`);
