// Fleet simulation (issue 15, part 5): the whole device → cloud → device loop on real
// infrastructure on loopback, bounded in requests and time.
//
//   nice -n 10 npx tsx bench/fleet-simulation.ts [--quick] [--devices 1000] [--rounds 2]
//     [--batch 32] [--round-batches 4] [--measure-batches 2] [--budget 0.1] [--wave 16]
//     [--compare-devices 100] [--baselines source,bn-adapt,tent,cotta,rmt,continual] [--main-workers 2]
//     [--workers 1,2,4] [--throughput-jobs 120] [--epochs 4] [--replay 64] [--teacher vit] [--teacher-model PATH]
//     [--lr 0.001] [--high-margin 0.4|none] [--uniform-share 0] [--codec f32|u8|jpeg:50] [--filter cema|none]
//     [--job-timeout-s 1800] [--out bench/results/fleet-simulation]
//   --quick: 50 devices, 1 round, 20 compared, 24 throughput jobs per phase (217–361 s at load 4–10 on
//   the shared 2-core machine; `--devices 1000 --rounds 1` took 1608 s at load 5–9: docs/fleet.md)
//
// What runs: a throwaway PostgreSQL (pg_stat_statements loaded; fsync on) and nats-server
// (test/helpers), the cloud service (createCloudServer: PostgreSQL registry + file blob store,
// PostgreSQL FleetStore, NATS JetStream queue) on 127.0.0.1, and worker *processes*
// (scripts/fleet-worker.ts with bench/fleet-sim-consolidator.ts). Devices are real FleetDevices,
// each with its own HttpCloudLink, run in this process in waves of --wave at a time over one
// shared base model (a device is created, restored from its saved state(), run, saved and
// released; 1000 live onnxruntime sessions would not fit), each streaming its own Fashion-MNIST-C
// mix: 2–3 corruptions at severity 3–5 drawn from a per-device seed, mixed within batches, each
// segment a fresh seeded draw from the test set.
//
// Loop, per round: every device (restore → sync() → --round-batches batches → upload under the
// byte budget → save); the workers consolidate; the next round. Then a last wave: restore →
// sync() → --measure-batches batches, whose error is "after consolidation". Modes on the same
// streams: 'filtered' (CEMA's filter + the budget, all devices, model `sim`) and 'everything'
// (every sample uploaded, the first --compare-devices devices, model `sim-all`); single-device
// methods (src/tta, and the continual controller as `refit demo` runs it) on the same segments of the same devices. Then throughput phases, one per
// worker count: the first --throughput-jobs recorded uploads are sent again over HTTP under fresh
// device names (uploads/s), then W workers start and drain them (jobs/s), with each worker's CPU,
// PostgreSQL's statement time (pg_stat_statements), nats-server's and PostgreSQL's CPU, and the
// machine's load. Correctness checks run at the end; any failure exits 1.
import sharp from 'sharp';
import { quantize, tile } from '../src/fleet/upload-images.ts';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import pg from 'pg';
import { loadModel } from '../src/model.ts';
import { mixedStream, type StreamBatch } from '../src/data/streams.ts';
import { CORRUPTIONS } from '../src/data/corruptions/index.ts';
import { Rng } from '../src/data/random.ts';
import { argmaxRows } from '../src/data/evaluate.ts';
import { f32 } from '../src/onnx/tensor.ts';
import { createAdapter, loadSourceSet, sourceDataOptions, type Adapter } from '../src/tta/index.ts';
import type { RefitModel } from '../src/model.ts';
import type { ContinualAdapter } from '../src/continual/adapter.ts';
import { demoAdapter } from '../src/cli/demo.ts';
import { withFeaturesFor } from '../src/cli/common.ts';
import { FleetDevice, type FleetDeviceState } from '../src/fleet/device.ts';
import { HttpCloudLink, registerDevice } from '../src/fleet/link-http.ts';
import { createCloudServer } from '../src/fleet/cloud-server.ts';
import { PostgresFleetStore } from '../src/fleet/store-postgres.ts';
import { NatsJobQueue } from '../src/fleet/queue-nats.ts';
import { openRegistry, openBlobStore } from '../src/registry/open.ts';
import { consolidateJobId } from '../src/fleet/names.ts';
import type { CloudLink, UploadPayload } from '../src/fleet/types.ts';
import { startPostgres, postgresMissing } from '../test/helpers/postgres.ts';
import { startNats, natsServerBin, NATS_MISSING } from '../test/helpers/nats.ts';
import { testData } from './continual/lib.ts';
import { median } from './stats.ts';

const args = process.argv.slice(2);
if (args.includes('--help')) { console.log(readFileSync(new URL(import.meta.url), 'utf8').split('\n').filter((l) => l.startsWith('//')).join('\n')); process.exit(0); }
const quick = args.includes('--quick');
const opt = (k: string, d: string) => { const i = args.indexOf(`--${k}`); return i >= 0 ? args[i + 1]! : d; };
const int = (k: string, d: number) => {
  const v = Number(opt(k, String(d)));
  if (!Number.isInteger(v) || v < 0) throw new Error(`--${k} must be a non-negative integer`);
  return v;
};
const D = int('devices', quick ? 50 : 1000);
const ROUNDS = int('rounds', quick ? 1 : 2);
const BATCH = int('batch', 32), R1 = int('round-batches', 4), R2 = int('measure-batches', 2);
const BUDGET = Number(opt('budget', '0.1'));
const WAVE = int('wave', 16);
const CMP = Math.min(D, int('compare-devices', quick ? 20 : 100));
const BASELINES = opt('baselines', 'source,bn-adapt,tent,cotta,rmt,continual').split(',').filter(Boolean);
const MAIN_W = int('main-workers', 2);
const WORKERS = opt('workers', '1,2,4').split(',').filter(Boolean).map(Number);
const TPUT = int('throughput-jobs', quick ? 24 : 120);
const EPOCHS = int('epochs', 4), REPLAY = int('replay', 64);
const TEACHER = opt('teacher', 'vit');
const TEACHER_MODEL = opt('teacher-model', '');
const LR = opt('lr', ''); // consolidation's learning rate ('' : consolidate's default)
// The devices' unreliable-sample bar (CEMA's E_max(0) = margin·ln C); 'none': upload uncertain samples too.
const HIGH = opt('high-margin', ''), SHARE = opt('uniform-share', ''); // --uniform-share: UploadFilter's uniformShare
const filterBar = { ...(HIGH === '' ? {} : { highMargin: HIGH === 'none' ? null : Number(HIGH) }), ...(SHARE === '' ? {} : { uniformShare: Number(SHARE) }) };
// --codec: how the 'filtered' mode's devices upload (FleetDevice's codec; the 'everything' mode
// stays float32, the lossless reference). --filter none: those devices keep every sample and only
// the byte budget limits them (with a compressing codec, compression instead of selection).
const CODEC_ARG = opt('codec', 'f32');
const CODEC = CODEC_ARG.startsWith('jpeg:') ? { jpeg: Number(CODEC_ARG.slice(5)) } : CODEC_ARG as 'f32' | 'u8';
const NO_FILTER = opt('filter', 'cema') === 'none';
const JOB_TIMEOUT_MS = int('job-timeout-s', 1800) * 1000;
const OUT = opt('out', quick ? 'bench/results/fleet-simulation-quick' : 'bench/results/fleet-simulation');
// Made now, not after a run of many minutes: a missing folder once lost a whole run's results.
mkdirSync(dirname(OUT), { recursive: true });
const command = `nice -n 10 npx tsx bench/fleet-simulation.ts ${args.join(' ')}`.trim();
const ROOT = new URL('..', import.meta.url).pathname;
const SAMPLE_BYTES = 784 * 4 + 8; // one sample's share of an upload (x, entropy, predicted)
const ADMIN = 'sim-admin-token-0123456789abcdef';
const t00 = performance.now();
const log = (m: string) => console.log(`[${((performance.now() - t00) / 1000).toFixed(0).padStart(4)} s] ${m}`);

const missing = postgresMissing() ?? (natsServerBin() ? undefined : NATS_MISSING);
if (missing) { console.error(`fleet-simulation: ${missing}`); process.exit(2); }

// ---------------------------------------------------------------- infrastructure
const pgs = await startPostgres({ fsync: true });
{
  const c = new pg.Client({ connectionString: pgs.url });
  await c.connect();
  await c.query(`ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'`);
  await c.end();
  await pgs.restart();
}
const dbUrl = await pgs.createDatabase('fleetsim');
const sql = new pg.Pool({ connectionString: dbUrl, max: 2 });
await sql.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
const nats = await startNats();
if (!nats) { console.error(`fleet-simulation: ${NATS_MISSING}`); process.exit(2); }
const dir = mkdtempSync(join(tmpdir(), 'refit-fleetsim-'));
const regBlobs = `file:${join(dir, 'registry')}`, upBlobs = `file:${join(dir, 'uploads')}`;
mkdirSync(join(dir, 'registry')); mkdirSync(join(dir, 'uploads'));
const models = ['sim', 'sim-all', ...WORKERS.map((w) => `sim-t${w}`)];
const store = await PostgresFleetStore.open(dbUrl);
const registry = await openRegistry(dbUrl, { blobs: regBlobs });
const blobs = openBlobStore(upBlobs);
const queue = await NatsJobQueue.connect({ servers: nats.url, prefix: 'refit', ackWaitMs: 120_000 });
const app = await createCloudServer({ store, registry, blobs, queue }, {
  adminToken: ADMIN, models: Object.fromEntries(models.map((m) => [m, { sampleDims: [1, 28, 28], maxSamples: 4096 }])), defaultMetrics: false,
});
await app.listen({ port: 0, host: '127.0.0.1' });
const URL_ = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
log(`PostgreSQL ${pgs.url}, NATS ${nats.url}, cloud ${URL_}; ${D} devices, ${ROUNDS} round(s) of ${R1}×${BATCH}, measure ${R2}×${BATCH}`);

const children = new Set<ChildProcess>();
const cleanup = async () => {
  for (const c of children) c.kill('SIGKILL');
  await app.close().catch(() => {});
  await queue.close().catch(() => {});
  await Promise.allSettled([store.close(), registry.close(), blobs.close(), sql.end()]);
  await nats.cleanup().catch(() => {});
  await pgs.stop().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
};
process.on('SIGINT', () => { void cleanup().then(() => process.exit(130)); });
// A failure anywhere (a thrown check, a timeout) still stops the workers and removes the files;
// the test helpers stop PostgreSQL and nats-server on exit themselves.
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------- CPU accounting (/proc)
const TICK = 100; // USER_HZ
function procCpuMs(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) / TICK) * 1000;
  } catch { return 0; }
}
function ppidOf(pid: string): number {
  try { const s = readFileSync(`/proc/${pid}/stat`, 'utf8'); return Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1]); } catch { return -1; }
}
/** The postmaster (its command line names our port) and all its children: PostgreSQL's CPU. */
function postgresCpuMs(): number {
  const pids = readdirSync('/proc').filter((p) => /^\d+$/.test(p));
  let master = -1;
  for (const p of pids) {
    try { const c = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0'); if (c[0]?.endsWith('postgres') && c.includes(String(pgs.port))) { master = Number(p); break; } } catch { /* gone */ }
  }
  if (master < 0) return 0;
  return pids.reduce((s, p) => s + (Number(p) === master || ppidOf(p) === master ? procCpuMs(Number(p)) : 0), 0);
}
/** Busy and total CPU time of the whole machine (ms, all cores). */
function machineCpu(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const idle = f[3]! + (f[4] ?? 0), total = f.reduce((a, b) => a + b, 0);
  return { busy: ((total - idle) / TICK) * 1000, total: (total / TICK) * 1000 };
}
async function pgStatements(): Promise<{ ms: number; calls: number }> {
  const r = await sql.query(`SELECT coalesce(sum(total_exec_time), 0)::float8 AS ms, coalesce(sum(calls), 0)::int8 AS calls FROM pg_stat_statements
    WHERE query NOT LIKE '%pg_stat_statements%' AND query NOT LIKE '%sim-poll%'`);
  return { ms: Number(r.rows[0].ms), calls: Number(r.rows[0].calls) };
}
const resetStatements = () => sql.query('SELECT pg_stat_statements_reset()');

// ---------------------------------------------------------------- workers
interface Worker { proc: ChildProcess; ready: Promise<void>; jobs: Map<string, { start?: number; done?: number }>; errors: string[] }
const workerLogErrors: string[] = [];
function spawnWorker(): Worker {
  const proc = spawn(process.execPath, ['--import', 'tsx', 'scripts/fleet-worker.ts', '--queue', nats!.url, '--store', dbUrl, '--registry', dbUrl,
    '--registry-blobs', regBlobs, '--blobs', upBlobs, ...models.flatMap((m) => ['--model', `${m}=1x28x28`]),
    '--consolidator-module', 'bench/fleet-sim-consolidator.ts', '--ack-wait-ms', '120000'], {
    cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, FLEET_SIM_TEACHER: TEACHER, ...(TEACHER_MODEL ? { FLEET_SIM_TEACHER_MODEL: TEACHER_MODEL } : {}), ...(LR ? { FLEET_SIM_LR: LR } : {}), FLEET_SIM_EPOCHS: String(EPOCHS), FLEET_SIM_REPLAY: String(REPLAY), FLEET_SIM_BATCH: String(BATCH) },
  });
  children.add(proc);
  const w: Worker = { proc, ready: Promise.resolve(), jobs: new Map(), errors: [] };
  let buf = '', err = '';
  w.ready = new Promise((res, rej) => {
    proc.stdout!.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i); buf = buf.slice(i + 1);
        let m: { level?: string; msg?: string; job?: string };
        try { m = JSON.parse(line); } catch { continue; }
        if (m.msg === 'worker ready') res();
        if (m.msg === 'job start' && m.job) w.jobs.set(m.job, { ...w.jobs.get(m.job), start: performance.now() });
        if (m.msg?.startsWith('job done') && m.job) w.jobs.set(m.job, { ...w.jobs.get(m.job), done: performance.now() });
        if (m.level === 'error' || m.level === 'warn') { w.errors.push(line); workerLogErrors.push(line); }
      }
    });
    proc.stderr!.on('data', (d) => (err = (err + d).slice(-4000)));
    proc.once('exit', (code) => { children.delete(proc); rej(new Error(`worker exited (${code}) before ready: ${err}`)); });
  });
  return w;
}
async function stopWorkers(ws: Worker[]): Promise<void> {
  await Promise.all(ws.map((w) => new Promise<void>((res) => {
    if (w.proc.exitCode !== null) return res();
    w.proc.once('exit', () => res());
    w.proc.kill('SIGTERM');
    setTimeout(() => w.proc.kill('SIGKILL'), 30_000).unref();
  })));
}
async function waitJobs(ids: string[], what: string): Promise<void> {
  const t0 = performance.now();
  let last = -1;
  for (;;) {
    const r = await sql.query('SELECT /*sim-poll*/ count(*)::int AS n FROM fleet_jobs WHERE job_id = ANY($1)', [ids]);
    const n = r.rows[0].n as number;
    if (n === ids.length) return;
    if (n !== last && (n - last >= Math.max(1, ids.length / 10) || last < 0)) { log(`${what}: ${n}/${ids.length} jobs done`); last = n; }
    if (performance.now() - t0 > JOB_TIMEOUT_MS) throw new Error(`${what}: only ${n} of ${ids.length} jobs done after ${JOB_TIMEOUT_MS / 1000} s`);
    await new Promise((r2) => setTimeout(r2, 250));
  }
}

// ---------------------------------------------------------------- devices and their streams
const data = testData();
const base = await loadModel(join(ROOT, 'models/fmnist-cnn.onnx'), { threads: 1 });
interface Spec { id: string; domains: string[]; severity: number; seed: number }
const specs: Spec[] = [];
for (let d = 0; d < D; d++) {
  const rng = new Rng(7000 + d);
  const doms = [...CORRUPTIONS];
  for (let i = doms.length - 1; i > 0; i--) { const j = rng.int(i + 1); [doms[i], doms[j]] = [doms[j]!, doms[i]!]; }
  specs.push({ id: `dev${String(d).padStart(4, '0')}`, domains: doms.slice(0, 2 + rng.int(2)), severity: 3 + rng.int(3), seed: 10_000 + d * 101 });
}
/** Segment s of a device's stream (s = ROUNDS is the measure segment): a seeded draw of its mix. */
function segment(sp: Spec, s: number): StreamBatch[] {
  const batches = s < ROUNDS ? R1 : R2;
  const total = batches * BATCH;
  const out: StreamBatch[] = [];
  for (const b of mixedStream(data, { domains: sp.domains as never, severity: sp.severity, samplesPerDomain: Math.ceil(total / sp.domains.length), batchSize: BATCH, seed: sp.seed + s })) {
    if (out.length === batches) break;
    if (b.size === BATCH) out.push(b);
  }
  return out;
}
const streamRate = BATCH * SAMPLE_BYTES; // bytes per second of device clock (one batch per second)

interface Mode { name: 'filtered' | 'everything'; model: string; devices: number }
const MODES: Mode[] = [{ name: 'filtered', model: 'sim', devices: D }, { name: 'everything', model: 'sim-all', devices: CMP }];
const tokens = new Map<string, string>();
const states = new Map<string, FleetDeviceState>();
const accepted: { model: string; device: string; round: number; samples: number; bytes: number }[] = [];
const replayable: UploadPayload[] = [];
// errors[mode][segment] = [wrong, n]; per device for the compared subset
const errs: Record<string, number[][]> = {};
const devErr = new Map<string, number[]>(); // `${mode}/${device}/${segment}` → [wrong, n]
const add = (mode: string, dev: string, s: number, wrong: number, n: number) => {
  errs[mode] ??= Array.from({ length: ROUNDS + 1 }, () => [0, 0]);
  errs[mode]![s]![0]! += wrong; errs[mode]![s]![1]! += n;
  const k = `${mode}/${dev}/${s}`; const e = devErr.get(k) ?? [0, 0]; e[0]! += wrong; e[1]! += n; devErr.set(k, e);
};
const events: Record<string, number> = {};

let everythingPngBytes = 0;
async function pngBytes(p: UploadPayload): Promise<number> {
  const t = tile(quantize(p.data).q, p.dims[0]!, p.dims.slice(1));
  return (await sharp(t.pixels, { raw: { width: t.width, height: t.height, channels: t.channels as 1 | 3 } }).png({ compressionLevel: 9 }).toBuffer()).byteLength;
}

class RecordingLink implements CloudLink {
  constructor(private readonly inner: HttpCloudLink, private readonly keep: boolean) {}
  async upload(p: UploadPayload) {
    const r = await this.inner.upload(p);
    // With a lossy codec, the lossless reference too: the 'everything' uploads as 8-bit PNGs (tiled as the JPEG is).
    if (r.accepted && p.model === 'sim-all' && CODEC_ARG !== 'f32') everythingPngBytes += await pngBytes(p);
    if (r.accepted) {
      accepted.push({ model: p.model, device: p.device, round: p.round, samples: p.dims[0]!, bytes: 0 });
      if (this.keep && replayable.length < TPUT) replayable.push(p);
    }
    return r;
  }
  fetchAdapter(c: Parameters<CloudLink['fetchAdapter']>[0]) { return this.inner.fetchAdapter(c); }
  reportApplied(a: Parameters<CloudLink['reportApplied']>[0]) { return this.inner.reportApplied(a); }
}

async function pool<T>(items: T[], n: number, f: (x: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, async () => {
    while (next < items.length) { const i = next++; await f(items[i]!, i); }
  }));
}

const everythingFilter = { highMargin: null, lowMargin: null, warmupSamples: null, poolCapacity: 1 << 20 };
async function runDevice(mode: Mode, sp: Spec, s: number): Promise<void> {
  const key = `${mode.model}/${sp.id}`;
  const clock = { t: 0 };
  const link = new RecordingLink(new HttpCloudLink({ url: URL_, model: mode.model, device: sp.id, token: tokens.get(key)!, timeoutMs: 120_000 }), mode.name === 'filtered' && s === 0);
  const bps = BUDGET * streamRate;
  const dev = new FleetDevice({
    base, link, model: mode.model, device: sp.id, uploadEvery: 1_000_000, now: () => clock.t, health: { window: 2 },
    filter: mode.name === 'everything' ? everythingFilter : { ...(NO_FILTER ? everythingFilter : filterBar), budget: { bytesPerSecond: bps, burstBytes: bps * R1 } },
    ...(mode.name === 'filtered' ? { codec: CODEC } : {}),
  });
  try {
    const st = states.get(key);
    if (st) await dev.restore(st);
    if (s > 0) await dev.sync();
    const seg = segment(sp, s);
    for (let b = 0; b < seg.length; b++) {
      clock.t = (s * R1 + b + 1) * 1000;
      const x = seg[b]!;
      const r = await dev.predict(f32([BATCH, 1, 28, 28], x.x));
      let wrong = 0;
      for (let i = 0; i < BATCH; i++) if (r.predicted[i] !== x.y[i]) wrong++;
      add(mode.name, sp.id, s, wrong, BATCH);
    }
    if (s < ROUNDS) await dev.uploadNow();
    states.set(key, dev.state());
  } finally {
    await dev.release();
  }
}

const mainCpu0 = process.cpuUsage();
const tDev0 = performance.now();
// Register every device (admin token over HTTP).
for (const m of MODES) await pool(specs.slice(0, m.devices), 16, async (sp) => { tokens.set(`${m.model}/${sp.id}`, await registerDevice(URL_, ADMIN, m.model, sp.id)); });
log(`registered ${tokens.size} devices`);

let mainWorkers: Worker[] = [];
mainWorkers = Array.from({ length: MAIN_W }, spawnWorker);
await Promise.all(mainWorkers.map((w) => w.ready));
log(`${MAIN_W} worker(s) ready`);
const roundSeconds: number[] = [];
for (let s = 0; s <= ROUNDS; s++) {
  const ts = performance.now();
  const before = accepted.length;
  const work: [Mode, Spec][] = [];
  for (const sp of specs) for (const m of MODES) if (specs.indexOf(sp) < m.devices) work.push([m, sp]);
  let done = 0;
  await pool(work, WAVE, async ([m, sp]) => {
    await runDevice(m, sp, s);
    if (++done % Math.max(1, Math.floor(work.length / 5)) === 0) log(`segment ${s}: ${done}/${work.length} device runs`);
  });
  if (s < ROUNDS) {
    const ids = accepted.slice(before).map((u) => consolidateJobId(u.model, u.device, u.round));
    log(`round ${s + 1}: ${ids.length} uploads accepted; waiting for their consolidation`);
    await waitJobs(ids, `round ${s + 1}`);
  }
  roundSeconds.push((performance.now() - ts) / 1000);
}
const mainCpu = process.cpuUsage(mainCpu0);
const loopSeconds = (performance.now() - tDev0) / 1000;
const mainWorkerJobs = mainWorkers.flatMap((w) => [...w.jobs.values()]).filter((j) => j.start !== undefined && j.done !== undefined).map((j) => j.done! - j.start!);
await stopWorkers(mainWorkers);
log(`loop done in ${loopSeconds.toFixed(0)} s`);

// Device outcomes from their saved states.
const deviceStats: Record<string, { uploads: number; uploadedBytes: number; everythingBytes: number; everythingU8Bytes: number; uploadedSamples: number; samples: number; onAdapter: number; rollbacks: number; failed: number; rejected: number }> = {};
const finalVersions: { model: string; device: string; name: string; version: number }[] = [];
for (const m of MODES) {
  const a = { uploads: 0, uploadedBytes: 0, everythingBytes: 0, everythingU8Bytes: 0, uploadedSamples: 0, samples: 0, onAdapter: 0, rollbacks: 0, failed: 0, rejected: 0 };
  for (const sp of specs.slice(0, m.devices)) {
    const st = states.get(`${m.model}/${sp.id}`)!;
    a.uploads += st.stats.uploads; a.uploadedBytes += st.stats.uploadedBytes; a.everythingBytes += st.stats.everythingBytes; a.everythingU8Bytes += st.stats.everythingU8Bytes;
    a.uploadedSamples += st.stats.uploadedSamples; a.samples += st.stats.samples;
    if (st.serving) { a.onAdapter++; finalVersions.push({ model: m.model, device: sp.id, name: st.serving.name, version: st.serving.version }); }
    for (const e of st.events) {
      events[`${m.name}:${e.kind}`] = (events[`${m.name}:${e.kind}`] ?? 0) + 1;
      if (e.kind === 'rollback') a.rollbacks++;
      if (e.kind === 'upload-failed') a.failed++;
      if (e.kind === 'upload-rejected') a.rejected++;
    }
  }
  deviceStats[m.name] = a;
}

// ---------------------------------------------------------------- single-device methods
const source = loadSourceSet();
/**
 * A new adapter per call. 'continual' is the controller as `refit demo` runs it; its deep learner
 * is warmed up once and shared (useDeepLearnerState), as `refit serve` does for its tenants,
 * instead of once per device.
 */
async function freshAdapter(model: RefitModel, method: string): Promise<() => Adapter> {
  if (method !== 'continual') return () => createAdapter(model, method, { ...sourceDataOptions(method, source, { quick: true }) });
  const m = withFeaturesFor(method, model, 'logits', { quiet: true });
  const make = () => demoAdapter(m, method, source) as ContinualAdapter;
  const first = make();
  await first.current.prepareDeepLearner(f32([BATCH, 1, 28, 28], segment(specs[0]!, 0)[0]!.x));
  const warm = first.current.preparedDeepLearnerState();
  await first.release();
  return () => {
    const a = make();
    if (warm) a.current.useDeepLearnerState(warm);
    return a;
  };
}
const baselineErr: Record<string, number[][]> = {};
const baselineSeconds: Record<string, number> = {};
for (const method of BASELINES) {
  const t0 = performance.now();
  let adapter: Adapter | undefined;
  try {
    const model = await loadModel(join(ROOT, 'models/fmnist-cnn.onnx'), { threads: 1 });
    const fresh = await freshAdapter(model, method);
    baselineErr[method] = Array.from({ length: ROUNDS + 1 }, () => [0, 0]);
    for (const sp of specs.slice(0, CMP)) {
      // A fresh controller per device; the TTA methods go back to their start with reset().
      if (!adapter || method === 'continual') { await adapter?.release(); adapter = fresh(); } else adapter.reset();
      for (let s = 0; s <= ROUNDS; s++) for (const b of segment(sp, s)) {
        const r = await adapter.predict(f32([BATCH, 1, 28, 28], b.x));
        const p = argmaxRows(r.logits.data as Float32Array, r.logits.dims[1]!);
        let wrong = 0;
        for (let i = 0; i < BATCH; i++) if (p[i] !== b.y[i]) wrong++;
        baselineErr[method]![s]![0]! += wrong; baselineErr[method]![s]![1]! += BATCH;
      }
    }
    await adapter?.release();
    await model.release();
  } catch (e) {
    log(`baseline ${method} not run: ${(e as Error).message.split('\n')[0]}`);
    delete baselineErr[method];
  }
  baselineSeconds[method] = (performance.now() - t0) / 1000;
  log(`baseline ${method}: ${baselineSeconds[method]!.toFixed(0)} s`);
}

// ---------------------------------------------------------------- throughput phases
interface Phase {
  workers: number; jobs: number; uploads: number; uploadSeconds: number; uploadsPerSecond: number;
  jobSeconds: number; jobsPerSecond: number; jobsBeforeAllReady: number;
  workerCpuSeconds: number[]; workerCoresUsed: number; cpuMsPerJob: number; jobMsMedian: number;
  machineCoresBusy: number; loadBefore: number; loadAfter: number;
  upload: { pgStatementMs: number; pgStatements: number; pgCpuMs: number; natsCpuMs: number; serviceCpuMs: number };
  job: { pgStatementMs: number; pgStatements: number; pgCpuMs: number; natsCpuMs: number };
}
const phases: Phase[] = [];
for (const W of WORKERS) {
  const model = `sim-t${W}`;
  const payloads = replayable.slice(0, TPUT);
  const names = payloads.map((_, i) => `t${W}-${String(i).padStart(4, '0')}`);
  await pool(names, 16, async (n) => { tokens.set(`${model}/${n}`, await registerDevice(URL_, ADMIN, model, n)); });
  // Uploads (no worker running): HTTP → blob → PostgreSQL → JetStream publish.
  await resetStatements();
  let pg0 = postgresCpuMs(), n0 = procCpuMs(nats.pid()), c0 = process.cpuUsage();
  let t0 = performance.now();
  await pool(payloads, 16, async (p, i) => {
    const link = new HttpCloudLink({ url: URL_, model, device: names[i]!, token: tokens.get(`${model}/${names[i]}`)!, timeoutMs: 120_000 });
    const r = await link.upload({ ...p, model, device: names[i]!, round: 1 });
    if (!r.accepted) throw new Error(`throughput upload ${names[i]} refused: ${r.reason}`);
    accepted.push({ model, device: names[i]!, round: 1, samples: p.dims[0]!, bytes: 0 });
  });
  const uploadSeconds = (performance.now() - t0) / 1000;
  const cu = process.cpuUsage(c0);
  const up = { ...(await pgStatements()), pgCpu: postgresCpuMs() - pg0, natsCpu: procCpuMs(nats.pid()) - n0 };
  // Jobs: W workers start together; the clock starts when the last one is ready.
  const ws = Array.from({ length: W }, spawnWorker);
  await Promise.all(ws.map((w) => w.ready));
  await resetStatements();
  const ids = names.map((n) => consolidateJobId(model, n, 1));
  const before = (await sql.query('SELECT /*sim-poll*/ count(*)::int AS n FROM fleet_jobs WHERE job_id = ANY($1)', [ids])).rows[0].n as number;
  const wc0 = ws.map((w) => procCpuMs(w.proc.pid));
  pg0 = postgresCpuMs(); n0 = procCpuMs(nats.pid());
  const m0 = machineCpu(), l0 = loadavg()[0]!;
  t0 = performance.now();
  await waitJobs(ids, `${W} worker(s)`);
  const jobSeconds = (performance.now() - t0) / 1000;
  const m1 = machineCpu();
  const wcpu = ws.map((w, i) => (procCpuMs(w.proc.pid) - wc0[i]!) / 1000);
  const jb = { ...(await pgStatements()), pgCpu: postgresCpuMs() - pg0, natsCpu: procCpuMs(nats.pid()) - n0 };
  const jobMs = ws.flatMap((w) => [...w.jobs.values()]).filter((j) => j.start !== undefined && j.done !== undefined).map((j) => j.done! - j.start!);
  await stopWorkers(ws);
  const jobs = ids.length - before;
  const cpuSum = wcpu.reduce((a, b) => a + b, 0);
  const ph: Phase = {
    workers: W, jobs, uploads: payloads.length, uploadSeconds, uploadsPerSecond: payloads.length / uploadSeconds,
    jobSeconds, jobsPerSecond: jobs / jobSeconds, jobsBeforeAllReady: before,
    workerCpuSeconds: wcpu, workerCoresUsed: cpuSum / jobSeconds, cpuMsPerJob: (cpuSum * 1000) / jobs, jobMsMedian: median(jobMs),
    machineCoresBusy: (m1.busy - m0.busy) / (jobSeconds * 1000), loadBefore: l0, loadAfter: loadavg()[0]!,
    upload: { pgStatementMs: up.ms / payloads.length, pgStatements: up.calls / payloads.length, pgCpuMs: up.pgCpu / payloads.length, natsCpuMs: up.natsCpu / payloads.length, serviceCpuMs: (cu.user + cu.system) / 1000 / payloads.length },
    job: { pgStatementMs: jb.ms / jobs, pgStatements: jb.calls / jobs, pgCpuMs: jb.pgCpu / jobs, natsCpuMs: jb.natsCpu / jobs },
  };
  phases.push(ph);
  log(`${W} worker(s): ${ph.uploadsPerSecond.toFixed(1)} uploads/s, ${ph.jobsPerSecond.toFixed(2)} jobs/s (${jobs} jobs in ${jobSeconds.toFixed(1)} s), workers used ${ph.workerCoresUsed.toFixed(2)} cores, machine busy ${ph.machineCoresBusy.toFixed(2)} cores, load ${l0.toFixed(1)}`);
}

// ---------------------------------------------------------------- correctness checks
const failures: string[] = [];
const check = (ok: boolean, what: string) => { if (!ok) failures.push(what); };
{
  const rows = (await sql.query('SELECT model, device, round::int AS round FROM fleet_uploads')).rows as { model: string; device: string; round: number }[];
  const have = new Set(rows.map((r) => `${r.model}/${r.device}/${r.round}`));
  const acc = new Set(accepted.map((u) => `${u.model}/${u.device}/${u.round}`));
  const lost = [...acc].filter((k) => !have.has(k));
  check(lost.length === 0, `${lost.length} accepted uploads have no record (e.g. ${lost.slice(0, 3).join(', ')})`);
  check(rows.length === acc.size, `${rows.length} upload records for ${acc.size} accepted uploads`);
  const ids = accepted.map((u) => consolidateJobId(u.model, u.device, u.round));
  const jr = (await sql.query('SELECT job_id FROM fleet_jobs WHERE job_id = ANY($1)', [ids])).rows as { job_id: string }[];
  const jobCount = new Map<string, number>();
  for (const r of jr) jobCount.set(r.job_id, (jobCount.get(r.job_id) ?? 0) + 1);
  const noResult = ids.filter((id) => jobCount.get(id) !== 1);
  check(noResult.length === 0, `${noResult.length} accepted uploads lack exactly one consolidate job result (e.g. ${noResult.slice(0, 3).join(', ')})`);
  const twice = (await sql.query(`SELECT meta::jsonb->'config'->>'fleetJob' AS job, count(*)::int AS n FROM adapter_versions
    WHERE meta::jsonb->'config' ? 'fleetJob' GROUP BY 1 HAVING count(*) > 1`)).rows as { job: string; n: number }[];
  check(twice.length === 0, `${twice.length} job ids published more than one version (e.g. ${twice.slice(0, 3).map((t) => `${t.job}×${t.n}`).join(', ')})`);
  const vers = new Set(((await sql.query('SELECT model, name, version FROM adapter_versions')).rows as { model: string; name: string; version: number }[]).map((r) => `${r.model}/${r.name}@${r.version}`));
  const unknown = finalVersions.filter((v) => !vers.has(`${v.model}/${v.name}@${v.version}`));
  check(unknown.length === 0, `${unknown.length} devices end on a version the registry lacks (e.g. ${unknown.slice(0, 3).map((v) => `${v.device}: ${v.name}@${v.version}`).join(', ')})`);
  for (const [m, a] of Object.entries(deviceStats)) {
    check(a.failed === 0, `${m}: ${a.failed} uploads failed (lost) on the devices`);
    check(a.rejected === 0, `${m}: ${a.rejected} uploads rejected by the cloud`);
  }
  const jobErrors = workerLogErrors.filter((l) => !/job failed \(attempt/.test(l));
  check(jobErrors.length === 0, `${jobErrors.length} worker log lines at error level (e.g. ${jobErrors.slice(0, 2).join(' | ')})`);
}

// ---------------------------------------------------------------- report
const pct = (e: number[] | undefined) => (e && e[1] ? (100 * e[0]!) / e[1]! : NaN);
const subsetErr = (mode: string, s: number) => {
  let w = 0, n = 0;
  for (const sp of specs.slice(0, CMP)) { const e = devErr.get(`${mode}/${sp.id}/${s}`); if (e) { w += e[0]!; n += e[1]!; } }
  return n ? (100 * w) / n : NaN;
};
const result = {
  command, date: new Date().toISOString(), seconds: (performance.now() - t00) / 1000,
  config: { devices: D, rounds: ROUNDS, batch: BATCH, roundBatches: R1, measureBatches: R2, budgetFraction: BUDGET, budgetBytesPerSecond: BUDGET * streamRate, streamBytesPerSecond: streamRate, wave: WAVE, compareDevices: CMP, mainWorkers: MAIN_W, workers: WORKERS, throughputJobs: TPUT, consolidation: { teacher: TEACHER, ...(TEACHER_MODEL ? { teacherModel: TEACHER_MODEL } : {}), ...(LR ? { lr: Number(LR) } : {}), ...(HIGH ? { highMargin: HIGH } : {}), ...(SHARE ? { uniformShare: Number(SHARE) } : {}), epochs: EPOCHS, replay: REPLAY, batch: BATCH } },
  loop: { seconds: loopSeconds, roundSeconds, mainProcessCpuSeconds: (mainCpu.user + mainCpu.system) / 1e6, workerJobMsMedian: median(mainWorkerJobs), workerJobs: mainWorkerJobs.length },
  error: Object.fromEntries(MODES.map((m) => [m.name, { all: errs[m.name]!.map(pct), compared: errs[m.name]!.map((_, s) => subsetErr(m.name, s)) }])),
  baselines: Object.fromEntries(Object.entries(baselineErr).map(([k, v]) => [k, v.map(pct)])),
  baselineSeconds, devices: deviceStats, events, phases, failures,
};
writeFileSync(`${OUT}.json`, JSON.stringify(result, null, 1));
const f1 = (v: number) => (Number.isFinite(v) ? v.toFixed(1) : '—');
const segName = (s: number) => (s < ROUNDS ? `round ${s + 1}` : 'after consolidation');
const md: string[] = [
  `# Fleet simulation${quick ? ' (quick)' : ''}`, '', `\`${command}\` (${result.date}, ${result.seconds.toFixed(0)} s; load average at the end ${loadavg().map((v) => v.toFixed(1)).join(' ')})`, '',
  `${D} devices (${CMP} also in the 'everything' mode and the single-device methods), ${ROUNDS} round(s) of ${R1} batches of ${BATCH}, then ${R2} measured batches; budget ${(BUDGET * 100).toFixed(0)} % of the stream (${(BUDGET * streamRate / 1000).toFixed(1)} kB/s, stream ${(streamRate / 1000).toFixed(1)} kB/s); consolidation: teacher ${TEACHER}${TEACHER_MODEL ? ` (${TEACHER_MODEL})` : ''}${LR ? `, lr ${LR}` : ''}${HIGH ? `, devices' highMargin ${HIGH}` : ''}${SHARE ? `, uniformShare ${SHARE}` : ''}, ${EPOCHS} epochs, replay ${REPLAY}; ${MAIN_W} worker process(es) in the loop.`, '',
  '## Error % (online, per segment)', '',
  `| | ${Array.from({ length: ROUNDS + 1 }, (_, s) => segName(s)).join(' | ')} |`, `|---|${'---:|'.repeat(ROUNDS + 1)}`,
  `| fleet, filtered (all ${D} devices) | ${errs.filtered!.map((e) => f1(pct(e))).join(' | ')} |`,
  `| fleet, filtered (the ${CMP} compared devices) | ${errs.filtered!.map((_, s) => f1(subsetErr('filtered', s))).join(' | ')} |`,
  `| fleet, everything uploaded (the ${CMP}) | ${errs.everything!.map((e) => f1(pct(e))).join(' | ')} |`,
  ...Object.entries(baselineErr).map(([k, v]) => `| ${k} alone (the ${CMP}) | ${v.map((e) => f1(pct(e))).join(' | ')} |`), '',
  '## Uploads', '', `'filtered' devices upload with codec ${CODEC_ARG}${NO_FILTER ? ', every sample kept (--filter none)' : ''}. "everything" bytes: every sample as float32; "at 8 bits": the same at 8 bits a value (lossless for 8-bit images), the reference for a lossy codec.`, '',
  '| mode | devices | uploads | uploaded samples | uploaded bytes | everything bytes | fewer bytes | everything at 8 bits | fewer than 8-bit everything | on an adapter at the end | rollbacks | failed | rejected |', '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ...MODES.map((m) => { const a = deviceStats[m.name]!; return `| ${m.name} | ${m.devices} | ${a.uploads} | ${a.uploadedSamples} of ${a.samples} | ${a.uploadedBytes} | ${a.everythingBytes} | ${(a.everythingBytes / a.uploadedBytes).toFixed(1)}× | ${a.everythingU8Bytes} | ${(a.everythingU8Bytes / a.uploadedBytes).toFixed(1)}× | ${a.onAdapter} | ${a.rollbacks} | ${a.failed} | ${a.rejected} |`; }), '',
  ...(everythingPngBytes ? [`The 'everything' mode's uploads as lossless 8-bit PNGs (the samples tiled as the JPEG codec tiles them, zlib level 9): ${everythingPngBytes} bytes, ${(everythingPngBytes / deviceStats.filtered!.uploadedBytes).toFixed(1)}× the 'filtered' devices' bytes (the same devices and segments: ${CMP === D ? 'all' : `the first ${CMP} of ${D}`}).`, ''] : []),
  `Loop: ${loopSeconds.toFixed(0)} s (segments ${roundSeconds.map((s) => s.toFixed(0)).join(', ')} s); this process (devices + cloud service) used ${result.loop.mainProcessCpuSeconds.toFixed(0)} CPU s; median job ${f1(result.loop.workerJobMsMedian)} ms over ${mainWorkerJobs.length} jobs.`, '',
  '## Cloud throughput', '', '| workers | uploads/s | jobs | jobs/s | × 1 worker | worker CPU s (each) | worker cores used | worker CPU ms/job | median job ms | machine cores busy | load 1-min |', '|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|',
  ...phases.map((p) => `| ${p.workers} | ${p.uploadsPerSecond.toFixed(1)} | ${p.jobs} | ${p.jobsPerSecond.toFixed(2)} | ${(p.jobsPerSecond / phases[0]!.jobsPerSecond).toFixed(2)}× | ${p.workerCpuSeconds.map((c) => c.toFixed(1)).join(', ')} | ${p.workerCoresUsed.toFixed(2)} | ${p.cpuMsPerJob.toFixed(0)} | ${p.jobMsMedian.toFixed(0)} | ${p.machineCoresBusy.toFixed(2)} | ${p.loadBefore.toFixed(1)} → ${p.loadAfter.toFixed(1)} |`), '',
  '| workers | per upload: PostgreSQL statement ms (statements) | PostgreSQL CPU ms | nats-server CPU ms | service CPU ms | per job: PostgreSQL statement ms (statements) | PostgreSQL CPU ms | nats-server CPU ms |', '|---:|---:|---:|---:|---:|---:|---:|---:|',
  ...phases.map((p) => `| ${p.workers} | ${p.upload.pgStatementMs.toFixed(2)} (${p.upload.pgStatements.toFixed(1)}) | ${p.upload.pgCpuMs.toFixed(2)} | ${p.upload.natsCpuMs.toFixed(2)} | ${p.upload.serviceCpuMs.toFixed(1)} | ${p.job.pgStatementMs.toFixed(2)} (${p.job.pgStatements.toFixed(1)}) | ${p.job.pgCpuMs.toFixed(2)} | ${p.job.natsCpuMs.toFixed(2)} |`), '',
  `## Checks: ${failures.length ? `**${failures.length} FAILED**` : 'all passed'}`, '',
  ...(failures.length ? failures.map((f) => `- FAILED: ${f}`) : [`- ${accepted.length} accepted uploads, each with its record and exactly one consolidate job result; no job id published twice; every device on a registry version or the base; no upload lost, failed or rejected; no worker error.`]), '',
];
writeFileSync(`${OUT}.md`, md.join('\n'));
console.log(md.join('\n'));
await cleanup();
if (failures.length) { console.error(`fleet-simulation: ${failures.length} check(s) failed`); process.exit(1); }
process.exit(0);
