// The FleetStore on PostgreSQL: devices (token as sha256 only), uploads and job results, each
// method one transaction. acceptUpload locks the device row (SELECT … FOR UPDATE), checks the
// token in constant time and that the round is newer than the last, inserts the upload (UNIQUE
// model, device, round backs that up) and moves last_round, all at once: two servers accepting
// the same device's uploads serialize on its row, so a replay is refused whichever gets it.
// A lost connection is FleetError('unavailable'); pg.Pool reconnects on the next call.
import {
  type DeviceRecord, type FleetStore, type JobResult, type UploadRecord, FleetError,
} from './types.ts';
import {
  checkAppliedVersion, checkFleetName, checkJob, checkJobId, checkToken, checkUpload, notRegistered, replay, tokenHash, tokenMatches, wrongToken,
} from './store-checks.ts';
import { type Pool, inTransaction, isConnectionError, makePool, migrate, redact, withClient } from '../registry/pg.ts';

export const FLEET_SCHEMA_VERSION = 1;

const MIGRATIONS: Record<number, string> = {
  1: `
    CREATE TABLE fleet_devices (
      model TEXT NOT NULL,
      device TEXT NOT NULL,
      token_sha256 BYTEA NOT NULL,
      registered_at TEXT NOT NULL,
      last_round BIGINT NOT NULL DEFAULT 0,
      applied_version INTEGER,
      PRIMARY KEY (model, device)
    );
    CREATE TABLE fleet_uploads (
      model TEXT NOT NULL,
      device TEXT NOT NULL,
      round BIGINT NOT NULL,
      blob_key TEXT NOT NULL,
      sha256 TEXT NOT NULL,
      samples INTEGER NOT NULL,
      bytes BIGINT NOT NULL,
      created_at TEXT NOT NULL,
      UNIQUE (model, device, round),
      FOREIGN KEY (model, device) REFERENCES fleet_devices (model, device) ON DELETE CASCADE
    );
    CREATE TABLE fleet_jobs (
      job_id TEXT PRIMARY KEY,
      version INTEGER,
      detail JSONB NOT NULL,
      finished_at TEXT NOT NULL
    );
  `,
};

interface DeviceRow { model: string; device: string; registered_at: string; last_round: string; applied_version: number | null }
interface UploadRow { model: string; device: string; round: string; blob_key: string; sha256: string; samples: number; bytes: string; created_at: string }
interface JobRow { job_id: string; version: number | null; detail: Record<string, unknown>; finished_at: string }

const toDevice = (r: DeviceRow): DeviceRecord => ({ model: r.model, device: r.device, registeredAt: r.registered_at, lastRound: Number(r.last_round), appliedVersion: r.applied_version });
const toUpload = (r: UploadRow): UploadRecord => ({
  model: r.model, device: r.device, round: Number(r.round), blobKey: r.blob_key, sha256: r.sha256, samples: r.samples, bytes: Number(r.bytes), createdAt: r.created_at,
});
const toJob = (r: JobRow): JobResult => ({ jobId: r.job_id, version: r.version, detail: r.detail, finishedAt: r.finished_at });

export class PostgresFleetStore implements FleetStore {
  private readonly where: string;
  private closed = false;

  private constructor(private readonly pool: Pool, url: string) {
    this.where = redact(url);
  }

  /** Connect to `url` (postgres://…), creating or migrating the fleet tables (they can share the registry's database). */
  static async open(url: string, opts: { maxConnections?: number } = {}): Promise<PostgresFleetStore> {
    const pool = makePool(url, { max: opts.maxConnections });
    const s = new PostgresFleetStore(pool, url);
    try {
      await s.guard('open', () => migrate(pool, 'fleet_schema_version', MIGRATIONS, (at) =>
        new FleetError(`fleet store ${s.where} has schema version ${at}, newer than this refit understands (${FLEET_SCHEMA_VERSION}): upgrade refit`, 'conflict')));
    } catch (e) {
      await pool.end().catch(() => {});
      throw e;
    }
    return s;
  }

  private async guard<T>(op: string, fn: () => Promise<T>): Promise<T> {
    if (this.closed) throw new FleetError('the fleet store is closed', 'unavailable');
    try {
      return await fn();
    } catch (e) {
      if (e instanceof FleetError) throw e;
      if (isConnectionError(e)) throw new FleetError(`fleet store ${op}: PostgreSQL at ${this.where} is unavailable (${(e as Error).message}); retry when it is back`, 'unavailable');
      throw e;
    }
  }

  async registerDevice(model: string, device: string, token: string): Promise<DeviceRecord> {
    checkFleetName('model', model);
    checkFleetName('device', device);
    checkToken(token);
    return this.guard('registerDevice', async () => {
      const r = (await this.pool.query(`INSERT INTO fleet_devices (model, device, token_sha256, registered_at) VALUES ($1, $2, $3, $4)
        ON CONFLICT (model, device) DO NOTHING RETURNING model, device, registered_at, last_round, applied_version`, [model, device, tokenHash(token), new Date().toISOString()])).rows[0] as DeviceRow | undefined;
      if (!r) throw new FleetError(`device '${device}' of model '${model}' is already registered`, 'conflict');
      return toDevice(r);
    });
  }

  async getDevice(model: string, device: string): Promise<DeviceRecord | undefined> {
    checkFleetName('model', model);
    checkFleetName('device', device);
    return this.guard('getDevice', async () => {
      const r = (await this.pool.query('SELECT model, device, registered_at, last_round, applied_version FROM fleet_devices WHERE model = $1 AND device = $2', [model, device])).rows[0] as DeviceRow | undefined;
      return r && toDevice(r);
    });
  }

  async checkToken(model: string, device: string, token: string): Promise<boolean> {
    checkFleetName('model', model);
    checkFleetName('device', device);
    return this.guard('checkToken', async () => {
      const r = (await this.pool.query('SELECT token_sha256 FROM fleet_devices WHERE model = $1 AND device = $2', [model, device])).rows[0] as { token_sha256: Buffer } | undefined;
      return r !== undefined && tokenMatches(r.token_sha256, token);
    });
  }

  async acceptUpload(rec: Omit<UploadRecord, 'createdAt'>, token: string): Promise<UploadRecord> {
    checkUpload(rec);
    return this.guard('acceptUpload', () => withClient(this.pool, (c) => inTransaction(c, async () => {
      const d = (await c.query('SELECT token_sha256, last_round FROM fleet_devices WHERE model = $1 AND device = $2 FOR UPDATE', [rec.model, rec.device])).rows[0] as
        { token_sha256: Buffer; last_round: string } | undefined;
      if (!d) throw notRegistered(rec.model, rec.device);
      if (!tokenMatches(d.token_sha256, token)) throw wrongToken(rec.model, rec.device);
      const last = Number(d.last_round);
      if (rec.round <= last) throw replay(rec.round, last, rec.device);
      let row: UploadRow;
      try {
        row = (await c.query(`INSERT INTO fleet_uploads (model, device, round, blob_key, sha256, samples, bytes, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
          RETURNING *`, [rec.model, rec.device, rec.round, rec.blobKey, rec.sha256, rec.samples, rec.bytes, new Date().toISOString()])).rows[0] as UploadRow;
      } catch (e) {
        // Unreachable while last_round moves with every insert; kept so the UNIQUE constraint's answer is the same conflict.
        if ((e as { code?: string }).code === '23505') throw replay(rec.round, last, rec.device);
        throw e;
      }
      await c.query('UPDATE fleet_devices SET last_round = $3 WHERE model = $1 AND device = $2', [rec.model, rec.device, rec.round]);
      return toUpload(row);
    })));
  }

  async uploads(model: string, device: string, sinceRound = 0): Promise<UploadRecord[]> {
    checkFleetName('model', model);
    checkFleetName('device', device);
    if (!Number.isSafeInteger(sinceRound)) throw new FleetError(`sinceRound must be an integer, got ${sinceRound}`, 'invalid');
    return this.guard('uploads', async () =>
      ((await this.pool.query('SELECT * FROM fleet_uploads WHERE model = $1 AND device = $2 AND round > $3 ORDER BY round', [model, device, sinceRound])).rows as UploadRow[]).map(toUpload));
  }

  async setAppliedVersion(model: string, device: string, version: number | null): Promise<void> {
    checkFleetName('model', model);
    checkFleetName('device', device);
    checkAppliedVersion(version);
    await this.guard('setAppliedVersion', async () => {
      const n = (await this.pool.query('UPDATE fleet_devices SET applied_version = $3 WHERE model = $1 AND device = $2', [model, device, version])).rowCount ?? 0;
      if (n === 0) throw new FleetError(`device '${device}' of model '${model}' is not registered`, 'not-found');
    });
  }

  async commitJob(result: Omit<JobResult, 'finishedAt'>): Promise<{ result: JobResult; created: boolean }> {
    checkJob(result);
    return this.guard('commitJob', async () => {
      const ins = (await this.pool.query(`INSERT INTO fleet_jobs (job_id, version, detail, finished_at) VALUES ($1, $2, $3, $4) ON CONFLICT (job_id) DO NOTHING RETURNING *`,
        [result.jobId, result.version, JSON.stringify(result.detail), new Date().toISOString()])).rows[0] as JobRow | undefined;
      if (ins) return { result: toJob(ins), created: true };
      const had = (await this.pool.query('SELECT * FROM fleet_jobs WHERE job_id = $1', [result.jobId])).rows[0] as JobRow;
      return { result: toJob(had), created: false };
    });
  }

  async jobResult(jobId: string): Promise<JobResult | undefined> {
    checkJobId(jobId);
    return this.guard('jobResult', async () => {
      const r = (await this.pool.query('SELECT * FROM fleet_jobs WHERE job_id = $1', [jobId])).rows[0] as JobRow | undefined;
      return r && toJob(r);
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }
}
