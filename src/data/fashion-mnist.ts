/**
 * Fashion-MNIST (Xiao, Rasul & Vollgraf 2017; MIT licence, © Zalando SE).
 *
 * - 'test': the 10k test set, bundled in the repository under data/fashion-mnist/
 *   (the original gzip files, byte for byte), so it works offline after `npm ci`.
 * - 'train': the 60k training set, read from the Debian package `dataset-fashion-mnist`
 *   (/usr/share/datasets/fashion-mnist/); not bundled.
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bytesToUnitFloats } from './idx.ts';
import { readIdxImagesFile, readIdxLabelsFile } from './idx-node.ts';

export const FASHION_MNIST_CLASSES = [
  'T-shirt/top',
  'Trouser',
  'Pullover',
  'Dress',
  'Coat',
  'Sandal',
  'Shirt',
  'Sneaker',
  'Bag',
  'Ankle boot',
] as const;

/** Where `apt-get install dataset-fashion-mnist` puts the IDX files. */
export const DEBIAN_FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';

export type FashionMnistSplit = 'train' | 'test';

export interface ImageDataset {
  /** n*height*width floats in [0, 1], row-major, one channel (NCHW with C = 1). */
  images: Float32Array;
  labels: Uint8Array;
  n: number;
  height: number;
  width: number;
  /** Class names, index = label. */
  classes: string[];
}

const FILES: Record<FashionMnistSplit, { images: string; labels: string; n: number }> = {
  train: { images: 'train-images-idx3-ubyte.gz', labels: 'train-labels-idx1-ubyte.gz', n: 60000 },
  test: { images: 't10k-images-idx3-ubyte.gz', labels: 't10k-labels-idx1-ubyte.gz', n: 10000 },
};

/**
 * The bundled data folder. Found relative to this module (src/data/ in the repo,
 * dist/data/ when built), walking up to the package root that holds data/fashion-mnist.
 */
export function bundledFashionMnistDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  let dir = here;
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'data', 'fashion-mnist');
    if (existsSync(join(candidate, FILES.test.images))) return candidate;
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  // Not found: return the expected location so that the error message names it.
  return resolve(here, '..', '..', 'data', 'fashion-mnist');
}

export interface LoadOptions {
  /** Read the IDX files from this folder instead of the default one. */
  dir?: string;
  /** Keep only the first `limit` examples (handy in tests). */
  limit?: number;
}

/**
 * Load Fashion-MNIST. 'test' reads the copy bundled with refit; 'train' reads the Debian
 * package's files and throws an error that says how to install them when they are missing.
 */
export function loadFashionMnist(split: FashionMnistSplit, opts: LoadOptions = {}): ImageDataset {
  const spec = FILES[split];
  if (!spec) throw new Error(`loadFashionMnist: unknown split '${String(split)}'; expected 'train' or 'test'`);
  const dir = opts.dir ?? (split === 'test' ? bundledFashionMnistDir() : DEBIAN_FASHION_MNIST_DIR);
  const imagesPath = join(dir, spec.images);
  const labelsPath = join(dir, spec.labels);
  for (const p of [imagesPath, labelsPath]) {
    if (!existsSync(p)) {
      if (split === 'train') {
        throw new Error(
          `Fashion-MNIST training set not found: ${p} is missing. refit bundles only the 10k test set; ` +
            `the 60k training set comes from the Debian package: sudo apt-get install dataset-fashion-mnist ` +
            `(it installs ${spec.images} and ${spec.labels} into ${DEBIAN_FASHION_MNIST_DIR}), or pass { dir } pointing at a folder with them`,
        );
      }
      throw new Error(
        `Fashion-MNIST test set not found: ${p} is missing (expected ${spec.images} and ${spec.labels} in ${dir})` +
          (opts.dir === undefined ? '; the refit package ships them under data/fashion-mnist/' : ''),
      );
    }
  }
  const img = readIdxImagesFile(imagesPath);
  const lab = readIdxLabelsFile(labelsPath);
  if (img.rows !== 28 || img.cols !== 28) {
    throw new Error(`${imagesPath}: Fashion-MNIST images must be 28x28, the file has ${img.rows}x${img.cols}`);
  }
  if (img.n !== lab.n) {
    throw new Error(`Fashion-MNIST ${split}: ${img.n} images in ${imagesPath} but ${lab.n} labels in ${labelsPath}`);
  }
  for (let i = 0; i < lab.n; i++) {
    if (lab.labels[i]! > 9) throw new Error(`${labelsPath}: label ${lab.labels[i]} at index ${i} is outside 0..9`);
  }
  let n = img.n;
  if (opts.limit !== undefined) {
    if (!Number.isInteger(opts.limit) || opts.limit < 1) throw new Error(`loadFashionMnist: limit must be a positive integer, got ${opts.limit}`);
    n = Math.min(n, opts.limit);
  }
  const px = 28 * 28;
  return {
    images: bytesToUnitFloats(img.pixels.subarray(0, n * px)),
    labels: lab.labels.slice(0, n),
    n,
    height: 28,
    width: 28,
    classes: [...FASHION_MNIST_CLASSES],
  };
}
