// One batch-statistics forward (BatchNorm on the batch's moments, as the deep learner predicts the
// batches between its steps) with every parameter fed as a graph input against the same with the
// parameters baked in, and plain inference beside them: what feeding the parameters costs.
// Interleaved call by call, medians after 3 warm-up rounds; one intra-op thread.
//
//   npx tsx bench/continual/forward-feed.ts cnn|vit
import { loadModel } from '../../src/model.ts';
import { BatchStatRunner } from '../../src/tta/mean-teacher.ts';
import { createAdapter } from '../../src/tta/index.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/data/random.ts';
const which = process.argv[2] ?? 'cnn';
const m = await loadModel(`models/fmnist-${which}.onnx`, { threads: 1 });
const params = m.parameterNames('all');
const rng = Rng.xoshiro(1);
const x = f32([64, 1, 28, 28], Float32Array.from({ length: 64 * 784 }, () => rng.uniform(0, 1)));
const fed = new BatchStatRunner(m, params), baked = new BatchStatRunner(m, []);
const src = createAdapter(m, 'source');
const T: Record<string, number[]> = { fed: [], baked: [], plain: [] };
for (let i = 0; i < 30; i++) {
  let t = performance.now(); await fed.run(x, ['logits']); T.fed!.push(performance.now() - t);
  t = performance.now(); await baked.run(x, ['logits']); T.baked!.push(performance.now() - t);
  t = performance.now(); await src.predict(x); T.plain!.push(performance.now() - t);
}
const med = (v: number[]) => [...v].sort((a, b) => a - b)[v.length >> 1]!;
console.log(which, params.length, params.reduce((a, p) => a + m.param(p).data.length, 0), Object.fromEntries(Object.entries(T).map(([k, v]) => [k, med(v.slice(3)).toFixed(1)])));
