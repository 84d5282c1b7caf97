// compileTrainStep({ memoryBudget }) in headless Chromium (refit/web on onnxruntime-web): the same
// rung and the same accounted bytes as in Node, a step that runs, and the same error when nothing fits.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openTestPage, chromiumMissing, type TestPage } from './browser.ts';
import { loadModel } from '../../src/model.ts';
import * as losses from '../../src/train/losses.ts';
import { MemoryBudgetError } from '../../src/train/memory-budget.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
let tp: TestPage | undefined;
before(async () => { if (!chromiumMissing) tp = await openTestPage(); });
after(async () => { await tp?.close(); });

test('memoryBudget in the page: the rung and bytes Node chooses, one step, the error below the smallest rung', { skip: chromiumMissing }, async () => {
  const budget = { bytes: 9e6, batch: 16 };
  const model = await loadModel(join(root, 'models/fmnist-cnn.onnx'));
  const node = await model.compileTrainStep({ loss: losses.crossEntropy({ logits: 'logits' }), batchNorm: 'train', memoryBudget: budget });
  const smallest = await model.compileTrainStep({ loss: losses.crossEntropy({ logits: 'logits' }), batchNorm: 'train', memoryBudget: { ...budget, bytes: 1 } }).then(() => null, (e: Error) => e);
  assert.ok(smallest instanceof MemoryBudgetError);
  const web = await tp!.page.evaluate(`(async () => {
    const refit = globalThis.refitTest.refit, budget = ${JSON.stringify(budget)};
    const model = await refit.loadModelFrom('/models/fmnist-cnn.onnx');
    const step = await model.compileTrainStep({ loss: refit.losses.crossEntropy({ logits: 'logits' }), batchNorm: 'train', memoryBudget: budget });
    const rng = new refit.Rng(2);
    const x = refit.f32([16, 1, 28, 28], Float32Array.from({ length: 16 * 784 }, () => rng.uniform()));
    const y = refit.i64([16], Array.from({ length: 16 }, () => rng.int(10)));
    const r = await new refit.Trainer(step, refit.optim.adamw({ lr: 1e-3 })).step({ x, y });
    let error = '', name = '';
    try { await model.compileTrainStep({ loss: refit.losses.crossEntropy({ logits: 'logits' }), batchNorm: 'train', memoryBudget: { ...budget, bytes: 1 } }); } catch (e) { error = e.message; name = e.name; }
    return { rung: step.budget.rung, total: step.budget.memory.totalBytes, trainable: step.trainable, loss: r.loss, skipped: r.skipped, error, name };
  })()`) as { rung: string; total: number; trainable: string[]; loss: number; skipped: boolean; error: string; name: string };
  assert.equal(web.rung, node.budget.rung);
  assert.equal(web.rung, 'lora-last');
  assert.equal(web.total, node.budget.memory.totalBytes);
  assert.deepEqual(web.trainable, node.trainable);
  assert.ok(Number.isFinite(web.loss) && !web.skipped, `loss ${web.loss}`);
  assert.equal(web.name, 'MemoryBudgetError');
  assert.equal(web.error, smallest.message);
  assert.deepEqual(tp!.errors, []);
});
