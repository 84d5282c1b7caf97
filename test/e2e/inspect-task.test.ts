// refit inspect names the training task that fits a model's inputs and outputs: a classifier, a
// language model, an embedding model, the two halves of an encoder-decoder, a segmenter (a CTC
// speech recogniser: test/e2e/cli-ctc.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { inspectModel, formatInspect, type InspectResult } from '../../src/cli/inspect.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { encodeModel } from '../../src/onnx/proto.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import type { Model } from '../../src/onnx/ir.ts';

const fix = (p: string) => new URL(`../fixtures/${p}`, import.meta.url).pathname;

/** inspectModel on a model built here, written to a temporary file. */
async function inspectBuilt(m: Model): Promise<InspectResult> {
  const dir = mkdtempSync(join(tmpdir(), 'refit-inspect-'));
  try {
    writeFileSync(join(dir, 'm.onnx'), encodeModel(m));
    return await inspectModel(join(dir, 'm.onnx'));
  } finally { rmSync(dir, { recursive: true, force: true }); }
}

test('inspect suggests the --task for each kind of model', async () => {
  const cases: [string, string][] = [
    ['zoo/resnet18/model.onnx', 'classify'],
    ['zoo/bert/model.onnx', 'classify'],
    ['zoo/gpt/model.onnx', 'next-token'],
    ['exports/feature_extraction/model.onnx', 'pairs'],
    ['seq2seq/decoder_model_merged.onnx', 'seq2seq'],
    ['exports/segmenter/model.onnx', 'segment'],
  ];
  for (const [path, task] of cases) {
    const r = await inspectModel(fix(path));
    assert.equal(r.task?.task, task, path);
    assert.match(formatInspect(r), new RegExp(`task: +${task}: `), path);
  }
});

test('inspect suggests no task for a detector (boxes, scores, labels): no CLI task trains one', async () => {
  const m = new ModelBuilder({ opset: 13 }).input('x', 'float32', [1, 4]).initializer('w', f32([4, 4], new Array(16).fill(0.1)))
    .node('MatMul', ['x', 'w'], ['boxes']).node('Relu', ['boxes'], ['scores']).output('boxes', 'float32', [1, 4]).output('scores', 'float32', [1, 4]).build();
  const r = await inspectBuilt(m);
  assert.equal(r.task, undefined);
  assert.doesNotMatch(formatInspect(r), /task:/);
});

test('inspect says which weights stored once train as one tensor, and how many equal tensors of one value are separate parameters', async () => {
  const deberta = await inspectModel(fix('popular/deberta_v3.onnx'));
  assert.equal(deberta.ties?.tied.length, 4, 'the key and query projections of two layers, used twice each');
  assert.match(formatInspect(deberta), /ties: +4 copies read a weight stored once and train with it as one tensor \('onnx::MatMul_\d+' → 'onnx::MatMul_\d+'.*--untie trains each copy\)/);
  const gpt = await inspectModel(fix('zoo/gpt/model.onnx'));
  assert.deepEqual(gpt.ties?.tied.map(([, w]) => w), ['transformer.wte.weight'], 'the lm_head copy; the causal masks\' tie is a buffer\'s, not listed');
  assert.ok((gpt.ties?.untied ?? 0) > 0);
  assert.match(formatInspect(gpt), /\d+ equal tensors of one value \(fresh ones and zeros\) are parameters of their own/);
});

test('inspect suggests regress for one channel out (a matte, a saliency mask: cross-entropy over one class is 0) and for an upscaler\'s image, segment for classes', async () => {
  const conv = (out: number, post: (b: ModelBuilder) => ModelBuilder, shape: number[]) => post(new ModelBuilder({ opset: 13 })
    .input('x', 'float32', ['batch', 3, 8, 8]).initializer('w', f32([out, 3, 1, 1], new Array(out * 3).fill(0.1)))
    .node('Conv', ['x', 'w'], ['c'], { kernel_shape: [1, 1] })).output('y', 'float32', ['batch', ...shape]).build();
  const cases: [string, Model, string][] = [
    ['matte', conv(1, (b) => b.node('Sigmoid', ['c'], ['y']), [1, 8, 8]), 'regress'],
    ['upscaler ×2', conv(12, (b) => b.node('DepthToSpace', ['c'], ['y'], { blocksize: 2 }), [3, 16, 16]), 'regress'],
    ['5 classes', conv(5, (b) => b.node('Identity', ['c'], ['y']), [5, 8, 8]), 'segment'],
  ];
  for (const [what, m, task] of cases) assert.equal((await inspectBuilt(m)).task?.task, task, what);
});

test('inspect suggests regress for a one-channel signal out ([N, 1, samples]: a vocoder), not the CTC task for frame logits', async () => {
  const vocoder = new ModelBuilder({ opset: 13 }).input('mel', 'float32', ['batch', 8, 'frames']).initializer('w', f32([1, 8, 1], new Array(8).fill(0.1)))
    .node('Conv', ['mel', 'w'], ['c'], { kernel_shape: [1] }).node('Tanh', ['c'], ['waveform']).output('waveform', 'float32', ['batch', 1, 'frames']).build();
  assert.equal((await inspectBuilt(vocoder)).task?.task, 'regress');
});

test('inspect says when equal copies of a weight in two modules train apart, and names --keep-ties (a shared layer looks the same as copied ones)', async () => {
  const b = new ModelBuilder({ opset: 17 }).input('x', 'float32', [2, 3]);
  b.initializer('onnx::MatMul_7', f32([3, 3], [0.5, -1, 2, 0.25, 1, -0.5, 3, 0.1, -2]));
  b.node('Identity', ['onnx::MatMul_7'], ['onnx::MatMul_9']);
  b.node('MatMul', ['x', 'onnx::MatMul_7'], ['h'], {}, '/initial_splitter/shared/layers.0/fc/MatMul')
    .node('MatMul', ['h', 'onnx::MatMul_9'], ['logits'], {}, '/feat_transformers.0/shared/layers.0/fc/MatMul').output('logits', 'float32', [2, 3]);
  const r = await inspectBuilt(b.build());
  assert.deepEqual(r.ties?.acrossModules, ['onnx::MatMul_9']);
  assert.match(formatInspect(r), /1 equal copy of a weight read by another module \('onnx::MatMul_9'\) trains on its own, as copied layers of an untrained model would; if the modules share that weight \(TabNet's shared GLU layers\), train with --keep-ties/);
});
