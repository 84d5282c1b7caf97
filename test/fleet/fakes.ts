// Small in-test stand-ins for the fleet's interfaces, used by the cloud-service and worker tests:
// a FleetStore with the documented semantics (token sha256 only, rounds must increase, commitJob
// once per id), a BlobStore in a Map, a JobQueue that records what was published, and a
// Consolidator that averages uploads into a norm-affine-shaped file instead of training.
import { createHash, timingSafeEqual } from 'node:crypto';
import { serializeSafetensors, parseSafetensors } from '../../src/io/safetensors.ts';
import { FleetError, type BlobStore, type DeviceRecord, type FleetStore, type Job, type JobQueue, type JobResult, type UploadRecord } from '../../src/fleet/types.ts';
import type { Consolidator, ConsolidateJob } from '../../src/fleet/consolidator.ts';
import type { AdapterFiles } from '../../src/registry/types.ts';

const sha = (s: string | Uint8Array) => createHash('sha256').update(s).digest();

export class FakeFleetStore implements FleetStore {
  devices = new Map<string, DeviceRecord & { tokenHash: Buffer }>();
  uploadRows: UploadRecord[] = [];
  jobs = new Map<string, JobResult>();
  private key = (m: string, d: string) => `${m}\u0000${d}`;

  async registerDevice(model: string, device: string, token: string): Promise<DeviceRecord> {
    if (this.devices.has(this.key(model, device))) throw new FleetError(`device '${device}' exists`, 'conflict');
    const rec = { model, device, registeredAt: new Date().toISOString(), lastRound: 0, appliedVersion: null, tokenHash: sha(token) };
    this.devices.set(this.key(model, device), rec);
    const { tokenHash: _, ...out } = rec;
    return out;
  }
  async getDevice(model: string, device: string) {
    const r = this.devices.get(this.key(model, device));
    if (!r) return undefined;
    const { tokenHash: _, ...out } = r;
    return out;
  }
  async checkToken(model: string, device: string, token: string) {
    const r = this.devices.get(this.key(model, device));
    return !!r && timingSafeEqual(r.tokenHash, sha(token));
  }
  async acceptUpload(rec: Omit<UploadRecord, 'createdAt'>, token: string) {
    if (!(await this.checkToken(rec.model, rec.device, token))) throw new FleetError(`token is not device '${rec.device}''s`, 'unauthorized');
    const d = this.devices.get(this.key(rec.model, rec.device))!;
    if (rec.round <= d.lastRound) throw new FleetError(`round ${rec.round} is not newer than ${d.lastRound}`, 'conflict');
    d.lastRound = rec.round;
    const row = { ...rec, createdAt: new Date().toISOString() };
    this.uploadRows.push(row);
    return row;
  }
  async uploads(model: string, device: string, sinceRound = 0) {
    return this.uploadRows.filter((u) => u.model === model && u.device === device && u.round > sinceRound);
  }
  async setAppliedVersion(model: string, device: string, version: number | null) {
    const d = this.devices.get(this.key(model, device));
    if (!d) throw new FleetError(`no device '${device}'`, 'not-found');
    d.appliedVersion = version;
  }
  async commitJob(result: Omit<JobResult, 'finishedAt'>) {
    const had = this.jobs.get(result.jobId);
    if (had) return { result: had, created: false };
    const r = { ...result, finishedAt: new Date().toISOString() };
    this.jobs.set(result.jobId, r);
    return { result: r, created: true };
  }
  async jobResult(jobId: string) { return this.jobs.get(jobId); }
  async close() {}
}

export class FakeBlobStore implements BlobStore {
  blobs = new Map<string, Uint8Array>();
  async put(key: string, bytes: Uint8Array) { this.blobs.set(key, bytes.slice()); }
  async get(key: string) { return this.blobs.get(key)?.slice(); }
  async delete(key: string) { return this.blobs.delete(key); }
  async list(prefix: string) { return [...this.blobs.keys()].filter((k) => k.startsWith(prefix)).sort(); }
  async close() {}
}

/** Records published jobs (deduplicated by id); consume is not used by the service tests. */
export class RecordingQueue implements JobQueue {
  jobs: Job[] = [];
  failNext = false;
  async publish(job: Job) {
    if (this.failNext) { this.failNext = false; throw new FleetError('queue down (test)', 'unavailable'); }
    if (this.jobs.some((j) => j.id === job.id)) return { duplicate: true };
    this.jobs.push(structuredClone(job));
    return { duplicate: false };
  }
  async consume(): Promise<{ stop(): Promise<void> }> { throw new Error('RecordingQueue does not deliver'); }
  async close() {}
}

/**
 * A consolidator that "trains" by averaging: the adapter is one tensor `mean` = the mean of every
 * uploaded value plus the previous adapter's mean, and `n` = samples seen, so a test can tell
 * exactly which uploads reached which adapter. `calls` records each call's inputs.
 */
export function averagingConsolidator(o: { delayMs?: number } = {}): Consolidator & { calls: ConsolidateJob[] } {
  const calls: ConsolidateJob[] = [];
  const files = (mean: number, n: number): AdapterFiles => ({
    weights: serializeSafetensors(new Map([['mean', { dtype: 'float32', dims: [1], data: new Float32Array([mean]) }], ['n', { dtype: 'float32', dims: [1], data: new Float32Array([n]) }]]), { format: 'pt' }),
    config: '{"peft_type":"TEST"}\n',
  });
  return {
    calls,
    async consolidate(job) {
      calls.push(job);
      if (o.delayMs) await new Promise((r) => setTimeout(r, o.delayMs));
      let sum = 0, count = 0;
      for (const u of job.uploads) for (const v of u.data) { sum += v; count++; }
      const prev = job.adapter ? readAdapter(job.adapter) : { mean: 0, n: 0 };
      return {
        files: files(sum / count + prev.mean, prev.n + job.uploads.reduce((a, u) => a + u.dims[0]!, 0)),
        metrics: { uploads: job.uploads.length, replay: job.replay?.length ?? 0, steps: 1, skippedSteps: 0, klBefore: 1, klAfter: 0.5, agreeBefore: 0.5, agreeAfter: 0.9, teacher: 'test', ms: 0 },
      };
    },
    aggregate(inputs) {
      let w = 0, s = 0;
      for (const x of inputs) { w += x.samples; s += x.samples * readAdapter(x.files).mean; }
      return files(s / w, w);
    },
    async release() {},
  };
}

export function readAdapter(f: AdapterFiles): { mean: number; n: number } {
  const t = parseSafetensors(f.weights, 'adapter').tensors;
  return { mean: (t.get('mean')!.data as Float32Array)[0]!, n: (t.get('n')!.data as Float32Array)[0]! };
}
