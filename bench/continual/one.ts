// One method on one setting, for choosing options on the validation stream (the deep-learner
// trials in bench/results/continual-tuned-*.json were run this way): mean online error, clean
// error after, ms per batch and the error per corruption.
//
//   npx tsx bench/continual/one.ts <cnn|vit|path.onnx> <setting> <samples per corruption> <method> '<options JSON>' [val]
//   e.g. npx tsx bench/continual/one.ts cnn continual 1000 controller '{"lr":0.001,"deep":true}' val
//
// `val`: the validation stream (Fashion-MNIST training images 10000-19999, seed 1); otherwise the
// test stream. Round samples are samples/10 (recurring, long), level samples samples/8 (gradual).
import { streamFor, testData, validationData, heldOutCleanData, runMethod, runController, type Sizes, type Setting } from './lib.ts';
import { loadSourceSet } from '../../src/tta/index.ts';
const [model, setting, samples, method, json, which] = process.argv.slice(2);
const n = Number(samples);
const sizes: Sizes = { samples: n, correlatedSamples: n, roundSamples: Math.max(16, n / 10), levelSamples: Math.max(16, n / 8), cleanSamples: which === 'val' ? 1000 : 512 };
const data = which === 'val' ? validationData() : testData();
// `val`: clean error after the stream on held-out training images 20000-20999 too, so that no
// choice made with this script looks at test images.
const clean = which === 'val' ? heldOutCleanData() : testData();
const stream = streamFor(setting as Setting, data, sizes, which === 'val' ? 1 : 0);
const opts = JSON.parse(json ?? '{}');
const src = loadSourceSet();
const t0 = Date.now();
const modelPath = model.endsWith('.onnx') ? model : `models/fmnist-${model}.onnx`;
const row = method.startsWith('controller')
  ? await runController(modelPath, stream, clean, sizes, opts, src, method === 'controller+labels' ? 0.01 : 0, 5)
  : await runMethod(modelPath, method, stream, clean, sizes, opts, src);
const doms = new Map<string, number[]>();
for (const s of row.segments) (doms.get(s.domain) ?? doms.set(s.domain, []).get(s.domain)!).push(s.error);
console.log(`${model} ${setting} ${n} ${method} ${json} | mean ${(100 * row.mean).toFixed(2)} clean ${(100 * row.clean).toFixed(1)} ${row.ms.toFixed(0)}ms ${((Date.now() - t0) / 1000).toFixed(0)}s ${row.levels ? 'levels ' + row.levels.slice(0, 60) : ''}`);
console.log('   ' + [...doms].map(([d, e]) => `${d.slice(0, 6)}:${(100 * e.reduce((a, b) => a + b, 0) / e.length).toFixed(0)}`).join(' '));
