// A fleet cloud worker process (issue 15): consumes consolidate and aggregate jobs from NATS
// JetStream and publishes adapters to the registry (src/fleet/worker.ts). Run as many as the
// CPUs allow; they share the queue's one durable consumer, so each job goes to one of them, and a
// job whose worker dies is redelivered to another after the queue's ack wait.
//
//   npx tsx scripts/fleet-worker.ts --queue nats://127.0.0.1:4222 --store postgres://… \
//     --registry postgres://… --registry-blobs file:/var/refit/blobs --blobs file:/var/refit/blobs \
//     --model cnn=1x28x28 --base models/fmnist-cnn.onnx
//
// It logs one JSON line per event on stdout ({"level","msg",…}; "worker ready" once consuming)
// and stops cleanly on SIGTERM or SIGINT (the jobs in hand finish and are acknowledged first).
// --consolidator-module PATH replaces the default consolidator (src/fleet/consolidator.ts) with
// a module's `createConsolidator()`: tests use it to run a slow stand-in they can kill mid-job.
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';
import { openRegistry, openBlobStore } from '../src/registry/open.ts';
import { PostgresFleetStore } from '../src/fleet/store-postgres.ts';
import { NatsJobQueue } from '../src/fleet/queue-nats.ts';
import { createConsolidator, TEACHERS, type Consolidator, type TeacherChoice } from '../src/fleet/consolidator.ts';
import { runWorker, type WorkerLog } from '../src/fleet/worker.ts';
import type { FleetModelConfig } from '../src/fleet/cloud-server.ts';

const USAGE = `usage: tsx scripts/fleet-worker.ts --queue URL --store URL --registry SPEC --blobs SPEC --model NAME=DxDxD [options]
  --queue URL              NATS server (nats://host:port)
  --queue-prefix P         stream/consumer prefix (default refit)
  --ack-wait-ms N          redeliver a job after N ms without an ack or keep-alive (default 30000)
  --store URL              FleetStore: postgres://…
  --registry SPEC          adapter registry: sqlite:PATH or postgres://…
  --registry-blobs SPEC    blob store of a PostgreSQL registry (file:DIR or s3://…)
  --blobs SPEC             blob store of the uploads (file:DIR or s3://…)
  --model NAME=1x28x28     a model and one sample's dims (repeatable)
  --base PATH              device model for the default consolidator (default models/fmnist-cnn.onnx)
  --teacher NAME           vit | cnn | cnn-aug | ensemble | model | model+cnn (default vit; model with --teacher-model)
  --teacher-model PATH     a larger cloud model as teacher (--teacher model, model+cnn); docs/fleet.md
  --consolidator-module P  module exporting createConsolidator(): Promise<Consolidator>
  --aggregate fedavg|ties  fleet merge (default fedavg)
  --concurrency N          jobs at once in this process (default 1)`;

const { values: a } = parseArgs({
  options: {
    queue: { type: 'string' }, 'queue-prefix': { type: 'string' }, 'ack-wait-ms': { type: 'string' },
    store: { type: 'string' }, registry: { type: 'string' }, 'registry-blobs': { type: 'string' }, blobs: { type: 'string' },
    model: { type: 'string', multiple: true }, base: { type: 'string' }, teacher: { type: 'string' }, 'teacher-model': { type: 'string' },
    'consolidator-module': { type: 'string' }, aggregate: { type: 'string' }, concurrency: { type: 'string' }, help: { type: 'boolean' },
  },
});
if (a.help) { console.log(USAGE); process.exit(0); }
const die = (msg: string): never => { console.error(`fleet-worker: ${msg}\n${USAGE}`); process.exit(2); };
for (const k of ['queue', 'store', 'registry', 'blobs'] as const) if (!a[k]) die(`--${k} is required`);
if (!a.model?.length) die('give at least one --model NAME=DxDxD');
const models: Record<string, FleetModelConfig> = {};
for (const m of a.model!) {
  const [name, dims] = m.split('=');
  const sampleDims = (dims ?? '').split('x').map(Number);
  if (!name || !sampleDims.every((d) => Number.isInteger(d) && d > 0)) die(`--model ${m}: use NAME=DxDxD, e.g. cnn=1x28x28`);
  models[name!] = { sampleDims };
}
const num = (k: string, v: string | undefined, d: number) => {
  const n = v === undefined ? d : Number(v);
  return Number.isInteger(n) && n > 0 ? n : die(`--${k} must be a positive integer, got ${v}`);
};
if (a.teacher && !(TEACHERS as readonly string[]).includes(a.teacher)) die(`--teacher must be one of ${TEACHERS.join(', ')}, got ${a.teacher}`);
if (a.teacher?.startsWith('model') && !a['teacher-model']) die(`--teacher ${a.teacher} needs --teacher-model PATH`);
if (a.aggregate && a.aggregate !== 'fedavg' && a.aggregate !== 'ties') die(`--aggregate must be fedavg or ties, got ${a.aggregate}`);

const log: WorkerLog = (level, msg, fields) => process.stdout.write(`${JSON.stringify({ level, msg, pid: process.pid, ...fields })}\n`);

const consolidator: Consolidator = a['consolidator-module']
  ? await (await import(pathToFileURL(resolve(a['consolidator-module'])).href) as { createConsolidator(): Promise<Consolidator> }).createConsolidator()
  : await createConsolidator({ base: a.base ?? 'models/fmnist-cnn.onnx', ...(a.teacher ? { teacher: a.teacher as TeacherChoice } : {}), ...(a['teacher-model'] ? { teacherModel: a['teacher-model'] } : {}) });
const store = await PostgresFleetStore.open(a.store!);
const registry = await openRegistry(a.registry!, a['registry-blobs'] ? { blobs: a['registry-blobs'] } : {});
const blobs = openBlobStore(a.blobs!);
const queue = await NatsJobQueue.connect({
  servers: a.queue!, prefix: a['queue-prefix'] ?? 'refit', ackWaitMs: num('ack-wait-ms', a['ack-wait-ms'], 30_000), warn: (m) => log('warn', m),
});
const worker = await runWorker({ store, registry, blobs, queue, consolidator, models, log, aggregateMethod: (a.aggregate as 'fedavg' | 'ties' | undefined) ?? 'fedavg' }, { concurrency: num('concurrency', a.concurrency, 1) });
log('info', 'worker ready', { models: Object.keys(models) });

let stopping = false;
const shutdown = async (signal: string) => {
  if (stopping) return;
  stopping = true;
  log('info', 'worker stopping', { signal });
  await worker.stop();
  await queue.close();
  await Promise.allSettled([store.close(), registry.close(), blobs.close(), consolidator.release()]);
  log('info', 'worker stopped');
  process.exit(0);
};
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));
