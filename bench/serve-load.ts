// Load test of `refit serve` on loopback (issue 13), bounded in requests and time: C concurrent
// clients send single-sample predict requests to the shipped CNN (plain inference), with and
// without micro-batching, against the same model's plain onnxruntime throughput in the same run
// (batch 1, and batch 32 as micro-batching reaches). Writes bench/results/serve-load.json.
// Usage: npx tsx bench/serve-load.ts [clients=32] [requests=1500]
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import { loadModel } from '../src/model.ts';
import { loadFashionMnist } from '../src/data/fashion-mnist.ts';
import { SqliteRegistry } from '../src/registry/index.ts';
import { buildServer } from '../src/serve/index.ts';

const clients = Number(process.argv[2] ?? 32);
const requests = Number(process.argv[3] ?? 1500);
const maxSeconds = 30;
const cnn = await loadModel(new URL('../models/fmnist-cnn.onnx', import.meta.url).pathname);
const data = loadFashionMnist('test', { limit: 256 });

async function plain(batch: number, seconds = 3): Promise<number> {
  const x = { dtype: 'float32' as const, dims: [batch, 1, 28, 28], data: data.images.slice(0, batch * 784) };
  await cnn.run({ x });
  let n = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) { await cnn.run({ x }); n += batch; }
  return n / ((performance.now() - t0) / 1000);
}

const pct = (a: number[], p: number) => { const s = [...a].sort((x, y) => x - y); return s[Math.min(s.length - 1, Math.floor(p * s.length))]!; };

async function load(maxWaitMs: number) {
  const app = await buildServer({ models: { cnn }, registry: new SqliteRegistry(':memory:'), defaultMetrics: false, microBatch: { maxWaitMs, maxSamples: 64 } });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const port = (app.server.address() as { port: number }).port;
  const agent = new http.Agent({ keepAlive: true, maxSockets: clients });
  const bodies = Array.from({ length: 64 }, (_, i) => JSON.stringify({ inputs: { dims: [1, 1, 28, 28], data: Array.from(data.images.subarray(i * 784, (i + 1) * 784)) } }));
  const post = (body: string) => new Promise<number>((res, rej) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/v1/models/cnn/predict', method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (r) => {
      r.resume();
      r.on('end', () => res(r.statusCode!));
    });
    req.on('error', rej);
    req.end(body);
  });
  const lat: number[] = [];
  let sent = 0, errors = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: clients }, async () => {
    while (sent < requests && performance.now() - t0 < maxSeconds * 1000) {
      const i = sent++;
      const s = performance.now();
      const code = await post(bodies[i % bodies.length]!).catch(() => 0);
      lat.push(performance.now() - s);
      if (code !== 200) errors++;
    }
  }));
  const seconds = (performance.now() - t0) / 1000;
  agent.destroy();
  await app.close();
  return { maxWaitMs, requests: lat.length, errors, seconds, samplesPerSecond: lat.length / seconds, p50ms: pct(lat, 0.5), p99ms: pct(lat, 0.99) };
}

const ort1 = await plain(1);
const ort32 = await plain(32);
const off = await load(0);
const on = await load(2);
const out = { clients, model: 'models/fmnist-cnn.onnx', plainOrt: { batch1: ort1, batch32: ort32 }, service: { microBatchOff: off, microBatch2ms: on }, node: process.version, when: new Date().toISOString() };
writeFileSync(new URL('./results/serve-load.json', import.meta.url), `${JSON.stringify(out, null, 2)}\n`);
console.log(`plain onnxruntime: ${ort1.toFixed(0)} samples/s at batch 1, ${ort32.toFixed(0)} at batch 32`);
console.log('| service, batch-1 requests | clients | samples/s | vs ORT batch 1 | vs ORT batch 32 | p50 ms | p99 ms | errors |');
console.log('|---|---|---|---|---|---|---|---|');
for (const [k, r] of [['micro-batching off', off], ['micro-batching 2 ms', on]] as const) {
  console.log(`| ${k} | ${clients} | ${r.samplesPerSecond.toFixed(0)} | ${(r.samplesPerSecond / ort1).toFixed(2)} | ${(r.samplesPerSecond / ort32).toFixed(2)} | ${r.p50ms.toFixed(1)} | ${r.p99ms.toFixed(1)} | ${r.errors} |`);
}
