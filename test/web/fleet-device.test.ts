// A fleet device in a web page (issue 15, part 3: "Node, and the browser build"): refit/web's
// FleetDevice in headless Chromium serves a shifted Fashion-MNIST stream, uploads through
// HttpCloudLink to the cloud service on another origin as JPEGs made by the browser's own encoder,
// and applies the adapter the cloud publishes. The service answers the page only when it lists the
// page's origin (corsOrigins); refusals reach the page with their reason.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openTestPage, chromiumMissing, runInPage, type TestPage } from './browser.ts';
import { loadModel } from '../../src/model.ts';
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';
import { continualStream } from '../../src/data/streams.ts';
import { PeftModel } from '../../src/peft/peft-model.ts';
import { normAffine } from '../../src/peft/selection/index.ts';
import { adapterFiles } from '../../src/peft/files.ts';
import { createCloudServer } from '../../src/fleet/cloud-server.ts';
import { registerDevice } from '../../src/fleet/link-http.ts';
import { decodeUpload, encodeUploadAsync, encodedUploadSize } from '../../src/fleet/upload-codec.ts';
import { MemoryFleetStore } from '../../src/fleet/store-memory.ts';
import { FsBlobStore } from '../../src/registry/blob-store-fs.ts';
import { SqliteRegistry } from '../../src/registry/index.ts';
import { RecordingQueue } from '../fleet/fakes.ts';

const ADMIN = 'admin-token-0123456789';
const MODEL = 'fmnist-cnn';
const B = 32;
let tp: TestPage | undefined;
let dir = '';
let batches: Float32Array[] = [];
// Time limits, so that a hang (seen once, under other load: no progress for minutes with Chromium
// idle) fails with a message instead of running into CI's limit; each step takes seconds.
const LIMIT = { timeout: 180_000 };
before(async () => {
  if (chromiumMissing) return;
  tp = await openTestPage();
  dir = mkdtempSync(join(tmpdir(), 'refit-web-fleet-'));
  const data = loadFashionMnist('test');
  batches = [...continualStream(data, { domains: ['fog', 'gaussian_noise'], severity: 3, batchSize: B, batchesPerDomain: 2, seed: 5 })].map((b) => b.x);
}, LIMIT);
after(async () => {
  await tp?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
}, LIMIT);

async function cloud(corsOrigins?: string[]) {
  const store = new MemoryFleetStore();
  const queue = new RecordingQueue();
  const registry = new SqliteRegistry(':memory:');
  const blobs = new FsBlobStore(mkdtempSync(join(dir, 'blobs-')));
  const app = await createCloudServer({ store, blobs, queue, registry }, { adminToken: ADMIN, models: { [MODEL]: { sampleDims: [1, 28, 28], classes: 10 } }, defaultMetrics: false, ...(corsOrigins ? { corsOrigins } : {}) });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  return { store, queue, registry, blobs, app, url };
}

interface PageRun { events: { kind: string; reason?: string }[]; stats: Record<string, number>; sync: { applied: boolean; version: { name: string; version: number } | null; reason?: string }; stolen: { accepted: boolean; reason?: string } }

/** In the page: a FleetDevice on the shipped CNN, `batches` through it, an upload every 2, then sync; and an upload with a wrong token. */
const devicePage = async (a: { url: string; token: string; batches: string[]; B: number }): Promise<PageRun> => {
  const refit = (globalThis as unknown as { refitTest: { refit: typeof import('../../src/web.ts') } }).refitTest.refit;
  // Where the page is, for a test that times out (a hang was seen here: the steps name the await)
  const steps: string[] = ((globalThis as unknown as { fleetSteps: string[] }).fleetSteps = []);
  const step = (s: string) => steps.push(`${Math.round(performance.now())} ${s}`);
  step('start');
  const f32 = (s: string) => { const b = atob(s); const u = new Uint8Array(b.length); for (let i = 0; i < b.length; i++) u[i] = b.charCodeAt(i); return new Float32Array(u.buffer); };
  const base = await refit.loadModelFrom('/models/fmnist-cnn.onnx');
  const link = new refit.fleet.HttpCloudLink({ url: a.url, model: 'fmnist-cnn', device: 'page-1', token: a.token, retries: 0 });
  // Every sample kept (no CEMA bars), so the uploads are full rounds; the budget still sizes them.
  const dev = new refit.fleet.FleetDevice({ base, link, model: 'fmnist-cnn', device: 'page-1', uploadEvery: 2, codec: { jpeg: 50 }, filter: { highMargin: null, lowMargin: null, budget: { bytesPerSecond: 1e6 } } });
  step('model loaded');
  for (const b of a.batches) { await dev.predict({ dtype: 'float32', dims: [a.B, 1, 28, 28], data: f32(b) }); step('predicted a batch'); }
  await dev.flush();
  step('flushed');
  const sync = await dev.sync();
  step('synced');
  const thief = new refit.fleet.HttpCloudLink({ url: a.url, model: 'fmnist-cnn', device: 'page-1', token: 'not-the-token', retries: 0 });
  let stolen: { accepted: boolean; reason?: string };
  try {
    stolen = await thief.upload({ model: 'fmnist-cnn', device: 'page-1', round: 99, dims: [1, 1, 28, 28], data: new Float32Array(784), codec: { jpeg: 50 } });
  } catch (e) {
    stolen = { accepted: false, reason: `threw: ${(e as Error).message}` };
  }
  step('stolen upload answered');
  return { events: dev.events.map((e) => ({ kind: e.kind, ...(e.reason ? { reason: e.reason } : {}) })), stats: { ...dev.stats }, sync, stolen };
};
const b64 = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
const inPage = <T, A>(f: (a: A) => Promise<T>, arg: A): Promise<T> => runInPage(tp!.page, f, arg);

test('a FleetDevice in Chromium uploads browser-encoded JPEGs to a cloud on another origin and applies its adapter', { skip: chromiumMissing, ...LIMIT }, async () => {
  const origin = new URL(tp!.url).origin;
  const c = await cloud([origin]);
  try {
    const token = await registerDevice(c.url, ADMIN, MODEL, 'page-1');
    const base = await loadModel(new URL('../../models/fmnist-cnn.onnx', import.meta.url).pathname, { threads: 1 });
    const p = PeftModel.from(base).withAdapter('device', normAffine());
    await c.registry.put(MODEL, 'fleet', adapterFiles(p, 'device'));
    await base.release();

    const r = await inPage(devicePage, { url: c.url, token, batches: batches.map(b64), B });
    // Chromium logs the refused upload below (401) as a console error; nothing else may be there.
    assert.deepEqual(tp!.errors.filter((e) => !/status of 401/.test(e)), []);
    tp!.errors.length = 0;
    const sent = r.events.filter((e) => e.kind === 'upload').length;
    assert.ok(sent >= 1, JSON.stringify(r.events));
    assert.ok(!r.events.some((e) => e.kind === 'upload-failed' || e.kind === 'upload-rejected'), JSON.stringify(r.events));
    assert.deepEqual(r.sync.version, { name: 'fleet', version: 1 }, JSON.stringify(r.sync));
    assert.equal(r.sync.applied, true);
    assert.equal((await c.store.getDevice(MODEL, 'page-1'))!.appliedVersion, 1, 'the page reported the version it applied');
    // A refusal reaches the page with its reason (the CORS headers are on error answers too).
    assert.equal(r.stolen.accepted, false);
    assert.match(r.stolen.reason ?? '', /^unauthorized: /);

    // What the cloud stored: JPEG uploads whose samples are the page's, within JPEG's error.
    const uploads = await c.store.uploads(MODEL, 'page-1');
    assert.equal(uploads.length, sent);
    const all = batches.flatMap((b) => Array.from({ length: B }, (_, i) => b.subarray(i * 784, (i + 1) * 784)));
    let bytes = 0, samples = 0, worst = 0, u8Bytes = 0, mozBytes = 0, err = 0, mozErr = 0;
    const mae = (a: Float32Array, b: Float32Array) => { let e = 0; for (let i = 0; i < a.length; i++) e += Math.abs(a[i]! - b[i]!); return e / a.length; };
    for (const u of uploads) {
      const raw = (await c.blobs.get(u.blobKey))!;
      const d = decodeUpload(raw, { sampleDims: [1, 28, 28], model: MODEL, device: 'page-1' });
      assert.deepEqual(d.codec, { jpeg: 50 });
      bytes += raw.byteLength;
      const n = d.dims[0]!;
      samples += n;
      const originals = new Float32Array(n * 784);
      for (let k = 0; k < n; k++) {
        const s = d.data.subarray(k * 784, (k + 1) * 784);
        // The nearest sent sample by mean absolute difference (values in [0, 1]).
        let best = Infinity, at = 0;
        all.forEach((x, j) => { let e = 0; for (let i = 0; i < 784; i++) e += Math.abs(x[i]! - s[i]!); if (e < best) { best = e; at = j; } });
        worst = Math.max(worst, best / 784);
        originals.set(all[at]!, k * 784);
      }
      // The same samples as 8 bits, and as Node's JPEG (sharp's mozjpeg) at the same quality.
      const meta = { model: MODEL, device: 'page-1', round: u.round };
      u8Bytes += encodedUploadSize(meta, n, [1, 28, 28], undefined, 'u8');
      const moz = await encodeUploadAsync({ ...meta, dims: [n, 1, 28, 28], data: originals, codec: { jpeg: 50 } });
      mozBytes += moz.byteLength;
      err += mae(d.data, originals) * n;
      mozErr += mae(decodeUpload(moz, { sampleDims: [1, 28, 28], model: MODEL, device: 'page-1' }).data, originals) * n;
    }
    err /= samples; mozErr /= samples;
    console.log(`# browser JPEG q50: ${samples} samples in ${bytes} bytes, mean absolute error ${err.toFixed(4)} (worst sample ${worst.toFixed(4)}); the same samples at 8 bits ${u8Bytes} bytes, as mozjpeg q50 (Node) ${mozBytes} bytes with error ${mozErr.toFixed(4)}`);
    assert.ok(worst < 0.06, `every decoded sample near one the page saw (worst mean absolute error ${worst.toFixed(4)})`);
    assert.ok(err < 1.5 * mozErr, `the browser's JPEG errs like mozjpeg's at the same quality (${err.toFixed(4)} against ${mozErr.toFixed(4)})`);
    assert.equal(samples, r.stats.uploadedSamples);
    assert.ok(bytes < u8Bytes, `the browser's JPEG (${bytes} bytes) is smaller than 8 bits a value (${u8Bytes})`);
    assert.ok(bytes < 2 * mozBytes, `the browser's JPEG (${bytes} bytes) within 2× of mozjpeg's (${mozBytes})`);
  } finally {
    await c.app.close();
  }
});

test('without the page\'s origin in corsOrigins the browser cannot read the service: uploads fail, nothing is applied', { skip: chromiumMissing, ...LIMIT }, async () => {
  // This test hung until its time limit in 2 of 5 full runs of the suite in session 25 (never
  // alone): the phases and the page's steps go into the failure, to say where.
  const phases: string[] = [];
  const phase = (s: string) => phases.push(`${new Date().toISOString().slice(11, 23)} ${s}`);
  phase('cloud');
  const c = await cloud();
  try {
    phase('register');
    const token = await registerDevice(c.url, ADMIN, MODEL, 'page-1');
    phase('page');
    let timer: NodeJS.Timeout | undefined;
    const stuck = new Promise<never>((_, reject) => {
      timer = setTimeout(async () => {
        const steps = await tp!.page.evaluate('globalThis.fleetSteps').catch((e: Error) => [`(unreadable: ${e.message})`]);
        reject(new Error(`the page did not finish in 60 s; Node: ${phases.join(' | ')}; page steps: ${JSON.stringify(steps)}; console errors: ${JSON.stringify(tp!.errors.slice(-5))}`));
      }, 60_000);
    });
    const r = await Promise.race([inPage(devicePage, { url: c.url, token, batches: batches.slice(0, 2).map(b64), B }), stuck]).finally(() => clearTimeout(timer));
    phase('asserts');
    assert.ok(r.events.some((e) => e.kind === 'upload-failed'), JSON.stringify(r.events));
    assert.equal(r.sync.applied, false);
    assert.match(r.sync.reason ?? '', /did not answer/);
    assert.match(r.stolen.reason ?? '', /^threw: .*did not answer.*Failed to fetch/, 'the 401 cannot be read either: the link sees no answer');
    tp!.errors.length = 0; // Chromium logs each CORS refusal as a console error
  } finally {
    phase('close');
    // Connections the page opened and left (a refused preflight's, a speculative one) must not
    // hold the close: the test is over, nothing is in flight.
    c.app.server.closeAllConnections();
    let closeTimer: NodeJS.Timeout | undefined;
    await Promise.race([c.app.close(), new Promise((_, reject) => { closeTimer = setTimeout(() => reject(new Error(`the service's close did not finish in 20 s; Node: ${phases.join(' | ')}`)), 20_000); })])
      .finally(() => clearTimeout(closeTimer));
  }
  await assert.rejects(createCloudServer({ store: new MemoryFleetStore(), blobs: new FsBlobStore(dir), queue: new RecordingQueue(), registry: new SqliteRegistry(':memory:') },
    { adminToken: ADMIN, models: { [MODEL]: { sampleDims: [1, 28, 28] } }, corsOrigins: ['http://127.0.0.1:8080/app'] }), /fleet: corsOrigins: CORS origins must be '\*' or origins like/);
});
