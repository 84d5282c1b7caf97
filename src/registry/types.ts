// The adapter registry's interface. The SQLite store (./sqlite.ts) is the default; a PostgreSQL +
// object-store implementation can replace it (DESIGN.md, "Fleet scale"), so nothing here names
// SQLite, and every method is async even where the SQLite store could answer synchronously.
import type { AdapterFiles } from '../peft/files.ts';

export type { AdapterFiles } from '../peft/files.ts';

/** What a caller records about a version besides its files (all optional, stored as JSON). */
export interface AdapterMeta {
  /** The PEFT or adaptation method that made it (e.g. 'lora'). */
  method?: string;
  /** A fingerprint of the base model the adapter was made for. */
  baseModelHash?: string;
  /** Training configuration, free-form. */
  config?: Record<string, unknown>;
  /** Evaluation numbers, e.g. { accuracy: 0.91 }. */
  metrics?: Record<string, number>;
  /** Free text. */
  note?: string;
}

/** One stored version, without its bytes. */
export interface AdapterVersion {
  model: string;
  name: string;
  /** 1, 2, 3… per adapter; never reused while the adapter exists. */
  version: number;
  /** The version that was current when this one was put (null for the first). */
  parent: number | null;
  /** sha256 (hex) of adapter_model.safetensors. */
  sha256: string;
  /** sha256 (hex) of adapter_config.json. */
  configSha256: string;
  /** Bytes of both files together. */
  size: number;
  /** ISO 8601. */
  createdAt: string;
  good: boolean;
  /** Whether this is the version `get` returns without a version number. */
  current: boolean;
  meta: AdapterMeta;
}

/** A version with its files, verified against their sha256 on the way out. */
export interface StoredAdapter extends AdapterVersion {
  files: AdapterFiles;
}

/** Per-tenant adaptation state (a TTA adapter's or the continual controller's), opaque bytes. */
export interface TenantState {
  model: string;
  tenant: string;
  /** The method the state belongs to; a state of another method is not loaded. */
  method: string;
  bytes: Uint8Array;
  sha256: string;
  updatedAt: string;
}

/** Options of AdapterRegistry.put. */
export interface PutOptions {
  /**
   * Compare-and-set: put only if the adapter's current version is this one (null: the adapter has
   * no current version, or does not exist); otherwise throw RegistryError('conflict') and store
   * nothing. Two writers that read the same current version cannot both publish on top of it.
   */
  expectCurrent?: number | null;
}

/**
 * A versioned store of adapters (HF PEFT layout: adapter_config.json + adapter_model.safetensors)
 * per model and name, plus per-tenant adaptation state.
 *
 * Rollback moves the "current" pointer to an earlier version (instant; no bytes copied; the
 * later versions stay and remain listed); a put after a rollback makes a new version whose
 * parent is the version rolled back to. Every write is all-or-nothing.
 */
export interface AdapterRegistry {
  /** Store a new version and make it current. Returns its record. */
  put(model: string, name: string, files: AdapterFiles, meta?: AdapterMeta, opts?: PutOptions): Promise<AdapterVersion>;
  /** The current version (or the one asked for) with its files; undefined when there is none. Throws RegistryError if the stored bytes fail their sha256. */
  get(model: string, name: string, version?: number): Promise<StoredAdapter | undefined>;
  /** Every stored version, oldest first; [] for an unknown adapter. */
  versions(model: string, name: string): Promise<AdapterVersion[]>;
  /** Names of the adapters stored for a model. */
  list(model: string): Promise<string[]>;
  /** Remove an adapter and all its versions; false if there was none. */
  delete(model: string, name: string): Promise<boolean>;
  /** Make an earlier (or any stored) version current again. */
  rollback(model: string, name: string, version: number): Promise<AdapterVersion>;
  /** Mark a version good (kept by retention; a candidate for rollback). */
  markGood(model: string, name: string, version: number, good?: boolean): Promise<AdapterVersion>;
  /** The current version number, or null. */
  current(model: string, name: string): Promise<number | null>;

  putTenantState(model: string, tenant: string, method: string, bytes: Uint8Array): Promise<void>;
  getTenantState(model: string, tenant: string): Promise<TenantState | undefined>;
  deleteTenantState(model: string, tenant: string): Promise<boolean>;
  listTenants(model: string): Promise<string[]>;

  close(): Promise<void>;
}

/** A registry failure whose message says what is wrong and what to do. `code` maps to an HTTP status. */
export class RegistryError extends Error {
  constructor(message: string, readonly code: 'not-found' | 'invalid' | 'corrupt' | 'conflict' | 'unavailable' = 'invalid') {
    super(message);
    this.name = 'RegistryError';
  }
}

/** Model, adapter and tenant names: safe as path segments and object-store keys (no '/', no '..'). */
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** Whether `v` is a safe name: NAME_PATTERN and no '..' anywhere (the rule every name and path segment follows). */
export function isSafeName(v: unknown): v is string {
  return typeof v === 'string' && NAME_PATTERN.test(v) && !v.includes('..');
}

export function checkName(kind: string, v: string): void {
  if (!isSafeName(v)) {
    throw new RegistryError(`${kind} name ${JSON.stringify(v)} is not allowed: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit, without '..'`);
  }
}

/** The conflict a compare-and-set put raises when the current version moved (see PutOptions). */
export function checkExpectedCurrent(model: string, name: string, current: number | null, opts: PutOptions | undefined): void {
  if (opts?.expectCurrent === undefined || opts.expectCurrent === current) return;
  throw new RegistryError(`adapter '${name}' of model '${model}' is at version ${current ?? 'none'}, not ${opts.expectCurrent ?? 'none'} as this put expected: another writer published first; read the current version again`, 'conflict');
}

export function checkVersion(v: number): void {
  if (!Number.isInteger(v) || v < 1) throw new RegistryError(`version must be a positive integer, got ${v}`);
}
