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
