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
