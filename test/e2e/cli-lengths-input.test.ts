// A token model that also takes each sequence's length (PyTorch's pack_padded_sequence models take
// `lengths` beside the ids): the CLI and withTokenInputs make it from the ids as the count of
// tokens that are not --pad-token, as they make attention_mask.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RefitModel } from '../../src/model.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { encodeModel } from '../../src/onnx/proto.ts';
import { f32, i64 } from '../../src/onnx/tensor.ts';
import { tokenInputs, tokenFeeds } from '../../src/cli/token-inputs.ts';
import { withTokenInputs } from '../../src/onnx/token-companions.ts';
import { runTrain } from '../../src/cli/train.ts';
import { npy } from '../helpers/cli.ts';

/** logits = (mean of the token embeddings · lengths) W: the lengths change the output. */
function withLengths(): RefitModel {
  const b = new ModelBuilder({ opset: 13 }).input('input_ids', 'int64', ['batch', 'tokens']).input('lengths', 'int64', ['batch']);
  b.initializer('embed.weight', f32([10, 3], Array.from({ length: 30 }, (_, i) => Math.sin(i))))
    .initializer('fc.weight', f32([3, 2], [0.5, -0.2, 0.1, 0.3, -0.4, 0.2])).initializer('axes', i64([1], [1]));
  b.node('Gather', ['embed.weight', 'input_ids'], ['e'], { axis: 0 }).node('ReduceMean', ['e'], ['pooled'], { axes: [1], keepdims: 0 })
    .node('Cast', ['lengths'], ['lf'], { to: 1 }).node('Unsqueeze', ['lf', 'axes'], ['l2'])
    .node('Mul', ['pooled', 'l2'], ['scaled']).node('MatMul', ['scaled', 'fc.weight'], ['logits']);
  return new RefitModel(b.output('logits', 'float32', ['batch', 2]).build(), { threads: 1 });
}

test('the lengths input is made from the ids: the count of tokens that are not the pad token, in JavaScript and inside the graph', async () => {
  const m = withLengths();
  const t = tokenInputs(m, 'refit train');
  assert.deepEqual(t.companions, [{ name: 'lengths', dtype: 'int64', lengths: true }]);
  const ids = [3, 4, 0, 0, 5, 6, 7, 1, 2, 0, 0, 0];
  const f = tokenFeeds(t, ids, 4, [0, 1, 2], 0);
  assert.deepEqual(Array.from(f.lengths!.data as BigInt64Array, Number), [2, 4, 1]);
  assert.deepEqual(Array.from(tokenFeeds(t, ids, 4, [2, 0]).lengths!.data as BigInt64Array, Number), [4, 4], 'no pad token: every position counts');
  const one = withTokenInputs(m, { padToken: 0 });
  assert.deepEqual(one.inputs.map((i) => i.name), ['input_ids']);
  const got = (await one.run({ input_ids: f.input_ids! })).logits!;
  const want = (await m.run(f)).logits!;
  assert.deepEqual(Array.from(got.data as Float32Array), Array.from(want.data as Float32Array));
  await m.release();
});

test('refit train on such a model from token ids alone (--pad-token), with the lengths made per batch', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'refit-lengths-'));
  try {
    const n = 24, L = 5;
    const ids = BigInt64Array.from({ length: n * L }, (_, i) => (i % L < 2 + (Math.floor(i / L) % 3) ? BigInt(1 + ((i * 7) % 9)) : 0n));
    writeFileSync(join(dir, 'ids.npy'), npy('<i8', [n, L], ids));
    writeFileSync(join(dir, 'labels.npy'), npy('<i8', [n], BigInt64Array.from({ length: n }, (_, i) => BigInt(i % 2))));
    writeFileSync(join(dir, 'm.onnx'), encodeModel(withLengths().ir));
    const r = await runTrain(join(dir, 'm.onnx'), { data: join(dir, 'ids.npy'), labels: join(dir, 'labels.npy'), padToken: 0, epochs: 2, batchSize: 5, out: join(dir, 'tuned.onnx'), json: true });
    assert.ok(Number.isFinite(r.epochs[1]!.trainLoss), JSON.stringify(r.epochs));
  } finally { rmSync(dir, { recursive: true, force: true }); }
});
