// LRN (Caffe-era local response normalization across channels) written as ops with rules
// (src/autodiff/lower/lrn.ts): the forward equals onnxruntime's LRN kernel (which takes odd
// window sizes only), and gradients pass finite differences.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gradCheck } from '../../src/autodiff/gradcheck.ts';
import { oneOp, lowered, runModel, maxAbsDiff, type OneOp, assertLowersLikeOrt } from './lower-helpers.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { encodeModel } from '../../src/onnx/proto.ts';
import { opsetVersion } from '../../src/onnx/ir.ts';
import { f32, i64 } from '../../src/onnx/tensor.ts';
import { loadModel } from '../../src/model.ts';
import * as losses from '../../src/train/losses.ts';
import { Trainer } from '../../src/train/trainer.ts';
import * as optim from '../../src/train/optim/index.ts';
import { Rng } from '../../src/util/rng.ts';

const f = (v: number) => ({ kind: 'float' as const, value: v });
const lrn = (shape: number[], attrs: Record<string, unknown>): OneOp => ({ op: 'LRN', opset: 13, feed: '', outputs: ['y'], attrs: attrs as never, inputs: [['x', shape]], scale: 1.5 });
const CASES: [string, OneOp][] = [
  ['size 5, AlexNet\'s alpha 1e-4 and beta 0.75 (defaults), bias 1', lrn([2, 7, 3, 3], { size: 5 })],
  ['size 3, alpha 0.1, beta 0.5, bias 2', lrn([2, 6, 2, 3], { size: 3, alpha: f(0.1), beta: f(0.5), bias: f(2) })],
  ['size 7, wider than half the channels', lrn([1, 5, 2, 2], { size: 7, alpha: f(0.2) })],
  ['size 1', lrn([1, 3, 2, 2], { size: 1, alpha: f(0.5) })],
];

test('LRN written as standard ops equals onnxruntime\'s kernel (≤1e-5)', async () => {
  await assertLowersLikeOrt(CASES);
});

test('the check is not vacuous: the window\'s width changes the output (size 5 written out against onnxruntime\'s size 3, alpha per channel the same)', async () => {
  const three = oneOp(lrn([2, 6, 2, 3], { size: 3, alpha: f(0.3) }));
  const want = (await runModel(three.model, three.feeds)).get('y')!;
  const five = oneOp(lrn([2, 6, 2, 3], { size: 5, alpha: f(0.5) }));
  const { model } = await lowered(five.model, five.feeds, five.params);
  assert.ok(maxAbsDiff((await runModel(model, five.feeds)).get('y')!, want) > 1e-3);
});

test('finite differences through LRN', async () => {
  for (const [label, spec] of CASES.slice(0, 3)) {
    const { model, feeds, params } = oneOp({ ...spec, attrs: { ...(spec.attrs as object), alpha: f(0.3) } as never });
    // eps 1e-2: at 1e-3 float32 rounding of the central differences alone reaches 1 % here
    for (const r of await gradCheck(model, feeds, { params, outputs: ['y'], maxElements: 24, eps: 1e-2 })) {
      assert.ok(r.relError <= 1e-2, `${label}: relative error ${r.relError.toExponential(2)}`);
      assert.ok(r.analyticNorm > 0);
    }
  }
});

test('a Caffe-era model at opset 8 (Conv, LRN, MaxPool, Gemm, as the ONNX model zoo\'s CaffeNet) loads, is upgraded, and trains through its LRN', async () => {
  const b = new ModelBuilder({ opset: 8 });
  const r = new Rng(9);
  const w = (dims: number[]) => f32(dims, Array.from({ length: dims.reduce((a, c) => a * c) }, () => 0.5 * (r.next() - 0.5)));
  b.input('data', 'float32', ['N', 3, 8, 8]);
  b.initializer('conv1_w', w([6, 3, 3, 3]));
  b.initializer('conv1_b', w([6]));
  b.initializer('fc_w', w([5, 6 * 4 * 4]));
  b.initializer('fc_b', w([5]));
  b.node('Conv', ['data', 'conv1_w', 'conv1_b'], ['c1'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] });
  b.node('Relu', ['c1'], ['r1']);
  b.node('LRN', ['r1'], ['n1'], { size: 5, alpha: f(1e-2), beta: f(0.75), bias: f(1) });
  b.node('MaxPool', ['n1'], ['p1'], { kernel_shape: [2, 2], strides: [2, 2] });
  b.node('Flatten', ['p1'], ['f1'], { axis: 1 });
  b.node('Gemm', ['f1', 'fc_w', 'fc_b'], ['logits'], { transB: 1 });
  b.output('logits', 'float32', ['N', 5]);
  const model = await loadModel(encodeModel(b.build()), { threads: 1 });
  assert.equal(opsetVersion(model.ir), 13, 'upgraded on load');
  const x = f32([2, 3, 8, 8], Array.from({ length: 384 }, (_, i) => Math.sin(i * 0.7)));
  const feeds = { data: x, y: i64([2], [1, 3]) };
  const step = model.compileTrainStep({ trainable: 'all', loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }) });
  const first = await step.run(feeds);
  assert.ok(first.grads.get('conv1_w')!.some((v) => v !== 0), 'the conv before the LRN gets a gradient');
  const trainer = new Trainer(step, optim.sgd({ lr: 0.5 }));
  let last = first.loss;
  for (let i = 0; i < 10; i++) last = (await trainer.step(feeds)).loss;
  assert.ok(last < first.loss / 2, `loss ${first.loss} → ${last}`);
  await step.release();
  await model.release();
});
