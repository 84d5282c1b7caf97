// Step time with activation checkpointing against the plain step (shipped CNN and ViT, all
// parameters, BatchNorm in train mode, batch 32, 2 threads), alternating in one process, median of 9.
//   npx tsx bench/checkpoint-time.ts
import { loadModel, losses, f32, i64, Rng } from '../src/index.ts';
for (const name of ['cnn', 'vit']) {
  const model = await loadModel(`models/fmnist-${name}.onnx`, { threads: 2 });
  const r = new Rng(3); const B = 32;
  const batch = { x: f32([B, 1, 28, 28], Float32Array.from({ length: B * 784 }, () => r.uniform())), y: i64([B], Array.from({ length: B }, () => r.int(10))) };
  const base = { trainable: 'all' as const, loss: losses.crossEntropy({ logits: 'logits' }), batchNorm: 'train' as const };
  const plain = model.compileTrainStep(base), ck = model.compileTrainStep({ ...base, checkpoint: true });
  await plain.run(batch); await ck.run(batch); await plain.run(batch); await ck.run(batch);
  const tp: number[] = [], tc: number[] = [];
  for (let i = 0; i < 9; i++) {
    let t = performance.now(); await plain.run(batch); tp.push(performance.now() - t);
    t = performance.now(); await ck.run(batch); tc.push(performance.now() - t);
  }
  const med = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1]!;
  console.log(name, 'plain', med(tp).toFixed(1), 'checkpointed', med(tc).toFixed(1), 'ratio', (med(tc) / med(tp)).toFixed(2), 'ratios per round', tc.map((c, i) => (c / tp[i]!).toFixed(2)).join(' '));
}
