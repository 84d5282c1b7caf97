// A fault test of the cloud service with the worker, on NATS JetStream (skipped when nats-server
// is not installed): the queue goes down and comes back while a device uploads. An upload whose
// job cannot be published is answered 503 but stays recorded, and the device's next round's job
// consolidates it: no acknowledged upload is lost, and none is consolidated twice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteRegistry } from '../../src/registry/index.ts';
import { FsBlobStore } from '../../src/registry/blob-store-fs.ts';
import { MemoryFleetStore } from '../../src/fleet/store-memory.ts';
import { createCloudServer, type CloudServerConfig } from '../../src/fleet/cloud-server.ts';
import { createJobHandler } from '../../src/fleet/worker.ts';
import { natsServerBin, startNats, NATS_MISSING } from '../helpers/nats.ts';
import { averagingConsolidator, readAdapter } from './fakes.ts';

const ADMIN = 'admin-token-0123456789';
const config: CloudServerConfig = { adminToken: ADMIN, models: { cnn: { sampleDims: [1, 4, 4] } }, defaultMetrics: false };
const dirs: string[] = [];
test.after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });
const tmp = () => { const d = mkdtempSync(join(tmpdir(), 'refit-faults-')); dirs.push(d); return d; };

test('the queue down and back: an upload answered 503 is recorded and covered by the next round\'s job; no acknowledged upload lost', { skip: !natsServerBin() ? NATS_MISSING : undefined, timeout: 60_000 }, async (t) => {
  const { NatsJobQueue } = await import('../../src/fleet/queue-nats.ts');
  const { HttpCloudLink, registerDevice } = await import('../../src/fleet/link-http.ts');
  const cleanups: (() => unknown)[] = [];
  t.after(async () => { for (const c of cleanups.reverse()) await c(); });
  const nats = (await startNats())!;
  cleanups.push(() => nats.cleanup());
  const store = new MemoryFleetStore();
  const registry = new SqliteRegistry(':memory:');
  const blobs = new FsBlobStore(tmp());
  const queue = await NatsJobQueue.connect({ servers: nats.url, prefix: 'qd', ackWaitMs: 1500, publishTimeoutMs: 1000, warn: () => {} });
  cleanups.push(() => queue.close());
  const consolidator = averagingConsolidator();
  const worker = await queue.consume(createJobHandler({ store, blobs, queue, registry, consolidator, models: config.models }));
  cleanups.push(() => worker.stop());
  const app = await createCloudServer({ store, blobs, queue, registry }, config);
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  cleanups.push(() => app.close());
  const link = new HttpCloudLink({ url, model: 'cnn', device: 'cam-1', token: await registerDevice(url, ADMIN, 'cnn', 'cam-1'), retries: 1, backoffMs: 10 });
  const up = (round: number, fill: number) => link.upload({ model: 'cnn', device: 'cam-1', round, dims: [2, 1, 4, 4], data: new Float32Array(32).fill(fill) });
  const done = async (round: number) => {
    const deadline = Date.now() + 20_000;
    while (!(await store.jobResult(`consolidate:cnn:cam-1:${round}`))) {
      assert.ok(Date.now() < deadline, `job of round ${round} not done`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  assert.deepEqual(await up(1, 1), { accepted: true });
  await done(1);
  await nats.stop();
  // The upload is recorded (bytes and row) but its job cannot be published: 503, retried once, then unavailable.
  await assert.rejects(up(2, 2), (e: Error & { code?: string }) => e.code === 'unavailable' && /upload is recorded/.test(e.message));
  assert.equal((await store.uploads('cnn', 'cam-1')).length, 2);
  await nats.restart();
  // The device moves on to its next round (FleetDevice never reuses a round); that job covers round 2 too.
  assert.deepEqual(await up(3, 3), { accepted: true });
  await done(3);
  const v = await registry.get('cnn', 'device.cam-1');
  assert.deepEqual((v!.meta.config as { rounds: number[] }).rounds, [2, 3], 'round 2 consolidated with round 3');
  assert.deepEqual(readAdapter(v!.files), { mean: 1 + 2.5, n: 6 });
  const covered = (await registry.versions('cnn', 'device.cam-1')).flatMap((x) => (x.meta.config as { rounds: number[] }).rounds);
  assert.deepEqual(covered.sort(), (await store.uploads('cnn', 'cam-1')).map((u) => u.round).sort(), 'every recorded upload is in a published version');
});
