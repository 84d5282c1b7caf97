// data.evaluate: accuracy of a classifier over samples given as one flat array, in batches.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { loadModel, data } from '../../src/index.ts';
import { root } from '../helpers/cli.ts';

test("evaluate scores the shipped CNN on bundled images as per-batch argmax does, and refuses samples of the wrong size", async () => {
  const model = await loadModel(join(root, 'models/fmnist-cnn.onnx'));
  const set = data.loadFashionMnist('test', { limit: 100 });
  const whole = await data.evaluate(model, set.images, set.labels, 100, 100);
  const batched = await data.evaluate(model, set.images, set.labels, 100, 7);   // uneven last batch
  assert.equal(batched, whole);
  assert.ok(whole > 0.8, `accuracy ${whole}`);   // the shipped CNN: about 91 % on clean test images
  await assert.rejects(data.evaluate(model, set.images.subarray(0, 100 * 700), set.labels, 100),
    /evaluate: 100 samples of 700 values each, but input 'x' takes samples of \[1, 28, 28\]/);
  await model.release();
});
