// The load test's tail without HTTP (docs/serve.md): batch-1 runs of the shipped CNN at a fixed rate
// (open loop, latency from when each was due), through the server's InferencePool (worker threads,
// one onnxruntime thread each) and through one plain onnxruntime session on this thread, one after
// the other in one process. If the pool alone has the service's p99/p50, the tail is the thread
// round trip on a busy machine, not Fastify, JSON or micro-batching.
//
//   npx tsx bench/serve-pool-latency.ts [--rate 1400] [--seconds 4] [--workers 2]
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { InferencePool } from '../src/serve/inference-pool.ts';
import { createSession } from '../src/onnx/runtime.ts';
import { loadModel } from '../src/model.ts';
import { quantile } from './stats.ts';

const { values: a } = parseArgs({ options: { rate: { type: 'string', default: '1400' }, seconds: { type: 'string', default: '4' }, workers: { type: 'string', default: '2' } } });
const rate = Number(a.rate), seconds = Number(a.seconds), workers = Number(a.workers);
const path = fileURLToPath(new URL('../models/fmnist-cnn.onnx', import.meta.url));
const bytes = readFileSync(path);
const model = await loadModel(path);
const input = model.inputs[0]!.name, output = model.outputs[0]!.name;
const x = new Float32Array(784).map((_, i) => (i % 17) / 17);

/** Open loop: call i is due at t0 + i/rate; calls overlap when `run` does not finish in time. */
async function openLoop(run: () => Promise<unknown>, serial: boolean): Promise<{ p50: number; p99: number; n: number }> {
  for (let i = 0; i < 50; i++) await run();
  const lat: number[] = [], pending: Promise<void>[] = [];
  const t0 = performance.now(), n = Math.round(rate * seconds);
  for (let i = 0; i < n; i++) {
    const due = t0 + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const p = run().then(() => { lat.push(performance.now() - due); });
    if (serial) await p; else pending.push(p);
  }
  await Promise.all(pending);
  return { p50: quantile(lat, 0.5), p99: quantile(lat, 0.99), n: lat.length };
}

const pool = new InferencePool({ workers, session: { memoryArena: false } });
const viaPool = await openLoop(() => pool.run('cnn', () => bytes, input, { dtype: 'float32', dims: [1, 1, 28, 28], data: x }, output), false);
await pool.close();
const session = await createSession(bytes, { memoryArena: false, threads: 1 });
const plain = await openLoop(() => session.run({ [input]: new ort.Tensor('float32', x, [1, 1, 28, 28]) }), true);
const f = (r: typeof plain) => `p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms (p99/p50 ${(r.p99 / r.p50).toFixed(2)}), ${r.n} runs`;
console.log(`batch-1 runs at ${rate}/s for ${seconds} s, load ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}:`);
console.log(`- InferencePool, ${workers} worker${workers > 1 ? 's' : ''} of 1 thread: ${f(viaPool)}`);
console.log(`- one plain session of 1 thread on this thread: ${f(plain)}`);
