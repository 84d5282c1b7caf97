// What the controller's health signal sees, per corruption: the mean level, the batch entropy over
// the calibration reference (the controller climbs while it exceeds `entropyTolerance`, 1.5 by
// default), and the online error, on the continual validation stream (1000 per corruption).
//
//   npx tsx bench/continual/health.ts <cnn|vit|path.onnx> '<controller options JSON>' [--batches]
// `--batches` prints every batch instead of the per-corruption means.
import { streamFor, validationData, withSourceSet, calibration, type Sizes } from './lib.ts';
import { loadSourceSet } from '../../src/tta/index.ts';
import { loadModel } from '../../src/model.ts';
import { ContinualController } from '../../src/continual/index.ts';
import { f32 } from '../../src/onnx/tensor.ts';

const [name, json, flag] = process.argv.slice(2);
const path = name!.endsWith('.onnx') ? name! : `models/fmnist-${name}.onnx`;
const sizes: Sizes = { samples: 1000, correlatedSamples: 1000, roundSamples: 100, levelSamples: 125, cleanSamples: 1000 };
const stream = streamFor('continual', validationData(), sizes, 1);
const src = loadSourceSet();
const model = (await loadModel(path, { threads: 1 })).withFeatures();
const c = new ContinualController(model, { logits: 'logits', embedding: 'features', ...withSourceSet(JSON.parse(json ?? '{}'), src) });
const cal = calibration(src, stream.batchSize);
const reference = await c.calibrate(cal);
await c.prepareDeepLearner(cal[0]!);
console.log(`${name}: reference (normalised entropy of the source batches) ${reference.toFixed(3)}`);
const byDomain = new Map<string, { level: number; ratio: number; error: number; n: number; levels: string }>();
let i = 0;
for (const b of stream) {
  const r = await c.predict(f32([b.size, 1, 28, 28], b.x));
  let wrong = 0;
  for (let k = 0; k < b.size; k++) if (r.predictions[k] !== b.y[k]) wrong++;
  const ratio = (r.signals.entropy as number) / reference, error = wrong / b.size;
  if (flag === '--batches') console.log(`${i} ${b.domain} level ${r.level} entropy/reference ${ratio.toFixed(2)} error ${(100 * error).toFixed(0)} % ${r.events.map((e) => e.kind + (e.to ?? '')).join(' ')}`);
  const d = byDomain.get(b.domain) ?? byDomain.set(b.domain, { level: 0, ratio: 0, error: 0, n: 0, levels: '' }).get(b.domain)!;
  d.level += r.level; d.ratio += ratio; d.error += error; d.n++; d.levels += r.level;
  i++;
}
console.log('| corruption | mean level | entropy / reference | error % | levels |\n|---|---:|---:|---:|---|');
for (const [d, v] of byDomain) console.log(`| ${d} | ${(v.level / v.n).toFixed(1)} | ${(v.ratio / v.n).toFixed(2)} | ${(100 * v.error / v.n).toFixed(1)} | ${v.levels} |`);
await c.release();
await model.release();
