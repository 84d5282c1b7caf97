// `refit bench` run as a user runs it (node bin/refit.js bench …) on the shipped CNN, with few reps.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BenchResult } from '../../src/cli/bench.ts';
import { refit, root, type Run } from '../helpers/cli.ts';

const cnn = join(root, 'models/fmnist-cnn.onnx');

function failsCleanly(r: Run, pattern: RegExp): void {
  assert.equal(r.status, 1, `expected exit 1: ${r.stdout}\n${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line expected:\n${r.stderr}`);
  assert.match(lines[0]!, /^refit: /);
  assert.match(lines[0]!, pattern);
}

test('refit bench: a table on stdout, a progress bar on stderr', async () => {
  const r = await refit('bench', cnn, '--batch-size', '4', '--reps', '2', '--warmup', '0', '--methods', 'tent');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /case\s+compile ms\s+median ms\s+samples\/s\s+peak RSS MiB/);
  assert.match(r.stdout, /^lora step\s+[\d.]+\s+[\d.]+/m);
  assert.match(r.stdout, /^tent\s+[\d.]+\s+[\d.]+\s+\d+\s+\d+\s+4\/4$/m);
  assert.match(r.stderr, /bench \|.*\| 15\/15 calls \| ETA/);
});

test('refit bench: a case the model cannot run is reported with its reason, and the others are still timed', async () => {
  const mlp = join(root, 'test/fixtures/torch/mlp/model.onnx'); // no norm layers; a 5-wide head
  const r = await refit('bench', mlp, '--batch-size', '4', '--reps', '2', '--warmup', '0', '--methods', 'tent', '--rank', '2', '--json');
  assert.equal(r.status, 0, r.stderr);
  const by = Object.fromEntries((JSON.parse(r.stdout) as BenchResult).cases.map((c) => [c.name, c]));
  for (const ok of ['inference', 'full step', 'lora step']) assert.ok(by[ok]!.medianMs! > 0 && by[ok]!.error === undefined, `${ok}: ${JSON.stringify(by[ok])}`);
  assert.match(by['norm-affine step']!.error!, /norm-affine trains the scale and shift of normalization layers .*, and this model has none\. Train another parameter group/);
  assert.equal(by['norm-affine step']!.medianMs, null);
  assert.match(by.tent!.error!, /tent adapts normalization layers/);
});

test('refit bench: the LoRA step on a model with depthwise convs adapts its dense layers (as refit train does), not every conv', async () => {
  const mnv2 = join(root, 'test/fixtures/zoo/mobilenet_v2/model.onnx'); // torchvision MobileNetV2, width-reduced: depthwise convs
  const r = await refit('bench', mnv2, '--batch-size', '2', '--reps', '1', '--warmup', '0', '--methods', 'tent', '--json');
  assert.equal(r.status, 0, r.stderr);
  const lora = (JSON.parse(r.stdout) as BenchResult).cases.find((c) => c.name === 'lora step')!;
  assert.equal(lora.error, undefined, String(lora.error));
  assert.ok(lora.medianMs! > 0);
});

test('refit bench: bad options fail in one line, before loading the model', async () => {
  const [bad, size, help] = await Promise.all([
    refit('bench', cnn, '--methods', 'tent,nope'),
    refit('bench', cnn, '--batch-size', '0'),
    refit('bench', '--help'),
  ]);
  failsCleanly(bad, /unknown method 'nope'.*known methods: .*tent/);
  failsCleanly(size, /--batch-size must be a positive integer/);
  assert.match(help.stdout, /Examples:\n\s+refit bench models\/fmnist-cnn\.onnx/);
});

test("README: the bench example runs as written (--json, fewer reps): every case timed, medians positive, RSS growing", async () => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const block = /```bash\n(npx refit bench [^\n]*)\n```/.exec(readme);
  assert.ok(block, 'the README has a bash block with the bench example');
  const args = block[1]!.slice('npx refit '.length).split(/\s+/);
  // Fewer reps than the README's to keep the test short; every other option as written.
  const i = args.indexOf('--reps');
  if (i >= 0) args.splice(i, 2);
  const r = await refit(...args, '--reps', '2', '--warmup', '0', '--json');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, '', 'no progress bar with --json');
  const j = JSON.parse(r.stdout) as BenchResult;
  assert.deepEqual(j.input, { name: 'x', shape: [64, 1, 28, 28] });
  assert.equal(j.threads, 2);
  assert.deepEqual(j.cases.map((c) => c.name), ['inference', 'full step', 'norm-affine step', 'lora step', 'tent', 'eata']);
  for (const c of j.cases) {
    assert.equal(c.error, undefined, `${c.name}: ${c.error}`);
    assert.ok(c.medianMs! > 0 && c.compileMs! > 0, `${c.name}: ${JSON.stringify(c)}`);
    assert.ok(Math.abs(c.samplesPerSecond! - 64000 / c.medianMs!) < 1e-6 * c.samplesPerSecond!);
    assert.ok(c.peakRssMiB > 20, `${c.name}: peak RSS ${c.peakRssMiB} MiB`);
  }
  // A peak never goes down, and a full training step costs more than inference.
  for (let k = 1; k < j.cases.length; k++) assert.ok(j.cases[k]!.peakRssMiB >= j.cases[k - 1]!.peakRssMiB);
  const by = Object.fromEntries(j.cases.map((c) => [c.name, c]));
  assert.ok(by['full step']!.medianMs! > by['inference']!.medianMs!, JSON.stringify(j.cases));
  // Tent updates on every sample; EATA's count is reported whatever it is (its filter decides).
  assert.equal(by.tent!.adaptedPerCall, 64);
  assert.ok(by.eata!.adaptedPerCall! >= 0 && by.eata!.adaptedPerCall! <= 64);
  assert.equal(by.inference!.adaptedPerCall, undefined);
});
