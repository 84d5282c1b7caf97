// The default adapter registry: one SQLite file through better-sqlite3 (v12: v13 crashes on Node
// 20), in WAL mode so readers never wait for a writer. Every write is one transaction, so a
// failure part-way (an exception, a killed process) leaves the previous state whole: a version
// row and the "current" pointer that names it are committed together or not at all. The
// adapter files are blobs in the same file, each with its sha256, checked on every read.
import Database from 'better-sqlite3';
import { sha256Hex } from '../util/sha256-node.ts';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import {
  type AdapterRegistry, type AdapterFiles, type AdapterMeta, type AdapterVersion, type StoredAdapter, type TenantState, type PutOptions,
  RegistryError, checkName, checkVersion, checkExpectedCurrent,
} from './types.ts';

/** Bump with a migration in MIGRATIONS when the tables change. */
export const SCHEMA_VERSION = 1;

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
      config BLOB NOT NULL,
      weights BLOB NOT NULL,
      sha256 TEXT NOT NULL,
      config_sha256 TEXT NOT NULL,
      size INTEGER NOT NULL,
      meta TEXT NOT NULL,
      good INTEGER NOT NULL DEFAULT 0,
      created_at TEXT NOT NULL,
      PRIMARY KEY (model, name, version),
      FOREIGN KEY (model, name) REFERENCES adapters (model, name) ON DELETE CASCADE
    );
    CREATE TABLE tenant_state (
      model TEXT NOT NULL,
      tenant TEXT NOT NULL,
      method TEXT NOT NULL,
      state BLOB NOT NULL,
      sha256 TEXT NOT NULL,
      updated_at TEXT NOT NULL,
      PRIMARY KEY (model, tenant)
    );
  `,
};

export interface SqliteRegistryOptions {
  /**
   * Versions kept per adapter: the newest `keep`, plus every version marked good, plus the
   * current one (after a rollback it may be older). Older versions are deleted on put. @default 20
   */
  keep?: number;
  /** Open read-only (e.g. a backup being inspected). @default false */
  readonly?: boolean;
}


interface VersionRow {
  model: string; name: string; version: number; parent: number | null; sha256: string; config_sha256: string;
  size: number; meta: string; good: number; created_at: string; current: number | null;
}

const VERSION_COLUMNS = 'v.model, v.name, v.version, v.parent, v.sha256, v.config_sha256, v.size, v.meta, v.good, v.created_at, a.current';

export class SqliteRegistry implements AdapterRegistry {
  private readonly db: Database.Database;
  readonly keep: number;

  /** Open (creating if needed) the registry file at `path`; ':memory:' for a throw-away one. */
  constructor(readonly path: string, opts: SqliteRegistryOptions = {}) {
    this.keep = opts.keep ?? 20;
    if (!Number.isInteger(this.keep) || this.keep < 1) throw new RegistryError(`keep must be a positive integer, got ${opts.keep}`);
    if (path !== ':memory:' && !opts.readonly) mkdirSync(dirname(path), { recursive: true });
    try {
      this.db = new Database(path, { readonly: opts.readonly === true, fileMustExist: opts.readonly === true });
    } catch (e) {
      throw new RegistryError(`cannot open the registry ${path}: ${(e as Error).message}`);
    }
    this.db.pragma('busy_timeout = 5000');
    if (!opts.readonly) {
      this.db.pragma('journal_mode = WAL');
      // FULL: an acknowledged write survives a power loss too, not only a killed process.
      // Adapter writes are rare, so the extra fsync per commit costs little.
      this.db.pragma('synchronous = FULL');
    }
    this.db.pragma('foreign_keys = ON');
    this.migrate(opts.readonly === true);
  }

  private migrate(readonly: boolean): void {
    const has = this.db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'`).get();
    const at = has ? ((this.db.prepare('SELECT MAX(version) AS v FROM schema_version').get() as { v: number | null }).v ?? 0) : 0;
    if (at > SCHEMA_VERSION) {
      throw new RegistryError(`registry ${this.path} has schema version ${at}, newer than this refit understands (${SCHEMA_VERSION}): upgrade refit, or open a backup`, 'conflict');
    }
    if (at === SCHEMA_VERSION) return;
    if (readonly) throw new RegistryError(`registry ${this.path} has schema version ${at} and needs migrating to ${SCHEMA_VERSION}; open it writable once`, 'conflict');
    this.db.transaction(() => {
      this.db.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TEXT NOT NULL)');
      for (let v = at + 1; v <= SCHEMA_VERSION; v++) {
        this.db.exec(MIGRATIONS[v]!);
        this.db.prepare('INSERT INTO schema_version (version, applied_at) VALUES (?, ?)').run(v, new Date().toISOString());
      }
    })();
  }

  /** The schema version of the open file. */
  schemaVersion(): number {
    return (this.db.prepare('SELECT MAX(version) AS v FROM schema_version').get() as { v: number }).v;
  }

  private toVersion(r: VersionRow): AdapterVersion {
    return {
      model: r.model, name: r.name, version: r.version, parent: r.parent, sha256: r.sha256, configSha256: r.config_sha256,
      size: r.size, createdAt: r.created_at, good: r.good === 1, current: r.current === r.version, meta: JSON.parse(r.meta) as AdapterMeta,
    };
  }

  private row(model: string, name: string, version: number): VersionRow | undefined {
    return this.db.prepare(`SELECT ${VERSION_COLUMNS} FROM adapter_versions v JOIN adapters a USING (model, name) WHERE v.model = ? AND v.name = ? AND v.version = ?`)
      .get(model, name, version) as VersionRow | undefined;
  }

  private requireVersion(model: string, name: string, version: number): VersionRow {
    checkVersion(version);
    const r = this.row(model, name, version);
    if (r) return r;
    const known = this.db.prepare('SELECT version FROM adapter_versions WHERE model = ? AND name = ? ORDER BY version').all(model, name) as { version: number }[];
    if (known.length === 0) throw new RegistryError(`model '${model}' has no adapter '${name}'`, 'not-found');
    throw new RegistryError(`adapter '${name}' of model '${model}' has no version ${version} (stored: ${known.map((k) => k.version).join(', ')})`, 'not-found');
  }

  async put(model: string, name: string, files: AdapterFiles, meta: AdapterMeta = {}, opts?: PutOptions): Promise<AdapterVersion> {
    checkName('model', model);
    checkName('adapter', name);
    if (!(files?.weights instanceof Uint8Array) || typeof files.config !== 'string') {
      throw new RegistryError('put needs { weights: Uint8Array (adapter_model.safetensors), config: string (adapter_config.json) }');
    }
    const config = Buffer.from(files.config, 'utf8');
    const weights = Buffer.from(files.weights.buffer, files.weights.byteOffset, files.weights.byteLength);
    const metaJson = JSON.stringify(meta ?? {});
    const now = new Date().toISOString();
    // Hashes are computed before the transaction: it holds the write lock only for the inserts.
    const ws = sha256Hex(weights), cs = sha256Hex(config);
    const version = this.db.transaction(() => {
      this.db.prepare('INSERT INTO adapters (model, name, current, next_version, created_at) VALUES (?, ?, NULL, 1, ?) ON CONFLICT (model, name) DO NOTHING').run(model, name, now);
      const a = this.db.prepare('SELECT current, next_version FROM adapters WHERE model = ? AND name = ?').get(model, name) as { current: number | null; next_version: number };
      checkExpectedCurrent(model, name, a.current, opts); // throws inside the transaction: nothing is written
      const v = a.next_version;
      this.db.prepare(`INSERT INTO adapter_versions (model, name, version, parent, config, weights, sha256, config_sha256, size, meta, good, created_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)`).run(model, name, v, a.current, config, weights, ws, cs, config.byteLength + weights.byteLength, metaJson, now);
      this.db.prepare('UPDATE adapters SET current = ?, next_version = ? WHERE model = ? AND name = ?').run(v, v + 1, model, name);
      // Retention: the newest `keep`, every good one, and the current one stay.
      this.db.prepare(`DELETE FROM adapter_versions WHERE model = ? AND name = ? AND good = 0 AND version <> ?
        AND version NOT IN (SELECT version FROM adapter_versions WHERE model = ? AND name = ? ORDER BY version DESC LIMIT ?)`).run(model, name, v, model, name, this.keep);
      return v;
    }).immediate();
    return this.toVersion(this.row(model, name, version)!);
  }

  async get(model: string, name: string, version?: number): Promise<StoredAdapter | undefined> {
    checkName('model', model);
    checkName('adapter', name);
    let v = version;
    if (v === undefined) {
      const c = await this.current(model, name);
      if (c === null) return undefined;
      v = c;
    }
    checkVersion(v);
    const r = this.db.prepare(`SELECT ${VERSION_COLUMNS}, v.config, v.weights FROM adapter_versions v JOIN adapters a USING (model, name) WHERE v.model = ? AND v.name = ? AND v.version = ?`)
      .get(model, name, v) as (VersionRow & { config: Buffer; weights: Buffer }) | undefined;
    if (!r) return undefined;
    const got = sha256Hex(r.weights), gotC = sha256Hex(r.config);
    if (got !== r.sha256 || gotC !== r.config_sha256) {
      const which = got !== r.sha256 ? `adapter_model.safetensors (sha256 ${got}, recorded ${r.sha256})` : `adapter_config.json (sha256 ${gotC}, recorded ${r.config_sha256})`;
      throw new RegistryError(`adapter '${name}' version ${v} of model '${model}' is corrupted in ${this.path}: ${which}. Roll back to another version or put the adapter again; restore the registry from a backup if many versions fail`, 'corrupt');
    }
    const weights = new Uint8Array(r.weights.buffer, r.weights.byteOffset, r.weights.byteLength);
    return { ...this.toVersion(r), files: { weights, config: r.config.toString('utf8') } };
  }

  async versions(model: string, name: string): Promise<AdapterVersion[]> {
    checkName('model', model);
    checkName('adapter', name);
    return (this.db.prepare(`SELECT ${VERSION_COLUMNS} FROM adapter_versions v JOIN adapters a USING (model, name) WHERE v.model = ? AND v.name = ? ORDER BY v.version`)
      .all(model, name) as VersionRow[]).map((r) => this.toVersion(r));
  }

  async list(model: string): Promise<string[]> {
    checkName('model', model);
    return (this.db.prepare('SELECT name FROM adapters WHERE model = ? ORDER BY name').all(model) as { name: string }[]).map((r) => r.name);
  }

  async delete(model: string, name: string): Promise<boolean> {
    checkName('model', model);
    checkName('adapter', name);
    // ON DELETE CASCADE removes the versions in the same statement's transaction.
    return this.db.prepare('DELETE FROM adapters WHERE model = ? AND name = ?').run(model, name).changes > 0;
  }

  async rollback(model: string, name: string, version: number): Promise<AdapterVersion> {
    checkName('model', model);
    checkName('adapter', name);
    this.db.transaction(() => {
      this.requireVersion(model, name, version);
      this.db.prepare('UPDATE adapters SET current = ? WHERE model = ? AND name = ?').run(version, model, name);
    }).immediate();
    return this.toVersion(this.row(model, name, version)!);
  }

  async markGood(model: string, name: string, version: number, good = true): Promise<AdapterVersion> {
    checkName('model', model);
    checkName('adapter', name);
    this.db.transaction(() => {
      this.requireVersion(model, name, version);
      this.db.prepare('UPDATE adapter_versions SET good = ? WHERE model = ? AND name = ? AND version = ?').run(good ? 1 : 0, model, name, version);
    }).immediate();
    return this.toVersion(this.row(model, name, version)!);
  }

  async current(model: string, name: string): Promise<number | null> {
    checkName('model', model);
    checkName('adapter', name);
    const r = this.db.prepare('SELECT current FROM adapters WHERE model = ? AND name = ?').get(model, name) as { current: number | null } | undefined;
    return r?.current ?? null;
  }

  async putTenantState(model: string, tenant: string, method: string, bytes: Uint8Array): Promise<void> {
    checkName('model', model);
    checkName('tenant', tenant);
    const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.db.prepare(`INSERT INTO tenant_state (model, tenant, method, state, sha256, updated_at) VALUES (?, ?, ?, ?, ?, ?)
      ON CONFLICT (model, tenant) DO UPDATE SET method = excluded.method, state = excluded.state, sha256 = excluded.sha256, updated_at = excluded.updated_at`)
      .run(model, tenant, method, b, sha256Hex(b), new Date().toISOString());
  }

  async getTenantState(model: string, tenant: string): Promise<TenantState | undefined> {
    checkName('model', model);
    checkName('tenant', tenant);
    const r = this.db.prepare('SELECT method, state, sha256, updated_at FROM tenant_state WHERE model = ? AND tenant = ?').get(model, tenant) as
      { method: string; state: Buffer; sha256: string; updated_at: string } | undefined;
    if (!r) return undefined;
    const got = sha256Hex(r.state);
    if (got !== r.sha256) throw new RegistryError(`the saved state of tenant '${tenant}' (model '${model}') is corrupted in ${this.path} (sha256 ${got}, recorded ${r.sha256}); delete it to start the tenant from the base model`, 'corrupt');
    return { model, tenant, method: r.method, bytes: new Uint8Array(r.state.buffer, r.state.byteOffset, r.state.byteLength), sha256: r.sha256, updatedAt: r.updated_at };
  }

  async deleteTenantState(model: string, tenant: string): Promise<boolean> {
    checkName('model', model);
    checkName('tenant', tenant);
    return this.db.prepare('DELETE FROM tenant_state WHERE model = ? AND tenant = ?').run(model, tenant).changes > 0;
  }

  async listTenants(model: string): Promise<string[]> {
    checkName('model', model);
    return (this.db.prepare('SELECT tenant FROM tenant_state WHERE model = ? ORDER BY tenant').all(model) as { tenant: string }[]).map((r) => r.tenant);
  }

  /** Check the whole file (SQLite's integrity_check): 'ok' or the problems found. */
  integrityCheck(): string {
    return (this.db.pragma('integrity_check') as { integrity_check: string }[]).map((r) => r.integrity_check).join('; ');
  }

  /** A consistent copy of the live registry (online backup; writers may continue). */
  async backup(to: string): Promise<void> {
    await this.db.backup(to);
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}
