// The cloud worker (issue 15): the handler JobQueue.consume runs for each job. Delivery is
// at-least-once, so every step is written to be safe when repeated:
//   1. a job whose result is committed (FleetStore.jobResult) is done: return, the queue acks;
//   2. a version of the adapter whose meta records this job id was published by an earlier try
//      that died after registry.put and before commitJob: reuse it, never put a second one;
//   3. otherwise load the device's uploads (blobs, sha256 verified, decoded and checked again),
//      consolidate (./consolidator.ts), put the version with the job id in its meta;
//   4. commitJob, then return: the queue acknowledges only now.
// A worker killed anywhere in 1–4 leaves either nothing (the job is redelivered and starts over)
// or a version tagged with the job id (step 2 finds it). Devices are untouched until they fetch
// the new current version, so they keep serving their last good one throughout.
//
// Two workers may hold jobs of one device at once (a lease that ran out while the first still
// worked, or jobs of different rounds): each put is a compare-and-set on the version the job
// consolidated from (AdapterRegistry.put's expectCurrent), so only the first publishes. The
// other gets a conflict and looks again: a version with its job id (the same job, published by
// the other holder) is reused; a later round already published makes it a skip; otherwise it
// throws and is redelivered, to consolidate on top of the new version. So no job publishes twice
// and the pointer never moves back to fewer rounds.
import { sha256Hex } from '../util/sha256-node.ts';
import { RegistryError, type AdapterFiles, type AdapterMeta, type AdapterVersion } from '../registry/types.ts';
import { FleetError, type CloudDeps, type Job, type JobContext, type UploadRecord } from './types.ts';
import { decodeUpload } from './upload-codec.ts';
import type { Consolidator, Samples } from './consolidator.ts';
import type { FleetModelConfig } from './cloud-server.ts';
import { FLEET_ADAPTER, JOB_META_KEY, deviceAdapterName, deviceOfAdapter } from './names.ts';

export type WorkerLog = (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;

export interface WorkerDeps extends CloudDeps {
  consolidator: Consolidator;
  /** Sample dims per model, as the cloud service checks them (uploads are decoded again here). */
  models: Record<string, FleetModelConfig>;
  /** Earlier uploads of the device passed as replay. @default 8 */
  replayUploads?: number;
  /** How the fleet adapter merges device adapters. @default 'fedavg' */
  aggregateMethod?: 'fedavg' | 'ties';
  log?: WorkerLog;
  /** Test hooks: called after registry.put and before commitJob (a throw here is a crash in that window). */
  hooks?: { afterPut?(job: Job, version: AdapterVersion): void | Promise<void>; beforeConsolidate?(job: Job): void | Promise<void> };
}

/** What the worker writes into AdapterMeta.config of each version it publishes. */
export interface PublishedConfig {
  [JOB_META_KEY]: string;
  round: number;
  /** Samples behind this adapter (cumulative for a device; summed over devices for the fleet): the FedAvg weight. */
  samples: number;
  device?: string;
  rounds?: number[];
  devices?: number;
}

const publishedConfig = (v: AdapterVersion | undefined) => v?.meta.config as Partial<PublishedConfig> | undefined;
const numeric = (o: object) => Object.fromEntries(Object.entries(o).filter(([, v]) => typeof v === 'number' && Number.isFinite(v))) as Record<string, number>;

/** The handler for JobQueue.consume. */
export function createJobHandler(deps: WorkerDeps): (job: Job, ctx: JobContext) => Promise<void> {
  const log: WorkerLog = deps.log ?? (() => {});
  const { registry, store } = deps;
  const replayUploads = deps.replayUploads ?? 8;

  const finish = async (job: Job, version: number | null, detail: Record<string, unknown>) => {
    const { created } = await store.commitJob({ jobId: job.id, version, detail });
    log('info', created ? 'job done' : 'job already committed by another try', { job: job.id, version, ...detail });
  };

  /** A version of `name` published by this job before (a try that died between put and commit). */
  const publishedBy = async (model: string, name: string, jobId: string) => (await registry.versions(model, name)).find((v) => publishedConfig(v)?.[JOB_META_KEY] === jobId);

  /** Read, verify and decode one upload; undefined (with a warning) when its bytes are missing or do not match the record. */
  const load = async (u: UploadRecord): Promise<Samples | undefined> => {
    const bytes = await deps.blobs.get(u.blobKey); // a store error throws: the job is retried
    const where = { model: u.model, device: u.device, round: u.round, blobKey: u.blobKey };
    if (!bytes) {
      log('error', 'upload blob missing; skipped', where);
      return undefined;
    }
    if (sha256Hex(bytes) !== u.sha256) {
      log('error', 'upload blob does not match its sha256; skipped', where);
      return undefined;
    }
    try {
      const cfg = deps.models[u.model]!;
      const p = decodeUpload(bytes, { sampleDims: cfg.sampleDims, maxSamples: Number.MAX_SAFE_INTEGER, maxBytes: Number.MAX_SAFE_INTEGER, model: u.model, device: u.device, ...(cfg.classes ? { classes: cfg.classes } : {}) });
      return { dims: p.dims, data: p.data };
    } catch (e) {
      log('error', `upload does not decode (${(e as Error).message}); skipped`, where);
      return undefined;
    }
  };

  const consolidateJob = async (job: Job, ctx: JobContext) => {
    const device = job.device!;
    const name = deviceAdapterName(device);
    const again = await publishedBy(job.model, name, job.id);
    if (again) return finish(job, again.version, { device, reused: true });

    const current = await registry.get(job.model, name);
    const covered = publishedConfig(current)?.round ?? 0;
    if (job.round <= covered) return finish(job, null, { device, skipped: `round ${job.round} is covered by version ${current!.version} (rounds up to ${covered})` });
    // Every upload newer than the current adapter up to this round: a job that was lost or came
    // out of order is covered by the next one.
    const all = (await store.uploads(job.model, device)).sort((a, b) => a.round - b.round);
    const fresh = all.filter((u) => u.round > covered && u.round <= job.round);
    const older = all.filter((u) => u.round <= covered).slice(-replayUploads);
    if (fresh.length === 0) return finish(job, null, { device, skipped: `no uploads in rounds ${covered + 1}..${job.round}` });

    const uploads: Samples[] = [];
    const rounds: number[] = [];
    const skipped: number[] = [];
    for (const u of fresh) {
      const s = await load(u);
      if (s) { uploads.push(s); rounds.push(u.round); } else skipped.push(u.round);
    }
    const replay = (await Promise.all(older.map(load))).filter((s): s is Samples => s !== undefined);
    if (uploads.length === 0) return finish(job, null, { device, skipped: `no readable uploads in rounds ${covered + 1}..${job.round}`, unreadable: skipped });

    await deps.hooks?.beforeConsolidate?.(job);
    ctx.keepAlive();
    const lease = setInterval(() => ctx.keepAlive(), 1000);
    let result;
    try {
      result = await deps.consolidator.consolidate({ adapter: current?.files ?? null, uploads, replay, seed: job.round });
    } finally {
      clearInterval(lease);
    }
    const samples = (publishedConfig(current)?.samples ?? 0) + uploads.reduce((n, s) => n + s.dims[0]!, 0);
    const config: PublishedConfig = { [JOB_META_KEY]: job.id, device, round: job.round, rounds, samples };
    const meta: AdapterMeta = { method: 'fleet-consolidate', config: config as unknown as Record<string, unknown>, metrics: numeric(result.metrics) };
    let v: AdapterVersion;
    try {
      v = await registry.put(job.model, name, result.files, meta, { expectCurrent: current?.version ?? null });
    } catch (e) {
      if (!(e instanceof RegistryError && e.code === 'conflict')) throw e;
      // Another worker published first (see the header).
      const same = await publishedBy(job.model, name, job.id);
      if (same) return finish(job, same.version, { device, reused: true });
      const latest = (await registry.versions(job.model, name)).find((x) => x.current);
      const latestRound = publishedConfig(latest)?.round ?? 0;
      if (latestRound >= job.round) return finish(job, null, { device, skipped: `overtaken: version ${latest!.version} covers rounds up to ${latestRound}` });
      throw new FleetError(`device ${device}: version ${latest?.version ?? 'none'} was published while this job consolidated on version ${current?.version ?? 'none'}; consolidating again`, 'conflict');
    }
    await deps.hooks?.afterPut?.(job, v);
    return finish(job, v.version, { device, rounds, replay: replay.length, samples, ...(skipped.length ? { unreadable: skipped } : {}) });
  };

  const aggregateJob = async (job: Job) => {
    const again = await publishedBy(job.model, FLEET_ADAPTER, job.id);
    if (again) return finish(job, again.version, { reused: true });
    const inputs: { files: AdapterFiles; samples: number }[] = [];
    for (const name of await registry.list(job.model)) {
      if (deviceOfAdapter(name) === undefined) continue;
      const s = await registry.get(job.model, name);
      const n = publishedConfig(s)?.samples;
      if (s && Number.isInteger(n) && n! > 0) inputs.push({ files: s.files, samples: n! });
    }
    if (inputs.length === 0) return finish(job, null, { skipped: 'no device adapters yet' });
    const files = deps.consolidator.aggregate(inputs, { method: deps.aggregateMethod ?? 'fedavg', name: FLEET_ADAPTER });
    const samples = inputs.reduce((n, x) => n + x.samples, 0);
    const config: PublishedConfig = { [JOB_META_KEY]: job.id, round: job.round, samples, devices: inputs.length };
    const v = await registry.put(job.model, FLEET_ADAPTER, files, { method: `fleet-${deps.aggregateMethod ?? 'fedavg'}`, config: config as unknown as Record<string, unknown> });
    await deps.hooks?.afterPut?.(job, v);
    return finish(job, v.version, { devices: inputs.length, samples });
  };

  return async (job, ctx) => {
    if (await store.jobResult(job.id)) {
      log('info', 'job already done', { job: job.id, attempt: ctx.attempt });
      return;
    }
    // A job this worker cannot do, ever, is committed as skipped rather than retried into the dead letters.
    const bad = !deps.models[job.model] ? `unknown model '${job.model}'`
      : job.kind === 'consolidate' && !job.device ? 'a consolidate job without a device'
        : job.kind !== 'consolidate' && job.kind !== 'aggregate' ? `unknown job kind '${String(job.kind)}'` : undefined;
    if (bad) {
      log('error', `job refused: ${bad}`, { job: job.id });
      return finish(job, null, { skipped: bad });
    }
    log('info', 'job start', { job: job.id, kind: job.kind, attempt: ctx.attempt });
    try {
      await (job.kind === 'consolidate' ? consolidateJob(job, ctx) : aggregateJob(job));
    } catch (e) {
      log(e instanceof FleetError && e.code === 'invalid' ? 'error' : 'warn', `job failed (attempt ${ctx.attempt}): ${(e as Error).message}`, { job: job.id });
      throw e; // redelivered with backoff by the queue
    }
  };
}

/** Consume jobs from deps.queue until stop(). */
export async function runWorker(deps: WorkerDeps, opts: { concurrency?: number } = {}): Promise<{ stop(): Promise<void> }> {
  return deps.queue.consume(createJobHandler(deps), { concurrency: opts.concurrency ?? 1 });
}
