// `refit adapt` on classifiers exported from PyTorch with only their logits (the zoo fixtures):
// the methods that read penultimate features (T3A, LAME, RMT, the controller's deep learner) take
// the input of the linear head and say so; a model without a linear head is refused in one line.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { refit, npy, type Run } from '../helpers/cli.ts';
import { Rng } from '../../src/util/rng.ts';
import { readZoo } from '../fixtures/zoo/read.ts';

const dir = mkdtempSync(join(tmpdir(), 'refit-cli-features-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const p = (f: string) => join(dir, f);

function images(file: string, n: number, chw: number[], seed: number): void {
  const rng = new Rng(seed);
  const per = chw.reduce((a, b) => a * b, 1);
  writeFileSync(p(file), npy('<f4', [n, ...chw], Float32Array.from({ length: n * per }, () => rng.next())));
}

const ok = (r: Run) => assert.equal(r.status, 0, r.stderr);

test('adapt on a torchvision ResNet export: T3A and LAME use the linear head\'s input as features and say so; SqueezeNet (no linear head) is refused in one line', async () => {
  const resnet = readZoo('resnet18').modelPath;
  images('stream.npy', 24, [3, 64, 64], 1);
  // RMT through the CLI would warm up on the paper's 50,000 source samples (100 s here); its use of
  // withFeatures() is tested in test/onnx/penultimate.test.ts.
  const [t3a, lame] = await Promise.all([
    refit('adapt', resnet, '--method', 't3a', '--stream', p('stream.npy'), '--batch-size', '8', '--out', p('t3a.csv')),
    refit('adapt', resnet, '--method', 'lame', '--stream', p('stream.npy'), '--batch-size', '8', '--out', p('lame.csv')),
  ]);
  for (const [r, m] of [[t3a, 't3a'], [lame, 'lame']] as const) {
    ok(r);
    assert.match(r.stderr, new RegExp(`the model has no 'features' output; ${m} uses the input of its linear head \\(32 values per sample\\)`));
    assert.equal(readFileSync(p(`${m}.csv`), 'utf8').trim().split('\n').length, 1 + 24);
  }
  const squeeze = await refit('adapt', readZoo('squeezenet1_1').modelPath, '--method', 'lame', '--stream', p('stream.npy'), '--out', p('never.csv'));
  assert.equal(squeeze.status, 1, squeeze.stderr);
  assert.match(squeeze.stderr.trim(), /^refit: --method lame reads the penultimate features: output 'logits' comes from GlobalAveragePool node '[^']+', not from a linear layer/);
  assert.equal(squeeze.stderr.trim().split('\n').length, 1);
});
