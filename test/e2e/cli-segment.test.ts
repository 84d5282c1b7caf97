// `refit train --task segment` and `refit eval --task segment` on a segmenter exported by torch.onnx
// (test/fixtures/exports/segmenter: dilated conv, bilinear upsample, logits [N, 4, 8, 8]): images
// from a .npy, masks from a .npy [N, H, W] with void pixels (255) left out; training raises pixel
// accuracy on a task the untrained model cannot do.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTrain } from '../../src/cli/train.ts';
import { runEval } from '../../src/cli/eval.ts';
import { runAdapt } from '../../src/cli/adapt.ts';
import { meanIoU } from '../../src/cli/segment-task.ts';
import { readMaskPng } from '../../src/cli/masks.ts';
import { mkdirSync } from 'node:fs';
import { deflateSync, crc32 } from 'node:zlib';
import { PNG } from 'pngjs';
import { Rng } from '../../src/util/rng.ts';
import { npy } from '../helpers/cli.ts';

const model = new URL('../fixtures/exports/segmenter/model.onnx', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'refit-segment-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));
const p = (f: string) => join(dir, f);

/** n images [3, 8, 8] of noise plus a bright patch in one channel; the mask: that channel's class inside the patch, 3 outside, the first row void. */
function scenes(n: number, seed: number): { x: Float32Array; y: Uint8Array } {
  const r = new Rng(seed), x = new Float32Array(n * 3 * 64), y = new Uint8Array(n * 64);
  for (let i = 0; i < n; i++) {
    const c = Math.floor(r.next() * 3), top = Math.floor(r.next() * 4), left = Math.floor(r.next() * 4);
    for (let k = 0; k < 3 * 64; k++) x[i * 192 + k] = 0.3 * (r.next() - 0.5);
    for (let h = 0; h < 8; h++) for (let w = 0; w < 8; w++) {
      const inside = h >= top && h < top + 4 && w >= left && w < left + 4;
      if (inside) x[i * 192 + c * 64 + h * 8 + w]! += 2;
      y[i * 64 + h * 8 + w] = h === 0 ? 255 : inside ? c : 3;
    }
  }
  return { x, y };
}

test('a segmenter trains on masks (void pixels left out) and pixel accuracy rises; eval agrees', async () => {
  const { x, y } = scenes(200, 1);
  writeFileSync(p('x.npy'), npy('<f4', [200, 3, 8, 8], x));
  writeFileSync(p('y.npy'), npy('|u1', [200, 8, 8], y));
  const before = await runEval(model, { task: 'segment', data: p('x.npy'), labels: p('y.npy'), json: true });
  const r = await runTrain(model, { task: 'segment', data: p('x.npy'), labels: p('y.npy'), epochs: 6, lr: 0.01, batchSize: 16, out: p('tuned.onnx'), json: true });
  assert.equal(r.task, 'segment');
  const after = await runEval(p('tuned.onnx'), { task: 'segment', data: p('x.npy'), labels: p('y.npy'), json: true });
  assert.equal(after.task, 'segment');
  // Measured: pixel accuracy 73.4 % → 80.9 % (most pixels are background), mean IoU 18.3 % → 41.2 %, loss 1.24 → 0.37
  assert.ok(after.accuracy > before.accuracy + 0.05 && after.loss < before.loss / 2, `pixel accuracy ${before.accuracy} → ${after.accuracy}, loss ${before.loss} → ${after.loss}`);
  assert.ok(after.meanIoU! > before.meanIoU! + 0.1, `mean IoU ${before.meanIoU} → ${after.meanIoU}`);
});

test('--task segment: masks of the wrong count, size or values, and misplaced flags get one clear error; nothing written', async () => {
  const { x, y } = scenes(10, 2);
  writeFileSync(p('x10.npy'), npy('<f4', [10, 3, 8, 8], x));
  writeFileSync(p('y10.npy'), npy('|u1', [10, 8, 8], y));
  writeFileSync(p('y9.npy'), npy('|u1', [9, 8, 8], y.slice(0, 9 * 64)));
  writeFileSync(p('y4x4.npy'), npy('|u1', [10, 4, 4], y.slice(0, 160)));
  const bad = y.slice(); bad[70] = 7;
  writeFileSync(p('y7.npy'), npy('|u1', [10, 8, 8], bad));
  const base = { task: 'segment', data: p('x10.npy'), labels: p('y10.npy'), out: p('x.onnx'), json: true };
  const cases: [Parameters<typeof runTrain>[1], RegExp][] = [
    [{ ...base, labels: undefined }, /give the masks with --labels/],
    [{ ...base, labels: p('y9.npy') }, /masks must have shape \[10, H, W\] for the 10 images/],
    [{ ...base, labels: p('y4x4.npy') }, /masks are 4×4, and the model's logits are 8×8/],
    [{ ...base, labels: p('y7.npy') }, /pixel 6 of mask 1 is 7, not a class in \[0, 4\) nor the ignore index 255/],
    [{ ...base, task: 'classify', ignoreIndex: 0 }, /--ignore-index is for --task segment/],
  ];
  for (const [o, re] of cases) await assert.rejects(runTrain(model, o), re);
  assert.ok(!existsSync(p('x.onnx')));
});

test('mean IoU: per class intersection over union, averaged over the classes labelled or predicted', () => {
  // 3 classes; class 2 neither labelled nor predicted (left out). Rows: true class, columns: predicted.
  const confusion = Float64Array.from([
    8, 2, 0,
    1, 4, 0,
    0, 0, 0,
  ]);
  // class 0: 8 / (10 + 9 − 8) = 8/11; class 1: 4 / (5 + 6 − 4) = 4/7
  assert.ok(Math.abs(meanIoU(confusion, 3) - (8 / 11 + 4 / 7) / 2) < 1e-12);
  assert.ok(Number.isNaN(meanIoU(new Float64Array(4), 2)));
});

/** A palette PNG (colour type 3) of `indices` [h·w], with `palette` [[r, g, b], …], written chunk by chunk. */
function palettePng(w: number, h: number, indices: number[], palette: number[][]): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const crc = Buffer.alloc(4); crc.writeUInt32BE(crc32(td) >>> 0);
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0); ihdr.writeUInt32BE(h, 4); ihdr[8] = 8; ihdr[9] = 3;
  const rows = Buffer.concat(Array.from({ length: h }, (_, y) => Buffer.from([0, ...indices.slice(y * w, (y + 1) * w)])));
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('PLTE', Buffer.from(palette.flat())), chunk('IDAT', deflateSync(rows)), chunk('IEND', Buffer.alloc(0))]);
}

/** An 8-bit grayscale PNG of `values` [h·w]. */
function grayPng(w: number, h: number, values: ArrayLike<number>): Buffer {
  const png = new PNG({ width: w, height: h, colorType: 0, inputColorType: 0, bitDepth: 8 });
  png.data = Buffer.from(Array.from(values));
  return PNG.sync.write(png, { colorType: 0, inputColorType: 0, bitDepth: 8 });
}

test('PNG masks: a palette mask gives its palette indices (VOC), a grayscale one its values; an RGB mask and an ambiguous palette are refused', () => {
  mkdirSync(p('png'), { recursive: true });
  // VOC's first colours and its void colour at index 255
  const palette = [[0, 0, 0], [128, 0, 0], [0, 128, 0], ...Array.from({ length: 252 }, (_, k) => [k, 1, 2]), [224, 224, 192]];
  writeFileSync(p('png/voc.png'), palettePng(3, 2, [0, 1, 2, 255, 1, 0], palette));
  assert.deepEqual([...readMaskPng(p('png/voc.png')).values], [0, 1, 2, 255, 1, 0]);
  writeFileSync(p('png/gray.png'), grayPng(3, 2, [3, 0, 255, 1, 2, 3]));
  assert.deepEqual([...readMaskPng(p('png/gray.png')).values], [3, 0, 255, 1, 2, 3]);
  writeFileSync(p('png/twice.png'), palettePng(2, 1, [0, 2], [[0, 0, 0], [5, 5, 5], [5, 5, 5]]));
  assert.throws(() => readMaskPng(p('png/twice.png')), /palette entries 1 and 2 have the same colour, so pixel 1 does not say its class/);
  const rgb = new PNG({ width: 2, height: 1 });
  rgb.data = Buffer.from([1, 2, 3, 255, 4, 5, 6, 255]);
  writeFileSync(p('png/rgb.png'), PNG.sync.write(rgb));
  assert.throws(() => readMaskPng(p('png/rgb.png')), /an RGB mask has no class index/);
});

test('--task segment on an image folder with a folder of PNG masks matched by name', async () => {
  const { x, y } = scenes(24, 3);
  mkdirSync(p('imgs'), { recursive: true });
  mkdirSync(p('masks'), { recursive: true });
  for (let i = 0; i < 24; i++) {
    const img = new PNG({ width: 8, height: 8 });
    for (let k = 0; k < 64; k++) for (let c = 0; c < 3; c++) img.data[4 * k + c] = Math.max(0, Math.min(255, Math.round(128 + 60 * x[i * 192 + c * 64 + k]!)));
    for (let k = 0; k < 64; k++) img.data[4 * k + 3] = 255;
    writeFileSync(p(`imgs/scene-${String(i).padStart(2, '0')}.png`), PNG.sync.write(img));
    writeFileSync(p(`masks/scene-${String(i).padStart(2, '0')}.png`), grayPng(8, 8, y.subarray(i * 64, (i + 1) * 64)));
  }
  const r = await runTrain(model, { task: 'segment', data: p('imgs'), labels: p('masks'), epochs: 2, batchSize: 8, out: p('from-png.onnx'), json: true });
  assert.equal(r.data.samples, 24);
  assert.ok(r.epochs.every((e) => Number.isFinite(e.trainLoss)));
  rmSync(p('masks/scene-05.png'));
  await assert.rejects(runTrain(model, { task: 'segment', data: p('imgs'), labels: p('masks'), out: p('y.onnx'), json: true }), /no mask for image '.*scene-05.png' \(expected scene-05.png\)/);
});

test('refit adapt on a segmenter: bn-adapt and Tent cut the pixel error of a low-contrast stream; methods for classifiers are refused', async () => {
  const { x, y } = scenes(200, 4);
  writeFileSync(p('train-x.npy'), npy('<f4', [200, 3, 8, 8], x));
  writeFileSync(p('train-y.npy'), npy('|u1', [200, 8, 8], y));
  await runTrain(model, { task: 'segment', data: p('train-x.npy'), labels: p('train-y.npy'), epochs: 6, lr: 0.01, batchSize: 16, out: p('seg.onnx'), json: true });
  const s = scenes(96, 5);
  const shifted = s.x.map((v) => 0.3 * v); // a low-contrast camera
  writeFileSync(p('stream.npy'), npy('<f4', [96, 3, 8, 8], shifted));
  writeFileSync(p('stream-y.npy'), npy('|u1', [96, 8, 8], s.y));
  const errors: Record<string, [number, number]> = {};
  for (const method of ['source', 'bn-adapt', 'tent']) {
    const r = await runAdapt(p('seg.onnx'), { method, stream: p('stream.npy'), labels: p('stream-y.npy'), batchSize: 32, out: p(`${method}.csv`), json: true });
    errors[method] = [r.error!, r.sourceError!];
    assert.equal(r.pixels, 96 * 56);
  }
  // Measured: pixel error 24.0 % unadapted, 18.4 % with bn-adapt and with Tent (its paper's lr is small)
  assert.ok(errors['bn-adapt']![0] < errors.source![0] - 0.03 && errors.tent![0] < errors.source![0] - 0.03, JSON.stringify(errors));
  assert.equal(errors.source![0], errors.source![1], 'source is the unadapted model');
  const rows = readFileSync(p('tent.csv'), 'utf8').trim().split('\n');
  assert.equal(rows[0], 'id,confidence,pixel_accuracy');
  assert.equal(rows.length, 97);
  await assert.rejects(runAdapt(p('seg.onnx'), { method: 'eata', stream: p('stream.npy'), out: p('x.csv'), json: true }), /--method eata adapts classifiers; a segmenter's dense logits \[batch, classes, H, W\] take source, bn-adapt, tent, actmad/);
  // ActMAD with the clean training images as --source (its objective never reads the logits)
  const act = await runAdapt(p('seg.onnx'), { method: 'actmad', source: p('train-x.npy'), stream: p('stream.npy'), labels: p('stream-y.npy'), batchSize: 32, out: p('actmad.csv'), json: true });
  assert.equal(act.pixels, 96 * 56);
  assert.ok(Number.isFinite(act.error!));
  await assert.rejects(runAdapt(p('seg.onnx'), { method: 'tent', stream: p('stream.npy'), report: p('r.html'), out: p('x.csv'), json: true }), /--report: not for a segmenter/);
});
