import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { encodeIdx, parseIdx, parseIdxImages, parseIdxLabels } from '../../src/data/idx.ts';
import { readIdxImagesFile, readIdxLabelsFile } from '../../src/data/idx-node.ts';
import {
  DEBIAN_FASHION_MNIST_DIR,
  FASHION_MNIST_CLASSES,
  loadFashionMnist,
} from '../../src/data/fashion-mnist.ts';

const dir = mkdtempSync(join(tmpdir(), 'refit-idx-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function sampleImages(n: number, rows: number, cols: number): Uint8Array {
  return Uint8Array.from({ length: n * rows * cols }, (_, i) => (i * 37 + 11) % 256);
}

describe('IDX parsing', () => {
  it('round-trips idx3 images and idx1 labels', () => {
    const px = sampleImages(3, 4, 5);
    const img = parseIdxImages(encodeIdx([3, 4, 5], px));
    assert.deepEqual([img.n, img.rows, img.cols], [3, 4, 5]);
    assert.deepEqual(Array.from(img.pixels), Array.from(px));
    const labels = Uint8Array.of(0, 9, 3, 7);
    const lab = parseIdxLabels(encodeIdx([4], labels));
    assert.equal(lab.n, 4);
    assert.deepEqual(Array.from(lab.labels), [0, 9, 3, 7]);
  });

  it('reads gzip and plain files from disk', () => {
    const px = sampleImages(2, 28, 28);
    writeFileSync(join(dir, 'a-idx3-ubyte.gz'), gzipSync(encodeIdx([2, 28, 28], px)));
    writeFileSync(join(dir, 'a-idx3-ubyte'), encodeIdx([2, 28, 28], px));
    writeFileSync(join(dir, 'l-idx1-ubyte.gz'), gzipSync(encodeIdx([2], Uint8Array.of(4, 2))));
    for (const f of ['a-idx3-ubyte.gz', 'a-idx3-ubyte']) {
      const img = readIdxImagesFile(join(dir, f));
      assert.equal(img.n, 2);
      assert.deepEqual(Array.from(img.pixels), Array.from(px));
    }
    assert.deepEqual(Array.from(readIdxLabelsFile(join(dir, 'l-idx1-ubyte.gz')).labels), [4, 2]);
  });

  it('rejects a bad magic number, saying what it expected', () => {
    const bytes = encodeIdx([2, 2, 2], new Uint8Array(8));
    bytes[0] = 0x50;
    assert.throws(() => parseIdxImages(bytes, 'x.idx'), /x\.idx: bad magic number 0x50000803; expected magic 0x00000803 \(idx3 ubyte\)/);
  });

  it('rejects the wrong kind of IDX file (labels read as images)', () => {
    assert.throws(() => parseIdxImages(encodeIdx([4], new Uint8Array(4))), /1 dimension\(s\).*expected 3.*0x00000803/);
    assert.throws(() => parseIdxLabels(encodeIdx([1, 2, 2], new Uint8Array(4))), /3 dimension\(s\).*expected 1.*0x00000801/);
  });

  it('rejects a non-ubyte data type', () => {
    const bytes = encodeIdx([2], new Uint8Array(2));
    bytes[2] = 0x0d;
    assert.throws(() => parseIdx(bytes), /data type 0x0d \(float\) is not supported; expected 0x08 \(ubyte\)/);
  });

  it('rejects truncated files with the expected and actual byte counts', () => {
    const full = encodeIdx([3, 4, 5], sampleImages(3, 4, 5));
    assert.throws(() => parseIdxImages(full.subarray(0, full.length - 7)), /truncated: dims \[3, 4, 5\] need 60 data bytes \(76 in all\), but the file has 69 bytes/);
    assert.throws(() => parseIdxImages(full.subarray(0, 10)), /truncated header: 10 bytes, expected at least 16/);
    assert.throws(() => parseIdxImages(full.subarray(0, 2)), /too short for an IDX header/);
    const long = new Uint8Array(full.length + 3);
    long.set(full);
    assert.throws(() => parseIdxImages(long), /3 trailing bytes/);
  });

  it('rejects a truncated gzip stream and a missing file', () => {
    const gz = gzipSync(encodeIdx([2, 28, 28], sampleImages(2, 28, 28)));
    writeFileSync(join(dir, 'cut.gz'), gz.subarray(0, gz.length >> 1));
    assert.throws(() => readIdxImagesFile(join(dir, 'cut.gz')), /cut\.gz: corrupt or truncated gzip stream/);
    assert.throws(() => readIdxImagesFile(join(dir, 'nope.gz')), /IDX file not found: .*nope\.gz/);
  });

  it('refuses gzip bytes in the browser-safe parser', () => {
    assert.throws(() => parseIdx(gzipSync(encodeIdx([1], new Uint8Array(1)))), /gzip-compressed/);
  });
});

describe('Fashion-MNIST', () => {
  it('loads the bundled 10k test set', () => {
    const ds = loadFashionMnist('test');
    assert.equal(ds.n, 10000);
    assert.equal(ds.height, 28);
    assert.equal(ds.width, 28);
    assert.equal(ds.images.length, 10000 * 784);
    assert.equal(ds.labels.length, 10000);
    assert.deepEqual(ds.classes, [...FASHION_MNIST_CLASSES]);
    const counts = new Array(10).fill(0);
    for (const l of ds.labels) counts[l]++;
    assert.deepEqual(counts, new Array(10).fill(1000));
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of ds.images) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
    assert.equal(lo, 0);
    assert.equal(hi, 1);
    // First test image is an ankle boot (class 9).
    assert.equal(ds.labels[0], 9);
  });

  it('honours limit', () => {
    const ds = loadFashionMnist('test', { limit: 7 });
    assert.equal(ds.n, 7);
    assert.equal(ds.images.length, 7 * 784);
  });

  it('says how to install the training set when it is missing', () => {
    assert.throws(
      () => loadFashionMnist('train', { dir: join(dir, 'missing') }),
      /training set not found.*apt-get install dataset-fashion-mnist/,
    );
    assert.throws(() => loadFashionMnist('test', { dir: join(dir, 'missing') }), /test set not found.*t10k-images-idx3-ubyte\.gz/);
  });

  it('reads the Debian training set when installed', { skip: !existsSync(DEBIAN_FASHION_MNIST_DIR) && 'dataset-fashion-mnist not installed' }, () => {
    const ds = loadFashionMnist('train', { limit: 100 });
    assert.equal(ds.n, 100);
    assert.equal(ds.images.length, 100 * 784);
  });
});
