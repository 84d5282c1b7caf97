// refit inspect names the training task that fits a model's inputs and outputs: a classifier, a
// language model, an embedding model, the two halves of an encoder-decoder, a segmenter (a CTC
// speech recogniser: test/e2e/cli-ctc.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inspectModel, formatInspect } from '../../src/cli/inspect.ts';

const fix = (p: string) => new URL(`../fixtures/${p}`, import.meta.url).pathname;

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
  const { ModelBuilder } = await import('../../src/onnx/model-builder.ts');
  const { encodeModel } = await import('../../src/onnx/proto.ts');
  const { f32 } = await import('../../src/onnx/tensor.ts');
  const { writeFileSync, mkdtempSync, rmSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const m = new ModelBuilder({ opset: 13 }).input('x', 'float32', [1, 4]).initializer('w', f32([4, 4], new Array(16).fill(0.1)))
    .node('MatMul', ['x', 'w'], ['boxes']).node('Relu', ['boxes'], ['scores']).output('boxes', 'float32', [1, 4]).output('scores', 'float32', [1, 4]).build();
  const dir = mkdtempSync(join(tmpdir(), 'refit-det-'));
  try {
    writeFileSync(join(dir, 'det.onnx'), encodeModel(m));
    const r = await inspectModel(join(dir, 'det.onnx'));
    assert.equal(r.task, undefined);
    assert.doesNotMatch(formatInspect(r), /task:/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
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
