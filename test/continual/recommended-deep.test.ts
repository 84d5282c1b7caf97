// The recommended deep learner adapts every parameter of a small model and only the normalization
// layers' scales and shifts of a large one (over DEEP_NORM_ABOVE parameters), never 'norm' on a
// model without normalization layers; recommendedControllerOptions passes the choice on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/model.ts';
import { recommendedDeepParams, recommendedControllerOptions, DEEP_NORM_ABOVE } from '../../src/continual/recommended.ts';
import { f32 } from '../../src/onnx/tensor.ts';

const root = new URL('../../', import.meta.url).pathname;

test('recommendedDeepParams: every parameter below the size, the normalization affine above it, and never without norm layers', async () => {
  const cnn = await loadModel(`${root}models/fmnist-cnn.onnx`);
  const mlp = await loadModel(`${root}test/fixtures/torch/mlp/model.onnx`);
  assert.equal(DEEP_NORM_ABOVE, 1_000_000);
  assert.equal(recommendedDeepParams(cnn), 'all', 'the shipped CNN (0.31M parameters)');
  assert.equal(recommendedDeepParams(cnn, 1000), 'norm');
  assert.equal(recommendedDeepParams(mlp, 0), 'all', 'no normalization layers');
  const source = { images: f32([1, 1, 28, 28], new Float32Array(784)), labels: [0] };
  assert.equal(recommendedControllerOptions({ logits: 'logits', source, deepParams: 'norm' }).deep?.params, 'norm');
  assert.equal(recommendedControllerOptions({ logits: 'logits', source }).deep?.params, undefined, "'all' is the deep learner's own default");
  await Promise.all([cnn.release(), mlp.release()]);
});
