// The whole loop in one process, over real HTTP: two FleetDevices (the shipped CNN, each on its
// own shifted Fashion-MNIST-C stream) upload through HttpCloudLink to the cloud service; a worker
// consumes the jobs from the in-process queue and consolidates with the default consolidator
// (src/fleet/consolidator.ts, fewer epochs); each device then syncs and serves its own adapter,
// and reports it applied. Isolation holds end to end: each device gets its own adapter.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../../src/model.ts';
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';
import { continualStream } from '../../src/data/streams.ts';
import { SqliteRegistry } from '../../src/registry/index.ts';
import { FsBlobStore } from '../../src/registry/blob-store-fs.ts';
import { MemoryFleetStore } from '../../src/fleet/store-memory.ts';
import { MemoryJobQueue } from '../../src/fleet/queue-memory.ts';
import { createCloudServer } from '../../src/fleet/cloud-server.ts';
import { HttpCloudLink, registerDevice } from '../../src/fleet/link-http.ts';
import { FleetDevice } from '../../src/fleet/device.ts';
import { createConsolidator } from '../../src/fleet/consolidator.ts';
import { runWorker } from '../../src/fleet/worker.ts';

const ADMIN = 'admin-token-0123456789';

test('devices upload over HTTP, a worker consolidates, each device applies its own adapter', { timeout: 60_000 }, async (t) => {
  const cnn = await loadModel(new URL('../../models/fmnist-cnn.onnx', import.meta.url).pathname, { threads: 1 });
  const dir = mkdtempSync(join(tmpdir(), 'refit-loop-'));
  const store = new MemoryFleetStore();
  const queue = new MemoryJobQueue({ backoffMs: { base: 10, cap: 100 } });
  const registry = new SqliteRegistry(':memory:');
  const blobs = new FsBlobStore(dir);
  const models = { cnn: { sampleDims: [1, 28, 28], maxSamples: 512 } };
  const app = await createCloudServer({ store, blobs, queue, registry }, { adminToken: ADMIN, models, defaultMetrics: false });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  const consolidator = await createConsolidator({ base: cnn, consolidate: { epochs: 2, batch: 32 } });
  const worker = await runWorker({ store, blobs, queue, registry, consolidator, models });
  t.after(async () => {
    await worker.stop();
    await app.close();
    await queue.close();
    await consolidator.release();
    await registry.close();
    await cnn.release();
    rmSync(dir, { recursive: true, force: true });
  });

  const data = loadFashionMnist('test', { limit: 512 });
  const devices = [];
  for (const [name, domain] of [['cam-a', 'gaussian_noise'], ['cam-b', 'fog']] as const) {
    const token = await registerDevice(url, ADMIN, 'cnn', name);
    const link = new HttpCloudLink({ url, model: 'cnn', device: name, token, backoffMs: 10 });
    const dev = new FleetDevice({ base: cnn, link, model: 'cnn', device: name, uploadEvery: 2, filter: { warmupSamples: null } });
    const batches = [...continualStream(data, { domains: [domain], severity: 5, batchSize: 32, batchesPerDomain: 4, seed: name === 'cam-a' ? 1 : 2 })];
    for (const b of batches) await dev.predict({ dtype: 'float32', dims: [b.size, 1, 28, 28], data: b.x });
    await dev.flush();
    assert.ok(dev.stats.uploads >= 1, `${name} uploaded: ${JSON.stringify(dev.stats)} ${JSON.stringify(dev.events)}`);
    devices.push({ name, dev, batches });
  }

  // Wait for every upload's job to be committed.
  const deadline = Date.now() + 40_000;
  for (const { name, dev } of devices) {
    const job = `consolidate:cnn:${name}:${dev.lastRound}`;
    while (!(await store.jobResult(job))) {
      assert.ok(Date.now() < deadline, `${job} not done`);
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal((await store.jobResult(job))!.version !== null, true, JSON.stringify(await store.jobResult(job)));
  }

  for (const { name, dev, batches } of devices) {
    const r = await dev.sync();
    assert.equal(r.applied, true, `${name}: ${r.reason}`);
    assert.equal(dev.version?.name, `device.${name}`, 'its own adapter, not the other device\'s');
    const p = await dev.predict({ dtype: 'float32', dims: [batches[0]!.size, 1, 28, 28], data: batches[0]!.x });
    assert.equal(p.version?.name, `device.${name}`);
    assert.equal((await store.getDevice('cnn', name))!.appliedVersion, dev.version!.version, 'reported applied');
    const v = await registry.get('cnn', `device.${name}`);
    assert.equal((v!.meta.config as { device: string }).device, name);
    await dev.release();
  }
  const ups = await Promise.all(devices.map(({ name }) => store.uploads('cnn', name)));
  assert.ok(ups.every((u) => u.every((x, i) => x.round === i + 1)), 'rounds 1, 2, … per device');
});
