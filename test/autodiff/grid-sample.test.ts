// GridSample (PyTorch's F.grid_sample) written as ops with rules (src/autodiff/lower/grid-sample.ts):
// the forward equals onnxruntime's kernel for bilinear and nearest sampling, zeros and border
// padding, both align_corners, with grid points outside [−1, 1]; gradients to the input and (for
// bilinear) to the grid pass finite differences.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tensor } from '../../src/onnx/tensor.ts';
import { gradCheck, randomProjectionLoss } from '../../src/autodiff/gradcheck.ts';
import { RefitModel } from '../../src/model.ts';
import { oneOp, lowered, runModel, maxAbsDiff, type OneOp, assertLowersLikeOrt } from './lower-helpers.ts';

const N = 2, C = 3, H = 5, W = 6, Ho = 3, Wo = 4;
/** A grid of (x, y) in about [−1.2, 1.2] (some points outside the image), off the pixel boundaries. */
const grid = tensor('float32', [N, Ho, Wo, 2], Array.from({ length: N * Ho * Wo * 2 }, (_, i) => 1.2 * Math.sin(i * 1.7 + 0.3)));
const gs = (attrs: Record<string, unknown>, g: number[] | ReturnType<typeof tensor> = grid): OneOp =>
  ({ op: 'GridSample', opset: 16, feed: '', outputs: ['y'], attrs: attrs as never, inputs: [['x', [N, C, H, W]], ['grid', g]] });

const CASES: [string, OneOp][] = [];
for (const mode of ['bilinear', 'nearest']) for (const padding_mode of ['zeros', 'border']) for (const align_corners of [0, 1]) {
  CASES.push([`${mode}, ${padding_mode}, align_corners ${align_corners}`, gs({ mode, padding_mode, align_corners })]);
}

test('GridSample written as standard ops equals onnxruntime\'s kernel (≤1e-5)', async () => {
  await assertLowersLikeOrt(CASES);
});

test('the check is not vacuous: align_corners and the padding change the output', async () => {
  const ref = oneOp(gs({ mode: 'bilinear', padding_mode: 'zeros', align_corners: 0 }));
  const want = (await runModel(ref.model, ref.feeds)).get('y')!;
  for (const other of [{ align_corners: 1 }, { padding_mode: 'border' }]) {
    const o = oneOp(gs({ mode: 'bilinear', padding_mode: 'zeros', align_corners: 0, ...other }));
    const { model } = await lowered(o.model, o.feeds, o.params);
    assert.ok(maxAbsDiff((await runModel(model, o.feeds)).get('y')!, want) > 1e-3, JSON.stringify(other));
  }
});

test('finite differences through GridSample: to the input, and for bilinear to a trained grid', async () => {
  for (const [label, spec] of CASES) {
    const bilinear = label.startsWith('bilinear');
    // the grid trains too (random, as a parameter) where bilinear weights carry its gradient
    const { model, feeds, params } = oneOp(bilinear ? { ...spec, inputs: [spec.inputs[0]!, ['grid', [N, Ho, Wo, 2]]], scale: 0.6 } : spec);
    for (const r of await gradCheck(model, feeds, { params, outputs: ['y'], maxElements: 24 })) {
      assert.ok(r.relError <= 1e-2, `${label} d/d${r.param}: relative error ${r.relError.toExponential(2)}`);
      assert.ok(r.analyticNorm > 0, `${label} d/d${r.param}: zero gradient`);
    }
  }
});

test('bicubic and reflection padding are refused by name', async () => {
  for (const [attrs, why] of [[{ mode: 'bicubic' }, /mode 'bicubic' is not supported/], [{ padding_mode: 'reflection' }, /padding_mode 'reflection' is not supported/]] as const) {
    const { model, feeds, params } = oneOp(gs(attrs));
    const step = new RefitModel(model, { threads: 1 }).compileTrainStep({ trainable: params, loss: randomProjectionLoss(['y'], 1) });
    await assert.rejects(step.run(feeds), why);
  }
});
