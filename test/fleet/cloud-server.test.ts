// The fleet's cloud service through app.inject: registration, uploads becoming jobs, and the
// "Bad input" part of issue 15: malformed tensors, oversize bodies, wrong tokens, another
// device's id, replayed rounds and path traversal are each refused with a 4xx naming the reason,
// logged with that reason, counted, and leave no upload record and no job behind. Device
// isolation: one device's uploads never reach another device's adapter.
import { test } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import type { FastifyInstance } from 'fastify';
import { SqliteRegistry } from '../../src/registry/index.ts';
import { createCloudServer, type CloudServerConfig } from '../../src/fleet/cloud-server.ts';
import { createJobHandler } from '../../src/fleet/worker.ts';
import { encodeUpload } from '../../src/fleet/upload-codec.ts';
import type { UploadPayload, FleetStore } from '../../src/fleet/types.ts';
import { MemoryFleetStore } from '../../src/fleet/store-memory.ts';
import { FsBlobStore } from '../../src/registry/blob-store-fs.ts';
import { RecordingQueue, averagingConsolidator, readAdapter } from './fakes.ts';

const ADMIN = 'admin-token-0123456789';
const DIMS = [1, 4, 4];
const config: CloudServerConfig = { adminToken: ADMIN, models: { cnn: { sampleDims: DIMS, maxSamples: 8, classes: 10 } }, maxUploadBytes: 4096, defaultMetrics: false };

const dirs: string[] = [];
test.after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

async function setup(o: { store?: FleetStore } = {}) {
  const store = new MemoryFleetStore();
  const dir = mkdtempSync(join(tmpdir(), 'refit-fleet-'));
  dirs.push(dir);
  const blobs = new FsBlobStore(dir);
  const queue = new RecordingQueue();
  const registry = new SqliteRegistry(':memory:');
  const logs: Record<string, unknown>[] = [];
  const app = await createCloudServer({ store: o.store ?? store, blobs, queue, registry }, {
    ...config, logger: { level: 'info', stream: { write: (l: string) => { logs.push(JSON.parse(l)); } } },
  });
  const register = async (device: string): Promise<string> => {
    const r = await app.inject({ method: 'POST', url: '/v1/fleet/cnn/devices', headers: { authorization: `Bearer ${ADMIN}` }, payload: { device } });
    assert.equal(r.statusCode, 201, r.body);
    return r.json().token;
  };
  /** Upload records of the devices named (all of them: 'cam-a', 'cam-b', 'cam-1'). */
  const records = async () => (await Promise.all(['cam-a', 'cam-b', 'cam-1'].map((d) => store.uploads('cnn', d)))).flat();
  return { app, store, blobs, queue, registry, logs, register, records };
}

const payload = (device: string, round: number, fill = 0.5, n = 2, o: Partial<UploadPayload> = {}): UploadPayload =>
  ({ model: 'cnn', device, round, dims: [n, ...DIMS], data: new Float32Array(n * 16).fill(fill), ...o });

const upload = (app: FastifyInstance, device: string, token: string, body: Uint8Array | Buffer | string, contentType = 'application/octet-stream') =>
  app.inject({ method: 'POST', url: `/v1/fleet/cnn/devices/${device}/uploads`, headers: { authorization: `Bearer ${token}`, 'content-type': contentType }, payload: Buffer.from(body as Uint8Array) });

test('register → upload → a consolidate job; the record, the blob and the counters agree', async () => {
  const { app, blobs, queue, register, records } = await setup();
  const token = await register('cam-1');
  assert.equal(token.length >= 40, true);
  const again = await app.inject({ method: 'POST', url: '/v1/fleet/cnn/devices', headers: { authorization: `Bearer ${ADMIN}` }, payload: { device: 'cam-1' } });
  assert.equal(again.statusCode, 409);

  const bytes = encodeUpload(payload('cam-1', 1));
  const r = await upload(app, 'cam-1', token, bytes);
  assert.equal(r.statusCode, 202, r.body);
  const a = r.json();
  assert.deepEqual({ round: a.round, samples: a.samples, bytes: a.bytes, job: a.job, duplicate: a.duplicate }, { round: 1, samples: 2, bytes: bytes.byteLength, job: 'consolidate:cnn:cam-1:1', duplicate: false });
  assert.deepEqual(queue.jobs, [{ id: 'consolidate:cnn:cam-1:1', kind: 'consolidate', model: 'cnn', device: 'cam-1', round: 1 }]);
  assert.equal((await records()).length, 1);
  const rec = (await records())[0]!;
  assert.equal(rec.blobKey, `uploads/cnn/cam-1/1-${a.sha256}`);
  assert.deepEqual(await blobs.get(rec.blobKey), bytes);

  const m = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  assert.match(m, /refit_fleet_uploads_accepted_total\{model="cnn"\} 1/);
  assert.match(m, new RegExp(`refit_fleet_upload_bytes_total\\{model="cnn"\\} ${bytes.byteLength}`));
  assert.match(m, /refit_fleet_jobs_published_total\{kind="consolidate",duplicate="false"\} 1/);
  const doc = (await app.inject({ method: 'GET', url: '/docs/json' })).json();
  for (const p of ['/v1/fleet/{model}/devices', '/v1/fleet/{model}/devices/{device}/uploads', '/v1/fleet/{model}/devices/{device}/adapter', '/v1/fleet/{model}/devices/{device}/applied', '/v1/fleet/{model}/aggregate']) {
    assert.ok(doc.paths[p], `OpenAPI lists ${p}`);
  }
  await app.close();
});

test('bad input: each rejection is a 4xx with its reason, logged, counted, with no record and no job', async () => {
  const { app, store, queue, logs, register, records } = await setup();
  const tokA = await register('cam-a');
  const tokB = await register('cam-b');
  assert.equal((await upload(app, 'cam-a', tokA, encodeUpload(payload('cam-a', 5)))).statusCode, 202);
  const recorded = (await records()).length;
  const jobs = queue.jobs.length;

  const good = encodeUpload(payload('cam-a', 6));
  const nan = encodeUpload(payload('cam-a', 6));
  new DataView(nan.buffer, nan.byteOffset).setFloat32(nan.byteLength - 4, NaN, true); // last value of x
  const wrongDims = encodeUpload({ ...payload('cam-a', 6), dims: [2, 1, 2, 8] });
  const tooMany = encodeUpload(payload('cam-a', 6, 0.5, 9));
  const huge = new Uint8Array(5000); // over maxUploadBytes: refused on Content-Length, never decoded
  const headerLie = good.slice();
  new DataView(headerLie.buffer).setBigUint64(0, 1n << 40n, true);

  const cases: { what: string; res: () => ReturnType<typeof upload>; status: number; reason: string; message: RegExp }[] = [
    { what: 'NaN in x', res: () => upload(app, 'cam-a', tokA, nan), status: 400, reason: 'invalid', message: /non-finite/ },
    { what: 'wrong sample dims', res: () => upload(app, 'cam-a', tokA, wrongDims), status: 400, reason: 'invalid', message: /expected \[n, 1, 4, 4\]/ },
    { what: 'truncated', res: () => upload(app, 'cam-a', tokA, good.subarray(0, good.byteLength - 7)), status: 400, reason: 'invalid', message: /truncated|covers|outside/ },
    { what: 'huge header length', res: () => upload(app, 'cam-a', tokA, headerLie), status: 400, reason: 'invalid', message: /header length/ },
    { what: 'not safetensors', res: () => upload(app, 'cam-a', tokA, Buffer.from('hello, cloud')), status: 400, reason: 'invalid', message: /header/ },
    { what: 'predicted class out of range', res: () => upload(app, 'cam-a', tokA, encodeUpload({ ...payload('cam-a', 6), predicted: Int32Array.from([3, 10]) })), status: 400, reason: 'invalid', message: /expected a class index in \[0, 10\)/ },
    { what: 'too many samples', res: () => upload(app, 'cam-a', tokA, tooMany), status: 400, reason: 'invalid', message: /over the limit of 8/ },
    { what: 'oversize body', res: () => upload(app, 'cam-a', tokA, huge), status: 413, reason: 'too-large', message: /too large|limit/i },
    { what: 'JSON body', res: () => upload(app, 'cam-a', tokA, '{"x":[1]}', 'application/json'), status: 415, reason: 'media-type', message: /octet-stream/ },
    { what: 'no token', res: () => app.inject({ method: 'POST', url: '/v1/fleet/cnn/devices/cam-a/uploads', headers: { 'content-type': 'application/octet-stream' }, payload: Buffer.from(good) }), status: 401, reason: 'unauthorized', message: /Bearer/ },
    { what: 'wrong token', res: () => upload(app, 'cam-a', 'not-the-token', good), status: 401, reason: 'unauthorized', message: /own token/ },
    { what: 'admin token as device token', res: () => upload(app, 'cam-a', ADMIN, good), status: 401, reason: 'unauthorized', message: /own token/ },
    { what: "B's token on A's path", res: () => upload(app, 'cam-a', tokB, good), status: 401, reason: 'unauthorized', message: /own token/ },
    { what: "B's path, payload claims A", res: () => upload(app, 'cam-b', tokB, encodeUpload(payload('cam-a', 6))), status: 403, reason: 'impersonation', message: /claims device 'cam-a'/ },
    { what: 'unknown device', res: () => upload(app, 'cam-zz', tokA, encodeUpload(payload('cam-zz', 1))), status: 401, reason: 'unauthorized', message: /own token/ },
    { what: 'other model in payload', res: () => upload(app, 'cam-a', tokA, encodeUpload({ ...payload('cam-a', 6), model: 'vit' })), status: 400, reason: 'invalid', message: /model 'vit'/ },
    { what: 'replayed round (same as last, other bytes)', res: () => upload(app, 'cam-a', tokA, encodeUpload(payload('cam-a', 5, 0.25))), status: 409, reason: 'replay', message: /not newer/ },
    { what: 'replayed older round', res: () => upload(app, 'cam-a', tokA, encodeUpload(payload('cam-a', 3))), status: 409, reason: 'replay', message: /not newer than .* last accepted round 5/ },
  ];
  for (const c of cases) {
    const before = logs.length;
    const r = await c.res();
    assert.equal(r.statusCode, c.status, `${c.what}: ${r.body}`);
    assert.match(r.json().message, c.message, c.what);
    assert.equal(r.json().reason, c.reason, c.what);
    const logged = logs.slice(before).find((l) => l.reason === c.reason && l.level === 40);
    assert.ok(logged, `${c.what}: a warning with reason '${c.reason}' is logged`);
    assert.equal((await records()).length, recorded, `${c.what}: no upload record`);
    assert.equal(queue.jobs.length, jobs, `${c.what}: no job`);
    assert.equal((await store.getDevice('cnn', 'cam-a'))!.lastRound, 5, `${c.what}: round unchanged`);
    assert.equal((await store.getDevice('cnn', 'cam-b'))!.lastRound, 0, `${c.what}: round unchanged`);
  }
  const m = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  assert.match(m, /refit_fleet_uploads_rejected_total\{model="cnn",reason="invalid"\} 8/);
  assert.match(m, /refit_fleet_uploads_rejected_total\{model="cnn",reason="replay"\} 2/);
  assert.match(m, /refit_fleet_uploads_rejected_total\{model="cnn",reason="unauthorized"\} 5/);
  // After all that, the next round of the real device is still accepted.
  assert.equal((await upload(app, 'cam-a', tokA, good)).statusCode, 202);
  await app.close();
});

test('a retry of the last round with the same bytes only re-publishes its job (after the queue was down)', async () => {
  const { app, queue, register, records } = await setup();
  const tok = await register('cam-1');
  const bytes = encodeUpload(payload('cam-1', 1));
  queue.failNext = true;
  const down = await upload(app, 'cam-1', tok, bytes);
  assert.equal(down.statusCode, 503);
  assert.match(down.json().message, /upload is recorded: send the same round again/);
  assert.equal((await records()).length, 1);
  assert.equal(queue.jobs.length, 0);
  const retry = await upload(app, 'cam-1', tok, bytes);
  assert.equal(retry.statusCode, 202, retry.body);
  assert.equal(retry.json().duplicate, true);
  assert.equal((await records()).length, 1, 'no second record');
  assert.deepEqual(queue.jobs.map((j) => j.id), ['consolidate:cnn:cam-1:1']);
  const again = await upload(app, 'cam-1', tok, bytes);
  assert.equal(again.statusCode, 202);
  assert.equal(queue.jobs.length, 1, 'the queue deduplicates the id');
  await app.close();
});

test('path parameters that could read as path steps or are too long are refused before any store call', async () => {
  const store = new MemoryFleetStore();
  const calls: string[] = [];
  const spy = new Proxy(store, { get: (t, k, r) => { const v = Reflect.get(t, k, r); return typeof v === 'function' ? (...a: unknown[]) => { calls.push(String(k)); return v.apply(t, a); } : v; } });
  const { app } = await setup({ store: spy });
  const auth = { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/octet-stream' };
  const urls = [
    '/v1/fleet/cnn/devices/..%2F..%2Fetc/uploads', '/v1/fleet/cnn/devices/../uploads', '/v1/fleet/cnn/devices/a..b/uploads', '/v1/fleet/..%2Fcnn/devices/x/uploads',
    '/v1/fleet/cnn/devices/.hidden/uploads', `/v1/fleet/cnn/devices/${'d'.repeat(121)}/uploads`, '/v1/fleet/cnn/devices/a%00b/uploads',
    '/v1/fleet/nope/devices/x/uploads',
  ];
  for (const url of urls) {
    const method = url.includes('adapter') ? 'GET' : 'POST';
    const r = await app.inject({ method, url, headers: auth, ...(method === 'POST' ? { payload: Buffer.from('x') } : {}) });
    assert.ok(r.statusCode >= 400 && r.statusCode < 500, `${url}: ${r.statusCode}`);
    assert.ok([400, 404].includes(r.statusCode), `${url}: ${r.statusCode} ${r.body}`);
  }
  const bad = await app.inject({ method: 'POST', url: '/v1/fleet/cnn/devices', headers: { authorization: `Bearer ${ADMIN}` }, payload: { device: '../x' } });
  assert.equal(bad.statusCode, 400);
  const extra = await app.inject({ method: 'POST', url: '/v1/fleet/cnn/devices', headers: { authorization: `Bearer ${ADMIN}` }, payload: { device: 'ok', admin: true } });
  assert.equal(extra.statusCode, 400);
  assert.match(extra.json().message, /unknown field 'admin'/);
  const noAdmin = await app.inject({ method: 'POST', url: '/v1/fleet/cnn/devices', headers: { authorization: 'Bearer wrong-admin-token-123' }, payload: { device: 'ok' } });
  assert.equal(noAdmin.statusCode, 401);
  assert.deepEqual(calls, [], 'no store call for a refused name');
  await app.close();
});

test('device isolation: A\'s uploads reach only A\'s adapter; B runs its own or the fleet\'s and cannot read or claim A\'s', async () => {
  const { app, store, blobs, queue, registry, register } = await setup();
  const tokA = await register('cam-a');
  const tokB = await register('cam-b');
  const get = (device: string, token: string, current?: string) =>
    app.inject({ method: 'GET', url: `/v1/fleet/cnn/devices/${device}/adapter${current ? `?current=${current}` : ''}`, headers: { authorization: `Bearer ${token}` } });
  assert.equal((await get('cam-a', tokA)).statusCode, 204, 'nothing published yet');
  for (const q of ['..%2Fx@1', 'fleet', 'fleet@0', 'fleet@-1', 'a%2Fb@1']) assert.equal((await get('cam-a', tokA, q)).statusCode, 400, `current=${q}`);

  assert.equal((await upload(app, 'cam-a', tokA, encodeUpload(payload('cam-a', 1, 1.0)))).statusCode, 202);
  assert.equal((await upload(app, 'cam-b', tokB, encodeUpload(payload('cam-b', 1, -2.0)))).statusCode, 202);
  assert.equal((await upload(app, 'cam-a', tokA, encodeUpload(payload('cam-a', 2, 3.0)))).statusCode, 202);
  const consolidator = averagingConsolidator();
  const handle = createJobHandler({ store, blobs, queue, registry, consolidator, models: config.models });
  for (const j of queue.jobs.filter((x) => x.device === 'cam-a')) await handle(j, { attempt: 1, keepAlive() {} });

  // Only A has an adapter; it saw A's two rounds (mean 1 then 3: 1 + 3 = 4) and nothing of B's.
  const seen = consolidator.calls.flatMap((c) => c.uploads.map((u) => u.data[0]));
  assert.deepEqual(seen, [1, 3]);
  const a = await get('cam-a', tokA);
  assert.equal(a.statusCode, 200, a.body);
  assert.equal(a.json().name, 'device.cam-a');
  assert.deepEqual(readAdapter({ weights: Buffer.from(a.json().weights, 'base64'), config: a.json().config }), { mean: 4, n: 4 });
  assert.equal((await get('cam-b', tokB)).statusCode, 204, 'B has no adapter of its own and there is no fleet adapter yet');
  assert.equal((await get('cam-a', tokB)).statusCode, 401, "B's token cannot read A's adapter");

  // B's own job runs; then an aggregation round: B gets its own, not A's.
  for (const j of queue.jobs.filter((x) => x.device === 'cam-b')) await handle(j, { attempt: 1, keepAlive() {} });
  const b = await get('cam-b', tokB);
  assert.equal(b.json().name, 'device.cam-b');
  assert.deepEqual(readAdapter({ weights: Buffer.from(b.json().weights, 'base64'), config: b.json().config }), { mean: -2, n: 2 });
  assert.equal((await get('cam-b', tokB, `device.cam-b@${b.json().version}`)).statusCode, 204, 'nothing newer');

  const agg = await app.inject({ method: 'POST', url: '/v1/fleet/cnn/aggregate', headers: { authorization: `Bearer ${ADMIN}` }, payload: { round: 1 } });
  assert.equal(agg.statusCode, 202);
  await handle(queue.jobs.at(-1)!, { attempt: 1, keepAlive() {} });
  const fleet = await registry.get('cnn', 'fleet');
  assert.deepEqual(readAdapter(fleet!.files), { mean: (4 * 4 + -2 * 2) / 6, n: 6 }, 'FedAvg by sample count');
  // A new device without its own adapter gets the fleet's.
  const tokC = await register('cam-c');
  assert.equal((await get('cam-c', tokC)).json().name, 'fleet');

  // Applied: B may report its own or the fleet's version, never A's.
  const applied = (device: string, token: string, body: object) => app.inject({ method: 'POST', url: `/v1/fleet/cnn/devices/${device}/applied`, headers: { authorization: `Bearer ${token}` }, payload: body });
  const claim = await applied('cam-b', tokB, { name: 'device.cam-a', version: 1 });
  assert.equal(claim.statusCode, 403);
  assert.equal((await applied('cam-b', tokB, { name: 'device.cam-b', version: 9 })).statusCode, 404);
  assert.equal((await applied('cam-b', tokB, { name: 'device.cam-b', version: b.json().version })).statusCode, 200);
  assert.equal((await store.getDevice('cnn', 'cam-b'))!.appliedVersion, b.json().version);
  assert.equal((await store.getDevice('cnn', 'cam-a'))!.appliedVersion, null);
  assert.equal((await applied('cam-b', tokB, {})).statusCode, 200, 'neither: the base model');
  assert.equal((await store.getDevice('cnn', 'cam-b'))!.appliedVersion, null);
  await app.close();
});

test('tenant isolation: models are separate namespaces; a device id registered under two models has two tokens that do not cross', async () => {
  const store = new MemoryFleetStore();
  const dir = mkdtempSync(join(tmpdir(), 'refit-fleet-'));
  dirs.push(dir);
  const queue = new RecordingQueue();
  const registry = new SqliteRegistry(':memory:');
  const app = await createCloudServer({ store, blobs: new FsBlobStore(dir), queue, registry }, { ...config, models: { cnn: { sampleDims: DIMS }, vit: { sampleDims: DIMS } } });
  const reg = async (model: string) => (await app.inject({ method: 'POST', url: `/v1/fleet/${model}/devices`, headers: { authorization: `Bearer ${ADMIN}` }, payload: { device: 'cam-1' } })).json().token as string;
  const cnnTok = await reg('cnn');
  const vitTok = await reg('vit');
  const send = (model: string, token: string, round: number) => app.inject({
    method: 'POST', url: `/v1/fleet/${model}/devices/cam-1/uploads`, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' },
    payload: Buffer.from(encodeUpload({ ...payload('cam-1', round), model })),
  });
  assert.equal((await send('vit', cnnTok, 1)).statusCode, 401, "cnn's token on vit's device of the same name");
  assert.equal((await send('cnn', vitTok, 1)).statusCode, 401);
  assert.equal((await send('cnn', cnnTok, 1)).statusCode, 202);
  assert.equal((await send('vit', vitTok, 1)).statusCode, 202, 'rounds are per model and device');
  await registry.put('cnn', 'fleet', { weights: new Uint8Array([1]), config: '{}' });
  const get = (model: string, token: string) => app.inject({ method: 'GET', url: `/v1/fleet/${model}/devices/cam-1/adapter`, headers: { authorization: `Bearer ${token}` } });
  assert.equal((await get('cnn', cnnTok)).statusCode, 200);
  assert.equal((await get('vit', vitTok)).statusCode, 204, "cnn's fleet adapter is not vit's");
  assert.deepEqual(queue.jobs.map((j) => j.id), ['consolidate:cnn:cam-1:1', 'consolidate:vit:cam-1:1']);
  await app.close();
});
