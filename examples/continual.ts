// Keep the shipped CNN fitted on a stream whose corruption changes: the continual controller
// adapts only as much as the stream's health requires, and takes labels for a few predictions.
// Run from the repository root (it reads models/):
//   npx tsx examples/continual.ts [batches-per-corruption]
// The README's continual block is an excerpt of this file (its lines appear here in order)
// (test/e2e/readme-blocks.test.ts checks that; test/e2e/example.test.ts runs it).
import { loadModel, continual, data, f32 } from '../src/index.ts';

const batchesPerDomain = Number(process.argv[2] ?? 6);
const stream = data.continualStream(data.loadFashionMnist('test'), { domains: ['jpeg_compression', 'gaussian_noise', 'fog'], batchesPerDomain });

const c = new continual.ContinualController(await loadModel('models/fmnist-cnn.onnx'), { logits: 'logits', embedding: 'features' });
let wrong = 0, seen = 0;
for (const b of stream) {
  const batch = f32([b.size, 1, 28, 28], b.x);
  const labels = Array.from(b.y);                                       // known for 8 samples per batch, as if a person checked them
  const { predictions, ids, level, events } = await c.predict(batch);   // adapts as much as health requires
  await c.feedback(ids.slice(0, 8), labels.slice(0, 8));                 // labels that arrive later, for some predictions
  wrong += predictions.reduce((e, p, i) => e + (p !== labels[i] ? 1 : 0), 0);
  seen += b.size;
  const said = events.map((e) => `${e.kind}${e.to !== undefined ? ` → ${e.to}` : ''}`).join(', ');
  console.log(`batch ${b.index} ${b.domain.padEnd(16)} level ${level}${said ? `  (${said})` : ''}`);
}
console.log(`continual: error ${(100 * wrong / seen).toFixed(2)}% over ${seen} images`);
await c.model.release();
