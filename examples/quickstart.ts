// Fine-tune refit's shipped CNN on a few bundled Fashion-MNIST images and save the result.
// Run from the repository root (it reads models/ and writes cnn-tuned.onnx there):
//   npx tsx examples/quickstart.ts
// The README's first TypeScript block is an excerpt of this file (its lines appear here in order)
// (test/e2e/readme-blocks.test.ts checks that; test/e2e/example.test.ts runs it).
import { loadModel, Trainer, losses, optim, f32, i64, data } from '../src/index.ts';

const model = await loadModel('models/fmnist-cnn.onnx');                // float32, float16 or int8 ONNX, opset 1–21 (upgraded on load)
const step = model.compileTrainStep({
  trainable: /bn|head/,                                          // names, a regex, a predicate, or 'all'
  loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }),
  outputs: ['features'],                                         // extra tensors returned by each step
  batchNorm: 'train',                                            // 'eval' (running stats) | 'train' (batch stats, running stats updated)
});
const trainer = new Trainer(step, optim.adamw({ lr: 1e-3, weightDecay: 1e-4 }), { clipNorm: 1 });

const test = data.loadFashionMnist('test', { limit: 640 });        // 10 batches of 64 bundled test images
for (let s = 0; s < 10; s++) {
  const images = test.images.subarray(s * 64 * 784, (s + 1) * 64 * 784);
  const labels = Array.from(test.labels.subarray(s * 64, (s + 1) * 64));
  const r = await trainer.step({ x: f32([64, 1, 28, 28], images), y: i64([64], labels) });
  // r.loss, r.outputs.features, r.skipped (true when the loss/gradient was NaN/Inf: weights untouched)
  console.log(`step ${s}: loss ${r.loss.toFixed(4)}${r.skipped ? ' (skipped)' : ''}, features ${r.outputs.features!.dims}`);
}
await model.save('cnn-tuned.onnx');                                // a plain inference model that runs anywhere
console.log('saved cnn-tuned.onnx');
