// The labelled in-distribution set the continual tests hand to RMT and the deep learner: 32
// Fashion-MNIST training images; `deep` is the deep learner's options over it (a step on every 2nd
// batch, a 16-sample warm-up), small enough for a test.
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';
import { f32 } from '../../src/onnx/tensor.ts';

const src = loadFashionMnist('train', { limit: 32 });
export const sourceSet32 = { sourceData: f32([32, 1, 28, 28], src.images), sourceLabels: src.labels };
export const deep = { ...sourceSet32, updateEvery: 2, rmt: { warmupSamples: 16 } };
