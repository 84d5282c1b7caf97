// Bad input gets a precise error and corrupts nothing, in memory or on disk.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync, chmodSync, existsSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel, RefitModel } from '../src/model.ts';
import { ModelBuilder } from '../src/onnx/model-builder.ts';
import * as losses from '../src/train/losses.ts';
import * as optim from '../src/train/optim/index.ts';
import { Trainer } from '../src/train/trainer.ts';
import { f32, i64, tensor } from '../src/onnx/tensor.ts';

function linearModel(opset = 17) {
  const b = new ModelBuilder({ opset });
  b.input('x', 'float32', ['N', 3]);
  b.initializer('fc.weight', f32([3, 2], [0.1, -0.2, 0.3, 0.4, -0.5, 0.6]));
  b.initializer('fc.bias', f32([2], [0, 0]));
  b.initializer('shape_const', i64([2], [-1, 2]));
  b.node('MatMul', ['x', 'fc.weight'], ['h']);
  b.node('Add', ['h', 'fc.bias'], ['h2']);
  b.node('Reshape', ['h2', 'shape_const'], ['logits']);
  b.output('logits');
  return new RefitModel(b.build());
}
const x = f32([2, 3], [1, 2, 3, 4, 5, 6]);
const y = i64([2], [0, 1]);
const dir = mkdtempSync(join(tmpdir(), 'refit-bad-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('a truncated ONNX file is rejected with a clear message', async () => {
  const path = join(dir, 'trunc.onnx');
  writeFileSync(path, linearModel().toBytes().slice(0, 40));
  await assert.rejects(loadModel(path), /not a valid ONNX model|truncated/);
  await assert.rejects(loadModel(new Uint8Array([1, 2, 3, 4, 5])), /not a valid ONNX model/);
  await assert.rejects(loadModel(join(dir, 'missing.onnx')), /model file not found/);
});

test('opsets below 13 are refused with the conversion to do', () => {
  assert.throws(() => linearModel(11), /opset 11.*version_converter/);
});

test('a trainable pattern that matches nothing lists the candidates', () => {
  const m = linearModel();
  assert.throws(() => m.compileTrainStep({ trainable: /conv/, loss: losses.crossEntropy({ logits: 'logits' }) }), /matched no parameter.*fc\.weight.*fc\.bias/);
  assert.throws(() => m.compileTrainStep({ trainable: ['fc.wieght'], loss: losses.crossEntropy({ logits: 'logits' }) }), /not an initializer.*Closest candidates: fc\.weight/);
});

test('a non-float trainable is refused', () => {
  const m = linearModel();
  assert.throws(() => m.compileTrainStep({ trainable: ['shape_const'], loss: losses.crossEntropy({ logits: 'logits' }) }), /dtype int64; only float/);
});

test('a loss output name that does not exist is named', async () => {
  const m = linearModel();
  const step = m.compileTrainStep({ trainable: 'all', loss: losses.crossEntropy({ logits: 'logitz' }) });
  await assert.rejects(step.run({ x, y }), /tensor 'logitz' does not exist.*logits/);
});

test('input shapes that disagree with the model name the input and both shapes', async () => {
  const m = linearModel();
  const step = m.compileTrainStep({ trainable: 'all', loss: losses.crossEntropy({ logits: 'logits' }) });
  await assert.rejects(step.run({ x: f32([2, 4]), y }), /input 'x' has shape \[2, 4\], the model expects \[N, 3\]/);
  await assert.rejects(step.run({ x, y: i64([3], [0, 1, 1]) }), /loss input 'y' is int64 \[3\], expected int64 \[2\]/);
  await assert.rejects(m.run({ x: tensor('int32', [2, 3]) }), /dtype int32, the model expects float32/);
});

test('a finite loss with a non-finite gradient is refused: the step is skipped and names the tensor and element', async () => {
  // y = x · sqrt(s): at s = 0 the loss is finite and d loss / d s is infinite.
  const b = new ModelBuilder({ opset: 17 });
  b.input('x', 'float32', ['N', 3]);
  b.initializer('s', f32([3], [1, 0, 1]));
  b.node('Sqrt', ['s'], ['r']);
  b.node('Mul', ['x', 'r'], ['out']);
  b.output('out');
  const m = new RefitModel(b.build());
  const step = m.compileTrainStep({ trainable: ['s'], loss: losses.mse({ output: 'out' }) });
  const batch = { x: f32([2, 3], [1, 2, 3, 4, 5, 6]), target: f32([2, 3], [0, 1, 0, 0, 1, 0]) };
  // The step finds it once; the Trainer refuses on that and the optimizer is not asked.
  assert.deepEqual((await step.run(batch)).nonFiniteGrad, { param: 's', index: 1 });
  const trainer = new Trainer(step, optim.sgd({ lr: 0.1 }));
  const r = await trainer.step(batch);
  assert.ok(Number.isFinite(r.loss));
  assert.equal(r.skipped, true);
  assert.match(r.reason!, /gradient of 's' has a non-finite value at 1$/);
  assert.deepEqual(Array.from(m.param('s').data as Float32Array), [1, 0, 1]);
});

test('a NaN loss is refused: the step is skipped and flagged, weights never become NaN', async () => {
  const m = linearModel();
  const before = (m.param('fc.weight').data as Float32Array).slice();
  const trainer = new Trainer(m.compileTrainStep({ trainable: 'all', loss: losses.crossEntropy({ logits: 'logits' }) }), optim.sgd({ lr: 0.1 }));
  const r = await trainer.step({ x: f32([2, 3], [NaN, 0, 0, 0, 0, 0]), y });
  assert.equal(r.skipped, true);
  assert.match(r.reason!, /loss is NaN/);
  assert.equal(trainer.skippedSteps, 1);
  assert.deepEqual(m.param('fc.weight').data, before);
  const ok = await trainer.step({ x, y });
  assert.equal(ok.skipped, false);
  assert.notDeepEqual(m.param('fc.weight').data, before);
});

test('a failed save keeps the old file and leaves no temp file', async () => {
  const m = linearModel();
  const sub = join(dir, 'ro');
  const path = join(dir, 'good.onnx');
  await m.save(path);
  const good = readFileSync(path);
  // Saving into a missing folder fails; the good file elsewhere is untouched.
  await assert.rejects(m.save(join(sub, 'x.onnx')), /could not save/);
  // A read-only folder: the rename cannot replace the file.
  chmodSync(dir, 0o500);
  try {
    if (process.getuid?.() !== 0) await assert.rejects(m.save(path), /could not save/);
  } finally {
    chmodSync(dir, 0o700);
  }
  assert.deepEqual(readFileSync(path), good);
  assert.ok(existsSync(path));
  assert.equal(readdirSync(dir).filter((f) => f.endsWith('.tmp')).length, 0);
});
