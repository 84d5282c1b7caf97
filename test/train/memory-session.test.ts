// Step sessions run without onnxruntime's memory pattern (with the arena it holds a second layout
// of the step's activations from the second run on: bench/results/step-memory.md), and the
// shape probe's inference-only session holds no weights. Checked on the options and graphs
// refit hands to onnxruntime, through a recording runtime backend.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as ortNode from 'onnxruntime-node';
import { nodeBackend, runtime, useRuntime, type OrtModule } from '../../src/onnx/runtime.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { RefitModel } from '../../src/model.ts';
import * as losses from '../../src/train/losses.ts';
import { f32, i64 } from '../../src/onnx/tensor.ts';
import { decodeModel } from '../../src/onnx/proto.ts';

interface Created { options: ortNode.InferenceSession.SessionOptions; outputs: readonly string[]; /** initializers of 64 values or more */ initializers: number }

function recording(): { created: Created[]; restore: () => void } {
  const before = runtime();
  const created: Created[] = [];
  const IS = ortNode.InferenceSession;
  const wrapped = {
    create: async (bytes: Uint8Array, options: ortNode.InferenceSession.SessionOptions) => {
      const s = await IS.create(bytes, options);
      created.push({ options, outputs: s.outputNames, initializers: [...decodeModel(bytes).graph.initializers.values()].filter((t) => t.data.length >= 64).length });
      return s;
    },
  };
  useRuntime(nodeBackend({ ...ortNode, InferenceSession: wrapped } as unknown as OrtModule));
  return { created, restore: () => useRuntime(before) };
}

function mlp() {
  const b = new ModelBuilder({ opset: 17 });
  b.input('x', 'float32', ['N', 8]);
  b.initializer('w1', f32([8, 16], Array.from({ length: 128 }, (_, i) => Math.sin(i))));
  b.initializer('w2', f32([16, 8], Array.from({ length: 128 }, (_, i) => Math.cos(i))));
  b.node('MatMul', ['x', 'w1'], ['h']);
  b.node('Relu', ['h'], ['a']);
  b.node('MatMul', ['a', 'w2'], ['logits']);
  b.output('logits', 'float32', ['N', 8]);
  return new RefitModel(b.build());
}

const batch = { x: f32([4, 8], Array.from({ length: 32 }, (_, i) => i / 32 - 0.5)), y: i64([4], [0, 1, 2, 1]) };

test('a step session has the memory pattern off; the probe session gets no weights', async () => {
  const rec = recording();
  try {
    const model = mlp();
    const step = model.compileTrainStep({ trainable: ['w2'], loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }) });
    const r = await step.run(batch);
    assert.ok(Number.isFinite(r.loss));
    // Probes run at 'basic' (inference) or 'disabled' (the cut run); steps at refit's default, 'all'.
    const steps = rec.created.filter((c) => c.outputs.includes('refit.loss') && c.options.graphOptimizationLevel === 'all');
    assert.equal(steps.length, 1);
    assert.equal(steps[0]!.options.enableMemPattern, false);
    const probes = rec.created.filter((c) => c.options.graphOptimizationLevel === 'basic');
    assert.ok(probes.length >= 1);
    for (const p of probes) assert.equal(p.initializers, 0, 'weights are inputs of the inference-only probe');
    await step.release();
  } finally {
    rec.restore();
  }
});

test('a step asked for the memory pattern gets it', async () => {
  const rec = recording();
  try {
    const step = mlp().compileTrainStep({ trainable: ['w1'], loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }), session: { memoryPattern: true } });
    await step.run(batch);
    const s = rec.created.find((c) => c.outputs.includes('refit.loss') && c.options.graphOptimizationLevel === 'all')!;
    assert.notEqual(s.options.enableMemPattern, false);
    await step.release();
  } finally {
    rec.restore();
  }
});

test('inference sessions (RefitModel.run) have the memory pattern off too', async () => {
  const rec = recording();
  try {
    const model = mlp();
    await model.run({ x: batch.x });
    const s = rec.created.filter((c) => c.options.graphOptimizationLevel !== 'disabled');
    assert.equal(s.length, 1);
    assert.equal(s[0]!.options.enableMemPattern, false);
    await model.release();
  } finally {
    rec.restore();
  }
});

test('a step asked not to pre-pack its weights gets session.disable_prepacking, and the same loss and gradients within float rounding', async () => {
  const rec = recording();
  try {
    const model = mlp();
    const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
    const packed = await model.compileTrainStep({ trainable: ['w2'], loss }).run(batch);
    const step = model.compileTrainStep({ trainable: ['w2'], loss, session: { prepack: false } });
    const unpacked = await step.run(batch);
    const steps = rec.created.filter((c) => c.outputs.includes('refit.loss') && c.options.graphOptimizationLevel === 'all');
    assert.equal(steps.length, 2);
    const config = (c: Created) => (c.options.extra as { session?: Record<string, unknown> } | undefined)?.session?.disable_prepacking;
    assert.equal(config(steps[0]!), undefined, 'pre-packing stays onnxruntime\'s default');
    assert.equal(config(steps[1]!), '1');
    assert.ok(Math.abs(unpacked.loss - packed.loss) <= 1e-6 * Math.abs(packed.loss));
    const a = unpacked.grads.get('w2')!, b = packed.grads.get('w2')!;
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i]! - b[i]!) <= 1e-5 * (Math.abs(b[i]!) + 1e-3), `w2[${i}]`);
    await step.release();
  } finally {
    rec.restore();
  }
});
