// The labelled in-distribution set the continual tests hand to RMT and the deep learner: 32
// Fashion-MNIST training images; `deep` is the deep learner's options over it (a step on every 2nd
// batch, a 16-sample warm-up), small enough for a test.
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';
import { corrupt } from '../../src/data/corruptions/index.ts';
import { f32, type Tensor } from '../../src/onnx/tensor.ts';

const src = loadFashionMnist('train', { limit: 32 });
export const sourceSet32 = { sourceData: f32([32, 1, 28, 28], src.images), sourceLabels: src.labels };
export const deep = { ...sourceSet32, updateEvery: 2, rmt: { warmupSamples: 16 } };

export const cnnPath = new URL('../../models/fmnist-cnn.onnx', import.meta.url).pathname;

/**
 * B batches of N Fashion-MNIST test images under gaussian noise at severity 5 (a stream that takes
 * the controller to level 3 within a few batches), one clean batch to calibrate on, and the labels.
 */
export function noisyBatches(B: number, N = 16): { shifted: (i: number) => Tensor; calibration: Tensor[]; labels: Uint8Array } {
  const ds = loadFashionMnist('test', { limit: N * B });
  const noisy = corrupt(ds.images, N * B, 28, 28, 'gaussian_noise', 5, 0);
  return {
    shifted: (i) => f32([N, 1, 28, 28], noisy.slice(i * N * 784, (i + 1) * N * 784)),
    calibration: [f32([N, 1, 28, 28], ds.images.slice(0, N * 784))],
    labels: ds.labels,
  };
}
