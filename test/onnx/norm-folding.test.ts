// A CNN saved by onnxruntime with graph optimizations has its BatchNorm folded into the convs: the
// methods that need norm layers (PEFT norm-affine, Tent and the other norm-affine TTA methods,
// BN-adapt) say so and what to do (src/onnx/norm-folding.ts), and say it only when a sign points
// to folding.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { NCHWC_DOMAIN, nchwcBlockSize } from '../../src/onnx/nchwc.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import type { Model } from '../../src/onnx/ir.ts';
import { RefitModel } from '../../src/model.ts';
import { Rng } from '../../src/util/rng.ts';
import { createAdapter } from '../../src/tta/index.ts';
import * as peft from '../../src/peft/index.ts';
import { foldedNormHint } from '../../src/onnx/norm-folding.ts';
import { savedByOrt } from '../helpers/ort-saved.ts';

const ints = (value: number[]) => ({ kind: 'ints' as const, value });

/** Conv (no bias) → BatchNorm → Relu → Conv (bias) → BatchNorm → Relu → GAP → Gemm, a typical CNN as exported with BN kept. */
function bnCnn(): Model {
  const rng = new Rng(7);
  const b = new ModelBuilder({ opset: 14 });
  const w = (name: string, dims: number[], scale = 0.4) => b.initializer(name, f32(dims, rng.fill(new Float32Array(dims.reduce((a, c) => a * c, 1)), scale, 'normal')));
  const bn = (i: number, c: number) => {
    b.initializer(`bn${i}.weight`, f32([c], Array.from({ length: c }, (_, k) => 0.8 + 0.05 * k)));
    w(`bn${i}.bias`, [c], 0.1); w(`bn${i}.running_mean`, [c], 0.1);
    b.initializer(`bn${i}.running_var`, f32([c], Array.from({ length: c }, (_, k) => 0.5 + 0.1 * k)));
    return [`bn${i}.weight`, `bn${i}.bias`, `bn${i}.running_mean`, `bn${i}.running_var`];
  };
  b.input('x', 'float32', ['N', 3, 8, 8]);
  w('conv1.weight', [16, 3, 3, 3]); w('conv2.weight', [16, 16, 3, 3], 0.1); w('conv2.bias', [16], 0.1);
  w('fc.weight', [4, 16]); w('fc.bias', [4], 0.1);
  b.node('Conv', ['x', 'conv1.weight'], ['c1'], { pads: ints([1, 1, 1, 1]) });
  b.node('BatchNormalization', ['c1', ...bn(1, 16)], ['n1']);
  b.node('Relu', ['n1'], ['r1']);
  b.node('Conv', ['r1', 'conv2.weight', 'conv2.bias'], ['c2'], { pads: ints([1, 1, 1, 1]) });
  b.node('BatchNormalization', ['c2', ...bn(2, 16)], ['n2']);
  b.node('Relu', ['n2'], ['r2']);
  b.node('GlobalAveragePool', ['r2'], ['g']);
  b.node('Flatten', ['g'], ['fl']);
  b.node('Gemm', ['fl', 'fc.weight', 'fc.bias'], ['logits'], { transB: { kind: 'int', value: 1 } });
  b.output('logits', 'float32', ['N', 4]);
  return b.build();
}


/** The TTA methods that adapt norm layers' affine parameters (normAffineParams), and BN-adapt. */
const NORM_METHODS = ['tent', 'eata', 'sar', 'cotta', 'rmt', 'roid', 'rotta', 'bn-adapt'];
const ORT_REASON = /This model was saved by onnxruntime \(it declares onnxruntime's internal opsets.*\) and 2 convolutions have a bias: onnxruntime's graph optimizations .* fold BatchNormalization into the convolution before it.* Export the model again .* not the one onnxruntime saved \(optimizedModelFilePath\)\. Otherwise, /;

test('norm-affine, Tent, BN-adapt and the other norm methods on a CNN saved by onnxruntime at \'all\' say that BatchNorm was folded and what to do', async () => {
  const src = new RefitModel(bnCnn());
  // the unsaved model has its norm layers: every path works there
  assert.equal(peft.withAdapter(src, 'n', peft.normAffine()).trainableNames().length, 4);
  for (const m of NORM_METHODS) await createAdapter(src, m).release();

  const saved = new RefitModel(await savedByOrt(bnCnn(), 'all'));
  const g = saved.ir.graph;
  assert.ok(!g.nodes.some((n) => n.opType === 'BatchNormalization'), 'onnxruntime kept a BatchNormalization');
  if ((await nchwcBlockSize()) !== null) assert.ok(g.nodes.some((n) => n.domain === NCHWC_DOMAIN && n.opType === 'Conv'), 'no blocked conv: not the form this test means to cover');

  assert.throws(() => peft.withAdapter(saved, 'n', peft.normAffine()), (e: Error) => {
    assert.match(e.message, /^norm-affine trains the scale and shift of normalization layers \(BatchNormalization, LayerNormalization, .*\), and this model has none\. /);
    assert.match(e.message, ORT_REASON);
    assert.match(e.message, /Otherwise, train another parameter group: lora\(\), bitfit\(\), or every parameter \(trainable: 'all'\)$/);
    return true;
  });
  for (const m of NORM_METHODS.filter((x) => x !== 'bn-adapt')) {
    assert.throws(() => createAdapter(saved, m), (e: Error) => {
      assert.match(e.message, new RegExp(`^${m} adapts normalization layers \\(.*\\), and this model has none\\. `));
      assert.match(e.message, ORT_REASON, m);
      assert.match(e.message, /Otherwise, pass 'params' to choose other parameters, or use a method without parameter updates \(source, lame, t3a\)$/, m);
      return true;
    });
  }
  assert.throws(() => createAdapter(saved, 'bn-adapt'), (e: Error) => {
    assert.match(e.message, /^bn-adapt re-estimates the statistics of BatchNormalization layers, and this model has none\. /);
    assert.match(e.message, ORT_REASON);
    assert.match(e.message, /Otherwise, use a method without BatchNorm statistics/);
    return true;
  });
  // with explicit parameters the saved model still adapts (the advice given is one that works)
  await createAdapter(saved, 'tent', { params: ['fc.bias'] }).release();
  assert.ok(peft.withAdapter(saved, 'b', peft.bitfit()).trainableNames().length > 0);
});

test('a model onnxruntime saved at \'basic\' is recognised by its opset imports alone (no blocked or fused op left)', async () => {
  const saved = await savedByOrt(bnCnn(), 'basic');
  assert.ok(!saved.graph.nodes.some((n) => n.domain !== '' || n.opType === 'BatchNormalization'), 'expected only standard ops and no BatchNorm at \'basic\'');
  const hint = foldedNormHint(saved);
  assert.match(hint, /^This model was saved by onnxruntime \(it declares onnxruntime's internal opsets\) and 2 convolutions have a bias/);
  // the same graph without onnxruntime's opset imports reads as an unknown producer's
  const plain = { ...saved, opsets: saved.opsets.filter((o) => o.domain === ''), producerName: 'some-tool' };
  assert.match(foldedNormHint(plain), /^2 convolutions have a bias: if the network had BatchNorm, the exporter or an optimizer folded it/);
  assert.match(foldedNormHint({ ...plain, producerName: 'pytorch' }), /^This model was exported by PyTorch and 2 convolutions have a bias: torch\.onnx\.export's default \(training=TrainingMode\.EVAL\) folds BatchNorm.*training=torch\.onnx\.TrainingMode\.PRESERVE/);
});

test('no folding hint where nothing points to folding: no conv, or convs without a bias', () => {
  const mlp = new ModelBuilder({ opset: 14 }).input('x', 'float32', [2, 4])
    .initializer('w', f32([4, 3], new Float32Array(12).fill(0.1))).initializer('b', f32([3], [0, 1, 2]))
    .node('MatMul', ['x', 'w'], ['h']).node('Add', ['h', 'b'], ['y']).output('y', 'float32', [2, 3]).build();
  const m = new RefitModel(mlp);
  assert.equal(foldedNormHint({ ...mlp, opsets: [...mlp.opsets, { domain: NCHWC_DOMAIN, version: 1 }] }), '', 'an onnxruntime-saved model without convs');
  assert.throws(() => createAdapter(m, 'tent'), /^Error: tent adapts normalization layers \(.*\), and this model has none\. Pass 'params' to choose other parameters, or use a method without parameter updates \(source, lame, t3a\)$/);
  assert.throws(() => createAdapter(m, 'bn-adapt'), /and this model has none\. Use a method without BatchNorm statistics/);
  assert.throws(() => peft.withAdapter(m, 'n', peft.normAffine()), /and this model has none\. Train another parameter group/);
  const noBias = new ModelBuilder({ opset: 14 }).input('x', 'float32', [1, 1, 4, 4])
    .initializer('w', f32([2, 1, 3, 3], new Float32Array(18).fill(0.1)))
    .node('Conv', ['x', 'w'], ['y']).output('y', 'float32', [1, 2, 2, 2]).build();
  assert.equal(foldedNormHint({ ...noBias, producerName: 'pytorch' }), '');
});
