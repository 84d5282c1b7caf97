// RMT's labelled replay options (for the controller's delayed labels): labelledWeight weighs the
// labelled rows' cross-entropy in the replay term, labelledShare sets how much of the replay batch
// they fill, labelledRecent restricts the cycle to the newest. Each must change the step when it
// acts and leave it exactly as before when it has nothing to act on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/model.ts';
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';
import { corrupt } from '../../src/data/corruptions/index.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { RMT, type RmtOptions } from '../../src/tta/rmt.ts';
import { sourceSet32 } from './deep-fixture.ts';

const modelPath = new URL('../../models/fmnist-cnn.onnx', import.meta.url).pathname;
const N = 16;
const ds = loadFashionMnist('test', { limit: 3 * N });
const noisy = corrupt(ds.images, 3 * N, 28, 28, 'gaussian_noise', 5, 0);
const batch = (i: number) => f32([N, 1, 28, 28], noisy.slice(i * N * 784, (i + 1) * N * 784));
// No source warm-up: it draws no labelled rows (only adapt's replay batches do), and skipping it
// spares each of the nine RMTs below a compiled warm-up step and its session.
const base = { ...sourceSet32, warmupSamples: 0, params: ['stem.conv.weight', 'head.weight'] };

/** Parameters after two steps, with `labels` labelled stream samples added before them. */
async function after(model: Awaited<ReturnType<typeof loadModel>>, opts: Partial<RmtOptions>, labels: number): Promise<Record<string, Float32Array>> {
  const rmt = new RMT(model, { ...base, ...opts });
  for (let i = 0; i < labels; i++) rmt.addLabelled(noisy.slice(i * 784, (i + 1) * 784), ds.labels[i]!);
  await rmt.predict(batch(0));
  await rmt.predict(batch(1));
  const t = (await rmt.save()).tensors;
  await rmt.release();
  return Object.fromEntries(Object.entries(t).filter(([k]) => k.startsWith('param.')));
}

test('labelled replay options: no-ops without labelled samples, and each changes the step when it acts', async () => {
  const model = await loadModel(modelPath, { threads: 1 });
  const plain = await after(model, {}, 0);
  // Without labelled samples every option leaves RMT's step exactly as it was.
  assert.deepEqual(await after(model, { labelledWeight: 4, labelledShare: 1, labelledRecent: 2 }, 0), plain);
  const one = await after(model, {}, 8);
  assert.notDeepEqual(one, plain, 'labelled samples enter the replay');
  // labelledWeight 1 is RMT's term; another weight changes the step.
  assert.deepEqual(await after(model, { labelledWeight: 1 }, 8), one);
  assert.notDeepEqual(await after(model, { labelledWeight: 4 }, 8), one);
  // A share of 0 leaves them out; a larger share than a quarter (4 of 16 rows) puts more in.
  assert.deepEqual(await after(model, { labelledShare: 0 }, 8), plain);
  assert.notDeepEqual(await after(model, { labelledShare: 0.5 }, 8), one);
  // Cycling the newest 2 of 8 differs from cycling all 8; a window over all is the default.
  assert.notDeepEqual(await after(model, { labelledRecent: 2 }, 8), one);
  assert.deepEqual(await after(model, { labelledRecent: 8 }, 8), one);
  await model.release();
});
