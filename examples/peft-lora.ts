// Teach the shipped Fashion-MNIST ViT to read MNIST digits with LoRA, save the adapters in HF
// PEFT's layout, load them back, and merge them into a plain ONNX model.
// Run from the repository root (it reads models/ and writes adapters/head/, adapters/digits/ and
// vit-digits.onnx there):
//   npx tsx examples/peft-lora.ts [steps]
// The README's PEFT block is an excerpt of this file (its lines appear here in order), and the README's
// `refit adapter` lines read what it writes (test/e2e/readme-blocks.test.ts checks the excerpt;
// test/e2e/example.test.ts runs this file, then those lines).
//
// The configuration is the ≤ 5% one that comes within 1 point of full fine-tuning at 15 epochs in
// docs/peft.md#benchmark: LoRA r=8 with PiSSA init on every attention and MLP layer (q, k, v, out,
// fc1, fc2) of the two blocks nearest the input (4.93% of the parameters, with the new head).
import { loadModel, Trainer, losses, optim, peft, saveAdapter, loadAdapter, data, f32, i64 } from '../src/index.ts';

const steps = Number(process.argv[2] ?? 250);
const batch = 64;

const base = await loadModel('models/fmnist-vit.onnx');
const model = peft.withAdapter(base, 'head', peft.head({ classes: 10 }))      // a new label set
  .withAdapter('digits', peft.lora({ targets: /blocks\.[01]\.(attn|mlp)\./, rank: 8, alpha: 16, init: 'pissa' }));
const acct = peft.accounting(model);
console.log(`trainable: ${acct.trainableParams} parameters (${acct.trainablePercent.toFixed(2)}% of the base), AdamW state ${(acct.optimizerStateBytes / 1024).toFixed(0)} KiB`);

const { train, test } = data.loadMnist({ trainSize: 8000, seed: 0 });
const step = model.compileTrainStep({ trainable: model.trainableNames(), loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }) });
const trainer = new Trainer(step, optim.adamw({
  lr: 5e-3, weightDecay: 1e-2,
  groups: [{ params: model.trainableNames('head'), lr: 1e-2 }],
  schedule: optim.warmupCosine({ warmupSteps: Math.ceil(steps / 10), totalSteps: steps }),
}), { clipNorm: 1 });

for (let s = 0; s < steps; s++) {
  const i0 = (s * batch) % (train.n - batch);
  const x = f32([batch, 1, 28, 28], train.images.slice(i0 * 784, (i0 + batch) * 784));
  const y = i64([batch], Array.from(train.labels.slice(i0, i0 + batch)));
  const r = await trainer.step({ x, y });
  if ((s + 1) % 25 === 0 || s === steps - 1) console.log(`step ${s + 1}/${steps}: loss ${r.loss.toFixed(4)}`);
}
const accuracy = await data.evaluate(model, test.images, test.labels, test.n);
console.log(`test accuracy with the adapter: ${(100 * accuracy).toFixed(2)}%`);

await saveAdapter(model, 'head', 'adapters/head/');       // adapter_model.safetensors + adapter_config.json
await saveAdapter(model, 'digits', 'adapters/digits/');
let reloaded = await loadAdapter(base, 'adapters/head/');
reloaded = await loadAdapter(reloaded, 'adapters/digits/');
console.log(`reloaded adapters: ${(100 * await data.evaluate(reloaded, test.images, test.labels, test.n)).toFixed(2)}%`);

// The head is baked in too: vit-digits.onnx is a plain model that runs anywhere.
await model.mergeAll().save('vit-digits.onnx');           // folded into the base weights: no extra latency
const merged = await loadModel('vit-digits.onnx');
console.log(`merged model: ${(100 * await data.evaluate(merged, test.images, test.labels, test.n)).toFixed(2)}%, saved vit-digits.onnx`);
