// `refit train --task regress` and `refit eval --task regress` on a depth-estimator-shaped model
// (image in, [N, H, W] values out, height and width dynamic): targets a float .npy of the
// output's shape, the mean squared error as the loss; training learns a map the untrained model
// cannot give, eval reports the squared and absolute errors, and bad targets are refused by name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTrain } from '../../src/cli/train.ts';
import { runEval, formatEval } from '../../src/cli/eval.ts';
import { inspectModel } from '../../src/cli/inspect.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { encodeModel } from '../../src/onnx/proto.ts';
import { f32, i64 } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { npy } from '../helpers/cli.ts';

const dir = mkdtempSync(join(tmpdir(), 'refit-regress-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));
const p = (f: string) => join(dir, f);

/** Conv 2→1 (3×3, pad 1) then squeeze: an [N, H, W] map from [N, 2, H, W] images, weights near zero. */
function depthLike(): Uint8Array {
  const b = new ModelBuilder({ opset: 13 });
  b.input('pixel_values', 'float32', ['batch', 2, 'height', 'width'])
    .initializer('w', f32([1, 2, 3, 3], Array.from({ length: 18 }, (_, i) => ((i * 7) % 5 - 2) / 100))).initializer('b', f32([1], [0]))
    .initializer('axes', i64([1], [1]))
    .node('Conv', ['pixel_values', 'w', 'b'], ['c'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] })
    .node('Squeeze', ['c', 'axes'], ['predicted_depth']).output('predicted_depth', 'float32', ['batch', 'height', 'width']);
  return encodeModel(b.build());
}

const n = 96, H = 6, W = 5;

/** Random 2-channel inputs [n, 2, H, W] and their target map: channel 0 minus half of channel 1, plus 0.5 (a map one 3×3 conv can give exactly). */
function depthData(seed: number): { x: Float32Array; y: Float32Array } {
  const r = new Rng(seed);
  const x = Float32Array.from({ length: n * 2 * H * W }, () => r.normal());
  const y = new Float32Array(n * H * W);
  for (let i = 0; i < n; i++) for (let k = 0; k < H * W; k++) y[i * H * W + k] = x[i * 2 * H * W + k]! - 0.5 * x[i * 2 * H * W + H * W + k]! + 0.5;
  return { x, y };
}

test('refit train --task regress learns a depth-like map (MSE falls over 10×); eval reports it; targets of the wrong shape or non-finite are refused', async () => {
  writeFileSync(p('depth.onnx'), depthLike());
  const { x, y } = depthData(9);
  writeFileSync(p('x.npy'), npy('<f4', [n, 2, H, W], x));
  writeFileSync(p('y.npy'), npy('<f4', [n, H, W], y));
  assert.equal((await inspectModel(p('depth.onnx'))).task?.task, 'regress');
  const before = await runEval(p('depth.onnx'), { task: 'regress', data: p('x.npy'), labels: p('y.npy'), json: true });
  const res = await runTrain(p('depth.onnx'), { task: 'regress', data: p('x.npy'), labels: p('y.npy'), epochs: 30, lr: 0.05, batchSize: 16, valSplit: 0.25, out: p('trained.onnx'), json: true });
  assert.equal(res.task, 'regress');
  assert.ok(Number.isNaN(res.epochs[0]!.trainAccuracy), 'no accuracy for a regression');
  const after = await runEval(p('trained.onnx'), { task: 'regress', data: p('x.npy'), labels: p('y.npy'), json: true });
  assert.ok(after.loss < before.loss / 10, `MSE ${before.loss} → ${after.loss}`);
  assert.ok(after.meanAbsoluteError! < before.meanAbsoluteError!);
  assert.match(formatEval(after), /\(96 samples\): mean squared error [\d.e-]+, mean absolute error [\d.e-]+ per output value/);

  writeFileSync(p('y-wrong.npy'), npy('<f4', [n, H * W], y));
  await assert.rejects(runTrain(p('depth.onnx'), { task: 'regress', data: p('x.npy'), labels: p('y-wrong.npy'), out: p('bad.onnx'), json: true }), /each target is \[30\], and the output 'predicted_depth' gives \[6, 5\] per sample/);
  const nan = y.slice(); nan[7] = NaN;
  writeFileSync(p('y-nan.npy'), npy('<f4', [n, H, W], nan));
  await assert.rejects(runTrain(p('depth.onnx'), { task: 'regress', data: p('x.npy'), labels: p('y-nan.npy'), out: p('bad.onnx'), json: true }), /target 7 of sample 0 is NaN; targets must be finite/);
  await assert.rejects(runTrain(p('depth.onnx'), { task: 'regress', data: p('x.npy'), out: p('bad.onnx'), json: true }), /--task regress learns target values: give them with --labels/);
  assert.ok(!existsSync(p('bad.onnx')), 'a refused run writes nothing');
});

test('refit train --task regress --loss l1 / huber: targets with outliers pull an MSE fit off and an L1 fit hardly; a bad --loss is refused', async () => {
  writeFileSync(p('depth.onnx'), depthLike());
  const { x, y: clean } = depthData(4);
  const noisy = clean.slice();
  for (let i = 0; i < n; i += 12) for (let k = 0; k < H * W; k++) noisy[i * H * W + k]! += 30; // 8 of 96 samples mislabelled by +30
  writeFileSync(p('xo.npy'), npy('<f4', [n, 2, H, W], x));
  writeFileSync(p('yo.npy'), npy('<f4', [n, H, W], noisy));
  writeFileSync(p('yc.npy'), npy('<f4', [n, H, W], clean));
  const cleanError: Record<string, number> = {};
  for (const loss of ['mse', 'l1', 'huber']) {
    await runTrain(p('depth.onnx'), { task: 'regress', loss, data: p('xo.npy'), labels: p('yo.npy'), epochs: 40, lr: 0.05, batchSize: 16, valSplit: 0, out: p(`${loss}.onnx`), json: true });
    cleanError[loss] = (await runEval(p(`${loss}.onnx`), { task: 'regress', data: p('xo.npy'), labels: p('yc.npy'), json: true })).meanAbsoluteError!;
  }
  // MSE's constant term drifts toward the outliers' mean (8/96 · 30 = 2.5); L1 and Huber stay near the clean map.
  assert.ok(cleanError.l1! < cleanError.mse! / 4 && cleanError.huber! < cleanError.mse! / 2, `error against the clean targets: ${JSON.stringify(cleanError)}`);
  await assert.rejects(runTrain(p('depth.onnx'), { task: 'regress', loss: 'l2', data: p('xo.npy'), labels: p('yo.npy'), out: p('bad.onnx'), json: true }), /--loss l2: choose one of mse, l1, smooth-l1, huber/);
  await assert.rejects(runTrain(p('depth.onnx'), { loss: 'l1', data: p('xo.npy'), labels: p('yo.npy'), out: p('bad.onnx'), json: true }), /--loss is for --task regress/);
});
