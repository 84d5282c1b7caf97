// The controller's smoothed batch prior (priorCorrection 'auto' at several thresholds, and
// 'batch' = Infinity) scored after the fact on one run: label-free, the prior changes only the
// output, never what the controller adapts on, so one run scores every threshold (lib.ts).
//
//   npx tsx bench/continual/prior-sweep.ts <cnn|vit> <setting> <samples per corruption> '<controller options JSON>' [val]
import { streamFor, testData, validationData, runController, type Sizes, type Setting } from './lib.ts';
import { loadSourceSet } from '../../src/tta/index.ts';

const [model, setting, samples, json, which] = process.argv.slice(2);
const n = Number(samples);
const sizes: Sizes = { samples: n, correlatedSamples: n, roundSamples: Math.max(16, n / 10), levelSamples: Math.max(16, n / 8), cleanSamples: 512 };
const data = which === 'val' ? validationData() : testData();
const stream = streamFor(setting as Setting, data, sizes, which === 'val' ? 1 : 0);
const thresholds = [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, Infinity];
const row = await runController(`models/fmnist-${model}.onnx`, stream, testData(), sizes, JSON.parse(json ?? '{}'), loadSourceSet(), 0, 5, [], thresholds);
console.log(JSON.stringify({ model, setting, samples: n, stream: which === 'val' ? 'validation' : 'test', options: JSON.parse(json ?? '{}'), none: +(100 * row.mean).toFixed(2), prior: Object.fromEntries(Object.entries(row.posthocPrior!).map(([k, v]) => [k === 'Infinity' ? 'batch' : `auto<${k}`, +(100 * v).toFixed(2)])) }));
