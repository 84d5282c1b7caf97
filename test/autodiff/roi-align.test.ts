// RoiAlign written as ops with rules (src/autodiff/lower/roi-align.ts): the forward equals
// onnxruntime's kernel for both coordinate modes and both opsets, boxes partly outside the map
// and smaller than a pixel included; gradients to the features and to the boxes pass finite
// differences; the forms it does not cover are refused by name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gradCheck } from '../../src/autodiff/gradcheck.ts';
import { oneOp, assertLowersLikeOrt, type OneOp } from './lower-helpers.ts';
import { RefitModel } from '../../src/model.ts';
import { randomProjectionLoss } from '../../src/autodiff/gradcheck.ts';
import { f32, i64 } from '../../src/onnx/tensor.ts';

const s = (v: string) => ({ kind: 'string' as const, value: v });
// x1, y1, x2, y2 in input pixels (spatial_scale 0.5 maps them onto the 8×10 map)
const boxes = f32([5, 4], [
  1.3, 2.1, 13.7, 11.2, //   inside
  -3.1, -2.5, 6.4, 5.3, //   past the top-left corner
  12.2, 9.7, 24.5, 19.9, //  past the bottom-right corner
  7.1, 7.3, 7.6, 7.9, //     smaller than a pixel
  0.4, 14.8, 19.1, 15.9, //  a thin strip
]);
const roi = (attrs: Record<string, unknown>, opset = 16): OneOp => ({
  op: 'RoiAlign', opset, outputs: ['y'], feed: '', attrs: { spatial_scale: { kind: 'float', value: 0.5 }, ...attrs } as never,
  inputs: [['x', [2, 3, 8, 10]], ['rois', boxes], ['batch', i64([5], [0, 1, 1, 0, 1])]],
});
const CASES: [string, OneOp][] = [
  ['opset 16, half_pixel (the default), 3×4 bins, 2 samples a side', roi({ output_height: 3, output_width: 4, sampling_ratio: 2 })],
  ['opset 16, output_half_pixel, 7×7 bins, 2 samples (torchvision\'s)', roi({ output_height: 7, output_width: 7, sampling_ratio: 2, coordinate_transformation_mode: s('output_half_pixel') })],
  ['opset 13 (RoiAlign-10: output_half_pixel), 2×2 bins, 3 samples', roi({ output_height: 2, output_width: 2, sampling_ratio: 3 }, 13)],
];

test('RoiAlign written as standard ops equals onnxruntime\'s kernel (≤ 1e-5)', async () => {
  await assertLowersLikeOrt(CASES);
});

test('finite differences through RoiAlign: the features and the boxes', async () => {
  for (const [label, spec] of CASES) {
    const { model, feeds } = oneOp(spec);
    // the boxes as a parameter too (they carry no gradient into the sample grid's Floor, only its bilinear weights)
    for (const r of await gradCheck(model, feeds, { params: ['x', 'rois'], eps: 1e-3, seed: 4 })) {
      assert.ok(r.relError < 1e-2, `${label}, ${r.param}: ${r.relError}`);
      assert.ok(r.analyticNorm > 0, `${label}, ${r.param}: no gradient`);
    }
  }
});

test('sampling_ratio 0 and mode max are refused by name', async () => {
  for (const [attrs, want] of [[{ sampling_ratio: 0 }, /sampling_ratio 0/], [{ sampling_ratio: 2, mode: s('max') }, /mode 'max' is not supported/]] as const) {
    const { model, feeds } = oneOp(roi(attrs));
    const step = new RefitModel(model, { threads: 1 }).compileTrainStep({ trainable: ['x'], loss: randomProjectionLoss(['y'], 1) });
    await assert.rejects(step.run(feeds), want);
  }
});

test('a stopGradient on the edge into the RoiAlign node outlives its lowering: the boxes get no gradient, the features the same', async () => {
  const { model, feeds } = oneOp(CASES[1]![1]);
  const m = new RefitModel(model, { threads: 1 });
  const loss = randomProjectionLoss(['y'], 1);
  const free = await m.compileTrainStep({ trainable: ['x', 'rois'], loss }).run(feeds);
  const cut = await m.compileTrainStep({ trainable: ['x', 'rois'], loss, stopGradient: [{ tensor: 'rois', into: 'node_under_test' }] }).run(feeds);
  assert.ok(free.grads.get('rois')!.some((v) => v !== 0));
  assert.ok(cut.grads.get('rois')!.every((v) => v === 0));
  assert.deepEqual([...cut.grads.get('x')!], [...free.grads.get('x')!]);
});

test('inspect notes a torch export at opset 16 whose RoiAlign has no coordinate_transformation_mode (torchvision 0.14 pools half a pixel off)', async () => {
  const { inspectModel } = await import('../../src/cli/inspect.ts');
  const { encodeModel } = await import('../../src/onnx/proto.ts');
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(join(tmpdir(), 'refit-roi-'));
  try {
    const notes = [];
    for (const mode of [undefined, 'output_half_pixel']) {
      const { model } = oneOp(roi({ output_height: 2, output_width: 2, sampling_ratio: 2, ...(mode ? { coordinate_transformation_mode: s(mode) } : {}) }));
      model.producerName = 'pytorch';
      writeFileSync(join(dir, 'm.onnx'), encodeModel(model));
      notes.push((await inspectModel(join(dir, 'm.onnx'))).exportNotes ?? []);
    }
    assert.match(notes[0]![0] ?? '', /1 RoiAlign node \('node_under_test'\) has no coordinate_transformation_mode, which at opset 16 means half_pixel/);
    assert.deepEqual(notes[1], []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
