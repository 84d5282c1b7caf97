// openRegistry: one string picks SQLite (a path or sqlite:PATH) or PostgreSQL (postgres://…)
// with its blob store (file:DIR or s3://bucket?endpoint=…, here s3rver, a mock S3 server from
// npm); bad specs are refused with errors that name them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openRegistry, openBlobStore } from '../../src/registry/open.ts';
import { SqliteRegistry } from '../../src/registry/sqlite.ts';
import { PostgresRegistry } from '../../src/registry/postgres.ts';
import { FsBlobStore } from '../../src/registry/blob-store-fs.ts';
import { S3BlobStore } from '../../src/registry/blob-store-s3.ts';
import { RegistryError } from '../../src/registry/types.ts';
import { startPostgres, postgresMissing, type Postgres } from '../helpers/postgres.ts';
import { startS3, type S3Server } from '../helpers/s3.ts';
import { files } from './conformance.ts';

const dir = mkdtempSync(join(tmpdir(), 'refit-open-'));
const skip = postgresMissing();
let server: Postgres | undefined;
let s3: S3Server | undefined;
test.after(async () => {
  await server?.stop();
  await s3?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('a path or sqlite:PATH opens SQLite', async () => {
  for (const spec of [join(dir, 'a.db'), `sqlite:${join(dir, 'b.db')}`]) {
    const reg = await openRegistry(spec);
    assert.ok(reg instanceof SqliteRegistry, spec);
    await reg.put('m', 'a', files(1));
    await reg.close();
  }
  assert.ok(existsSync(join(dir, 'b.db')));
});

test('bad specs are refused naming the spec (and never the password)', async () => {
  const bad: [string, Record<string, unknown>, RegExp][] = [
    ['', {}, /registry spec "" is not valid/],
    ['mysql://x/y', {}, /registry spec 'mysql:\/\/x\/y' has an unknown scheme/],
    ['sqlite:', {}, /names no file/],
    ['postgres://u:hunter2@127.0.0.1:1/db', {}, /registry 'postgres:\/\/u:\*\*\*@127\.0\.0\.1:1\/db' is PostgreSQL and needs a blob store/],
    ['postgres://127.0.0.1:1/db', { blobs: 'ftp://x' }, /blob store spec 'ftp:\/\/x' is not known/],
    ['postgres://127.0.0.1:1/db', { blobs: 's3://Bad_Bucket' }, /blob store spec 's3:\/\/Bad_Bucket'.*bucket/],
    ['postgres://127.0.0.1:1/db', { blobs: 's3://bucket?color=red' }, /unknown parameter 'color'/],
    ['postgres://127.0.0.1:1/db', { blobs: 'file:' }, /names no directory/],
    [join(dir, 'c.db'), { blobs: 'file:/tmp/x' }, /is SQLite, which keeps its blobs in the file/],
  ];
  for (const [spec, opts, re] of bad) {
    await assert.rejects(openRegistry(spec, opts), (e: Error) => e instanceof RegistryError && re.test(e.message) && !/hunter2/.test(e.message), `${spec} ${JSON.stringify(opts)}`);
  }
  // a server that is not there: unavailable, naming the URL without the password
  await assert.rejects(openRegistry('postgres://u:hunter2@127.0.0.1:1/db', { blobs: `file:${join(dir, 'blobs')}` }),
    (e: Error) => e instanceof RegistryError && e.code === 'unavailable' && /postgres:\/\/u:\*\*\*@127\.0\.0\.1:1\/db/.test(e.message) && !/hunter2/.test(e.message));
});

test('blob store specs: file:DIR, file:///DIR and s3://bucket/prefix?endpoint=…', () => {
  assert.equal((openBlobStore(`file:${dir}/x`) as FsBlobStore).root, join(dir, 'x'));
  assert.equal((openBlobStore(`file://${dir}/y`) as FsBlobStore).root, join(dir, 'y'));
  const s = openBlobStore('s3://my-bucket/refit/prod?endpoint=http://127.0.0.1:9000&region=eu-west-1') as S3BlobStore;
  assert.equal(s.bucket, 'my-bucket');
  assert.equal(s.prefix, 'refit/prod/');
});

test('postgres:// with file: and s3: blob stores opens the PostgreSQL registry', { skip }, async () => {
  server = await startPostgres();
  s3 = await startS3();
  const url = await server.createDatabase('open');
  const a = await openRegistry(url, { blobs: `file:${join(dir, 'pgblobs')}` });
  assert.ok(a instanceof PostgresRegistry);
  await a.put('m', 'a', files(1));
  await a.close();
  const b = await openRegistry(url.replace('postgres://', 'postgresql://'), { blobs: `s3://${s3.bucket}/reg?endpoint=${s3.endpoint}`, s3Credentials: s3.credentials });
  assert.ok(b instanceof PostgresRegistry && b.blobs instanceof S3BlobStore);
  // same rows, other blob store: the version is listed, and its bytes are (rightly) not there
  assert.equal(await b.current('m', 'a'), 1);
  await assert.rejects(b.get('m', 'a'), /missing from the blob store/);
  await b.put('m', 'a', files(2));
  assert.deepEqual((await b.get('m', 'a'))!.files.weights, files(2).weights);
  await b.close();
});
