// The FleetStore in memory: the same checks and semantics as PostgresFleetStore (token stored as
// sha256 only and compared in constant time, rounds strictly increasing per device, one upload
// per round, one result per job id), for tests and single-machine runs. Each method runs to
// completion without awaiting, so each is atomic like the PostgreSQL store's transactions.
import {
  type DeviceRecord, type FleetStore, type JobResult, type UploadRecord, FleetError,
} from './types.ts';
import {
  checkAppliedVersion, checkFleetName, checkJob, checkJobId, checkToken, checkUpload, notRegistered, replay, tokenHash, tokenMatches, wrongToken,
} from './store-checks.ts';

interface Device extends DeviceRecord { tokenHash: Buffer; uploads: UploadRecord[] }

const pub = (d: Device): DeviceRecord => ({ model: d.model, device: d.device, registeredAt: d.registeredAt, lastRound: d.lastRound, appliedVersion: d.appliedVersion });

export class MemoryFleetStore implements FleetStore {
  private readonly devices = new Map<string, Device>();
  private readonly jobs = new Map<string, JobResult>();
  private closed = false;

  private key(model: string, device: string): string {
    checkFleetName('model', model);
    checkFleetName('device', device);
    if (this.closed) throw new FleetError('the fleet store is closed', 'unavailable');
    return `${model}/${device}`;
  }

  async registerDevice(model: string, device: string, token: string): Promise<DeviceRecord> {
    const k = this.key(model, device);
    checkToken(token);
    if (this.devices.has(k)) throw new FleetError(`device '${device}' of model '${model}' is already registered`, 'conflict');
    const d: Device = { model, device, registeredAt: new Date().toISOString(), lastRound: 0, appliedVersion: null, tokenHash: tokenHash(token), uploads: [] };
    this.devices.set(k, d);
    return pub(d);
  }

  async getDevice(model: string, device: string): Promise<DeviceRecord | undefined> {
    const d = this.devices.get(this.key(model, device));
    return d && pub(d);
  }

  async checkToken(model: string, device: string, token: string): Promise<boolean> {
    const d = this.devices.get(this.key(model, device));
    return d !== undefined && tokenMatches(d.tokenHash, token);
  }

  async acceptUpload(rec: Omit<UploadRecord, 'createdAt'>, token: string): Promise<UploadRecord> {
    checkUpload(rec);
    const d = this.devices.get(this.key(rec.model, rec.device));
    if (!d) throw notRegistered(rec.model, rec.device);
    if (!tokenMatches(d.tokenHash, token)) throw wrongToken(rec.model, rec.device);
    if (rec.round <= d.lastRound) throw replay(rec.round, d.lastRound, rec.device);
    const row: UploadRecord = {
      model: rec.model, device: rec.device, round: rec.round, blobKey: rec.blobKey, sha256: rec.sha256, samples: rec.samples, bytes: rec.bytes,
      createdAt: new Date().toISOString(),
    };
    d.uploads.push(row);
    d.lastRound = rec.round;
    return { ...row };
  }

  async uploads(model: string, device: string, sinceRound = 0): Promise<UploadRecord[]> {
    const d = this.devices.get(this.key(model, device));
    return (d?.uploads ?? []).filter((u) => u.round > sinceRound).map((u) => ({ ...u }));
  }

  async setAppliedVersion(model: string, device: string, version: number | null): Promise<void> {
    checkAppliedVersion(version);
    const d = this.devices.get(this.key(model, device));
    if (!d) throw new FleetError(`device '${device}' of model '${model}' is not registered`, 'not-found');
    d.appliedVersion = version;
  }

  async commitJob(result: Omit<JobResult, 'finishedAt'>): Promise<{ result: JobResult; created: boolean }> {
    checkJob(result);
    if (this.closed) throw new FleetError('the fleet store is closed', 'unavailable');
    const had = this.jobs.get(result.jobId);
    if (had) return { result: structuredClone(had), created: false };
    const r: JobResult = { jobId: result.jobId, version: result.version, detail: structuredClone(result.detail), finishedAt: new Date().toISOString() };
    this.jobs.set(r.jobId, r);
    return { result: structuredClone(r), created: true };
  }

  async jobResult(jobId: string): Promise<JobResult | undefined> {
    checkJobId(jobId);
    const r = this.jobs.get(jobId);
    return r && structuredClone(r);
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
