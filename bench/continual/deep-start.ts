// What the first level-3 batch waits for (docs/continual.md, "The deep learner's warm-up happens
// before the stream"): the deep learner built on that batch (lazy, as before session 13), built
// before the stream (prepareDeepLearner), and loaded from another controller's warm state (what
// `refit serve` tenants do), on the bundled 2000 source images, batch 64, one thread.
//
//   npx tsx bench/continual/deep-start.ts <cnn|vit|path.onnx>... [--out file.md]
import { writeFileSync } from 'node:fs';
import { loadModel } from '../../src/model.ts';
import { loadSourceSet } from '../../src/tta/index.ts';
import { DeepLearner } from '../../src/continual/deep-learner.ts';
import { f32 } from '../../src/onnx/tensor.ts';

const args = process.argv.slice(2);
const out = args.includes('--out') ? args[args.indexOf('--out') + 1] : undefined;
const models = args.filter((a, i) => !a.startsWith('--') && args[i - 1] !== '--out');
const src = loadSourceSet();
const time = async (f: () => Promise<unknown>) => { const t = performance.now(); await f(); return performance.now() - t; };
const rows: string[] = [];
for (const name of models) {
  const path = name.endsWith('.onnx') ? name : `models/fmnist-${name}.onnx`;
  const model = (await loadModel(path, { threads: 1 })).withFeatures();
  const o = { sourceData: src.images, sourceLabels: src.labels, embedding: true };
  const x = f32([64, 1, 28, 28], (src.images.data as Float32Array).slice(64 * 784, 128 * 784));
  const lazy = new DeepLearner(model, o);
  const lazyFirst = await time(() => lazy.predict(x, true));
  const prepared = new DeepLearner(model, o);
  const prepare = await time(() => prepared.ready(x));
  const state = prepared.state();
  const preparedFirst = await time(() => prepared.predict(x, true));
  const shared = new DeepLearner(model, o);
  shared.load(state);
  const sharedFirst = await time(() => shared.predict(x, true));
  const later = await time(() => shared.predict(x, true)); // a batch without a step (every 5th steps)
  const row = `| ${name} | ${lazyFirst.toFixed(0)} | ${prepare.toFixed(0)} | ${preparedFirst.toFixed(0)} | ${sharedFirst.toFixed(0)} | ${later.toFixed(0)} |`;
  console.log(row);
  rows.push(row);
  for (const d of [lazy, prepared, shared]) await d.release();
  await model.release();
}
const table = ['| model | first level-3 batch, built on it (ms) | prepareDeepLearner before the stream (ms) | first level-3 batch, prepared (ms) | first level-3 batch, from a shared warm state (ms) | a later batch without a step (ms) |', '|---|---:|---:|---:|---:|---:|', ...rows].join('\n');
if (out) writeFileSync(out, `# The deep learner's start\n\n\`npx tsx bench/continual/deep-start.ts ${models.join(' ')}\`, ${new Date().toISOString()}\n\n${table}\n`);
