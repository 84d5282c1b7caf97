// The deep learner's embedding option (the teacher's features): predictions unchanged, and with it
// the error memory corrects level-3 predictions near labelled mistakes; a checkpoint continues exactly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/model.ts';
import { ContinualController } from '../../src/continual/controller.ts';
import { encodeCheckpoint, decodeCheckpoint } from '../../src/continual/checkpoint.ts';
import { deep, noisyBatches, cnnPath as modelPath } from './deep-fixture.ts';

const N = 16, B = 6;
const { shifted, calibration } = noisyBatches(B, N);
const base = { logits: 'logits', embedding: 'features', patience: 1, stableBatches: 50, lr: 0.001 };

test('deep learner embedding: same predictions, and the error memory acts at level 3', async () => {
  const model = await loadModel(modelPath, { threads: 1 });
  const plain = new ContinualController(model, { ...base, deep });
  const emb = new ContinualController(model, { ...base, deep: { ...deep, embedding: true } });
  const mem = new ContinualController(model, { ...base, deep: { ...deep, embedding: true }, errorMemory: { minSimilarity: 0 } });
  const all = [plain, emb, mem];
  for (const c of all) await c.calibrate(calibration);
  let last: Awaited<ReturnType<ContinualController['predict']>>[] = [];
  for (let i = 0; i < 4; i++) {
    last = await Promise.all(all.map((c) => c.predict(shifted(i))));
    assert.deepEqual(last[1]!.probs, last[0]!.probs, `batch ${i}: the embedding changes no prediction`);
    assert.deepEqual(last[2]!.probs, last[0]!.probs, `batch ${i}: an empty error memory changes nothing`);
  }
  assert.equal(last[0]!.level, 3);
  assert.equal(last[0]!.embedding, undefined, 'without the option the deep learner returns no embedding');
  assert.equal(last[1]!.embedding!.length % N, 0);
  // Labels that call every prediction of the last batch wrong fill the error memory.
  const ids = last[0]!.ids.slice(0, 8), labels = Array.from(last[0]!.predictions.slice(0, 8), (p) => (p + 1) % 10);
  for (const c of all) await c.feedback(ids, labels);
  const saved = encodeCheckpoint(model, mem.state());
  const next = await Promise.all(all.map((c) => c.predict(shifted(4))));
  assert.deepEqual(next[1]!.probs, next[0]!.probs);
  assert.notDeepEqual(next[2]!.probs, next[0]!.probs, 'the error memory corrects level-3 predictions');
  const restored = new ContinualController(model, { ...base, deep: { ...deep, embedding: true }, errorMemory: { minSimilarity: 0 } });
  restored.load(decodeCheckpoint(model, saved));
  assert.deepEqual((await restored.predict(shifted(4))).probs, next[2]!.probs, 'a restored run continues exactly');
  for (const c of [...all, restored]) await c.release();
  await model.release();
});
