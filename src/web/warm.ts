// A page's first model session costs more than later ones: refit's step compiler runs as cold
// JavaScript, and onnxruntime-web compiles the wasm functions of its graph optimizer and kernels
// on first use (docs/web.md, quiet rerun: 257–345 ms against 46–148 for later sessions). warmUp()
// pays that once, at page load, on two tiny models built here with the ops of the shipped ones
// (a ResNet-style CNN with BatchNorm in train mode, every parameter trained; a ViT with LoRA on
// its attention): one compiled and run training step each, then released. Call it after
// useWebRuntime({ start: true }), while the model downloads.
import { RefitModel } from '../model.ts';
import { resnetCnn, vit } from '../nn/models.ts';
import { crossEntropy } from '../train/losses.ts';
import { f32, i64 } from '../onnx/tensor.ts';
import { withAdapter } from '../peft/peft-model.ts';
import { lora as peftLora } from '../peft/lora/index.ts';

/** Compile and run one step of each tiny model; returns the ms it took. */
export async function warmUp(): Promise<number> {
  const t = performance.now();
  const x = f32([2, 1, 28, 28], Float32Array.from({ length: 2 * 784 }, (_, i) => (i % 17) / 17));
  const y = i64([2], [1, 2]);
  const cnn = new RefitModel(resnetCnn({ width: 4, seed: 0 }));
  const lora = withAdapter(new RefitModel(vit({ dim: 8, depth: 1, heads: 2, patch: 7, seed: 0 })), 'warm', peftLora({ targets: /attn\.(q|v)$/, rank: 2 }));
  // Every parameter of the CNN (BatchNorm in train mode), the ViT's LoRA factors: the shipped steps' forms.
  for (const [model, trainable] of [[cnn, 'all'], [lora, lora.trainableNames('warm')]] as const) {
    const step = model.compileTrainStep({ trainable, loss: crossEntropy({ logits: 'logits' }), batchNorm: 'train' });
    try {
      await step.run({ x, y });
    } finally {
      await step.release();
      await model.release();
    }
  }
  return performance.now() - t;
}
