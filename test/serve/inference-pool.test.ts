// Plain inference on worker threads (src/serve/inference-pool.ts): the workers' answers equal the
// model's own on this thread; two runs are in flight at once with two workers (one queue, first
// idle worker); a model that onnxruntime refuses fails only its own runs, with onnxruntime's
// message, and is sent again next time; closing lets the run on a worker finish and fails what
// waits in the queue. Through the server: predictions
// with inferenceWorkers equal those without, for the base model and a registry adapter version.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/model.ts';
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';
import { InferencePool } from '../../src/serve/inference-pool.ts';
import { SqliteRegistry } from '../../src/registry/index.ts';
import { buildServer } from '../../src/serve/index.ts';
import { PeftModel, lora, adapterFiles } from '../../src/peft/index.ts';
import type { Tensor } from '../../src/onnx/tensor.ts';

const cnn = await loadModel(new URL('../../models/fmnist-cnn.onnx', import.meta.url).pathname, { threads: 1 });
const data = loadFashionMnist('test', { limit: 64 });
const x = (from: number, n: number): Tensor => ({ dtype: 'float32', dims: [n, 1, 28, 28], data: data.images.slice(from * 784, (from + n) * 784) });
test.after(() => cnn.release());

const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);

test('worker answers equal the model run on this thread; two workers run two batches at once', async () => {
  const pool = new InferencePool({ workers: 2 });
  try {
    const bytes = () => cnn.toBytes();
    const inputs = [x(0, 8), x(8, 3), x(11, 16), x(27, 1), x(28, 5)];
    const got = await Promise.all(inputs.map((t) => pool.run('cnn', bytes, 'x', t, 'logits')));
    for (let i = 0; i < inputs.length; i++) {
      const want = (await cnn.run({ x: inputs[i]! }, { outputs: ['logits'] })).logits!.data as Float32Array;
      assert.equal(got[i]!.length, want.length);
      assert.ok(maxDiff(got[i]!, want) < 1e-5, `batch ${i}: max difference ${maxDiff(got[i]!, want)}`);
    }
    // The caller's arrays are copied to the worker, not transferred away.
    assert.equal(inputs[0]!.data.length, 8 * 784);
    // Three runs sent at once: two go to the two workers, one waits in the queue.
    const runs = [0, 1, 2].map((i) => pool.run('cnn', bytes, 'x', x(i * 16, 16), 'logits'));
    assert.equal(pool.inFlight, 3);
    await Promise.all(runs);
    assert.equal(pool.inFlight, 0);
  } finally {
    await pool.close();
  }
});

test('a model onnxruntime refuses fails its runs with the reason; the pool keeps serving; close finishes the run in flight and fails the queued one', async () => {
  const pool = new InferencePool({ workers: 1 });
  const bad = new TextEncoder().encode('not an onnx model');
  await assert.rejects(pool.run('bad', () => bad, 'x', x(0, 1), 'logits'), /onnxruntime-node rejected the graph/);
  // Still serving, and the bad key is not remembered as loaded: the bytes are asked for again.
  let asked = 0;
  await assert.rejects(pool.run('bad', () => (asked++, bad), 'x', x(0, 1), 'logits'), /rejected the graph/);
  assert.equal(asked, 1);
  const ok = await pool.run('cnn', () => cnn.toBytes(), 'x', x(0, 2), 'logits');
  assert.equal(ok.length, 20);
  // A loaded model is not sent again until forgotten (a deleted adapter's versions are).
  let sent = 0;
  const counted = () => (sent++, cnn.toBytes());
  await pool.run('shop@1', counted, 'x', x(0, 1), 'logits');
  await pool.run('shop@1', counted, 'x', x(0, 1), 'logits');
  assert.equal(sent, 1);
  pool.forget((k) => k.startsWith('shop@'));
  await pool.run('shop@1', counted, 'x', x(0, 1), 'logits');
  assert.equal(sent, 2);
  // A wrong input name is onnxruntime's error, for that run only.
  await assert.rejects(pool.run('cnn', () => cnn.toBytes(), 'nope', x(0, 2), 'logits'), /nope|input/i);
  // Closing while a run is on the worker: that run finishes (terminating a worker inside
  // onnxruntime's native run would abort the process), the one still queued is failed.
  const onWorker = pool.run('cnn', () => cnn.toBytes(), 'x', x(0, 64), 'logits');
  const queued = assert.rejects(pool.run('cnn', () => cnn.toBytes(), 'x', x(0, 64), 'logits'), /closed/);
  await pool.close();
  assert.equal((await onWorker).length, 640);
  await queued;
  await assert.rejects(pool.run('cnn', () => cnn.toBytes(), 'x', x(0, 1), 'logits'), /closed/);
});

test('the server with inference workers answers as without them, for the base model and an adapter version', async () => {
  const make = (inferenceWorkers: number) => buildServer({ models: { cnn }, registry: new SqliteRegistry(':memory:'), defaultMetrics: false, inferenceWorkers });
  const plain = await make(0);
  const pooled = await make(2);
  try {
    // One LoRA adapter, put into both registries.
    const peft = PeftModel.from(cnn).withAdapter('shop', lora({ targets: ['head'], rank: 2 }));
    for (const [k, v] of peft.adapterValues('shop')) {
      const d = v.data as Float32Array;
      if (/lora_B|\.B$|_b$/i.test(k)) for (let i = 0; i < d.length; i++) d[i] = Math.sin(7 + i) * 0.5; // B ≠ 0: the adapter changes the logits
    }
    peft.touch(peft.adapterValues('shop').keys());
    const files = adapterFiles(peft, 'shop');
    for (const app of [plain, pooled]) {
      const r = await app.inject({ method: 'PUT', url: '/v1/models/cnn/adapters/shop', payload: { config: files.config, weights: Buffer.from(files.weights).toString('base64') } });
      assert.ok(r.statusCode < 300, r.body);
    }
    for (const extra of [{}, { adapter: 'shop' }]) {
      const body = (from: number, n: number) => ({ inputs: { dims: [n, 1, 28, 28], data: Array.from(data.images.subarray(from * 784, (from + n) * 784)) }, output: 'logits', ...extra });
      const sizes = [4, 1, 7, 2];
      let from = 0;
      const reqs = sizes.map((n) => { const b = body(from, n); from += n; return b; });
      const ask = (app: typeof plain) => Promise.all(reqs.map((p) => app.inject({ method: 'POST', url: '/v1/models/cnn/predict', payload: p }).then((r) => {
        assert.equal(r.statusCode, 200, r.body);
        return r.json() as { logits: number[][] };
      })));
      const [a, b] = [await ask(plain), await ask(pooled)];
      for (let i = 0; i < sizes.length; i++) {
        const d = Math.max(...a[i]!.logits.flat().map((v, k) => Math.abs(v - b[i]!.logits.flat()[k]!)));
        assert.ok(d < 1e-4, `${JSON.stringify(extra)} request ${i}: max difference ${d}`);
      }
    }
  } finally {
    await plain.close();
    await pooled.close();
  }
});
