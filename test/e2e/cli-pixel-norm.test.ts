// --mean and --std: pixel data (IDX, uint8 .npy, images) normalised per channel after scaling to
// [0, 1], as torchvision's ToTensor and Normalize do, for every command that reads data; float
// data is refused with them, since it is fed as it is.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readDataset } from '../../src/cli/data-files.ts';
import { pixelNorm } from '../../src/cli/common.ts';
import { runEval } from '../../src/cli/eval.ts';
import { runAdapt } from '../../src/cli/adapt.ts';
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';
import { npy, root } from '../helpers/cli.ts';

const dir = mkdtempSync(join(tmpdir(), 'refit-pixels-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));
const p = (f: string) => join(dir, f);
const cnn = join(root, 'models/fmnist-cnn.onnx');

test('per-channel normalisation of uint8 pixels; one value for every channel; float data and bad values refused', () => {
  const px = Uint8Array.from({ length: 2 * 3 * 4 }, (_, i) => (i * 11) % 256); // 2 samples [3, 2, 2]
  writeFileSync(p('rgb.npy'), npy('|u1', [2, 3, 2, 2], px));
  const spec = { input: 'x', dims: [3, 2, 2] };
  const mean = [0.5, 0.25, 0], std = [0.5, 0.25, 2];
  const ds = readDataset(p('rgb.npy'), { ...spec, pixels: { mean, std } });
  ds.x.forEach((v, i) => {
    const c = Math.floor((i % 12) / 4);
    assert.ok(Math.abs(v - (px[i]! / 255 - mean[c]!) / std[c]!) < 1e-6, `value ${i}`);
  });
  const one = readDataset(p('rgb.npy'), { ...spec, pixels: { mean: [0.5], std: [0.25] } });
  one.x.forEach((v, i) => assert.ok(Math.abs(v - (px[i]! / 255 - 0.5) / 0.25) < 1e-6));

  writeFileSync(p('f32.npy'), npy('<f4', [2, 3, 2, 2], Float32Array.from(px, (v) => v / 255)));
  assert.throws(() => readDataset(p('f32.npy'), { ...spec, pixels: { mean, std } }), /f32\.npy: --mean and --std normalise pixel data \(IDX, uint8 \.npy, images\), and this float \.npy data is fed as it is/);
  assert.throws(() => readDataset(p('rgb.npy'), { input: 'x', dims: [3, 2, 2], pixels: { mean: [0.1, 0.2], std: [1, 1] } }), /--mean and --std give 2 channels, but the samples of .* have shape \[3, 2, 2\] \(3 channels first\)/);

  assert.equal(pixelNorm({}), undefined);
  assert.deepEqual(pixelNorm({ mean: '0.485, 0.456,0.406', std: '0.229,0.224,0.225' }), { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] });
  assert.throws(() => pixelNorm({ mean: '0.5' }), /--mean and --std go together/);
  assert.throws(() => pixelNorm({ mean: '0.5', std: '0' }), /--std must be comma-separated positive numbers, got "0"/);
  assert.throws(() => pixelNorm({ mean: '0.5,x', std: '1,1' }), /--mean must be comma-separated numbers, got "x"/);
  assert.throws(() => pixelNorm({ mean: '0.5,0.5', std: '1' }), /--mean has 2 values and --std 1/);
});

test('eval and adapt with --mean/--std on uint8 data score exactly as the same data normalised beforehand', async () => {
  const fm = loadFashionMnist('test', { limit: 64 });
  const mean = 0.3, std = 0.6;
  writeFileSync(p('x-u8.npy'), npy('|u1', [64, 1, 28, 28], Uint8Array.from(fm.images, (v) => Math.round(v * 255))));
  const u8 = new Uint8Array(readFileSync(p('x-u8.npy')).subarray(-64 * 784));
  writeFileSync(p('x-norm.npy'), npy('<f4', [64, 1, 28, 28], Float32Array.from(u8, (v) => (v / 255 - mean) / std)));
  writeFileSync(p('y.npy'), npy('<i8', [64], BigInt64Array.from(fm.labels, (v) => BigInt(v))));
  const a = await runEval(cnn, { data: p('x-u8.npy'), labels: p('y.npy'), mean: String(mean), std: String(std), json: true });
  const b = await runEval(cnn, { data: p('x-norm.npy'), labels: p('y.npy'), json: true });
  const plain = await runEval(cnn, { data: p('x-u8.npy'), labels: p('y.npy'), json: true });
  assert.ok(Math.abs(a.loss - b.loss) < 1e-5, `${a.loss} against ${b.loss}`);
  assert.ok(Math.abs(a.loss - plain.loss) > 1e-2, 'the normalisation was applied');
  const c = await runAdapt(cnn, { method: 'bn-adapt', stream: p('x-u8.npy'), labels: p('y.npy'), mean: String(mean), std: String(std), out: p('a.csv'), json: true });
  const d = await runAdapt(cnn, { method: 'bn-adapt', stream: p('x-norm.npy'), labels: p('y.npy'), out: p('b.csv'), json: true });
  // The same predictions; confidences equal to float rounding (the two normalise in a different order).
  const rows = (f: string) => readFileSync(p(f), 'utf8').trim().split('\n').slice(1).map((l) => l.split(','));
  const [ra, rb] = [rows('a.csv'), rows('b.csv')];
  assert.equal(ra.length, 64);
  ra.forEach((r, i) => {
    assert.deepEqual([r[0], r[1], r[3]], [rb[i]![0], rb[i]![1], rb[i]![3]]);
    assert.ok(Math.abs(Number(r[2]) - Number(rb[i]![2])) < 1e-5);
  });
  assert.equal(c.error, d.error);
  await assert.rejects(runEval(cnn, { data: p('x-norm.npy'), labels: p('y.npy'), mean: '0.5', std: '0.5', json: true }), /float \.npy data is fed as it is/);
});
