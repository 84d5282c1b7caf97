// How the CLI prepares pixel data as a model's own transforms would. --mean and --std: pixel data
// (IDX, uint8 .npy, images) normalised per channel after scaling to [0, 1], as torchvision's
// ToTensor and Normalize do; float data is refused with them, since it is fed as it is. --resize:
// image folders of another size brought to the model's, as torchvision's Resize + CenterCrop on
// PIL images (checked against PIL's output in test/fixtures/resize).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { readDataset, parseNpy } from '../../src/cli/data-files.ts';
import { pixelNorm, loadData, modelIO } from '../../src/cli/common.ts';
import { readHfPreprocessor } from '../../src/cli/hf-preprocessor.ts';
import { parseResize, resizeImage } from '../../src/data/image-resize.ts';
import { loadModel } from '../../src/model.ts';
import { runEval } from '../../src/cli/eval.ts';
import { runAdapt } from '../../src/cli/adapt.ts';
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';
import { npy, root } from '../helpers/cli.ts';

const dir = mkdtempSync(join(tmpdir(), 'refit-preprocess-'));
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

const fixture = (f: string) => new URL(`../fixtures/resize/${f}`, import.meta.url).pathname;

test('--resize matches PIL\'s bilinear resize (torchvision\'s Resize + CenterCrop, and a stretch) within a grey level on average', async () => {
  for (const [mode, ref] of [[32, 'pil-resize32-crop28.npy'], ['stretch', 'pil-stretch28.npy']] as const) {
    const img = await resizeImage(fixture('source.png'), 28, 28, mode);
    const want = parseNpy(readFileSync(fixture(ref)), ref).values; // [3, 28, 28]
    let sum = 0, max = 0;
    for (let c = 0; c < 3; c++) {
      for (let q = 0; q < 784; q++) {
        const d = Math.abs(img.rgba[4 * q + c]! - want[c * 784 + q]!);
        sum += d;
        max = Math.max(max, d);
      }
    }
    // Measured: mean 0.24 / max 1 (crop), 0.35 / 5 (stretch); a wrong crop offset or size gives tens.
    assert.ok(sum / (3 * 784) < 1 && max <= 8, `${mode}: mean ${sum / (3 * 784)}, max ${max}`);
  }
  assert.equal(parseResize('256'), 256);
  assert.equal(parseResize(undefined), undefined);
  assert.throws(() => parseResize('big'), /--resize must be a size in pixels .* or 'stretch', got "big"/);
  await assert.rejects(resizeImage(fixture('source.png'), 28, 28, 20), /source\.png: --resize 20 makes it 27×20, smaller than the model's 28×28; give a size of at least 28/);
});

/** 48 Fashion-MNIST test images as 56×64 PNGs in class folders: each pixel 2×2, 4 black rows above and below. */
function upscaledFolder(fm = loadFashionMnist('test', { limit: 48 })): string {
  const big = p('big');
  if (existsSync(big)) return big;
  for (let i = 0; i < 48; i++) {
    const cls = join(big, String(fm.labels[i]));
    mkdirSync(cls, { recursive: true });
    const png = new PNG({ width: 56, height: 64 });
    for (let y = 0; y < 64; y++) {
      for (let x = 0; x < 56; x++) {
        const v = y >= 4 && y < 60 ? Math.round(fm.images[i * 784 + Math.floor((y - 4) / 2) * 28 + Math.floor(x / 2)]! * 255) : 0;
        png.data.set([v, v, v, 255], 4 * (y * 56 + x));
      }
    }
    writeFileSync(join(cls, `img${i}.png`), PNG.sync.write(png));
  }
  return big;
}

test('eval with --resize on a folder of upscaled images scores as the originals; misuse is refused', async () => {
  const fm = loadFashionMnist('test', { limit: 48 });
  const big = upscaledFolder(fm);
  writeFileSync(p('x48.npy'), npy('<f4', [48, 1, 28, 28], fm.images.subarray(0, 48 * 784)));
  writeFileSync(p('y48.npy'), npy('<i8', [48], BigInt64Array.from(fm.labels.subarray(0, 48), (v) => BigInt(v))));
  // Resize(28) + CenterCrop(28): 56×64 → 28×32, rows 2–29, which is the original image again.
  const model = await loadModel(cnn);
  const ds = await loadData(big, modelIO(model, undefined, { resize: 28 }));
  await model.release();
  assert.deepEqual(ds.sampleShape, [1, 28, 28]);
  let sum = 0;
  for (let k = 0; k < ds.n; k++) {
    const i = Number(/img(\d+)\.png$/.exec(ds.ids[k]!)![1]);
    for (let q = 0; q < 784; q++) sum += Math.abs(ds.x[k * 784 + q]! - fm.images[i * 784 + q]!);
  }
  // Measured: 6.6 grey levels on average (the linear kernel blurs across the 2×2 blocks, as PIL's
  // bilinear does when it shrinks); the originals shifted by 2 rows differ by 26.
  assert.ok((sum / (48 * 784)) * 255 < 12, `mean difference ${(sum / (48 * 784)) * 255} grey levels`);
  const original = await runEval(cnn, { data: p('x48.npy'), labels: p('y48.npy'), json: true });
  const resized = await runEval(cnn, { data: big, resize: '28', json: true });
  assert.equal(resized.samples, 48);
  // Measured: 42 of 48 against 43 of 48.
  assert.ok(Math.abs(resized.accuracy - original.accuracy) <= 2 / 48 + 1e-9, `resized ${resized.accuracy} against ${original.accuracy}`);
  const stretched = await runEval(cnn, { data: big, resize: 'stretch', json: true });
  assert.equal(stretched.samples, 48);
  await assert.rejects(runEval(cnn, { data: big, json: true }), /is 56×64; the model's input 'x' takes 28×28 images \(--resize brings them to it/);
  await assert.rejects(runEval(cnn, { data: p('x48.npy'), labels: p('y48.npy'), resize: '28', json: true }), /--resize resizes the images of a folder; .*x48\.npy is not a folder/);
});

test('--preprocessor: a Hugging Face preprocessor_config.json as --resize, --mean and --std; what it cannot follow is refused', async () => {
  const cfg = (name: string, c: Record<string, unknown>) => { writeFileSync(p(name), JSON.stringify(c)); return p(name); };
  const base = { do_rescale: true, rescale_factor: 1 / 255, do_normalize: true, image_mean: [0.3], image_std: [0.6], resample: 2 };
  // A CLIP/ResNet-style processor: the shorter side to 28, then the centre 28×28.
  const crop = cfg('crop.json', { ...base, do_resize: true, size: { shortest_edge: 28 }, do_center_crop: true, crop_size: { height: 28, width: 28 } });
  assert.deepEqual(readHfPreprocessor(crop), { pixels: { mean: [0.3], std: [0.6] }, resize: 28, size: [28, 28], notes: [], summary: `${crop}: shorter side to 28, then the centre 28×28; mean 0.3, std 0.6`, file: crop });
  // A ViT-style one (straight to height × width), given as its folder, bicubic: a note says refit resizes bilinear.
  mkdirSync(p('vit'));
  cfg('vit/preprocessor_config.json', { ...base, do_resize: true, size: { height: 28, width: 28 }, resample: 3 });
  const vit = readHfPreprocessor(p('vit'));
  assert.equal(vit.resize, 'stretch');
  assert.match(vit.notes[0]!, /resamples bicubic; refit resizes bilinear/);
  // ConvNeXt's crop_pct: the shorter side to trunc(S / crop_pct), then S×S.
  assert.equal(readHfPreprocessor(cfg('convnext.json', { ...base, size: { shortest_edge: 224 }, crop_pct: 0.875 })).resize, 256);
  // Older configs give size as a number: microsoft/resnet-50's (ConvNeXt's processor) is the shorter side, google/vit's a square.
  assert.deepEqual(readHfPreprocessor(cfg('resnet50.json', { ...base, size: 224, crop_pct: 0.875, resample: 3 })).resize, 256);
  assert.deepEqual(readHfPreprocessor(cfg('vit224.json', { do_normalize: true, do_resize: true, image_mean: [0.5, 0.5, 0.5], image_std: [0.5, 0.5, 0.5], resample: 2, size: 224 })).size, [224, 224]);
  assert.equal(readHfPreprocessor(cfg('convnext384.json', { ...base, size: { shortest_edge: 384 }, crop_pct: 0.875 })).resize, 'stretch');

  // The same scores as the flags it stands for, on the folder of 56×64 images above; flags given win.
  const big = upscaledFolder();
  const flags = await runEval(cnn, { data: big, resize: '28', mean: '0.3', std: '0.6', json: true });
  const viaCfg = await runEval(cnn, { data: big, preprocessor: crop, json: true });
  assert.equal(viaCfg.loss, flags.loss);
  assert.equal(viaCfg.accuracy, flags.accuracy);
  const overridden = await runEval(cnn, { data: big, preprocessor: crop, resize: 'stretch', json: true });
  const stretched = await runEval(cnn, { data: big, resize: 'stretch', mean: '0.3', std: '0.6', json: true });
  assert.equal(overridden.loss, stretched.loss);
  assert.notEqual(overridden.loss, viaCfg.loss);

  const refused = [
    [{ ...base, do_rescale: false, size: { height: 28, width: 28 } }, /do_rescale is false/],
    [{ ...base, rescale_factor: 1 / 127.5, size: { height: 28, width: 28 } }, /rescale_factor .* is not 1\/255/],
    [{ ...base, size: { shortest_edge: 28 } }, /without a centre crop keeps each image's aspect ratio/],
    [{ ...base, size: { shortest_edge: 28, longest_edge: 40 }, do_center_crop: true, crop_size: { height: 28, width: 28 } }, /longest_edge is not followed/],
    [{ ...base, image_std: [0.6, 0] , image_mean: [0.3, 0.3], size: { height: 28, width: 28 } }, /image_std must be positive/],
    [{ ...base, image_mean: [0.3, 0.3], size: { height: 28, width: 28 } }, /image_mean has 2 values and image_std 1/],
  ] as const;
  refused.forEach(([c, re], i) => assert.throws(() => readHfPreprocessor(cfg(`bad${i}.json`, c)), re));
  writeFileSync(p('broken.json'), '{"size": ');
  assert.throws(() => readHfPreprocessor(p('broken.json')), /--preprocessor: cannot read .*broken\.json as JSON/);
  await assert.rejects(runEval(cnn, { data: big, preprocessor: p('missing.json'), json: true }), /--preprocessor: cannot read .*missing\.json/);
  // Another model's processor (a 224×224 crop for this 28×28 model) is refused, unless --resize is given.
  const other = cfg('other.json', { ...base, size: { shortest_edge: 256 }, do_center_crop: true, crop_size: { height: 224, width: 224 } });
  await assert.rejects(runEval(cnn, { data: big, preprocessor: other, json: true }), /--preprocessor .*other\.json: the processor makes 224×224 images, and the model's input 'x' is 1×28×28; give this model's own preprocessor_config\.json, or --resize/);
  assert.equal((await runEval(cnn, { data: big, preprocessor: other, resize: '28', json: true })).loss, flags.loss);
});
