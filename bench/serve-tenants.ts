// Memory and latency per tenant in `refit serve` (issue 13): N tenants each send adapting
// batches through app.inject (no network) on the shipped CNN; RSS and heap are read after each
// step. Writes bench/results/serve-tenants.json and prints a markdown table.
// Usage: npx tsx bench/serve-tenants.ts [method=tent] [arena=off|on]   (refit serve runs with the arena off)
import { writeFileSync } from 'node:fs';
import { loadModel } from '../src/model.ts';
import { loadFashionMnist } from '../src/data/fashion-mnist.ts';
import { SqliteRegistry } from '../src/registry/index.ts';
import { buildServer } from '../src/serve/index.ts';

const method = process.argv[2] ?? 'tent';
const counts = [1, 8, 32, 64];
const arena = (process.argv[3] ?? 'off') === 'on';
const cnn = await loadModel(new URL('../models/fmnist-cnn.onnx', import.meta.url).pathname, { threads: 1, memoryArena: arena });
const data = loadFashionMnist('test', { limit: 64 });
const inputs = { dims: [8, 1, 28, 28], data: Array.from(data.images.subarray(0, 8 * 784)) };
const app = await buildServer({ models: { cnn }, registry: new SqliteRegistry(':memory:'), method, maxTenants: 1000, defaultMetrics: false });
const mb = (b: number) => b / 2 ** 20;
const gcNow = () => (globalThis as { gc?: () => void }).gc?.();
const send = async (tenant: string) => {
  const t0 = performance.now();
  const r = await app.inject({ method: 'POST', url: '/v1/models/cnn/predict', headers: { 'x-refit-tenant': tenant }, payload: { inputs } });
  if (r.statusCode !== 200) throw new Error(r.body);
  return performance.now() - t0;
};
await send('warm');
gcNow();
const base = process.memoryUsage();
const rows: { tenants: number; rssMB: number; heapMB: number; rssPerTenantMB: number; firstRequestMs: number; nextRequestMs: number }[] = [];
let made = 0;
for (const n of counts) {
  let first = 0, next = 0, k = 0;
  while (made < n) {
    const t = `t${made++}`;
    first += await send(t);
    next += await send(t);
    k++;
  }
  gcNow();
  const m = process.memoryUsage();
  rows.push({ tenants: n, rssMB: mb(m.rss), heapMB: mb(m.heapUsed), rssPerTenantMB: mb(m.rss - base.rss) / n, firstRequestMs: first / k, nextRequestMs: next / k });
}
await app.close();
const out = { method, model: 'models/fmnist-cnn.onnx', batch: 8, baseline: { rssMB: mb(base.rss), heapMB: mb(base.heapUsed) }, rows, node: process.version, when: new Date().toISOString() };
writeFileSync(new URL(`./results/serve-tenants-${method}.json`, import.meta.url), `${JSON.stringify(out, null, 2)}\n`);
console.log(`method ${method}, one warm tenant: RSS ${mb(base.rss).toFixed(0)} MB\n`);
console.log('| tenants | RSS MB | heap MB | RSS per added tenant MB | first request ms (new tenant, mean of the step) | next request ms |');
console.log('|---|---|---|---|---|---|');
for (const r of rows) console.log(`| ${r.tenants} | ${r.rssMB.toFixed(0)} | ${r.heapMB.toFixed(0)} | ${r.rssPerTenantMB.toFixed(1)} | ${r.firstRequestMs.toFixed(0)} | ${r.nextRequestMs.toFixed(1)} |`);
