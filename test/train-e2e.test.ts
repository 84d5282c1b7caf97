// End to end: train the PyTorch-exported MLP fixture from its initial weights on a synthetic
// task, save it, and check plain onnxruntime on the saved file agrees with refit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { loadModel } from '../src/model.ts';
import * as losses from '../src/train/losses.ts';
import * as optim from '../src/train/optim/index.ts';
import { Trainer } from '../src/train/trainer.ts';
import { f32, i64, type Tensor } from '../src/onnx/tensor.ts';
import { Rng } from '../src/util/rng.ts';

/** 5 Gaussian clusters in 20-D with overlapping noise: learnable, not trivial. */
function clusters(n: number, seed: number): { x: Tensor; y: Tensor; labels: number[] } {
  const rng = new Rng(99);
  const centers = Array.from({ length: 5 }, () => Array.from({ length: 20 }, () => rng.normal()));
  const r = new Rng(seed);
  const x = new Float32Array(n * 20), labels: number[] = [];
  for (let i = 0; i < n; i++) {
    const c = r.int(5);
    labels.push(c);
    for (let j = 0; j < 20; j++) x[i * 20 + j] = centers[c]![j]! + 0.9 * r.normal();
  }
  return { x: f32([n, 20], x), y: i64([n], labels), labels };
}

function accuracy(logits: Tensor, labels: number[]): number {
  const l = logits.data as Float32Array, C = logits.dims[1]!;
  let ok = 0;
  labels.forEach((y, i) => {
    let best = 0;
    for (let c = 1; c < C; c++) if (l[i * C + c]! > l[i * C + best]!) best = c;
    if (best === y) ok++;
  });
  return ok / labels.length;
}

test('the MLP fixture trains to ≥ 95% held-out accuracy, and the saved file runs in plain onnxruntime identically', async (t) => {
  const model = await loadModel(new URL('./fixtures/torch/mlp/model.onnx', import.meta.url).pathname, { threads: 1 });
  const test = clusters(500, 2);
  const before = accuracy((await model.run({ x: test.x })).logits!, test.labels);
  const step = model.compileTrainStep({ trainable: 'all', loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }) });
  const trainer = new Trainer(step, optim.adamw({ lr: 3e-3, weightDecay: 1e-4, schedule: optim.warmupCosine({ warmupSteps: 10, totalSteps: 150 }) }), { clipNorm: 5 });
  let first = 0, last = 0;
  for (let s = 0; s < 150; s++) {
    const b = clusters(32, 1000 + s); // a fresh batch each step (batch size varies the cache key not at all)
    const r = await trainer.step({ x: b.x, y: b.y });
    if (s === 0) first = r.loss;
    last = r.loss;
  }
  const after = accuracy((await model.run({ x: test.x })).logits!, test.labels);
  assert.ok(last < first / 4, `loss ${first} → ${last}`);
  assert.ok(after >= 0.95, `held-out accuracy ${after} (before training ${before})`);

  // A different batch size compiles a second step for that signature and still trains.
  const odd = clusters(7, 5);
  assert.equal((await trainer.step({ x: odd.x, y: odd.y })).skipped, false);

  const dir = mkdtempSync(join(tmpdir(), 'refit-e2e-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'mlp-tuned.onnx');
  await model.save(path);
  const session = await ort.InferenceSession.create(readFileSync(path));
  const plain = (await session.run({ x: new ort.Tensor('float32', test.x.data as Float32Array, test.x.dims) })).logits!.data as Float32Array;
  const mine = (await model.run({ x: test.x })).logits!.data as Float32Array;
  let maxDiff = 0;
  for (let i = 0; i < plain.length; i++) maxDiff = Math.max(maxDiff, Math.abs(plain[i]! - mine[i]!));
  assert.ok(maxDiff <= 1e-5, `saved model differs from in-memory by ${maxDiff}`);
});
