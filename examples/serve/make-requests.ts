// Writes the request bodies the README's `refit serve` examples send with curl: the first image of
// the bundled Fashion-MNIST test set (an ankle boot, label 9) as { dims, data } numbers and as
// base64 float32 bytes. Usage: npx tsx examples/serve/make-requests.ts
import { writeFileSync } from 'node:fs';
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';
import { float32ToBase64 } from '../../src/serve/inputs.ts';

const image = loadFashionMnist('test', { limit: 1 }).images.subarray(0, 784);
const dims = [1, 1, 28, 28];
const out = (f: string, inputs: unknown) => writeFileSync(new URL(f, import.meta.url), `${JSON.stringify({ inputs })}\n`);
out('./predict.json', { dims, data: Array.from(image) });
out('./predict-base64.json', { dims, base64: float32ToBase64(Float32Array.from(image)) });
