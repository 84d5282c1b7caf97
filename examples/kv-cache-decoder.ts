// A text decoder as transformers.js ships it (optimum's decoder_model_merged.onnx: the cached and
// uncached graphs joined by an If on use_cache_branch): LoRA with the next-token loss on the model
// without its cache, the adapter folded into the weights, the weights written back into the file
// with its cache, and greedy generation with the cache from the saved file. The model is the zoo's
// small GPT-2-structured decoder (test/fixtures/zoo/make_zoo.py, vocabulary 40); pass your own
// export's path instead. The toy corpus counts: token t is followed by t + 1 (mod 29).
// Run from the repository root (writes gpt2-counting/ there):
//   npx tsx examples/kv-cache-decoder.ts [steps] [decoder_model_merged.onnx]
// test/e2e/example.test.ts runs it.
import { mkdirSync } from 'node:fs';
import { loadModel, Trainer, losses, optim, peft, withoutKvCache, writeWeightsBack, kvCacheOf, i64, tensor, type RefitModel, type Tensor } from '../src/index.ts';

const steps = Number(process.argv[2] ?? 80);
const file = await loadModel(process.argv[3] ?? 'test/fixtures/zoo/gpt2_merged/model.onnx');
const batch = 8, length = 10;

const model = peft.withAdapter(withoutKvCache(file), 'counting', peft.lora({ targets: /c_attn|c_fc/, rank: 4, alpha: 8 }));
const step = model.compileTrainStep({
  trainable: model.trainableNames(),
  loss: losses.tokenCrossEntropy({ logits: 'logits', labels: 'labels' }),
});
const trainer = new Trainer(step, optim.adamw({ lr: 2e-2, weightDecay: 0 }));

function countingBatch(seed: number) {
  const ids: number[] = [], labels: number[] = [];
  for (let b = 0; b < batch; b++) {
    const start = (seed * 7 + b * 13) % 29;
    for (let t = 0; t < length; t++) {
      ids.push((start + t) % 29);
      labels.push(t === length - 1 ? -100 : (start + t + 1) % 29);
    }
  }
  const ones = Array.from({ length: batch * length }, () => 1);
  return { input_ids: i64([batch, length], ids), attention_mask: i64([batch, length], ones), labels: i64([batch, length], labels) };
}

let first = 0, last = 0;
for (let s = 0; s < steps; s++) {
  const r = await trainer.step(countingBatch(s));
  if (s === 0) first = r.loss;
  last = r.loss;
}
console.log(`next-token loss ${first.toFixed(4)} -> ${last.toFixed(4)} after ${steps} LoRA steps`);

// Fold the adapter into the weights and write them back into the file, which keeps its cache.
const written = writeWeightsBack(file, model.mergeAll());
mkdirSync('gpt2-counting', { recursive: true });
await file.save('gpt2-counting/decoder_model_merged.onnx');
console.log(`wrote ${written.length} weights back into gpt2-counting/decoder_model_merged.onnx`);

/** Greedy generation from the saved file: with its KV cache (one new token per call), or by rerunning the whole sequence. */
async function generate(m: RefitModel, prompt: number[], n: number, cached: boolean): Promise<number[]> {
  const kv = kvCacheOf(m)!;
  const seq = [...prompt];
  let past: Record<string, Tensor> | null = null;
  for (let k = 0; k < n; k++) {
    const input = cached && past ? [seq.at(-1)!] : seq;
    const feeds: Record<string, Tensor> = { input_ids: i64([1, input.length], input), attention_mask: i64([1, seq.length], seq.map(() => 1)) };
    for (const v of kv.past) feeds[v.name] = past?.[v.name] ?? tensor('float32', v.shape!.map((d, i) => (i === 0 ? 1 : typeof d === 'number' ? d : 0)), new Float32Array(0));
    if (kv.useCacheBranch) feeds[kv.useCacheBranch] = tensor('bool', [1], [past ? 1 : 0]);
    const out = await m.run(feeds);
    const z = out['logits']!.data as Float32Array, V = out['logits']!.dims[2]!;
    const lastRow = z.subarray(z.length - V);
    seq.push(lastRow.indexOf(Math.max(...lastRow)));
    if (cached) past = Object.fromEntries(kv.past.map((v, i) => [v.name, out[kv.present[i]!]!]));
  }
  return seq.slice(prompt.length);
}

const saved = await loadModel('gpt2-counting/decoder_model_merged.onnx');
const withCache = await generate(saved, [5, 6, 7], 6, true);
const without = await generate(saved, [5, 6, 7], 6, false);
console.log(`greedy after 5 6 7, with the cache: ${withCache.join(' ')}; rerunning the whole sequence: ${without.join(' ')}`);
await Promise.all([step.release(), model.release(), file.release(), saved.release()]);
