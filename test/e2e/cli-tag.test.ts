// `refit train --task tag` and `refit eval --task tag`: token classification (named entities,
// parts of speech) from token ids and a .npy of a class per token, -100 where none, positions at
// --pad-token never scored; inspect suggests the task for [batch, sequence, classes] logits whose
// classes are not the vocabulary.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { encodeModel } from '../../src/onnx/proto.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { runTrain } from '../../src/cli/train.ts';
import { runEval, formatEval } from '../../src/cli/eval.ts';
import { inspectModel } from '../../src/cli/inspect.ts';
import { Rng } from '../../src/util/rng.ts';
import { npy } from '../helpers/cli.ts';

const dir = mkdtempSync(join(tmpdir(), 'refit-tag-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));
const p = (f: string) => join(dir, f);

/** ids [N, T] → an embedding of 20 rows → a Linear to 3 tags per token (a tagger's shape, untrained). */
function tagger(): Uint8Array {
  const r = new Rng(2);
  const b = new ModelBuilder({ opset: 14 }).input('input_ids', 'int64', ['batch', 'tokens'])
    .initializer('embed.weight', f32([20, 8], r.fill(new Float32Array(160), 0.1, 'normal'))).initializer('classifier.weight', f32([8, 3], r.fill(new Float32Array(24), 0.1, 'normal')))
    .initializer('classifier.bias', f32([3], [0, 0, 0]))
    .node('Gather', ['embed.weight', 'input_ids'], ['h'], { axis: 0 }).node('MatMul', ['h', 'classifier.weight'], ['z']).node('Add', ['z', 'classifier.bias'], ['logits']);
  return encodeModel(b.output('logits', 'float32', ['batch', 'tokens', 3]).build());
}

test('refit train --task tag learns a tag per token (id mod 3), -100 and padding unscored; eval reports token accuracy; inspect suggests tag', async () => {
  writeFileSync(p('tagger.onnx'), tagger());
  assert.equal((await inspectModel(p('tagger.onnx'))).task?.task, 'tag');
  const n = 64, T = 6, r = new Rng(5);
  const ids = new BigInt64Array(n * T), tags = new BigInt64Array(n * T);
  for (let s = 0; s < n; s++) {
    const len = 3 + (s % 4);
    for (let t = 0; t < T; t++) {
      const id = t < len ? 1 + Math.floor(r.uniform() * 19) : 0; // 0 pads
      ids[s * T + t] = BigInt(id);
      tags[s * T + t] = t >= len ? 5n : t === 0 ? -100n : BigInt(id % 3); // 5 at pads (never read), -100 on each first token
    }
  }
  writeFileSync(p('ids.npy'), npy('<i8', [n, T], ids));
  writeFileSync(p('tags.npy'), npy('<i8', [n, T], tags));
  const before = await runEval(p('tagger.onnx'), { task: 'tag', data: p('ids.npy'), labels: p('tags.npy'), padToken: 0, json: true });
  await runTrain(p('tagger.onnx'), { task: 'tag', data: p('ids.npy'), labels: p('tags.npy'), padToken: 0, epochs: 30, lr: 0.05, batchSize: 16, valSplit: 0, out: p('tuned.onnx'), json: true });
  const after = await runEval(p('tuned.onnx'), { task: 'tag', data: p('ids.npy'), labels: p('tags.npy'), padToken: 0, json: true });
  assert.ok(after.accuracy > 0.95 && after.accuracy > before.accuracy + 0.3, `token accuracy ${before.accuracy} → ${after.accuracy}`);
  assert.match(formatEval(after), /\(64 sequences\): token accuracy [\d.]+% over the labelled tokens/);
  // bad labels: refused by name, nothing written
  writeFileSync(p('short.npy'), npy('<i8', [n, T - 1], tags.slice(0, n * (T - 1))));
  await assert.rejects(runTrain(p('tagger.onnx'), { task: 'tag', data: p('ids.npy'), labels: p('short.npy'), out: p('bad.onnx'), json: true }), /labels have shape \[64, 5\]; the token ids in .* have \[64, 6\]/);
  const wide = tags.slice(); wide[7] = 3n;
  writeFileSync(p('wide.npy'), npy('<i8', [n, T], wide));
  await assert.rejects(runTrain(p('tagger.onnx'), { task: 'tag', data: p('ids.npy'), labels: p('wide.npy'), padToken: 0, out: p('bad.onnx'), json: true }), /label 3 \(sequence 1, position 1\) is outside the model's 3 classes/);
  await assert.rejects(runTrain(p('tagger.onnx'), { task: 'tag', data: p('ids.npy'), out: p('bad.onnx'), json: true }), /--task tag learns a class per token: give them with --labels/);
  assert.ok(!existsSync(p('bad.onnx')));
});
