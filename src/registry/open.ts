// One string chooses the registry: a path or `sqlite:PATH` opens the single-machine SQLite
// store; `postgres://…` (or `postgresql://…`) opens the PostgreSQL registry, whose bytes go to
// the blob store named by `blobs`: `file:DIR` (the file system) or
// `s3://bucket[/prefix]?endpoint=http://host:port&region=…` (any S3-compatible store; credentials
// from the AWS SDK's usual chain, e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, unless given).
import { fileURLToPath } from 'node:url';
import type { BlobStore } from '../fleet/types.ts';
import { FsBlobStore } from './blob-store-fs.ts';
import { S3BlobStore } from './blob-store-s3.ts';
import { PostgresRegistry } from './postgres.ts';
import { SqliteRegistry } from './sqlite.ts';
import { type AdapterRegistry, RegistryError } from './types.ts';
import { redact } from './pg.ts';

export interface OpenRegistryOptions {
  /** Blob store spec for a PostgreSQL registry: `file:DIR` or `s3://bucket[/prefix]?endpoint=…`. Required for postgres. */
  blobs?: string;
  /** Versions kept per adapter (see SqliteRegistryOptions.keep). */
  keep?: number;
  /** S3 credentials, overriding the SDK's chain. */
  s3Credentials?: { accessKeyId: string; secretAccessKey: string };
}

const BLOB_FORMS = "'file:DIR' or 's3://bucket[/prefix]?endpoint=http://host:port'";

/** Opens a BlobStore from its spec (see OpenRegistryOptions.blobs). */
export function openBlobStore(spec: string, opts: { s3Credentials?: OpenRegistryOptions['s3Credentials'] } = {}): BlobStore {
  if (typeof spec !== 'string' || spec === '') throw new RegistryError(`blob store spec ${JSON.stringify(spec)} is not valid: use ${BLOB_FORMS}`);
  if (spec.startsWith('file:')) {
    const dir = spec.startsWith('file://') ? fileURLToPath(spec) : spec.slice('file:'.length);
    if (!dir) throw new RegistryError(`blob store spec '${spec}' names no directory: use 'file:DIR'`);
    return new FsBlobStore(dir);
  }
  if (spec.startsWith('s3://')) {
    let u: URL;
    try {
      u = new URL(spec);
    } catch {
      throw new RegistryError(`blob store spec '${spec}' is not a valid URL: use ${BLOB_FORMS}`);
    }
    const known = new Set(['endpoint', 'region', 'forcePathStyle']);
    for (const k of u.searchParams.keys()) if (!known.has(k)) throw new RegistryError(`blob store spec '${spec}': unknown parameter '${k}' (known: ${[...known].join(', ')})`);
    const prefix = decodeURIComponent(u.pathname.replace(/^\/+/, ''));
    const fps = u.searchParams.get('forcePathStyle');
    try {
      return new S3BlobStore({
        bucket: u.hostname,
        endpoint: u.searchParams.get('endpoint') ?? undefined,
        region: u.searchParams.get('region') ?? undefined,
        forcePathStyle: fps === null ? undefined : fps === 'true',
        prefix: prefix && !prefix.endsWith('/') ? `${prefix}/` : prefix,
        credentials: opts.s3Credentials,
      });
    } catch (e) {
      throw new RegistryError(`blob store spec '${spec}': ${(e as Error).message}`);
    }
  }
  throw new RegistryError(`blob store spec '${spec}' is not known: use ${BLOB_FORMS}`);
}

/** Opens the registry a spec names (see the header). Errors name the spec. */
export async function openRegistry(spec: string, opts: OpenRegistryOptions = {}): Promise<AdapterRegistry> {
  if (typeof spec !== 'string' || spec === '') throw new RegistryError(`registry spec ${JSON.stringify(spec)} is not valid: use a file path, 'sqlite:PATH' or 'postgres://user@host:port/db'`);
  if (/^postgres(ql)?:\/\//.test(spec)) {
    if (!opts.blobs) throw new RegistryError(`registry '${redact(spec)}' is PostgreSQL and needs a blob store for the adapter bytes: pass blobs ${BLOB_FORMS}`);
    const blobs = openBlobStore(opts.blobs, opts);
    try {
      return await PostgresRegistry.open(spec, { blobs, keep: opts.keep });
    } catch (e) {
      await blobs.close();
      if (e instanceof RegistryError && e.code !== 'unavailable') throw e;
      throw new RegistryError(`cannot open the registry '${redact(spec)}': ${(e as Error).message}`, e instanceof RegistryError ? e.code : 'unavailable');
    }
  }
  let path = spec;
  if (spec.startsWith('sqlite:')) path = spec.slice('sqlite:'.length);
  else if (/^[a-z][a-z0-9+.-]*:\/\//i.test(spec)) throw new RegistryError(`registry spec '${redact(spec)}' has an unknown scheme: use a file path, 'sqlite:PATH' or 'postgres://user@host:port/db'`);
  if (!path) throw new RegistryError(`registry spec '${spec}' names no file: use 'sqlite:PATH'`);
  if (opts.blobs) throw new RegistryError(`registry '${spec}' is SQLite, which keeps its blobs in the file: drop the blob store '${opts.blobs}'`);
  return new SqliteRegistry(path, { keep: opts.keep });
}
