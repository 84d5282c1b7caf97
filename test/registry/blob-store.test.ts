// Blob stores: the file-system store (atomic writes, key checks that refuse every way out of the
// root, list by prefix) and the S3 store against s3rver, a mock S3 server from npm (Debian 12
// packages no standalone S3-compatible server; see test/helpers/s3.ts), both through one suite of
// the BlobStore contract.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import type { BlobStore } from '../../src/fleet/types.ts';
import { FleetError } from '../../src/fleet/types.ts';
import { FsBlobStore } from '../../src/registry/blob-store-fs.ts';
import { S3BlobStore } from '../../src/registry/blob-store-s3.ts';
import { startS3, type S3Server } from '../helpers/s3.ts';

const dir = mkdtempSync(join(tmpdir(), 'refit-blobs-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

const hex = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const BAD_KEYS = ['', '/etc/passwd', '../x', 'a/../../x', 'a/./b', 'a//b', 'a/', '.hidden', 'a/.tmp', 'a..b', 'a\\..\\b', 'a/b\0c', 'x'.repeat(200), 'C:/x'];

async function contract(store: BlobStore): Promise<void> {
  const a = new Uint8Array([1, 2, 3]);
  const key = `adapters/${hex(a)}`;
  assert.equal(await store.get(key), undefined);
  await store.put(key, a);
  assert.deepEqual([...(await store.get(key))!], [1, 2, 3]);
  await store.put(key, a); // same bytes again: a no-op
  await store.put('tenants/m/t1/x1', new Uint8Array([9]));
  await store.put('tenants/m/t2/x2', new Uint8Array(100_000).fill(7));
  await store.put('tenants/m2/t1/x3', new Uint8Array(0));
  assert.deepEqual(await store.list('tenants/m/'), ['tenants/m/t1/x1', 'tenants/m/t2/x2']);
  assert.deepEqual(await store.list('tenants/m'), ['tenants/m/t1/x1', 'tenants/m/t2/x2', 'tenants/m2/t1/x3']);
  assert.deepEqual(await store.list('tenants/m/t2'), ['tenants/m/t2/x2']);
  assert.deepEqual(await store.list(''), [key, 'tenants/m/t1/x1', 'tenants/m/t2/x2', 'tenants/m2/t1/x3']);
  assert.deepEqual(await store.list('nothing/'), []);
  assert.equal((await store.get('tenants/m/t2/x2'))!.length, 100_000);
  assert.equal((await store.get('tenants/m2/t1/x3'))!.length, 0);
  // a rewrite with other bytes replaces the whole blob
  await store.put('tenants/m/t1/x1', new Uint8Array([4, 5]));
  assert.deepEqual([...(await store.get('tenants/m/t1/x1'))!], [4, 5]);
  assert.equal(await store.delete(key), true);
  assert.equal(await store.delete(key), false);
  assert.equal(await store.get(key), undefined);
  for (const bad of BAD_KEYS) {
    await assert.rejects(store.put(bad, a), (e: Error) => e instanceof FleetError && e.code === 'invalid' && /not allowed/.test(e.message), `put ${JSON.stringify(bad)}`);
    await assert.rejects(store.get(bad), FleetError, `get ${JSON.stringify(bad)}`);
    await assert.rejects(store.delete(bad), FleetError, `delete ${JSON.stringify(bad)}`);
  }
  for (const bad of ['../', '/x', 'a/../', '..']) await assert.rejects(store.list(bad), FleetError, `list ${bad}`);
}

test('FsBlobStore keeps the BlobStore contract and refuses keys that leave its root', async () => {
  const root = join(dir, 'fs');
  const store = new FsBlobStore(root);
  await contract(store);
  // nothing was written outside the root, and no temporary file is left behind
  assert.deepEqual(readdirSync(dir), ['fs']);
  const walk = (d: string): string[] => readdirSync(d, { withFileTypes: true }).flatMap((e) => e.isDirectory() ? walk(join(d, e.name)) : [e.name]);
  assert.equal(walk(root).filter((n) => n.startsWith('.')).length, 0);
  await store.close();
});

test('FsBlobStore writes atomically: a stray temporary file is never listed or read, and concurrent writers leave one whole blob', async () => {
  const root = join(dir, 'atomic');
  const store = new FsBlobStore(root);
  await store.put('a/b', new Uint8Array([1]));
  writeFileSync(join(root, 'a', '.deadbeef.tmp'), 'half a blob from a crashed writer');
  assert.deepEqual(await store.list('a/'), ['a/b']);
  const big = (v: number) => new Uint8Array(1 << 20).fill(v);
  await Promise.all([1, 2, 3, 4, 5, 6].map((v) => store.put('a/c', big(v))));
  const got = (await store.get('a/c'))!;
  assert.equal(got.length, 1 << 20);
  assert.ok(got.every((x) => x === got[0]), 'one writer\'s bytes, whole');
  // a symlink planted inside the root is followed only as the key it is; a key cannot name '..'
  symlinkSync('/etc', join(root, 'etc'));
  await assert.rejects(store.get('etc/../../passwd'), /not allowed/);
  assert.ok(!existsSync(join(dir, 'passwd')));
});

test('S3BlobStore keeps the BlobStore contract against s3rver (a mock S3 server from npm)', async () => {
  let s3: S3Server | undefined;
  try {
    s3 = await startS3();
    const store = new S3BlobStore({ bucket: s3.bucket, endpoint: s3.endpoint, credentials: s3.credentials, prefix: 'p/' });
    await contract(store);
    await store.close();
    // a server that is gone is reported as unavailable, naming the key
    const down = new S3BlobStore({ bucket: s3.bucket, endpoint: 'http://127.0.0.1:1', credentials: s3.credentials });
    await assert.rejects(down.get('a/b'), (e: Error) => e instanceof FleetError && e.code === 'unavailable' && /s3:\/\/refit-test\/a\/b/.test(e.message));
    await down.close();
  } finally {
    await s3?.stop();
  }
});
