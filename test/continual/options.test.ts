// The controller's options are checked when it is made: a misspelt or out-of-range option, or a
// bad `deep.rmt` option that would otherwise surface only at level 3, is refused by name, and
// every option the controller documents (the recommended set among them) is accepted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/model.ts';
import { ContinualController } from '../../src/continual/controller.ts';
import { recommendedControllerOptions } from '../../src/continual/recommended.ts';
import { inputStats } from '../../src/tta/input-align.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { deep, sourceSet32 } from './deep-fixture.ts';
import { deepLearnerParams } from '../../src/continual/deep-learner.ts';
import { normAffineParams } from '../../src/tta/common.ts';

const modelPath = new URL('../../models/fmnist-cnn.onnx', import.meta.url).pathname;

test('bad controller options are refused by name before anything runs', async () => {
  const model = await loadModel(modelPath, { threads: 1 });
  const bad: [object, RegExp][] = [
    [{ lrr: 0.01 }, /continual: unknown option 'lrr' \(known options: .*\blr\b/],
    [{ lr: '0.01' }, /option 'lr': .*expected number/],
    [{ patience: 0 }, /option 'patience'/],
    [{ maxLevel: 7 }, /option 'maxLevel': expected 0, 1, 2 or 3/],
    [{ lame: 'yes' }, /option 'lame': expected true, false or 'auto'/],
    [{ priorCorrection: 'em' }, /option 'priorCorrection'/],
    [{ decay: 1.5 }, /option 'decay'/],
    [{ debias: { similarity: 0.98, alfa: 1 } }, /option 'debias': unknown field 'alfa'/],
    [{ errorMemory: { capacity: 0 } }, /option 'errorMemory.capacity'/],
    [{ feedback: { maxAge: 5 } }, /option 'feedback': unknown field 'maxAge'/],
    [{ deep: { ...deep, rmt: { lamdaCont: 0 } } }, /option 'deep.rmt': unknown field 'lamdaCont'/],
    [{ deep: { ...deep, rmt: { warmupSamples: -1 } } }, /option 'deep.rmt.warmupSamples'/],
    [{ deep: { sourceLabels: sourceSet32.sourceLabels } }, /option 'deep.sourceData'/],
    [{ deep: { ...deep, sourceLabels: sourceSet32.sourceLabels.slice(0, 8) } }, /option 'deep': 32 source images but 8 source labels/],
    [{ inputAlign: { mean: [0.3] } }, /option 'inputAlign.sampleStd'/],
    [{ deep: { ...deep, params: 'bn' } }, /option 'deep.params': expected 'all', 'norm' or parameter names/],
  ];
  for (const [o, why] of bad) assert.throws(() => new ContinualController(model, o as never), why, JSON.stringify(o));
  await model.release();
});

test('every documented option, and the recommended set, is accepted', async () => {
  const model = await loadModel(modelPath, { threads: 1 });
  const images = f32([32, 1, 28, 28], sourceSet32.sourceData.data as Float32Array);
  const all = {
    logits: 'logits', embedding: 'features', lr: 0.001, momentum: 0.9, decay: 0.99, restore: { probability: 0.01, seed: 1 },
    anchor: { strength: 1 }, objective: 'teacher' as const, patience: 2, priorCorrection: 'auto' as const, priorThreshold: 0.7,
    holdBelowSpread: 1.01, debias: { similarity: 0.98, alpha: 1 }, lame: 'auto' as const, lameThreshold: 0.98, ensemble: 'max' as const,
    stableBatches: 20, entropyTolerance: 1.5, collapseFraction: 0.25, warmupBatches: 5, maxLevel: 3 as const,
    budgets: { maxUpdateMs: 1000, maxTrainableParams: 1e9 }, feedback: { capacity: 64, maxAgeBatches: 10, replayCapacity: 32, minBatch: 16, minNew: 8 },
    errorMemory: { capacity: 16, k: 4, temperature: 0.05, minSimilarity: 0.8, strength: 1 },
    deep: { ...deep, params: 'all' as const, embedding: true, rmt: { lambdaCont: 0, lr: 1e-4 } },
    inputAlign: inputStats(images, sourceSet32.sourceLabels), seed: 3,
  };
  const made = [new ContinualController(model, all), new ContinualController(model, { errorMemory: true, priorCorrection: false, lame: true, embedding: 'features' })];
  made.push(new ContinualController(model, recommendedControllerOptions({ logits: 'logits', embedding: 'features', source: { images, labels: sourceSet32.sourceLabels } })));
  for (const c of made) await c.release();
  await model.release();
});

test("deep.params 'norm': the deep learner adapts the normalization layers' scales and shifts only", async () => {
  const model = await loadModel(modelPath, { threads: 1 });
  const norm = deepLearnerParams(model, { params: 'norm' });
  assert.deepEqual(norm, normAffineParams('t', model));
  assert.ok(norm.length > 0 && norm.length < deepLearnerParams(model, {}).length);
  assert.ok(norm.every((p) => /bn|norm/i.test(p)), norm.join(', '));
  const c = new ContinualController(model, { deep: { ...deep, params: 'norm' } });
  await c.release();
  await model.release();
});
