// The adapter registry on PostgreSQL plus a BlobStore, for more than one machine (docs/fleet.md,
// "Storage"). Rows (adapter pointers, version metadata with sha256, good marks, tenant state
// metadata) live in PostgreSQL; bytes live in the blob store under content-addressed keys,
// `adapters/{sha256}` and `tenants/{model}/{tenant}/{sha256}`. A write uploads the blob first and
// commits the rows second, so a crash between leaves an orphaned blob (removed by sweepOrphans)
// and never a row without its blob. Semantics match SqliteRegistry exactly: versions are never
// reused, rollback moves a pointer, retention keeps the newest N + good + current, every read
// verifies sha256. Concurrent puts to one adapter from many processes serialize on the adapters
// row (SELECT … FOR UPDATE), so each gets its own version number.
import { sha256Hex } from '../util/sha256-node.ts';
import type { BlobStore } from '../fleet/types.ts';
import { FleetError } from '../fleet/types.ts';
import {
  type AdapterRegistry, type AdapterFiles, type AdapterMeta, type AdapterVersion, type StoredAdapter, type TenantState, type PutOptions,
  RegistryError, checkName, checkVersion, checkExpectedCurrent,
} from './types.ts';
import { type Pool, type PoolClient, inTransaction, isConnectionError, makePool, migrate, redact, withClient } from './pg.ts';

/** Bump with a migration in MIGRATIONS when the tables change. */
export const PG_SCHEMA_VERSION = 1;

const MIGRATIONS: Record<number, string> = {
  1: `
    CREATE TABLE adapters (
      model TEXT NOT NULL,
      name TEXT NOT NULL,
      current INTEGER,
      next_version INTEGER NOT NULL DEFAULT 1,
      created_at TEXT NOT NULL,
      PRIMARY KEY (model, name)
    );
    CREATE TABLE adapter_versions (
      model TEXT NOT NULL,
      name TEXT NOT NULL,
      version INTEGER NOT NULL,
      parent INTEGER,
      sha256 TEXT NOT NULL,
      config_sha256 TEXT NOT NULL,
      size BIGINT NOT NULL,
      meta TEXT NOT NULL,
      good BOOLEAN NOT NULL DEFAULT false,
      created_at TEXT NOT NULL,
      PRIMARY KEY (model, name, version),
      FOREIGN KEY (model, name) REFERENCES adapters (model, name) ON DELETE CASCADE
    );
    CREATE INDEX adapter_versions_sha ON adapter_versions (sha256);
    CREATE INDEX adapter_versions_config_sha ON adapter_versions (config_sha256);
    CREATE TABLE tenant_state (
      model TEXT NOT NULL,
      tenant TEXT NOT NULL,
      method TEXT NOT NULL,
      blob_key TEXT NOT NULL,
      sha256 TEXT NOT NULL,
      updated_at TEXT NOT NULL,
      PRIMARY KEY (model, tenant)
    );
    -- Blobs no row names, and since when: sweepOrphans deletes those unnamed for the grace period.
    CREATE TABLE blob_orphans (
      key TEXT PRIMARY KEY,
      seen_at TIMESTAMPTZ NOT NULL
    );
  `,
};

/** Held shared by every write from its blob upload to its commit, exclusively by a sweep. */
const BLOB_LOCK = 'refit.registry.blobs';

export interface PostgresRegistryOptions {
  /** Where the bytes go. Closed by close() unless `ownBlobs` is false. */
  blobs: BlobStore;
  /** @default true */
  ownBlobs?: boolean;
  /** Versions kept per adapter: the newest `keep`, every good one and the current one. @default 20 */
  keep?: number;
  /** Pool size. @default 10 */
  maxConnections?: number;
}

const adapterKey = (sha: string) => `adapters/${sha}`;
const tenantKey = (model: string, tenant: string, sha: string) => `tenants/${model}/${tenant}/${sha}`;

interface VersionRow {
  model: string; name: string; version: number; parent: number | null; sha256: string; config_sha256: string;
  size: string; meta: string; good: boolean; created_at: string; current: number | null;
}

const VERSION_COLUMNS = 'v.model, v.name, v.version, v.parent, v.sha256, v.config_sha256, v.size, v.meta, v.good, v.created_at, a.current';

export class PostgresRegistry implements AdapterRegistry {
  readonly keep: number;
  readonly blobs: BlobStore;
  private readonly where: string;
  private closed = false;

  private constructor(private readonly pool: Pool, url: string, private readonly opts: PostgresRegistryOptions) {
    this.keep = opts.keep ?? 20;
    this.blobs = opts.blobs;
    this.where = redact(url);
  }

  /** Connect to `url` (postgres://…), creating or migrating the tables. */
  static async open(url: string, opts: PostgresRegistryOptions): Promise<PostgresRegistry> {
    const keep = opts.keep ?? 20;
    if (!Number.isInteger(keep) || keep < 1) throw new RegistryError(`keep must be a positive integer, got ${opts.keep}`);
    if (!opts?.blobs) throw new RegistryError('a PostgreSQL registry needs a blob store (opts.blobs) for the adapter bytes');
    const pool = makePool(url, { max: opts.maxConnections });
    const reg = new PostgresRegistry(pool, url, opts);
    try {
      await reg.guard('open', () => migrate(pool, 'schema_version', MIGRATIONS, (at) =>
        new RegistryError(`registry ${reg.where} has schema version ${at}, newer than this refit understands (${PG_SCHEMA_VERSION}): upgrade refit`, 'conflict')));
    } catch (e) {
      await pool.end().catch(() => {});
      throw e;
    }
    return reg;
  }

  /** Maps a lost database or blob store to RegistryError('unavailable'); other errors pass. */
  private async guard<T>(op: string, fn: () => Promise<T>): Promise<T> {
    if (this.closed) throw new RegistryError(`registry ${this.where} is closed`, 'invalid');
    try {
      return await fn();
    } catch (e) {
      if (e instanceof RegistryError) throw e;
      if (e instanceof FleetError && e.code === 'unavailable') {
        throw new RegistryError(`registry ${op}: the blob store is unavailable (${e.message}); nothing was committed, retry when it is back`, 'unavailable');
      }
      if (isConnectionError(e)) {
        throw new RegistryError(`registry ${op}: PostgreSQL at ${this.where} is unavailable (${(e as Error).message}); retry when it is back (a write that failed this way was not acknowledged; if it broke during its commit, versions() shows whether it landed)`, 'unavailable');
      }
      throw e;
    }
  }

  async schemaVersion(): Promise<number> {
    return this.guard('schemaVersion', async () => (await this.pool.query('SELECT MAX(version) AS v FROM schema_version')).rows[0].v as number);
  }

  private toVersion(r: VersionRow): AdapterVersion {
    return {
      model: r.model, name: r.name, version: r.version, parent: r.parent, sha256: r.sha256, configSha256: r.config_sha256,
      size: Number(r.size), createdAt: r.created_at, good: r.good, current: r.current === r.version, meta: JSON.parse(r.meta) as AdapterMeta,
    };
  }

  private async row(q: Pool | PoolClient, model: string, name: string, version: number): Promise<VersionRow | undefined> {
    return (await q.query(`SELECT ${VERSION_COLUMNS} FROM adapter_versions v JOIN adapters a USING (model, name) WHERE v.model = $1 AND v.name = $2 AND v.version = $3`,
      [model, name, version])).rows[0] as VersionRow | undefined;
  }

  private async requireVersion(c: PoolClient, model: string, name: string, version: number): Promise<void> {
    checkVersion(version);
    if (await this.row(c, model, name, version)) return;
    const known = (await c.query('SELECT version FROM adapter_versions WHERE model = $1 AND name = $2 ORDER BY version', [model, name])).rows as { version: number }[];
    if (known.length === 0) throw new RegistryError(`model '${model}' has no adapter '${name}'`, 'not-found');
    throw new RegistryError(`adapter '${name}' of model '${model}' has no version ${version} (stored: ${known.map((k) => k.version).join(', ')})`, 'not-found');
  }

  /** Upload blobs, then commit rows, holding the shared blob lock so a sweep cannot delete the blobs in between. */
  private async writeThrough<T>(blobs: [string, Uint8Array][], commit: (c: PoolClient) => Promise<T>): Promise<T> {
    return withClient(this.pool, async (c) => {
      await c.query('SELECT pg_advisory_lock_shared(hashtext($1))', [BLOB_LOCK]);
      try {
        for (const [k, b] of blobs) await this.blobs.put(k, b);
        return await inTransaction(c, () => commit(c));
      } finally {
        await c.query('SELECT pg_advisory_unlock_shared(hashtext($1))', [BLOB_LOCK]).catch(() => { /* a broken connection released it */ });
      }
    });
  }

  async put(model: string, name: string, files: AdapterFiles, meta: AdapterMeta = {}, opts?: PutOptions): Promise<AdapterVersion> {
    checkName('model', model);
    checkName('adapter', name);
    if (!(files?.weights instanceof Uint8Array) || typeof files.config !== 'string') {
      throw new RegistryError('put needs { weights: Uint8Array (adapter_model.safetensors), config: string (adapter_config.json) }');
    }
    const config = Buffer.from(files.config, 'utf8');
    const weights = files.weights;
    const metaJson = JSON.stringify(meta ?? {});
    const ws = sha256Hex(weights), cs = sha256Hex(config);
    return this.guard(`put ${model}/${name}`, () => this.writeThrough([[adapterKey(ws), weights], [adapterKey(cs), config]], async (c) => {
      const now = new Date().toISOString();
      await c.query('INSERT INTO adapters (model, name, current, next_version, created_at) VALUES ($1, $2, NULL, 1, $3) ON CONFLICT (model, name) DO NOTHING', [model, name, now]);
      // The row lock serializes puts to this adapter across processes: the next one reads our next_version.
      const a = (await c.query('SELECT current, next_version FROM adapters WHERE model = $1 AND name = $2 FOR UPDATE', [model, name])).rows[0] as { current: number | null; next_version: number };
      checkExpectedCurrent(model, name, a.current, opts); // under the row lock; the transaction rolls back
      const v = a.next_version;
      await c.query(`INSERT INTO adapter_versions (model, name, version, parent, sha256, config_sha256, size, meta, good, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, false, $9)`, [model, name, v, a.current, ws, cs, config.byteLength + weights.byteLength, metaJson, now]);
      await c.query('UPDATE adapters SET current = $1, next_version = $2 WHERE model = $3 AND name = $4', [v, v + 1, model, name]);
      await c.query(`DELETE FROM adapter_versions WHERE model = $1 AND name = $2 AND good = false AND version <> $3
        AND version NOT IN (SELECT version FROM adapter_versions WHERE model = $1 AND name = $2 ORDER BY version DESC LIMIT $4)`, [model, name, v, this.keep]);
      return this.toVersion((await this.row(c, model, name, v))!);
    }));
  }

  async get(model: string, name: string, version?: number): Promise<StoredAdapter | undefined> {
    checkName('model', model);
    checkName('adapter', name);
    if (version !== undefined) checkVersion(version);
    return this.guard(`get ${model}/${name}`, async () => {
      const r = (await this.pool.query(`SELECT ${VERSION_COLUMNS} FROM adapter_versions v JOIN adapters a USING (model, name)
        WHERE v.model = $1 AND v.name = $2 AND v.version = ${version === undefined ? 'a.current' : '$3'}`,
      version === undefined ? [model, name] : [model, name, version])).rows[0] as VersionRow | undefined;
      if (!r) return undefined;
      const v = r.version;
      const [weights, config] = await Promise.all([this.blobs.get(adapterKey(r.sha256)), this.blobs.get(adapterKey(r.config_sha256))]);
      const fail = (what: string) => new RegistryError(`adapter '${name}' version ${v} of model '${model}' is corrupted in ${this.where}: ${what}. Roll back to another version or put the adapter again; restore the blob store from a backup if many versions fail`, 'corrupt');
      if (!weights) throw fail(`adapter_model.safetensors (blob ${adapterKey(r.sha256)}) is missing from the blob store`);
      if (!config) throw fail(`adapter_config.json (blob ${adapterKey(r.config_sha256)}) is missing from the blob store`);
      const got = sha256Hex(weights), gotC = sha256Hex(config);
      if (got !== r.sha256) throw fail(`adapter_model.safetensors (sha256 ${got}, recorded ${r.sha256})`);
      if (gotC !== r.config_sha256) throw fail(`adapter_config.json (sha256 ${gotC}, recorded ${r.config_sha256})`);
      return { ...this.toVersion(r), files: { weights, config: Buffer.from(config.buffer, config.byteOffset, config.byteLength).toString('utf8') } };
    });
  }

  async versions(model: string, name: string): Promise<AdapterVersion[]> {
    checkName('model', model);
    checkName('adapter', name);
    return this.guard(`versions ${model}/${name}`, async () =>
      ((await this.pool.query(`SELECT ${VERSION_COLUMNS} FROM adapter_versions v JOIN adapters a USING (model, name) WHERE v.model = $1 AND v.name = $2 ORDER BY v.version`, [model, name])).rows as VersionRow[])
        .map((r) => this.toVersion(r)));
  }

  async list(model: string): Promise<string[]> {
    checkName('model', model);
    return this.guard(`list ${model}`, async () =>
      (await this.pool.query('SELECT name FROM adapters WHERE model = $1 ORDER BY name COLLATE "C"', [model])).rows.map((r: { name: string }) => r.name));
  }

  async delete(model: string, name: string): Promise<boolean> {
    checkName('model', model);
    checkName('adapter', name);
    // The versions go by ON DELETE CASCADE; their blobs become orphans for sweepOrphans.
    return this.guard(`delete ${model}/${name}`, async () => ((await this.pool.query('DELETE FROM adapters WHERE model = $1 AND name = $2', [model, name])).rowCount ?? 0) > 0);
  }

  async rollback(model: string, name: string, version: number): Promise<AdapterVersion> {
    checkName('model', model);
    checkName('adapter', name);
    return this.guard(`rollback ${model}/${name}`, () => withClient(this.pool, (c) => inTransaction(c, async () => {
      await c.query('SELECT 1 FROM adapters WHERE model = $1 AND name = $2 FOR UPDATE', [model, name]);
      await this.requireVersion(c, model, name, version);
      await c.query('UPDATE adapters SET current = $1 WHERE model = $2 AND name = $3', [version, model, name]);
      return this.toVersion((await this.row(c, model, name, version))!);
    })));
  }

  async markGood(model: string, name: string, version: number, good = true): Promise<AdapterVersion> {
    checkName('model', model);
    checkName('adapter', name);
    return this.guard(`markGood ${model}/${name}`, () => withClient(this.pool, (c) => inTransaction(c, async () => {
      await c.query('SELECT 1 FROM adapters WHERE model = $1 AND name = $2 FOR UPDATE', [model, name]);
      await this.requireVersion(c, model, name, version);
      await c.query('UPDATE adapter_versions SET good = $1 WHERE model = $2 AND name = $3 AND version = $4', [good, model, name, version]);
      return this.toVersion((await this.row(c, model, name, version))!);
    })));
  }

  async current(model: string, name: string): Promise<number | null> {
    checkName('model', model);
    checkName('adapter', name);
    return this.guard(`current ${model}/${name}`, async () =>
      ((await this.pool.query('SELECT current FROM adapters WHERE model = $1 AND name = $2', [model, name])).rows[0] as { current: number | null } | undefined)?.current ?? null);
  }

  async putTenantState(model: string, tenant: string, method: string, bytes: Uint8Array): Promise<void> {
    checkName('model', model);
    checkName('tenant', tenant);
    if (!(bytes instanceof Uint8Array)) throw new RegistryError(`tenant state of '${tenant}' must be a Uint8Array`);
    const sha = sha256Hex(bytes);
    const key = tenantKey(model, tenant, sha);
    await this.guard(`putTenantState ${model}/${tenant}`, () => this.writeThrough([[key, bytes]], async (c) => {
      await c.query(`INSERT INTO tenant_state (model, tenant, method, blob_key, sha256, updated_at) VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (model, tenant) DO UPDATE SET method = excluded.method, blob_key = excluded.blob_key, sha256 = excluded.sha256, updated_at = excluded.updated_at`,
      [model, tenant, method, key, sha, new Date().toISOString()]);
    }));
  }

  async getTenantState(model: string, tenant: string): Promise<TenantState | undefined> {
    checkName('model', model);
    checkName('tenant', tenant);
    return this.guard(`getTenantState ${model}/${tenant}`, async () => {
      const r = (await this.pool.query('SELECT method, blob_key, sha256, updated_at FROM tenant_state WHERE model = $1 AND tenant = $2', [model, tenant])).rows[0] as
        { method: string; blob_key: string; sha256: string; updated_at: string } | undefined;
      if (!r) return undefined;
      const bytes = await this.blobs.get(r.blob_key);
      const got = bytes ? sha256Hex(bytes) : 'missing';
      if (!bytes || got !== r.sha256) {
        throw new RegistryError(`the saved state of tenant '${tenant}' (model '${model}') is corrupted in ${this.where} (blob ${r.blob_key}: sha256 ${got}, recorded ${r.sha256}); delete it to start the tenant from the base model`, 'corrupt');
      }
      return { model, tenant, method: r.method, bytes, sha256: r.sha256, updatedAt: r.updated_at };
    });
  }

  async deleteTenantState(model: string, tenant: string): Promise<boolean> {
    checkName('model', model);
    checkName('tenant', tenant);
    return this.guard(`deleteTenantState ${model}/${tenant}`, async () => ((await this.pool.query('DELETE FROM tenant_state WHERE model = $1 AND tenant = $2', [model, tenant])).rowCount ?? 0) > 0);
  }

  async listTenants(model: string): Promise<string[]> {
    checkName('model', model);
    return this.guard(`listTenants ${model}`, async () =>
      (await this.pool.query('SELECT tenant FROM tenant_state WHERE model = $1 ORDER BY tenant COLLATE "C"', [model])).rows.map((r: { tenant: string }) => r.tenant));
  }

  /**
   * Deletes blobs that no row names and that no row has named for `graceMs` (first seen unnamed
   * by an earlier sweep, or by this one when graceMs is 0). Holds the blob lock exclusively, so
   * it waits for writes between upload and commit and they wait for it. Returns the deleted keys.
   */
  async sweepOrphans(opts: { graceMs?: number } = {}): Promise<{ deleted: string[]; pending: number }> {
    const graceMs = opts.graceMs ?? 3_600_000;
    if (!(graceMs >= 0)) throw new RegistryError(`graceMs must be >= 0, got ${opts.graceMs}`);
    return this.guard('sweepOrphans', () => withClient(this.pool, (c) => inTransaction(c, async () => {
      await c.query('SELECT pg_advisory_xact_lock(hashtext($1))', [BLOB_LOCK]);
      const keys = [...await this.blobs.list('adapters/'), ...await this.blobs.list('tenants/')];
      const named = new Set<string>();
      for (const r of (await c.query('SELECT sha256, config_sha256 FROM adapter_versions')).rows as { sha256: string; config_sha256: string }[]) {
        named.add(adapterKey(r.sha256));
        named.add(adapterKey(r.config_sha256));
      }
      for (const r of (await c.query('SELECT blob_key FROM tenant_state')).rows as { blob_key: string }[]) named.add(r.blob_key);
      const orphans = keys.filter((k) => !named.has(k));
      await c.query('DELETE FROM blob_orphans WHERE NOT (key = ANY($1::text[]))', [orphans]);
      await c.query('INSERT INTO blob_orphans (key, seen_at) SELECT unnest($1::text[]), now() ON CONFLICT (key) DO NOTHING', [orphans]);
      const due = ((await c.query(`SELECT key FROM blob_orphans WHERE seen_at <= clock_timestamp() - make_interval(secs => $1) ORDER BY key`, [graceMs / 1000])).rows as { key: string }[]).map((r) => r.key);
      for (const k of due) await this.blobs.delete(k);
      await c.query('DELETE FROM blob_orphans WHERE key = ANY($1::text[])', [due]);
      return { deleted: due, pending: orphans.length - due.length };
    })));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
    if (this.opts.ownBlobs !== false) await this.blobs.close();
  }
}
