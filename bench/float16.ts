// Float16 bases: why refit upcasts the step to float32 (src/autodiff/lower/float16.ts). On the
// shipped ViT (models/fmnist-vit.onnx) and a float16 copy of it (float16Copy), batch 64:
// - inference in onnxruntime's CPU float16 path (what computing the step in float16 would build on)
//   vs the float32 model;
// - a LoRA step (r=8 on blocks 0-1 + new head) on the float16 base, upcast inside the step graph, vs
//   the same on the float32 model: time, and the gradients' relative error against float32.
//   npx tsx bench/float16.ts [--reps 20]
import { loadModel, RefitModel } from '../src/model.ts';
import * as losses from '../src/train/losses.ts';
import * as peft from '../src/peft/index.ts';
import { f32, i64 } from '../src/onnx/tensor.ts';
import { float16Copy, floatTensorToHalf } from '../src/autodiff/lower/float16.ts';
import { loadMnist } from '../src/data/mnist.ts';

const args = process.argv.slice(2);
const reps = Number(args[args.indexOf('--reps') + 1] ?? 20) || 20;
const f32m = await loadModel(new URL('../models/fmnist-vit.onnx', import.meta.url).pathname, { threads: 2 });
const f16m = new RefitModel(float16Copy(f32m.ir), { threads: 2 });
const { train } = loadMnist({ trainSize: 64, seed: 0 });
const x = f32([64, 1, 28, 28], train.images.slice(0, 64 * 784));
const xh = floatTensorToHalf(x);
const y = i64([64], Array.from(train.labels.slice(0, 64)));

async function time(f: () => Promise<unknown>): Promise<number> {
  await f(); await f();
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) await f();
  return (performance.now() - t0) / reps;
}
const inf32 = await time(() => f32m.run({ x }));
const inf16 = await time(() => f16m.run({ x: xh }));

const adapt = (m: RefitModel) => peft.withAdapter(m, 'head', peft.head({ classes: 10, seed: 0 }))
  .withAdapter('lora', peft.lora({ targets: /blocks\.[01]\.(attn\.(q|k|v|out)|mlp\.fc[12])$/, rank: 8, alpha: 16, seed: 0 }));
const p32 = adapt(f32m), p16 = adapt(f16m);
// Non-zero B so that every LoRA factor has a gradient.
for (const p of [p32, p16]) { for (const [k, t] of p.adapterValues('lora')) if (k.includes('lora_B')) (t.data as Float32Array).fill(0.01); p.touch(p.trainableNames()); }
const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
const s32 = p32.compileTrainStep({ trainable: p32.trainableNames(), loss });
const s16 = p16.compileTrainStep({ trainable: p16.trainableNames(), loss });
const step32 = await time(() => s32.run({ x, y }));
const step16 = await time(() => s16.run({ x: xh, y }));
const [r32, r16] = [await s32.run({ x, y }), await s16.run({ x: xh, y })];
let num = 0, den = 0;
for (const [k, g] of r32.grads) { const h = r16.grads.get(k)!; for (let i = 0; i < g.length; i++) { num += (g[i]! - h[i]!) ** 2; den += g[i]! ** 2; } }
const inf16Logits = (await f16m.run({ x: xh })).logits!, inf32Logits = (await f32m.run({ x })).logits!;
let maxd = 0;
const h2f = (await import('../src/autodiff/lower/float16.ts')).halfToFloat;
for (let i = 0; i < inf32Logits.data.length; i++) maxd = Math.max(maxd, Math.abs(h2f((inf16Logits.data as Uint16Array)[i]!) - (inf32Logits.data as Float32Array)[i]!));
const result = {
  inferenceMs: { float32: +inf32.toFixed(2), float16OnnxruntimeCpu: +inf16.toFixed(2) },
  inferenceMaxLogitDiffFloat16VsFloat32: +maxd.toExponential(2),
  loraStepMs: { float32: +step32.toFixed(2), float16BaseUpcast: +step16.toFixed(2) },
  loss: { float32: r32.loss, float16Base: r16.loss },
  gradRelErrFloat16BaseVsFloat32: +Math.sqrt(num / den).toExponential(2),
};
(await import('node:fs')).writeFileSync('bench/results/float16.json', JSON.stringify(result, null, 2) + '\n');
console.log(JSON.stringify(result, null, 2));
