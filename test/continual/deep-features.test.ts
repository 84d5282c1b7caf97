// The controller's deep learner (RMT, whose contrastive term reads penultimate features) on a model
// exported with only its logits: it takes the input of the linear head (deepLearnerModel), and
// predicts exactly as with the model's own 'features' output; a model without a linear head is
// refused (the controller checks when it is built, not when level 3 is first reached).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel, RefitModel } from '../../src/model.ts';
import { cloneModel } from '../../src/onnx/ir.ts';
import { ContinualController } from '../../src/continual/controller.ts';
import { deepLearnerModel } from '../../src/continual/deep-learner.ts';
import { readZoo } from '../fixtures/zoo/read.ts';
import { deep, noisyBatches, cnnPath as modelPath } from './deep-fixture.ts';

const N = 16, B = 6;
const { shifted, calibration } = noisyBatches(B, N);
// Climbs one level per unhealthy batch up to 3, as in deep.test.ts.
const opts = { logits: 'logits', patience: 1, stableBatches: 50, lr: 0.001, deep };

test('deep learner on a logits-only export: the linear head\'s input as features, the same predictions as with the model\'s own features output', async () => {
  const model = await loadModel(modelPath, { threads: 1 });
  const ir = cloneModel(model.ir);
  // As a user's export: no features output, and no tensor of that name (the CNN's is an Identity of the head's input).
  ir.graph.outputs = ir.graph.outputs.filter((o) => o.name !== 'features');
  ir.graph.nodes = ir.graph.nodes.filter((n) => !n.outputs.includes('features'));
  const logitsOnly = new RefitModel(ir, { threads: 1 });
  const a = new ContinualController(model, opts), b = new ContinualController(logitsOnly, opts);
  await a.calibrate(calibration);
  await b.calibrate(calibration);
  const levels: number[] = [];
  for (let i = 0; i < B; i++) {
    const ra = await a.predict(shifted(i)), rb = await b.predict(shifted(i));
    levels.push(rb.level);
    assert.deepEqual(rb.probs, ra.probs, `batch ${i} (level ${rb.level}): the same predictions`);
  }
  assert.ok(levels.includes(3), `the deep learner predicted: levels ${levels}`);
  assert.deepEqual(logitsOnly.outputs.map((o) => o.name), ['logits'], 'the caller\'s model is unchanged');
  await Promise.all([a.release(), b.release()]);
});

test('deep learner on a model without a linear head (SqueezeNet): refused with the reason, unless its contrastive term is off', async () => {
  const squeeze = await loadModel(readZoo('squeezenet1_1').modelPath, { threads: 1 });
  assert.throws(() => deepLearnerModel(squeeze, {}),
    /continual deep learner \(level 3, RMT\): its contrastive term reads the penultimate features, and output 'logits' comes from GlobalAveragePool node .*; or pass deep\.rmt\.lambdaCont: 0/);
  assert.equal(deepLearnerModel(squeeze, { rmt: { lambdaCont: 0 } }), squeeze);
  const cnn = await loadModel(modelPath, { threads: 1 });
  assert.equal(deepLearnerModel(cnn, {}), cnn, 'a model with its own features output is used as it is');
});
