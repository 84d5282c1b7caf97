// The cloud worker's exactly-once effect on top of at-least-once delivery: the same job twice
// gives one registry version; a worker that dies after registry.put and before commitJob has its
// version reused on redelivery; a worker process SIGKILLed in the middle of a job has the job
// finished by another worker (NATS JetStream + PostgreSQL, skipped when they are not installed)
// with exactly one version, while devices keep being served the last good version.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteRegistry } from '../../src/registry/index.ts';
import type { AdapterRegistry } from '../../src/registry/types.ts';
import { FsBlobStore } from '../../src/registry/blob-store-fs.ts';
import { MemoryFleetStore } from '../../src/fleet/store-memory.ts';
import { createCloudServer, type CloudServerConfig } from '../../src/fleet/cloud-server.ts';
import { createJobHandler, type WorkerDeps } from '../../src/fleet/worker.ts';
import { encodeUpload } from '../../src/fleet/upload-codec.ts';
import type { BlobStore, FleetStore, Job, JobQueue } from '../../src/fleet/types.ts';
import { RecordingQueue, averagingConsolidator, readAdapter } from './fakes.ts';

const ADMIN = 'admin-token-0123456789';
const config: CloudServerConfig = { adminToken: ADMIN, models: { cnn: { sampleDims: [1, 4, 4] } }, defaultMetrics: false };
const ctx = (attempt = 1) => ({ attempt, keepAlive() {} });
const dirs: string[] = [];
test.after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });
const tmp = () => { const d = mkdtempSync(join(tmpdir(), 'refit-worker-')); dirs.push(d); return d; };

/** The cloud service over the given deps, with a device that can upload rounds. */
async function fleet(deps: { store: FleetStore; blobs: BlobStore; queue: JobQueue; registry: AdapterRegistry }) {
  const app = await createCloudServer(deps, config);
  const reg = await app.inject({ method: 'POST', url: '/v1/fleet/cnn/devices', headers: { authorization: `Bearer ${ADMIN}` }, payload: { device: 'cam-1' } });
  const token = reg.json().token as string;
  const upload = async (round: number, fill: number) => {
    const r = await app.inject({
      method: 'POST', url: '/v1/fleet/cnn/devices/cam-1/uploads', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' },
      payload: Buffer.from(encodeUpload({ model: 'cnn', device: 'cam-1', round, dims: [2, 1, 4, 4], data: new Float32Array(32).fill(fill) })),
    });
    assert.equal(r.statusCode, 202, r.body);
    return r.json().job as string;
  };
  /** What the device would be served now: name@version, or null. */
  const served = async () => {
    const r = await app.inject({ method: 'GET', url: '/v1/fleet/cnn/devices/cam-1/adapter', headers: { authorization: `Bearer ${token}` } });
    return r.statusCode === 204 ? null : `${r.json().name}@${r.json().version}`;
  };
  return { app, upload, served };
}

async function local() {
  const store = new MemoryFleetStore();
  const blobs = new FsBlobStore(tmp());
  const queue = new RecordingQueue();
  const registry = new SqliteRegistry(':memory:');
  const consolidator = averagingConsolidator();
  const logs: { level: string; msg: string; fields?: Record<string, unknown> }[] = [];
  const deps: WorkerDeps = { store, blobs, queue, registry, consolidator, models: config.models, log: (level, msg, fields) => logs.push({ level, msg, fields }) };
  return { deps, store, blobs, queue, registry, consolidator, logs, ...(await fleet({ store, blobs, queue, registry })) };
}

test('the same job delivered twice: one registry version; later rounds build on it', async () => {
  const { deps, queue, registry, store, consolidator, upload, served } = await local();
  const handle = createJobHandler(deps);
  await upload(1, 1);
  const job = queue.jobs[0]!;
  await handle(job, ctx(1));
  await handle(job, ctx(2));
  await handle(structuredClone(job), ctx(1));
  const vs = await registry.versions('cnn', 'device.cam-1');
  assert.equal(vs.length, 1);
  assert.equal(consolidator.calls.length, 1);
  assert.deepEqual((await store.jobResult(job.id))?.version, 1);
  assert.equal(await served(), 'device.cam-1@1');

  // Rounds 2 and 3 arrive; job 3 runs first (out of order): it consolidates both, job 2 is covered.
  await upload(2, 2);
  await upload(3, 3);
  await handle(queue.jobs[2]!, ctx());
  await handle(queue.jobs[1]!, ctx());
  assert.equal((await registry.versions('cnn', 'device.cam-1')).length, 2);
  assert.deepEqual(consolidator.calls.at(-1)!.uploads.map((u) => u.data[0]), [2, 3]);
  assert.deepEqual(consolidator.calls.at(-1)!.replay!.map((u) => u.data[0]), [1], 'earlier uploads replayed');
  assert.deepEqual(readAdapter((await registry.get('cnn', 'device.cam-1'))!.files), { mean: 1 + 2.5, n: 6 });
  assert.equal((await store.jobResult(queue.jobs[1]!.id))?.version, null);
  assert.match(String((await store.jobResult(queue.jobs[1]!.id))?.detail.skipped), /round 2 is covered by version 2/);
});

test('a crash after registry.put and before commitJob: the redelivered job reuses the version', async () => {
  const { deps, queue, registry, store, consolidator, upload, served } = await local();
  let crash = true;
  const handle = createJobHandler({ ...deps, hooks: { afterPut: () => { if (crash) { crash = false; throw new Error('worker died (simulated)'); } } } });
  await upload(1, 1);
  await assert.rejects(handle(queue.jobs[0]!, ctx(1)), /worker died/);
  assert.equal(await store.jobResult(queue.jobs[0]!.id), undefined, 'not committed: the queue would redeliver');
  assert.equal((await registry.versions('cnn', 'device.cam-1')).length, 1);
  await handle(queue.jobs[0]!, ctx(2));
  const vs = await registry.versions('cnn', 'device.cam-1');
  assert.equal(vs.length, 1, 'no second version');
  assert.equal(consolidator.calls.length, 1, 'not consolidated again');
  const r = await store.jobResult(queue.jobs[0]!.id);
  assert.equal(r?.version, 1);
  assert.equal(r?.detail.reused, true);
  assert.equal(await served(), 'device.cam-1@1');

  // The same for an aggregation round.
  crash = true;
  const agg: Job = { id: 'aggregate:cnn:1', kind: 'aggregate', model: 'cnn', round: 1 };
  await assert.rejects(handle(agg, ctx(1)), /worker died/);
  await handle(agg, ctx(2));
  await handle(agg, ctx(3));
  assert.equal((await registry.versions('cnn', 'fleet')).length, 1);
  assert.deepEqual(readAdapter((await registry.get('cnn', 'fleet'))!.files), { mean: 1, n: 2 });
});

test('jobs of one device on two workers at once: a round overtaken by a later one is not published over it', async () => {
  const { deps, queue, registry, store, upload } = await local();
  const other = createJobHandler(deps);
  let once = true;
  // While job 1 consolidates, "another worker" runs job 2 to completion.
  const handle = createJobHandler({ ...deps, hooks: { beforeConsolidate: async (job) => { if (once && job.round === 1) { once = false; await other(queue.jobs[1]!, ctx()); } } } });
  await upload(1, 1);
  await upload(2, 2);
  await handle(queue.jobs[0]!, ctx());
  const vs = await registry.versions('cnn', 'device.cam-1');
  assert.equal(vs.length, 1, 'job 1 did not put after job 2');
  assert.equal((vs[0]!.meta.config as { round: number }).round, 2);
  assert.match(String((await store.jobResult(queue.jobs[0]!.id))?.detail.skipped), /overtaken: version 1 covers rounds up to 2/);
});

test('the same job held by two workers at once (a lease ran out): the put is a compare-and-set, one version, the other holder reuses it', async () => {
  const { deps, queue, registry, store, upload } = await local();
  const other = createJobHandler(deps);
  let once = true;
  // While this worker consolidates, "another worker" holding the same job publishes and commits it.
  const handle = createJobHandler({ ...deps, hooks: { beforeConsolidate: async (job) => { if (once) { once = false; await other(job, ctx(2)); } } } });
  await upload(1, 1);
  await handle(queue.jobs[0]!, ctx());
  const vs = await registry.versions('cnn', 'device.cam-1');
  assert.equal(vs.length, 1, 'one version for one job');
  const r = await store.jobResult(queue.jobs[0]!.id);
  assert.equal(r?.version, vs[0]!.version);
});

test('an upload whose blob is missing or altered is skipped with a logged reason, never consolidated', async () => {
  const { deps, queue, registry, store, blobs, logs, upload } = await local();
  const handle = createJobHandler(deps);
  await upload(1, 1);
  const [rec] = await store.uploads('cnn', 'cam-1');
  const bytes = (await blobs.get(rec!.blobKey))!;
  bytes[bytes.byteLength - 1] ^= 0xff;
  await blobs.delete(rec!.blobKey);
  await blobs.put(rec!.blobKey, bytes);
  await handle(queue.jobs[0]!, ctx());
  assert.equal((await registry.versions('cnn', 'device.cam-1')).length, 0);
  assert.equal((await store.jobResult(queue.jobs[0]!.id))?.version, null);
  assert.ok(logs.some((l) => l.level === 'error' && /does not match its sha256/.test(l.msg)));
  // A job of an unknown model is committed as refused rather than retried forever.
  await handle({ id: 'consolidate:vit:x:1', kind: 'consolidate', model: 'vit', device: 'x', round: 1 }, ctx());
  assert.match(String((await store.jobResult('consolidate:vit:x:1'))?.detail.skipped), /unknown model 'vit'/);
});

// ------------------------------------------------------------------------------------------------
// Worker processes on NATS JetStream + PostgreSQL
// ------------------------------------------------------------------------------------------------

const { natsServerBin, startNats, NATS_MISSING } = await import('../helpers/nats.ts');
const { postgresMissing, startPostgres } = await import('../helpers/postgres.ts');
const missing = !natsServerBin() ? NATS_MISSING : postgresMissing();

/** Spawns scripts/fleet-worker.ts; `lines` collects its JSON log lines. */
function spawnWorker(args: string[], env: Record<string, string>): { proc: ChildProcess; lines: Record<string, unknown>[]; waitFor(pred: (l: Record<string, unknown>) => boolean, ms: number): Promise<void>; exited: Promise<number | null> } {
  const root = new URL('../..', import.meta.url).pathname;
  const proc = spawn(process.execPath, ['--import', 'tsx', join(root, 'scripts/fleet-worker.ts'), ...args], { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: Record<string, unknown>[] = [];
  const waiters = new Set<() => void>();
  let buf = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const l = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try { lines.push(JSON.parse(l)); } catch { /* not a log line */ }
      for (const w of waiters) w();
    }
  });
  proc.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  const waitFor = (pred: (l: Record<string, unknown>) => boolean, ms: number) => new Promise<void>((res, rej) => {
    const check = () => { if (lines.some(pred)) { waiters.delete(check); clearTimeout(t); res(); } };
    const t = setTimeout(() => { waiters.delete(check); rej(new Error(`worker ${proc.pid}: no matching log line within ${ms} ms; stdout: ${JSON.stringify(lines)} stderr: ${err.slice(-2000)}`)); }, ms);
    waiters.add(check);
    check();
  });
  return { proc, lines, waitFor, exited };
}

test('a worker process SIGKILLed mid-job: another worker finishes it, one version, the device served its last good one meanwhile', { skip: missing, timeout: 60_000 }, async (t) => {
  const { PostgresFleetStore } = await import('../../src/fleet/store-postgres.ts');
  const { NatsJobQueue } = await import('../../src/fleet/queue-nats.ts');
  // Cleanups run last-registered first: clients close before their servers stop.
  const cleanups: (() => unknown)[] = [];
  t.after(async () => { for (const c of cleanups.reverse()) await c(); });
  const nats = (await startNats())!;
  cleanups.push(() => nats.cleanup());
  const pg = await startPostgres({ fsync: false });
  cleanups.push(() => pg.stop());
  const dir = tmp();
  const procs: ChildProcess[] = [];
  cleanups.push(() => { for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL'); });
  const storeUrl = await pg.createDatabase('fleet');
  const registryPath = join(dir, 'registry.db');
  const blobsDir = join(dir, 'blobs');
  const store = await PostgresFleetStore.open(storeUrl);
  const registry = new SqliteRegistry(registryPath);
  const blobs = new FsBlobStore(blobsDir);
  const queue = await NatsJobQueue.connect({ servers: nats.url, prefix: 'wt', ackWaitMs: 1500 });
  cleanups.push(async () => { await queue.close(); await store.close(); await registry.close(); });
  const { app, upload, served } = await fleet({ store, blobs, queue, registry });
  cleanups.push(() => app.close());

  // Round 1 is consolidated here (version 1: the device's last good version); round 2 is queued.
  const job1 = await upload(1, 1);
  await createJobHandler({ store, blobs, queue, registry, consolidator: averagingConsolidator(), models: config.models })({ id: job1, kind: 'consolidate', model: 'cnn', device: 'cam-1', round: 1 }, ctx());
  assert.equal(await served(), 'device.cam-1@1');
  const job2 = await upload(2, 5);

  const args = ['--queue', nats.url, '--queue-prefix', 'wt', '--ack-wait-ms', '1500', '--store', storeUrl, '--registry', `sqlite:${registryPath}`, '--blobs', `file:${blobsDir}`,
    '--model', 'cnn=1x4x4', '--consolidator-module', 'test/fleet/slow-consolidator.ts'];
  const w1 = spawnWorker(args, { REFIT_TEST_CONSOLIDATE_MS: '30000' });
  procs.push(w1.proc);
  await w1.waitFor((l) => l.msg === 'consolidating', 20_000);
  w1.proc.kill('SIGKILL');
  await w1.exited;
  assert.equal(await store.jobResult(job2), undefined, 'killed before commit');
  assert.equal((await registry.versions('cnn', 'device.cam-1')).length, 1, 'killed before put');
  assert.equal(await served(), 'device.cam-1@1', 'the device is still served its last good version');

  const w2 = spawnWorker(args, { REFIT_TEST_CONSOLIDATE_MS: '100' });
  procs.push(w2.proc);
  // Until the new version is put (whole: the registry commits it with its pointer), the device is
  // served version 1; from then on version 2 (the put comes just before commitJob); never anything else.
  const deadline = Date.now() + 30_000;
  const seen: string[] = [];
  while (!(await store.jobResult(job2))) {
    assert.ok(Date.now() < deadline, `job ${job2} not finished by the second worker; its log: ${JSON.stringify(w2.lines)}`);
    const s = await served();
    if (seen.at(-1) !== s) seen.push(s!);
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(['', 'device.cam-1@1', 'device.cam-1@1,device.cam-1@2'].includes(seen.join(',')), `served meanwhile: ${seen.join(' → ')}`);
  const vs = await registry.versions('cnn', 'device.cam-1');
  assert.equal(vs.length, 2, 'exactly one new version');
  assert.equal(vs.filter((v) => (v.meta.config as { fleetJob?: string }).fleetJob === job2).length, 1);
  assert.equal((await store.jobResult(job2))?.version, 2);
  assert.equal(await served(), 'device.cam-1@2');
  assert.deepEqual(readAdapter((await registry.get('cnn', 'device.cam-1'))!.files), { mean: 1 + 5, n: 4 });
  w2.proc.kill('SIGTERM');
  assert.equal(await w2.exited, 0, 'stops cleanly on SIGTERM');
  assert.ok(w2.lines.some((l) => l.msg === 'worker stopped'));
});
