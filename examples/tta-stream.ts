// Adapt the shipped Fashion-MNIST CNN on an unlabeled stream of corrupted images with Tent, and
// compare its error with the unadapted model's on the same stream.
//   npx tsx examples/tta-stream.ts [batches-per-corruption]
import { loadModel, tta, data } from '../src/index.ts';

const batchesPerDomain = Number(process.argv[2] ?? 20);
const model = await loadModel(new URL('../models/fmnist-cnn.onnx', import.meta.url).pathname);
const test = data.loadFashionMnist('test');                 // bundled with refit
// Three severity-5 corruptions one after another, 64 images per batch; labels only score.
const stream = () => data.continualStream(test, { domains: ['gaussian_noise', 'fog', 'jpeg_compression'], batchesPerDomain, seed: 0 });

for (const method of ['source', 'tent']) {
  const adapter = tta.createAdapter(model, method);          // Tent: the paper's defaults
  const score = await tta.runStream(adapter, stream());        // predict, then adapt, batch by batch
  const perDomain = score.domains.map((d) => `${d.domain} ${(100 * d.error).toFixed(1)}%`).join(', ');
  console.log(`${method}: error ${(100 * score.meanError).toFixed(2)}% (${perDomain}), ${score.msPerBatch.toFixed(1)} ms/batch`);
  await adapter.release();
}
await model.release();
