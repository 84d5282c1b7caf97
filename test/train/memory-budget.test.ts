// Memory accounting of a compiled step (src/train/memory-accounting.ts) and
// compileTrainStep({ memoryBudget }) (src/train/memory-budget.ts); checkpointing: checkpoint.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { loadModel, RefitModel } from '../../src/model.ts';
import { PeftModel } from '../../src/peft/peft-model.ts';
import { f32, i64 } from '../../src/onnx/tensor.ts';
import * as losses from '../../src/train/losses.ts';
import { buildStepGraph } from '../../src/train/step-graph.ts';
import { accountStep, livenessPeak } from '../../src/train/memory-accounting.ts';
import { BUDGET_RUNGS, MemoryBudgetError, type BudgetRung } from '../../src/train/memory-budget.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const loss = losses.crossEntropy({ logits: 'logits' });

/** x[N,4] → MatMul w1[4,3] → h → Relu → r → MatMul w2[3,2] → logits. */
function tiny(): RefitModel {
  const b = new ModelBuilder({ opset: 17 });
  b.input('x', 'float32', ['N', 4]);
  b.initializer('w1', f32([4, 3], Array.from({ length: 12 }, (_, i) => Math.sin(i))));
  b.initializer('w2', f32([3, 2], Array.from({ length: 6 }, (_, i) => Math.cos(i))));
  b.node('MatMul', ['x', 'w1'], ['h']);
  b.node('Relu', ['h'], ['r']);
  b.node('MatMul', ['r', 'w2'], ['logits']);
  b.output('logits', 'float32', ['N', 2]);
  return new RefitModel(b.build());
}

test('accounting of a two-layer MLP at batch 5 equals the bytes counted by hand', async () => {
  const m = tiny();
  const sig = { x: { dtype: 'float32' as const, dims: [5, 4] } };
  // Both layers train. The backward reads r (dW2 = rᵀ·dlogits, and Relu's mask taken from its
  // output), LogSoftmax(logits) (softmax = exp of it) and the labels' one-hot; x is the batch
  // (counted as input), w2 a parameter. h is not kept: the mask comes from r.
  const both = accountStep(await buildStepGraph(m.ir, sig, { trainable: ['w1', 'w2'], loss }), m.ir, ['w1', 'w2'], { optimizer: 'adam' });
  assert.deepEqual(both.saved.map((s) => [s.dims, s.bytes]).sort(), [[[5, 2], 5 * 2 * 4], [[5, 2], 5 * 2 * 4], [[5, 3], 5 * 3 * 4]].sort());
  assert.ok(both.saved.some((s) => s.name === 'r'), 'r is saved');
  assert.ok(!both.saved.some((s) => s.name === 'h' || s.name === 'x' || s.name === 'logits'), both.saved.map((s) => s.name).join());
  assert.equal(both.activationBytes, 40 + 40 + 60);
  assert.equal(both.inputBytes, 5 * 4 * 4 + 5 * 8); // x float32 [5,4] + labels int64 [5]
  assert.equal(both.trainableParams, 18);
  assert.equal(both.trainableBytes, 18 * 4);
  assert.equal(both.gradientBytes, 18 * 4);
  assert.equal(both.optimizerStateBytes, 18 * 4 * 2);
  assert.equal(both.frozenBytes, 0);
  assert.equal(both.totalBytes, 140 + 120 + 72 + 72 + 144);
  assert.equal(both.batch, 5);

  // Only w2 trains: the backward stops at the last MatMul; w1 is frozen; SGD with momentum keeps one slot.
  const last = accountStep(await buildStepGraph(m.ir, sig, { trainable: ['w2'], loss }), m.ir, ['w2'], { optimizer: 'sgd-momentum' });
  assert.equal(last.activationBytes, 140);
  assert.deepEqual(last.saved.find((s) => s.name === 'r')!.readBy, ['Reshape'], 'no Relu mask without w1 training');
  assert.equal(last.frozenBytes, 12 * 4);
  assert.equal(last.optimizerStateBytes, 6 * 4);
  assert.equal(last.totalBytes, 140 + 120 + 24 + 24 + 24 + 48);
  const sgd = accountStep(await buildStepGraph(m.ir, sig, { trainable: ['w2'], loss }), m.ir, ['w2'], { optimizer: 'sgd' });
  assert.equal(sgd.optimizerStateBytes, 0);
});

test('liveness peak of the MLP step at batch 5, counted by hand', async () => {
  const m = tiny();
  const sig = { x: { dtype: 'float32' as const, dims: [5, 4] } };
  // Walking the step's nodes in order (only w2 training): the most bytes alive at once is at the
  // backward Mul of the loss gradient by the one-hot labels: r 60 (kept for dW2) + one-hot 40 +
  // LogSoftmax 40 + the loss 4 (a graph output) + the expanded loss gradient 40 + the Mul's output
  // 40 = 224. h (60) was freed after Relu, logits (40) after LogSoftmax. With w1 training too the
  // peak is the same node: Relu's mask and dW1 come after it. (Pinned to the loss gradient's form.)
  for (const trainable of [['w2'], ['w1', 'w2']]) {
    const lp = await livenessPeak(await buildStepGraph(m.ir, sig, { trainable, loss }));
    assert.equal(lp.peakBytes, 224, trainable.join());
    assert.equal(lp.phase, 'backward');
    assert.match(lp.node, /^Mul/);
  }
  // count: 'liveness' compares liveness + batch + trainable + optimizer state + frozen with the budget:
  // head (w2) 224 + 120 + 24 + 48 + 48 = 464; all 224 + 120 + 72 + 144 + 0 = 560.
  const head = await m.compileTrainStep({ loss, memoryBudget: { bytes: 559, batch: 5, count: 'liveness' } });
  assert.equal(head.budget.rung, 'head');
  assert.equal(head.budget.countedBytes, 464);
  assert.equal(head.budget.memory.peakEstimateBytes, 464);
  assert.equal(head.budget.dropped[0]!.totalBytes, 560);
  const all = await m.compileTrainStep({ loss, memoryBudget: { bytes: 560, batch: 5, count: 'liveness' } });
  assert.equal(all.budget.rung, 'all');
  await assert.rejects(m.compileTrainStep({ loss, memoryBudget: { bytes: 463, batch: 5, count: 'liveness' } }), /liveness estimate\) fits no candidate: the smallest, 'head' .* needs 464 B/);
});

test('memoryBudget on the tiny model: the budget picks, the step runs, bad budgets are named', async () => {
  const m = tiny();
  // No numbered blocks and no norm layers: those rungs are skipped with a reason.
  const step = await m.compileTrainStep({ loss, memoryBudget: { bytes: 1e6, batch: 5 } });
  assert.equal(step.budget.rung, 'all');
  assert.deepEqual(step.trainable.sort(), ['w1', 'w2']);
  const r = await step.run({ x: f32([5, 4], Array.from({ length: 20 }, (_, i) => Math.sin(i))), y: i64([5], [0, 1, 0, 1, 1]) });
  assert.equal(r.grads.size, 2);
  await step.release();
  await assert.rejects(m.compileTrainStep({ loss, memoryBudget: 1e6 }), /input 'x' has dimension 0 = "N", unknown until a batch arrives; pass memoryBudget\.batch/);
  // A symbolic dim past the batch (an image's height): batch cannot fill it, and the message says so.
  const images = new RefitModel(new ModelBuilder().input('x', 'float32', ['N', 1, 'H', 'W']).initializer('w', f32([2, 1, 3, 3], new Float32Array(18).fill(0.1)))
    .node('Conv', ['x', 'w'], ['c'], { kernel_shape: [3, 3] }).node('GlobalAveragePool', ['c'], ['p']).node('Flatten', ['p'], ['logits']).output('logits').build());
  await assert.rejects(images.compileTrainStep({ loss, memoryBudget: { bytes: 1e6, batch: 2 } }),
    /input 'x' has dimension 2 = "H", unknown until a batch arrives; pass memoryBudget\.inputs, every input's dims \(e\.g\. \{ x: \{ dtype: 'float32', dims: \[2, 1, …, …\] \} \}\): batch fills only the first/);
  await assert.rejects(m.compileTrainStep({ loss, memoryBudget: -1 }), /memoryBudget\.bytes must be a positive number of bytes, got -1/);
  await assert.rejects(m.compileTrainStep({ loss, memoryBudget: { bytes: 1e6, batch: 5, candidates: ['everything' as BudgetRung] } }), /unknown rung 'everything'/);
  // 'head' is the last MatMul: activations 140 + batch 120 + w2, its gradient and AdamW's two
  // moments 4·24 + frozen w1 48 = 404 bytes.
  const e = await m.compileTrainStep({ loss, memoryBudget: { bytes: 403, batch: 5 } }).then(() => null, (x: Error) => x);
  assert.ok(e instanceof MemoryBudgetError, String(e));
  assert.match(e.message, /^memoryBudget of 403 B \(403 bytes; batch 5, adamw\) fits no candidate: the smallest, 'head' \(the last layer 'w2' \(w2\)\), needs 404 B \(404 bytes, of which 140 B activations kept for the backward\)\. Tried: all 548 B, lora \(no layer takes LoRA of rank 4/);
  assert.match(e.message, /norm-affine \(the model has no normalisation layer/);
  // A trainable selection given with the budget is tried first, as 'requested'; the ladder follows without 'all'.
  const asked = await m.compileTrainStep({ trainable: ['w1'], loss, memoryBudget: { bytes: 1e6, batch: 5 } });
  assert.equal(asked.budget.rung, 'requested');
  assert.deepEqual(asked.trainable, ['w1']);
  const askedTooBig = await m.compileTrainStep({ trainable: 'all', loss, memoryBudget: { bytes: 404, batch: 5 } });
  assert.deepEqual([askedTooBig.budget.rung, askedTooBig.budget.dropped[0]!.rung, askedTooBig.budget.dropped.length], ['head', 'requested', 5]);
  const fits = await m.compileTrainStep({ loss, memoryBudget: { bytes: 404, batch: 5 } });
  assert.equal(fits.budget.rung, 'head');
  assert.deepEqual(fits.trainable, ['w2']);
  assert.equal(fits.budget.memory.totalBytes, 404);
  assert.deepEqual(fits.budget.dropped.map((d) => [d.rung, d.totalBytes]), [['all', 548], ['lora', undefined], ['norm-affine', undefined], ['lora-last', undefined], ['norm-affine-last', undefined]]);
});

for (const name of ['cnn', 'vit'] as const) {
  test(`memoryBudget on the shipped ${name}: a budget equal to each rung's bytes chooses it (or a cheaper rung with more capacity); one byte less than the smallest errors`, async () => {
    const model = await loadModel(join(root, 'models', `fmnist-${name}.onnx`));
    const opts = { loss, batchNorm: 'train' as const };
    const batch = 32;
    // A budget of one byte fits nothing; the error lists every rung's accounted bytes.
    const none = await model.compileTrainStep({ ...opts, memoryBudget: { bytes: 1, batch } }).then(() => null, (e: Error) => e);
    assert.ok(none instanceof MemoryBudgetError, String(none));
    assert.deepEqual(none.candidates.map((c) => c.rung), BUDGET_RUNGS);
    const cost = new Map(none.candidates.map((c) => [c.rung as BudgetRung, c.totalBytes!]));
    console.log(`${name} batch ${batch}: ${BUDGET_RUNGS.map((r) => `${r} ${cost.get(r)}`).join(', ')}`);
    const dominated: BudgetRung[] = [];
    for (const [k, r] of BUDGET_RUNGS.entries()) {
      // An earlier rung (more capacity) that costs no more than this one is chosen first whenever
      // this one fits: such a rung is reached only through `candidates`.
      const cheaper = BUDGET_RUNGS.slice(0, k).find((e) => cost.get(e)! <= cost.get(r)!);
      const ladder = cheaper ? [cheaper, r] : BUDGET_RUNGS.slice(Math.max(0, k - 1), k + 1);
      const s = await model.compileTrainStep({ ...opts, memoryBudget: { bytes: cost.get(r)!, batch, candidates: ladder } });
      if (cheaper) {
        dominated.push(r);
        assert.equal(s.budget.rung, cheaper);
        const alone = await model.compileTrainStep({ ...opts, memoryBudget: { bytes: cost.get(r)!, batch, candidates: [r] } });
        assert.equal(alone.budget.rung, r);
        continue;
      }
      // The ladder cut to the rung before and this one, to keep the test short (the tiny-model test walks it whole).
      assert.equal(s.budget.rung, r);
      assert.equal(s.budget.memory.totalBytes, cost.get(r));
      assert.deepEqual(s.budget.dropped.map((d) => [d.rung, d.totalBytes]), k ? [[BUDGET_RUNGS[k - 1], cost.get(BUDGET_RUNGS[k - 1]!)]] : []);
      if (r === 'lora' || r === 'lora-last') {
        assert.ok(s.model instanceof PeftModel && s.model.adapterNames().includes('budget'));
        assert.ok(s.trainable.some((t) => t.startsWith('budget.lora_A')));
      }
      if (r === 'head') assert.deepEqual(s.trainable.sort(), ['head.bias', 'head.weight']);
    }
    // Measured at batch 32: on the CNN, LoRA (stem excepted: 1 input channel) keeps fewer bytes than
    // norm-affine, which backpropagates just as far and trains 12x fewer parameters.
    assert.deepEqual(dominated, name === 'cnn' ? ['norm-affine'] : []);
    const smallest = cost.get('head')!;
    await assert.rejects(model.compileTrainStep({ ...opts, memoryBudget: { bytes: smallest - 1, batch } }),
      (e: Error) => e instanceof MemoryBudgetError && e.message.includes(`'head'`) && e.message.includes(`(${smallest} bytes`) && /Raise the budget or lower the batch/.test(e.message));
  });
}

test('memoryBudget with checkpoint: a rung that fits only when checkpointed is chosen checkpointed', async () => {
  const model = await loadModel(join(root, 'models', 'fmnist-cnn.onnx'));
  const opts = { loss, batchNorm: 'train' as const };
  const none = await model.compileTrainStep({ ...opts, memoryBudget: { bytes: 1, batch: 8, candidates: ['all'], checkpoint: true } }).then(() => null, (e: Error) => e);
  assert.ok(none instanceof MemoryBudgetError);
  const [plain, ck] = none.candidates;
  assert.deepEqual([plain!.checkpoint, ck!.checkpoint], [false, true]);
  assert.ok(ck!.totalBytes! < plain!.totalBytes!);
  const s = await model.compileTrainStep({ ...opts, memoryBudget: { bytes: ck!.totalBytes!, batch: 8, checkpoint: true } });
  assert.equal(s.budget.rung, 'all');
  assert.equal(s.budget.checkpoint, true);
  assert.equal(s.budget.count, 'liveness', 'checkpoint counts with the liveness estimate by default');
  assert.match(s.budget.trains, /activations checkpointed$/);
  assert.deepEqual(s.budget.dropped.map((d) => [d.rung, d.checkpoint]), [['all', false]]);
  assert.equal(s.options.checkpoint, true);
});
