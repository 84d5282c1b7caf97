// Adapt the shipped Fashion-MNIST CNN on an unlabeled stream of corrupted images with Tent, and
// compare its error with the unadapted model's on the same batches.
// Run from the repository root (it reads models/):
//   npx tsx examples/tta-stream.ts [batches-per-corruption]
// The README's test-time adaptation block is an excerpt of this file (its lines appear here in order)
// (test/e2e/readme-blocks.test.ts checks that; test/e2e/example.test.ts runs it).
import { loadModel, tta, data, f32 } from '../src/index.ts';

const batchesPerDomain = Number(process.argv[2] ?? 20);

const model = await loadModel('models/fmnist-cnn.onnx');
const adapter = tta.createAdapter(model, 'tent');                       // the paper's defaults
const unadapted = tta.createAdapter(model, 'source');                   // the same model, never adapted, for comparison
const stream = data.continualStream(data.loadFashionMnist('test'), { domains: ['gaussian_noise', 'fog', 'jpeg_compression'], batchesPerDomain });
const wrong = { tent: 0, source: 0 };
let seen = 0, ms = 0;
for (const batch of stream) {
  const { logits, info } = await adapter.predict(f32([batch.size, 1, 28, 28], batch.x)); // predict, then adapt
  const source = await unadapted.predict(f32([batch.size, 1, 28, 28], batch.x));
  // Labels only score: neither model sees them.
  const errors = (l: typeof logits) => data.argmaxRows(l.data as Float32Array, l.dims[1]!).reduce((e, p, i) => e + (p !== batch.y[i] ? 1 : 0), 0);
  wrong.tent += errors(logits);
  wrong.source += errors(source.logits);
  seen += batch.size;
  ms += info.ms;
}
console.log(`source: error ${(100 * wrong.source / seen).toFixed(2)}%`);
console.log(`tent: error ${(100 * wrong.tent / seen).toFixed(2)}% (${(ms / stream.numBatches).toFixed(1)} ms/batch)`);
await Promise.all([adapter.release(), unadapted.release()]);
await model.release();
