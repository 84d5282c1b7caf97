// HttpCloudLink against the real cloud service on a loopback port, and its retry rule on a
// scripted server: connection errors and 5xx are retried with backoff, a 4xx never is.
import { test } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SqliteRegistry } from '../../src/registry/index.ts';
import { createCloudServer } from '../../src/fleet/cloud-server.ts';
import { HttpCloudLink, registerDevice } from '../../src/fleet/link-http.ts';
import { FleetError, type UploadPayload } from '../../src/fleet/types.ts';
import { MemoryFleetStore } from '../../src/fleet/store-memory.ts';
import { FsBlobStore } from '../../src/registry/blob-store-fs.ts';
import { RecordingQueue } from './fakes.ts';

const ADMIN = 'admin-token-0123456789';
const payload = (device: string, round: number): UploadPayload => ({ model: 'cnn', device, round, dims: [2, 1, 4, 4], data: new Float32Array(32).fill(0.5) });
const fast = { backoffMs: 5, maxBackoffMs: 20 };

test('HttpCloudLink: register, upload, replay refused with its reason, adapter fetched and verified, applied recorded', async (t) => {
  const store = new MemoryFleetStore();
  const queue = new RecordingQueue();
  const registry = new SqliteRegistry(':memory:');
  const dir = mkdtempSync(join(tmpdir(), 'refit-link-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const app = await createCloudServer({ store, blobs: new FsBlobStore(dir), queue, registry }, { adminToken: ADMIN, models: { cnn: { sampleDims: [1, 4, 4] } }, defaultMetrics: false });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  try {
    await assert.rejects(registerDevice(url, 'wrong-admin-token-000', 'cnn', 'cam-1', fast), (e: FleetError) => e.code === 'unauthorized');
    const token = await registerDevice(url, ADMIN, 'cnn', 'cam-1', fast);
    const link = new HttpCloudLink({ url, model: 'cnn', device: 'cam-1', token, ...fast });
    assert.deepEqual(await link.upload(payload('cam-1', 1)), { accepted: true });
    assert.deepEqual(await link.upload(payload('cam-1', 1)), { accepted: true }, 'the same round and bytes again: a safe retry');
    const replay = await link.upload({ ...payload('cam-1', 1), data: new Float32Array(32).fill(0.25) });
    assert.equal(replay.accepted, false);
    assert.match(replay.reason!, /^replay: round 1 is not newer/);
    assert.equal(queue.jobs.length, 1);

    assert.equal(await link.fetchAdapter(null), undefined);
    const files = { weights: new Uint8Array([1, 2, 3, 4]), config: '{"peft_type":"TEST"}\n' };
    await registry.put('cnn', 'fleet', files);
    const got = await link.fetchAdapter(null);
    assert.equal(got?.name, 'fleet');
    assert.equal(got?.version, 1);
    assert.deepEqual(got?.files, files);
    assert.equal(await link.fetchAdapter({ name: 'fleet', version: 1 }), undefined, 'nothing newer');
    await link.reportApplied({ name: 'fleet', version: 1 });
    assert.equal((await store.getDevice('cnn', 'cam-1'))!.appliedVersion, 1);
    await assert.rejects(link.reportApplied({ name: 'fleet', version: 7 }), (e: FleetError) => e.code === 'not-found' && /no version 7/.test(e.message));

    const other = new HttpCloudLink({ url, model: 'cnn', device: 'cam-1', token: 'stolen?', ...fast });
    assert.equal((await other.upload(payload('cam-1', 2))).reason?.startsWith('unauthorized:'), true);
  } finally {
    await app.close();
  }
});

/** A server that answers from a script, one status per request. */
async function scripted(statuses: number[]): Promise<{ url: string; hits: () => number; server: Server }> {
  let n = 0;
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const s = statuses[Math.min(n++, statuses.length - 1)]!;
      res.writeHead(s, { 'content-type': 'application/json' });
      res.end(s === 204 ? '' : JSON.stringify({ statusCode: s, message: `scripted ${s}`, reason: s >= 400 ? 'invalid' : undefined }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, hits: () => n, server };
}

test('HttpCloudLink retries 5xx and connection errors with backoff, never a 4xx', async () => {
  const s1 = await scripted([503, 502, 202]);
  const link = (url: string, retries = 4) => new HttpCloudLink({ url, model: 'cnn', device: 'd', token: 't', retries, ...fast });
  assert.deepEqual(await link(s1.url).upload(payload('d', 1)), { accepted: true });
  assert.equal(s1.hits(), 3);
  s1.server.close();

  const s2 = await scripted([400]);
  const r = await link(s2.url).upload(payload('d', 1));
  assert.deepEqual(r, { accepted: false, reason: 'invalid: scripted 400' });
  await assert.rejects(link(s2.url).fetchAdapter(null), (e: FleetError) => e.code === 'invalid');
  assert.equal(s2.hits(), 2, 'one request each: no retry of a 4xx');
  s2.server.close();

  const s3 = await scripted([500]);
  await assert.rejects(link(s3.url, 2).reportApplied(null), (e: FleetError) => e.code === 'unavailable' && /after 3 tries: 500 scripted 500/.test(e.message));
  assert.equal(s3.hits(), 3);
  s3.server.close();

  // Nothing listening: connection refused, retried, then 'unavailable'.
  const t0 = Date.now();
  await assert.rejects(link(s3.url, 3).upload(payload('d', 1)), (e: FleetError) => e.code === 'unavailable' && /4 tries/.test(e.message) && /ECONNREFUSED/.test(e.message));
  assert.ok(Date.now() - t0 >= 5 * 0.5 * (1 + 2 + 4) - 1, 'backed off between tries');
});
