// Slices and resizes whose geometry the data decide, as torchvision's Mask R-CNN pastes each mask:
// resized to its box's size, then sliced into the image at the box's place. A compiled step has
// fixed shapes, so the sizes are its output dims; the place is computed each run: dX is dY padded
// by pads computed at run time (rules/indexing.ts), and Resize's gradient reads its scales off the
// output dims (rules/resize.ts). Both against finite differences.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RefitModel } from '../../src/model.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { randomProjectionLoss } from '../../src/autodiff/gradcheck.ts';
import { f32, i64, type Tensor } from '../../src/onnx/tensor.ts';

const values = (n: number, seed: number) => Array.from({ length: n }, (_, i) => Math.sin(i * 0.7 + seed));

async function centralDifferences(model: RefitModel, feeds: Record<string, Tensor>, param: string, out: string): Promise<{ analytic: Float32Array; numeric: number[] }> {
  const step = model.compileTrainStep({ trainable: [param], loss: randomProjectionLoss([out], 1) });
  const analytic = (await step.run(feeds)).grads.get(param)!;
  const w = model.param(param).data as Float32Array;
  const numeric: number[] = [];
  for (let i = 0; i < w.length; i++) {
    const o = w[i]!;
    w[i] = o + 1e-2; model.touch([param]);
    const lp = (await step.run(feeds)).loss;
    w[i] = o - 1e-2; model.touch([param]);
    const lm = (await step.run(feeds)).loss;
    w[i] = o; model.touch([param]);
    numeric.push((lp - lm) / 2e-2);
  }
  await step.release();
  return { analytic, numeric };
}

const close = (a: Float32Array, b: number[]) => a.every((v, i) => Math.abs(v - b[i]!) <= 1e-3 * (1 + Math.abs(b[i]!)));

test('a Slice whose starts are fed: the gradient lands where each run\'s starts put the window', async () => {
  const b = new ModelBuilder({ opset: 13 });
  b.input('at', 'int64', [2]);
  b.initializer('w', f32([1, 2, 6, 7], values(84, 1))).initializer('four', i64([2], [4, 3])).initializer('axes', i64([2], [2, 3]));
  b.node('Add', ['at', 'four'], ['end']).node('Slice', ['w', 'at', 'end', 'axes'], ['y']).output('y');
  const model = new RefitModel(b.build(), { threads: 1 });
  for (const at of [[0, 0], [2, 4], [-5, 1]]) { // -5: from the end (row 1 to row 5)
    const { analytic, numeric } = await centralDifferences(model, { at: i64([2], at) }, 'w', 'y');
    assert.ok(close(analytic, numeric), `starts [${at}]`);
    assert.equal(analytic.filter((v) => v !== 0).length, 2 * 4 * 3, `starts [${at}]: one window of 2×4×3`);
  }
});

test('a Resize whose sizes the data decide (Ceil of fed values): the gradient of the bilinear resize at the compiled size', async () => {
  const b = new ModelBuilder({ opset: 13 });
  b.input('hw', 'float32', [2]);
  b.initializer('w', f32([1, 2, 4, 5], values(40, 2))).initializer('lead', i64([2], [1, 2]));
  b.node('Ceil', ['hw'], ['up']).node('Cast', ['up'], ['hw64'], { to: 7 }).node('Concat', ['lead', 'hw64'], ['sizes'], { axis: 0 });
  b.node('Resize', ['w', '', '', 'sizes'], ['y'], { mode: { kind: 'string', value: 'linear' } as never }).output('y');
  const model = new RefitModel(b.build(), { threads: 1 });
  for (const hw of [[6.2, 7.5], [3.1, 9.9]]) {
    const { analytic, numeric } = await centralDifferences(model, { hw: f32([2], hw) }, 'w', 'y');
    assert.ok(close(analytic, numeric), `sizes from [${hw}]`);
  }
});
