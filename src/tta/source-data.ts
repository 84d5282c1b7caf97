// A small labelled in-distribution set for the methods that need one: EATA's Fisher, RMT's
// warm-up, source replay and class prototypes. refit ships the first 2000 images of the
// Fashion-MNIST *training* set (data/fashion-mnist/train-2k-*-idx?-ubyte.gz, made from the
// Debian package dataset-fashion-mnist); the streams use the test set, so the two never overlap.
// Node-only (reads files), kept out of the methods themselves.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { bundledFashionMnistDir } from '../data/fashion-mnist.ts';
import { readIdxImagesFile, readIdxLabelsFile } from '../data/idx-node.ts';
import { bytesToUnitFloats } from '../data/idx.ts';
import { f32, type Tensor } from '../onnx/tensor.ts';

export const SOURCE_SET_FILES = { images: 'train-2k-images-idx3-ubyte.gz', labels: 'train-2k-labels-idx1-ubyte.gz' } as const;

export interface SourceSet {
  /** Images [n, 1, 28, 28] in [0, 1]. */
  images: Tensor;
  labels: Uint8Array;
  n: number;
}

/** The bundled 2000 Fashion-MNIST training images (or the first `limit`), as a float tensor and labels. */
export function loadSourceSet(opts: { dir?: string; limit?: number } = {}): SourceSet {
  const dir = opts.dir ?? bundledFashionMnistDir();
  const ip = join(dir, SOURCE_SET_FILES.images), lp = join(dir, SOURCE_SET_FILES.labels);
  for (const p of [ip, lp]) if (!existsSync(p)) throw new Error(`in-distribution set not found: ${p} is missing (refit ships ${SOURCE_SET_FILES.images} and ${SOURCE_SET_FILES.labels} in data/fashion-mnist/)`);
  const img = readIdxImagesFile(ip);
  const lab = readIdxLabelsFile(lp);
  if (img.n !== lab.n) throw new Error(`in-distribution set: ${img.n} images but ${lab.n} labels`);
  if (opts.limit !== undefined && !(Number.isInteger(opts.limit) && opts.limit > 0)) throw new Error(`loadSourceSet: limit must be a positive integer, got ${opts.limit}`);
  const n = Math.min(img.n, opts.limit ?? img.n);
  const px = img.rows * img.cols;
  return { images: f32([n, 1, img.rows, img.cols], bytesToUnitFloats(img.pixels.subarray(0, n * px))), labels: lab.labels.slice(0, n), n };
}

/**
 * Options for `createAdapter(model, method, …)` that give each method the in-distribution data
 * it can use: EATA's `fisherData`, CoTTA's `thresholdData`, RMT's `sourceData`/`sourceLabels`,
 * ActMAD's `sourceData`.
 * Methods not listed get {}.
 * `quick` (refit demo --quick) shortens RMT's warm-up to one pass over the set instead of the
 * paper's 50000 samples.
 */
export function sourceDataOptions(method: string, set: SourceSet, o: { quick?: boolean } = {}): Record<string, unknown> {
  switch (method) {
    case 'eata': return { fisherData: set.images };
    case 'cotta': return { thresholdData: set.images };
    case 'rmt': return { sourceData: set.images, sourceLabels: set.labels, ...(o.quick ? { warmupSamples: set.n } : {}) };
    case 'actmad': return { sourceData: set.images };
    default: return {};
  }
}
