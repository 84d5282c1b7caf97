// LoRA on a language model exported from PyTorch: next-token cross-entropy over every position
// (the prompt's positions left out with -100, as PyTorch's ignore_index), the adapter saved in HF
// PEFT's layout and loaded back. The model is the small nanoGPT-style decoder the tests export
// (test/fixtures/token-ce/make_token_ce.py: vocabulary 37, dynamic batch and sequence axes); pass
// your own export's path instead. The toy corpus counts: token t is followed by t + 1 (mod 37).
// Run from the repository root (writes adapters/counting/ there):
//   npx tsx examples/lora-language-model.ts [steps] [model.onnx]
// The README's language-model block is an excerpt of this file (test/e2e/readme-blocks.test.ts);
// test/e2e/example.test.ts runs it.
import { loadModel, Trainer, losses, optim, peft, saveAdapter, loadAdapter, i64 } from '../src/index.ts';

const steps = Number(process.argv[2] ?? 150);
const base = await loadModel(process.argv[3] ?? 'test/fixtures/token-ce/model.onnx');
const vocab = 37, batch = 8, length = 10, prompt = 3;

const model = peft.withAdapter(base, 'counting', peft.lora({ targets: /attn\.c_attn|mlp\.c_fc/, rank: 4, alpha: 8 }));
const step = model.compileTrainStep({
  trainable: model.trainableNames(),
  loss: losses.tokenCrossEntropy({ logits: 'logits', labels: 'labels' }),   // [batch, sequence, vocab] logits
});
const trainer = new Trainer(step, optim.adamw({ lr: 2e-2, weightDecay: 0 }));

/** Sequences that count from a random start; labels are the next tokens, -100 on the prompt and the last position. */
function countingBatch(seed: number) {
  const idx: number[] = [], labels: number[] = [];
  for (let b = 0; b < batch; b++) {
    const start = (seed * 7 + b * 13) % vocab;
    for (let t = 0; t < length; t++) {
      idx.push((start + t) % vocab);
      labels.push(t < prompt - 1 || t === length - 1 ? -100 : (start + t + 1) % vocab);
    }
  }
  return { idx: i64([batch, length], idx), labels: i64([batch, length], labels) };
}

let first = 0, last = 0;
for (let s = 0; s < steps; s++) {
  const r = await trainer.step(countingBatch(s));
  if (s === 0) first = r.loss;
  last = r.loss;
  if ((s + 1) % 10 === 0) console.log(`step ${s + 1}/${steps}: loss ${r.loss.toFixed(4)}`);
}
console.log(`next-token loss ${first.toFixed(4)} -> ${last.toFixed(4)}`);

await saveAdapter(model, 'counting', 'adapters/counting/');   // adapter_model.safetensors + adapter_config.json
const reloaded = await loadAdapter(base, 'adapters/counting/');
const check = countingBatch(1000);
const a = await model.compileTrainStep({ trainable: model.trainableNames(), loss: losses.tokenCrossEntropy({ logits: 'logits', labels: 'labels' }) }).run(check);
const b = await reloaded.compileTrainStep({ trainable: reloaded.trainableNames(), loss: losses.tokenCrossEntropy({ logits: 'logits', labels: 'labels' }) }).run(check);
console.log(`held-out loss ${a.loss.toFixed(4)}, after reloading the adapter ${b.loss.toFixed(4)}`);
