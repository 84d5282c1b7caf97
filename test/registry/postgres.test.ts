// The PostgreSQL registry through the shared registry suite, with its bytes in a file-system blob
// store, and a smaller run with an S3 store (s3rver, a mock S3 server from npm: Debian 12
// packages no standalone S3-compatible server; see test/helpers/s3.ts). Then what only it has:
// concurrent puts from two pools, the orphan sweep, a lost connection reported clearly and
// recovered from, and PostgreSQL restarted in the middle of a stream of puts. One server for the
// file; each registry gets its own database.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import type { BlobStore } from '../../src/fleet/types.ts';
import { RegistryError, type AdapterFiles } from '../../src/registry/index.ts';
import { PostgresRegistry, PG_SCHEMA_VERSION } from '../../src/registry/postgres.ts';
import { FsBlobStore } from '../../src/registry/blob-store-fs.ts';
import { S3BlobStore } from '../../src/registry/blob-store-s3.ts';
import { startPostgres, postgresMissing, type Postgres } from '../helpers/postgres.ts';
import { startS3, type S3Server } from '../helpers/s3.ts';
import { registryConformance, files } from './conformance.ts';

const skip = postgresMissing();
if (skip) console.log(`# skipping the PostgreSQL registry tests: ${skip}`);
const dir = mkdtempSync(join(tmpdir(), 'refit-pgreg-'));
// Both servers start before any test is registered: node's runner may run the file's after hook
// as soon as the tests registered so far are done, even while the top level is still awaiting.
const server: Postgres | undefined = skip ? undefined : await startPostgres();
const s3: S3Server | undefined = skip ? undefined : await startS3();
test.after(async () => {
  await server?.stop();
  await s3?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const dbs = new Map<string, string>();
async function dbUrl(key: string): Promise<string> {
  if (!dbs.has(key)) dbs.set(key, await server!.createDatabase(key.replace(/[^a-z0-9_]/gi, '_').toLowerCase()));
  return dbs.get(key)!;
}
async function sql<T = Record<string, unknown>>(key: string, text: string, params: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: await dbUrl(key) });
  await c.connect();
  try {
    return (await c.query(text, params)).rows as T[];
  } finally {
    await c.end();
  }
}
const sha = (b: Uint8Array | string) => createHash('sha256').update(b).digest('hex');

function harness(prefix: string, blobStore: (key: string) => BlobStore) {
  const k = (key: string) => `${prefix}_${key}`;
  return {
    open: async (key: string, opts?: { keep?: number }) => PostgresRegistry.open(await dbUrl(k(key)), { blobs: blobStore(k(key)), ...opts }),
    async corruptWeights(key: string, model: string, name: string, version: number) {
      const [r] = await sql<{ sha256: string }>(k(key), 'SELECT sha256 FROM adapter_versions WHERE model = $1 AND name = $2 AND version = $3', [model, name, version]);
      const store = blobStore(k(key));
      const b = new Uint8Array((await store.get(`adapters/${r!.sha256}`))!);
      b[10] ^= 0xff;
      await store.put(`adapters/${r!.sha256}`, b);
      await store.close();
    },
    async failPointerMove(key: string) {
      await sql(k(key), `CREATE FUNCTION crash() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'simulated crash mid-write'; END $$;
        CREATE TRIGGER crash BEFORE UPDATE OF current ON adapters FOR EACH ROW EXECUTE FUNCTION crash()`);
      return async () => { await sql(k(key), 'DROP TRIGGER crash ON adapters; DROP FUNCTION crash()'); };
    },
    async bumpSchema(key: string) {
      await sql(k(key), 'INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)', [PG_SCHEMA_VERSION + 1, 'later']);
    },
    async afterFailedPut(_key: string, reg: import('../../src/registry/types.ts').AdapterRegistry) {
      // The failed put uploaded its blob before its transaction failed: an orphan, which the sweep removes.
      const r = reg as PostgresRegistry;
      const orphan = `adapters/${sha(files(2).weights)}`;
      assert.ok((await r.blobs.list('adapters/')).includes(orphan), 'the failed put left its blob');
      const first = await r.sweepOrphans();
      assert.deepEqual(first.deleted, [], 'within the grace period nothing is deleted');
      assert.equal(first.pending, 2, 'weights and config of the failed put are pending');
      const swept = await r.sweepOrphans({ graceMs: 0 });
      assert.deepEqual(swept.deleted.sort(), [orphan, `adapters/${sha(files(2).config)}`].sort());
      assert.ok(!(await r.blobs.list('adapters/')).includes(orphan));
      assert.deepEqual((await r.get('m', 'a'))!.files.weights, files(1).weights, 'blobs a row names are kept');
    },
    async afterReopen(_key: string, reg: import('../../src/registry/types.ts').AdapterRegistry) {
      assert.equal(await (reg as PostgresRegistry).schemaVersion(), PG_SCHEMA_VERSION);
    },
  };
}

registryConformance('postgres+fs', harness('fs', (key) => new FsBlobStore(join(dir, key))), { skip });

registryConformance('postgres+s3', harness('s3', (key) => new S3BlobStore({ bucket: s3!.bucket, endpoint: s3!.endpoint, credentials: s3!.credentials, prefix: `${key}/` })),
  { skip, only: /^(put makes|a corrupted blob|a failure inside|reopening)/ });

const fsOpen = async (key: string, opts: { keep?: number } = {}) => PostgresRegistry.open(await dbUrl(key), { blobs: new FsBlobStore(join(dir, key)), ...opts });

test('postgres: concurrent puts to one adapter from two pools get distinct, gap-free versions whose bytes match', { skip }, async () => {
  const a = await fsOpen('concurrent', { keep: 100 });
  const b = await fsOpen('concurrent', { keep: 100 });
  const tagged = (i: number): AdapterFiles => ({ weights: new Uint8Array(256).map((_, j) => (i * 31 + j) & 255), config: JSON.stringify({ i }) });
  const puts = Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).put('m', 'shared', tagged(i)).then((v) => ({ i, v })));
  const done = await Promise.all(puts);
  assert.deepEqual(done.map((d) => d.v.version).sort((x, y) => x - y), Array.from({ length: 40 }, (_, i) => i + 1));
  for (const { i, v } of done) {
    const got = (await a.get('m', 'shared', v.version))!;
    assert.equal(got.files.config, JSON.stringify({ i }), `version ${v.version} holds put ${i}'s bytes`);
  }
  // each version's parent is the version before it: the puts were serialized
  assert.deepEqual((await b.versions('m', 'shared')).map((v) => v.parent), [null, ...Array.from({ length: 39 }, (_, i) => i + 1)]);
  assert.equal(await a.current('m', 'shared'), 40);
  await a.close();
  await b.close();
});

test('postgres: the sweep keeps blobs any row still names, and deletes a deleted adapter\'s after the grace period', { skip }, async () => {
  const reg = await fsOpen('sweep');
  await reg.put('m', 'one', files(1));
  await reg.put('m', 'two', files(1)); // same bytes: one blob, two rows
  await reg.put('m', 'two', files(2));
  await reg.putTenantState('m', 't', 'tent', new Uint8Array([1]));
  await reg.putTenantState('m', 't', 'tent', new Uint8Array([2]));
  assert.equal(await reg.delete('m', 'two'), true);
  const first = await reg.sweepOrphans({ graceMs: 60_000 });
  assert.deepEqual(first.deleted, []);
  assert.equal(first.pending, 3, "files(2)'s weights and config, and the replaced tenant state");
  const second = await reg.sweepOrphans({ graceMs: 0 });
  assert.deepEqual(second.deleted.sort(), [`adapters/${sha(files(2).weights)}`, `adapters/${sha(files(2).config)}`, `tenants/m/t/${sha(new Uint8Array([1]))}`].sort());
  assert.deepEqual((await reg.get('m', 'one'))!.files.weights, files(1).weights, 'the shared blob stayed');
  assert.deepEqual([...(await reg.getTenantState('m', 't'))!.bytes], [2]);
  assert.deepEqual((await reg.sweepOrphans({ graceMs: 0 })).deleted, []);
  // a blob lost from the store is reported as such, not as bad bytes
  await reg.blobs.delete(`adapters/${sha(files(1).weights)}`);
  await assert.rejects(reg.get('m', 'one'), (e: Error) => e instanceof RegistryError && e.code === 'corrupt' && /missing from the blob store/.test(e.message));
  await reg.close();
});

test('postgres: a lost server gives RegistryError(unavailable) naming it; the next call after it is back works', { skip }, async () => {
  const reg = await fsOpen('outage');
  await reg.put('m', 'a', files(1));
  await server!.kill();
  await assert.rejects(reg.put('m', 'a', files(2)), (e: Error) => e instanceof RegistryError && e.code === 'unavailable'
    && /PostgreSQL at postgres:\/\/postgres@127\.0\.0\.1:\d+\/outage is unavailable/.test(e.message) && /retry when it is back/.test(e.message));
  await assert.rejects(reg.get('m', 'a'), (e: Error) => e instanceof RegistryError && e.code === 'unavailable');
  await server!.start();
  assert.equal((await reg.put('m', 'a', files(2))).version, 2, 'the pool reconnected');
  assert.deepEqual((await reg.get('m', 'a'))!.files.weights, files(2).weights);
  await reg.close();
});

test('postgres: restarted in the middle of a stream of puts, every acknowledged put survives with its bytes and no version is half-written', { skip, timeout: 30_000 }, async () => {
  const reg = await fsOpen('fault', { keep: 1000 });
  const tagged = (i: number): AdapterFiles => ({ weights: new Uint8Array(1024).map((_, j) => (i * 131 + j * 7) & 255), config: JSON.stringify({ i }) });
  const acked: { i: number; version: number }[] = [];
  const refused: string[] = [];
  let i = 0;
  const until = async (n: number) => {
    while (acked.length < n) {
      const k = i++;
      try {
        acked.push({ i: k, version: (await reg.put('m', 'a', tagged(k))).version });
      } catch (e) {
        refused.push((e as RegistryError).code);
        assert.ok(e instanceof RegistryError && e.code === 'unavailable', `a put during the outage fails clearly, got ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  };
  // Two writers and an outage: immediate shutdown (no checkpoint: crash recovery on start), down for 300 ms.
  const writers = Promise.all([until(25), until(25)]);
  for (const t0 = Date.now(); acked.length < 5 && Date.now() - t0 < 10_000;) await new Promise((r) => setTimeout(r, 5));
  const before = acked.length;
  await server!.kill();
  await new Promise((r) => setTimeout(r, 300));
  await server!.start();
  await writers;
  await Promise.all([until(60), until(60)]);
  assert.ok(before > 0 && before < 25, `the outage came in the middle of the stream (${before} acknowledged before it)`);
  assert.ok(refused.length > 0, 'some puts met the outage');
  // every acknowledged put is there with its bytes
  for (const a of acked) assert.equal((await reg.get('m', 'a', a.version))!.files.config, JSON.stringify({ i: a.i }));
  assert.equal(new Set(acked.map((a) => a.version)).size, acked.length, 'no version number given twice');
  // every listed version verifies (a put whose commit raced the shutdown may be there unacknowledged, but whole)
  const listed = await reg.versions('m', 'a');
  for (const v of listed) assert.ok(await reg.get('m', 'a', v.version));
  assert.ok(listed.length >= acked.length);
  await reg.close();
});
