// The fleet cloud service's and worker's throughput, for the capacity plan (docs/fleet.md):
//  1. uploads/s accepted by one service process over HTTP (HttpCloudLink clients in the same
//     process), at 8 and 64 samples of 1x28x28 per upload, with (A) the in-memory fleet store and
//     queue against (B) PostgreSQL + NATS JetStream (the production stack; blobs on the file
//     system, fsynced, in both). Forms alternate A, B, A, B … in one process; medians and B/A.
//  2. the worker's cost per job besides consolidation (read + verify + decode the upload, put
//     the version in the registry, commit the job) against one real consolidation with the
//     default consolidator (src/fleet/consolidator.ts), on the same 32-sample upload.
// Servers (PostgreSQL, nats-server) run on this machine, sharing its CPUs with the clients.
//
//   nice -n 10 npx tsx bench/fleet-service.ts [--rounds 3] [--ms 1500] [--concurrency 16] [--devices 256]   (about 1 minute)
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { FastifyInstance } from 'fastify';
import { SqliteRegistry } from '../src/registry/sqlite.ts';
import { FsBlobStore } from '../src/registry/blob-store-fs.ts';
import { MemoryFleetStore } from '../src/fleet/store-memory.ts';
import { PostgresFleetStore } from '../src/fleet/store-postgres.ts';
import { MemoryJobQueue } from '../src/fleet/queue-memory.ts';
import { NatsJobQueue } from '../src/fleet/queue-nats.ts';
import { createCloudServer } from '../src/fleet/cloud-server.ts';
import { HttpCloudLink, registerDevice } from '../src/fleet/link-http.ts';
import { createJobHandler } from '../src/fleet/worker.ts';
import { createConsolidator, type Consolidator } from '../src/fleet/consolidator.ts';
import { loadModel } from '../src/model.ts';
import type { CloudDeps, Job } from '../src/fleet/types.ts';
import { startPostgres } from '../test/helpers/postgres.ts';
import { startNats } from '../test/helpers/nats.ts';
import { quantile } from './stats.ts';

const { values: args } = parseArgs({ options: { rounds: { type: 'string', default: '3' }, ms: { type: 'string', default: '1500' }, concurrency: { type: 'string', default: '16' }, devices: { type: 'string', default: '256' } } });
const ROUNDS = Number(args.rounds), MS = Number(args.ms), CONC = Number(args.concurrency), DEVICES = Number(args.devices);
const ADMIN = 'bench-admin-token-0123456789';
const models = { cnn: { sampleDims: [1, 28, 28], maxSamples: 1024 } };
const dirs: string[] = [];
const tmp = () => { const d = mkdtempSync(join(tmpdir(), 'refit-fleet-bench-')); dirs.push(d); return d; };

interface Stack { name: string; app: FastifyInstance; url: string; links: HttpCloudLink[]; rounds: number[]; deps: CloudDeps }

async function stack(name: string, deps: CloudDeps): Promise<Stack> {
  const app = await createCloudServer(deps, { adminToken: ADMIN, models, defaultMetrics: false, maxUploadBytes: 64 * 2 ** 20 });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  const links: HttpCloudLink[] = [];
  for (let i = 0; i < DEVICES; i++) {
    const device = `dev-${i}`;
    links.push(new HttpCloudLink({ url, model: 'cnn', device, token: await registerDevice(url, ADMIN, 'cnn', device), retries: 0 }));
  }
  return { name, app, url, links, rounds: new Array(DEVICES).fill(0), deps };
}

/** Uploads/s for MS ms: CONC client loops, each owning the devices i ≡ loop (mod CONC), rounds increasing. */
async function uploadRate(s: Stack, samples: number): Promise<number> {
  const data = new Float32Array(samples * 784);
  for (let i = 0; i < data.length; i++) data[i] = (i % 255) / 255;
  let n = 0, refused = 0;
  const t0 = performance.now(), end = t0 + MS;
  await Promise.all(Array.from({ length: CONC }, async (_, loop) => {
    for (let k = 0; performance.now() < end; k++) {
      const d = loop + CONC * (k % Math.max(1, Math.floor(DEVICES / CONC)));
      const r = await s.links[d]!.upload({ model: 'cnn', device: `dev-${d}`, round: ++s.rounds[d]!, dims: [samples, 1, 28, 28], data });
      if (r.accepted) n++; else refused++;
    }
  }));
  if (refused) throw new Error(`${s.name}: ${refused} uploads refused`);
  return n / ((performance.now() - t0) / 1000);
}

const med = (xs: number[]) => quantile(xs, 0.5);
const fmt = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));

async function main(): Promise<void> {
  const pg = await startPostgres({ fsync: true });
  const nats = (await startNats())!;
  const cleanups: (() => Promise<unknown>)[] = [];
  try {
    const memDeps: CloudDeps = { store: new MemoryFleetStore(), queue: new MemoryJobQueue(), blobs: new FsBlobStore(tmp()), registry: new SqliteRegistry(':memory:') };
    const pgStore = await PostgresFleetStore.open(await pg.createDatabase('fleet'));
    const natsQueue = await NatsJobQueue.connect({ servers: nats.url, prefix: 'bench', duplicateWindowMs: 60_000 });
    const prodDeps: CloudDeps = { store: pgStore, queue: natsQueue, blobs: new FsBlobStore(tmp()), registry: new SqliteRegistry(join(tmp(), 'registry.db')) };
    cleanups.push(() => pgStore.close(), () => natsQueue.close());
    const A = await stack('memory store + memory queue', memDeps);
    const B = await stack('PostgreSQL + NATS JetStream', prodDeps);
    cleanups.push(() => A.app.close(), () => B.app.close());
    console.log(`uploads/s, one service process, ${CONC} concurrent clients in the same process, ${DEVICES} devices, ${ROUNDS} rounds of ${MS} ms alternating`);
    for (const samples of [8, 64]) {
      await uploadRate(A, samples); await uploadRate(B, samples); // warm-up
      const ra: number[] = [], rb: number[] = [];
      for (let r = 0; r < ROUNDS; r++) { ra.push(await uploadRate(A, samples)); rb.push(await uploadRate(B, samples)); }
      const bytes = samples * 784 * 4;
      console.log(`  ${samples} samples (${(bytes / 1024).toFixed(0)} KiB): A ${A.name} ${fmt(med(ra))}/s [${ra.map(fmt).join(', ')}]; B ${B.name} ${fmt(med(rb))}/s [${rb.map(fmt).join(', ')}]; B/A ${(med(rb) / med(ra)).toFixed(2)}; B ${(med(rb) * bytes / 2 ** 20).toFixed(1)} MiB/s`);
    }

    // 2. Worker cost per job besides consolidation, and one real consolidation, on 32-sample uploads.
    const cnn = await loadModel('models/fmnist-cnn.onnx', { threads: 1 });
    const real = await createConsolidator({ base: cnn });
    cleanups.push(async () => { await real.release(); await cnn.release(); });
    const stub: Consolidator = { consolidate: async (job) => ({ files: job.adapter ?? (await real.consolidate({ ...job, uploads: job.uploads.slice(0, 1) })).files, metrics: { uploads: 1, replay: 0, steps: 0, skippedSteps: 0, klBefore: 0, klAfter: 0, agreeBefore: 0, agreeAfter: 0, teacher: 'none', ms: 0 } }), aggregate: real.aggregate, release: async () => {} };
    const timeJobs = async (consolidator: Consolidator, jobs: number): Promise<number[]> => {
      const handle = createJobHandler({ ...prodDeps, consolidator, models });
      const ms: number[] = [];
      for (let j = 0; j < jobs; j++) {
        const d = j % DEVICES;
        const data = new Float32Array(32 * 784).map((_, i) => ((i * 7 + j) % 255) / 255);
        const round = ++B.rounds[d]!;
        await B.links[d]!.upload({ model: 'cnn', device: `dev-${d}`, round, dims: [32, 1, 28, 28], data });
        const job: Job = { id: `consolidate:cnn:dev-${d}:${round}`, kind: 'consolidate', model: 'cnn', device: `dev-${d}`, round };
        const t0 = performance.now();
        await handle(job, { attempt: 1, keepAlive() {} });
        ms.push(performance.now() - t0);
      }
      return ms;
    };
    await timeJobs(stub, 4); // warm-up (and each device's first adapter, so the stub has one to return)
    const ov: number[] = [], full: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      ov.push(...(await timeJobs(stub, 8)));
      full.push(...(await timeJobs(real, 1)));
    }
    console.log(`worker, one job on a 32-sample upload (PostgreSQL store, SQLite registry file, fs blobs): without consolidation ${med(ov).toFixed(1)} ms median (${ov.length} jobs); with the default consolidator ${med(full).toFixed(0)} ms median (${full.length} jobs); consolidation is ${(100 * (1 - med(ov) / med(full))).toFixed(1)}% of a job`);
  } finally {
    for (const c of cleanups.reverse()) await c().catch(() => {});
    await nats.cleanup();
    await pg.stop();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  }
}

await main();
