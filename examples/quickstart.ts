// Fine-tune refit's shipped CNN on a few bundled Fashion-MNIST images and save the result.
//   npx tsx examples/quickstart.ts [out.onnx]
import { loadModel, Trainer, losses, optim, f32, i64 } from '../src/index.ts';
import { loadFashionMnist } from '../src/data/fashion-mnist.ts';

const out = process.argv[2] ?? 'cnn-tuned.onnx';
const model = await loadModel(new URL('../models/fmnist-cnn.onnx', import.meta.url).pathname);
const step = model.compileTrainStep({
  trainable: /bn|head/,                                          // BatchNorm affine + the classifier head
  loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }),
  outputs: ['features'],
  batchNorm: 'train',
});
const trainer = new Trainer(step, optim.adamw({ lr: 1e-3, weightDecay: 1e-4 }), { clipNorm: 1 });
const data = loadFashionMnist('test', { limit: 320 });
for (let s = 0; s < 10; s++) {
  const i0 = s * 32;
  const x = f32([32, 1, 28, 28], data.images.slice(i0 * 784, (i0 + 32) * 784));
  const y = i64([32], Array.from(data.labels.slice(i0, i0 + 32)));
  const r = await trainer.step({ x, y });
  console.log(`step ${s}: loss ${r.loss.toFixed(4)}${r.skipped ? ` (skipped: ${r.reason})` : ''}, features ${r.outputs.features!.dims}`);
}
await model.save(out);
console.log(`saved ${out}`);
