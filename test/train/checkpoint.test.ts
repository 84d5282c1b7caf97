// Activation checkpointing (src/train/checkpoint.ts): the checkpointed step gives the plain step's
// loss, gradients and running statistics, and keeps fewer activations for the backward.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../../src/model.ts';
import { f32, i64 } from '../../src/onnx/tensor.ts';
import * as losses from '../../src/train/losses.ts';
import { buildStepGraph } from '../../src/train/step-graph.ts';
import { accountStep } from '../../src/train/memory-accounting.ts';
import { checkpointStepGraph } from '../../src/train/checkpoint.ts';
import { Rng } from '../../src/util/rng.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const loss = losses.crossEntropy({ logits: 'logits' });

const maxRel = (a: Float32Array, b: Float32Array) => {
  let d = 0, n = 0;
  for (let i = 0; i < a.length; i++) { d = Math.max(d, Math.abs(a[i]! - b[i]!)); n = Math.max(n, Math.abs(a[i]!)); }
  return n ? d / n : d;
};

for (const name of ['cnn', 'vit'] as const) {
  test(`activation checkpointing on the shipped ${name}: the same loss and gradients as the plain step, fewer saved bytes`, async () => {
    const model = await loadModel(join(root, 'models', `fmnist-${name}.onnx`));
    const rng = new Rng(3);
    const B = 4;
    const batch = { x: f32([B, 1, 28, 28], Array.from({ length: B * 784 }, () => rng.uniform())), y: i64([B], Array.from({ length: B }, () => rng.int(10))) };
    const sig = { x: { dtype: 'float32' as const, dims: [B, 1, 28, 28] } };
    const base = { trainable: 'all' as const, loss, batchNorm: 'train' as const };
    const graph = await buildStepGraph(model.ir, sig, { trainable: model.parameterNames(), loss, batchNorm: 'train' });
    const ck = await checkpointStepGraph(graph);
    assert.ok(ck.checkpoint.recomputed.length > 0 && ck.checkpoint.checkpoints.length > 0, JSON.stringify(ck.checkpoint).slice(0, 200));
    const plainBytes = accountStep(graph, model.ir, model.parameterNames()).activationBytes;
    const ckBytes = accountStep(ck, model.ir, model.parameterNames()).activationBytes;
    assert.ok(ckBytes < 0.8 * plainBytes, `checkpointed ${ckBytes} vs plain ${plainBytes} saved bytes`);
    // 'basic' runs the graph as written: the recomputed values are the same operations on the same
    // inputs, so every number is equal. At 'all' onnxruntime fuses around the checkpoints
    // differently (each has one more reader), which moved the ViT's gradients by up to 1.4e-6.
    for (const optimization of ['basic', 'all'] as const) {
      const plain = model.compileTrainStep({ ...base, session: { optimization } });
      const recomputing = model.compileTrainStep({ ...base, checkpoint: true, session: { optimization } });
      const a = await plain.run(batch), b = await recomputing.run(batch);
      const tol = optimization === 'basic' || name === 'cnn' ? 1e-6 : 1e-5;
      assert.ok(Math.abs(a.loss - b.loss) <= tol * Math.abs(a.loss), `${optimization}: loss ${a.loss} vs ${b.loss}`);
      for (const [k, g] of a.grads) {
        // The attention key biases' gradients are zero in exact arithmetic: rounding noise in either step (docs/web.md).
        if (/attn\.k\.bias$/.test(k)) { assert.ok(maxRel(g, b.grads.get(k)!) * Math.max(...g.map(Math.abs)) < 1e-6, k); continue; }
        assert.ok(maxRel(g, b.grads.get(k)!) <= tol, `${optimization}: gradient of ${k} differs by ${maxRel(g, b.grads.get(k)!)} relative`);
      }
      for (const [k, v] of a.runningStats) assert.ok(maxRel(v, b.runningStats.get(k)!) <= tol, `running statistic ${k}`);
      await plain.release();
      await recomputing.release();
    }
  });
}

