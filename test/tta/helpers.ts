// Shared helpers for the test-time adaptation tests.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { loadModel, RefitModel } from '../../src/model.ts';
import { parseSafetensors } from '../../src/io/safetensors.ts';
import { resnetCnn, vit } from '../../src/nn/index.ts';
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';
import { f32, type Tensor } from '../../src/onnx/tensor.ts';
import { relErr as sharedRelErr } from '../helpers/close.ts';

const dir = new URL('../fixtures/tta/', import.meta.url);

export async function loadFixture(name: string) {
  const model = await loadModel(new URL(`${name}/model.onnx`, dir).pathname, { threads: 1 });
  const { tensors } = parseSafetensors(readFileSync(new URL(`${name}/tensors.safetensors`, dir)));
  const meta = JSON.parse(readFileSync(new URL(`${name}/meta.json`, dir), 'utf8'));
  return { model, tensors, meta };
}

export function get(tensors: Map<string, Tensor>, key: string): Tensor {
  const t = tensors.get(key);
  assert.ok(t, `fixture has no tensor '${key}'`);
  return t;
}

/** ‖a − b‖ / ‖b‖ (with a floor for an all-zero reference), after checking the lengths. */
export function relErr(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  assert.equal(actual.length, expected.length, 'length');
  return sharedRelErr(actual, expected);
}

/** Largest error measured by assertClose in this process, per label prefix (for the report). */
export const measured = new Map<string, number>();

export function assertClose(label: string, actual: ArrayLike<number>, expected: ArrayLike<number>, rel = 1e-4): void {
  const e = relErr(actual, expected);
  const key = label.split(' ')[0]!;
  measured.set(key, Math.max(measured.get(key) ?? 0, e));
  assert.ok(e <= rel, `${label}: relative error ${e.toExponential(2)} > ${rel}`);
}

export function diff(a: Float32Array, b: Float32Array): Float64Array {
  return Float64Array.from(a, (v, i) => v - b[i]!);
}

/** Small refit models: a BatchNorm CNN and a LayerNorm ViT. */
export function smallCnn(seed = 1): RefitModel {
  return new RefitModel(resnetCnn({ width: 8, seed }), { threads: 1 });
}
export function smallVit(seed = 1): RefitModel {
  return new RefitModel(vit({ patch: 7, depth: 1, dim: 32, heads: 2, seed }), { threads: 1 });
}

let fm: ReturnType<typeof loadFashionMnist> | undefined;
/** `n` Fashion-MNIST test images from `start`, optionally brightened/darkened to shift them. */
export function images(n: number, start = 0, transform?: (v: number) => number): Tensor {
  fm ??= loadFashionMnist('test');
  const d = fm.images.slice(start * 784, (start + n) * 784);
  if (transform) for (let i = 0; i < d.length; i++) d[i] = transform(d[i]!);
  return f32([n, 1, 28, 28], d);
}
/** The labels of `images(n, start)`. */
images.labels = (n: number, start = 0): Uint8Array => {
  fm ??= loadFashionMnist('test');
  return fm.labels.slice(start, start + n);
};

export function paramsOf(model: RefitModel, names: string[]): Map<string, Float32Array> {
  return new Map(names.map((n) => [n, (model.param(n).data as Float32Array).slice()]));
}
