// LRN (Caffe-era local response normalization across channels) written as ops with rules
// (src/autodiff/lower/lrn.ts): the forward equals onnxruntime's LRN kernel (which takes odd
// window sizes only), and gradients pass finite differences.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gradCheck } from '../../src/autodiff/gradcheck.ts';
import { forwardGap, oneOp, lowered, runModel, maxAbsDiff, type OneOp } from './lower-helpers.ts';

const f = (v: number) => ({ kind: 'float', value: v });
const lrn = (shape: number[], attrs: Record<string, unknown>): OneOp => ({ op: 'LRN', opset: 13, feed: '', outputs: ['y'], attrs: attrs as never, inputs: [['x', shape]], scale: 1.5 });
const CASES: [string, OneOp][] = [
  ['size 5, AlexNet\'s alpha 1e-4 and beta 0.75 (defaults), bias 1', lrn([2, 7, 3, 3], { size: 5 })],
  ['size 3, alpha 0.1, beta 0.5, bias 2', lrn([2, 6, 2, 3], { size: 3, alpha: f(0.1), beta: f(0.5), bias: f(2) })],
  ['size 7, wider than half the channels', lrn([1, 5, 2, 2], { size: 7, alpha: f(0.2) })],
  ['size 1', lrn([1, 3, 2, 2], { size: 1, alpha: f(0.5) })],
];

test('LRN written as standard ops equals onnxruntime\'s kernel (≤1e-5)', async () => {
  for (const [label, spec] of CASES) {
    const { gap, count } = await forwardGap(spec);
    assert.equal(count, 1, `${label}: not lowered`);
    assert.ok(gap <= 1e-5, `${label}: max |diff| ${gap}`);
  }
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
