// Delayed-label buffer, replay reservoir and error memory: bounded, seeded, restorable, and
// bad feedback is counted, never fatal.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FeedbackBuffer, type PendingSample } from '../../src/continual/feedback.ts';
import { ReplayBuffer } from '../../src/continual/replay.ts';
import { ErrorMemory } from '../../src/continual/error-memory.ts';

const sample = (id: string, batch: number): PendingSample => ({ id, input: new Float32Array([batch]), probs: new Float32Array([0.5, 0.5]), predicted: 0, batch });

test('feedback: labels match waiting predictions; unknown, expired and invalid labels are counted', () => {
  const fb = new FeedbackBuffer(3, 2, 5);
  for (let i = 0; i < 4; i++) fb.add(sample(`p${i}`, i)); // p0 falls out (capacity 3)
  assert.equal(fb.size, 3);
  const { samples, report } = fb.resolve(['p1', 'p0', 'zz', 'p2', 'p3'], [1, 0, 0, 7, 0.5]);
  assert.deepEqual(samples.map((s) => [s.id, s.label]), [['p1', 1]]);
  assert.deepEqual([report.accepted, report.expired, report.unknown, report.invalid], [1, 1, 1, 2]);
  assert.match(report.messages.join('\n'), /'p0' arrived after its prediction expired[\s\S]*no prediction with id 'zz'[\s\S]*label 7 for 'p2' is not a class index in 0\.\.1/);
  // Invalid labels leave the prediction waiting; a resolved one cannot be resolved twice.
  assert.equal(fb.resolve(['p2'], [1]).report.accepted, 1);
  assert.equal(fb.resolve(['p1'], [1]).report.unknown, 1);
  assert.throws(() => fb.add(sample('p3', 9)), /already waiting/);
  fb.age(20);
  assert.equal(fb.size, 0);
  assert.equal(fb.resolve(['p3'], [0]).report.expired, 1);
  assert.deepEqual(fb.totals, { accepted: 2, unknown: 2, expired: 2, invalid: 2 });
  assert.throws(() => fb.resolve(['a', 'b'], [1]), /2 ids but 1 labels/);
});

test('replay: a bounded uniform sample of the labelled stream, restorable mid-stream', () => {
  const a = new ReplayBuffer(16, 4), b = new ReplayBuffer(16, 4);
  for (let i = 0; i < 500; i++) {
    const item = { input: new Float32Array([i]), label: i % 3 };
    a.add(item);
    if (i < 250) b.add(item);
    if (i === 249) b.load(JSON.parse(JSON.stringify(b.state()), (k, v) => (k === 'input' ? Float32Array.from(Object.values(v)) : v)));
    if (i >= 250) b.add(item);
  }
  assert.equal(a.size, 16);
  assert.ok(a.state().items.some((x) => x.input[0]! >= 250), 'late items get in');
  assert.deepEqual(a.draw(5).map((x) => x.input[0]), b.draw(5).map((x) => x.input[0]));
});

test('error memory: a sample near a stored error is corrected toward its true label at once', () => {
  const mem = new ErrorMemory(3, 2, { k: 2, minSimilarity: 0.9 });
  // Embeddings are compared after centring by the running mean of what the memory has seen.
  const background = new Float32Array([0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0.5, 0.5]);
  assert.equal(mem.correct(new Float32Array(8).fill(0.5), background, 4), 0, 'an empty memory corrects nothing');
  // The model predicted class 0 (0.9) for this embedding; the label was 1.
  mem.add(new Float32Array([1, 0, 0]), [0.9, 0.1], 1);
  const probs = new Float32Array([0.85, 0.15, 0.8, 0.2]);
  const emb = new Float32Array([0.99, 0.05, 0, 0, 1, 0]); // first near the error, second far
  assert.equal(mem.correct(probs, emb, 2), 1);
  assert.ok(probs[1]! > probs[0]!, `near sample now predicts the corrected class: ${probs.slice(0, 2)}`);
  assert.deepEqual([...probs.slice(2)], [0.800000011920929, 0.20000000298023224]);
  assert.ok(Math.abs(probs[0]! + probs[1]! - 1) < 1e-6);
  const copy = new ErrorMemory(3, 2, { k: 2, minSimilarity: 0.9 });
  copy.load(mem.state());
  const p2 = new Float32Array([0.85, 0.15]), p3 = new Float32Array([0.85, 0.15]);
  copy.correct(p2, new Float32Array([0.99, 0.05, 0]), 1);
  mem.correct(p3, new Float32Array([0.99, 0.05, 0]), 1);
  assert.deepEqual([...p2], [...p3]);
  assert.throws(() => new ErrorMemory(4, 2).load(mem.state()), /another capacity, embedding size or class count/);
});
