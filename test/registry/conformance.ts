// The AdapterRegistry contract as one suite, run against every implementation (SQLite in
// registry.test.ts, PostgreSQL + a blob store in postgres.test.ts): versions, rollback, good
// marks, retention, name checks, sha256 checks on read, a write that fails inside its
// transaction, reopening, and tenant state. What differs per store (how to corrupt a blob, how to
// make a commit fail, how to mark the schema newer) comes from the harness.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RegistryError, type AdapterFiles, type AdapterRegistry } from '../../src/registry/index.ts';

export interface RegistryHarness {
  /** Open the registry stored under `key` (the same key opens the same data; a new key is empty). */
  open(key: string, opts?: { keep?: number }): Promise<AdapterRegistry>;
  /** Flip bytes of the weights of one stored version (the registry is closed). */
  corruptWeights(key: string, model: string, name: string, version: number): Promise<void>;
  /** Make the next put's pointer move fail inside its transaction with 'simulated crash mid-write'; returns the undo. */
  failPointerMove(key: string): Promise<() => Promise<void>>;
  /** Record a schema version newer than the code knows (the registry is closed). */
  bumpSchema(key: string): Promise<void>;
  /** Checks after a failed put (e.g. what is left in the blob store). */
  afterFailedPut?(key: string, reg: AdapterRegistry): Promise<void>;
  /** Checks after reopening (e.g. an integrity check). */
  afterReopen?(key: string, reg: AdapterRegistry): Promise<void>;
}

/** Two small "files" whose bytes tell the versions apart. */
export function files(tag: number): AdapterFiles {
  const weights = new Uint8Array(64).map((_, i) => (i * 7 + tag) & 255);
  return { weights, config: JSON.stringify({ peft_type: 'LORA', r: tag }) };
}

/** `only`: run just the tests whose names match (a smaller run, e.g. for a second blob store). */
export function registryConformance(label: string, h: RegistryHarness, opts: { skip?: string; only?: RegExp } = {}): void {
  const t = (name: string, fn: () => Promise<void>) => {
    if (!opts.only || opts.only.test(name)) test(`${label}: ${name}`, { skip: opts.skip }, fn);
  };

  t('put makes numbered versions with their parent, sha256 and meta; get returns the current one or any asked for', async () => {
    const reg = await h.open('a');
    const v1 = await reg.put('cnn', 'shop', files(1), { method: 'lora', metrics: { accuracy: 0.9 } });
    const v2 = await reg.put('cnn', 'shop', files(2));
    assert.equal(v1.version, 1);
    assert.equal(v1.parent, null);
    assert.equal(v2.version, 2);
    assert.equal(v2.parent, 1);
    assert.match(v1.sha256, /^[0-9a-f]{64}$/);
    assert.notEqual(v1.sha256, v2.sha256);
    assert.deepEqual(v1.meta, { method: 'lora', metrics: { accuracy: 0.9 } });
    assert.equal(await reg.current('cnn', 'shop'), 2);
    const cur = (await reg.get('cnn', 'shop'))!;
    assert.equal(cur.version, 2);
    assert.equal(cur.current, true);
    assert.deepEqual(cur.files.weights, files(2).weights);
    assert.equal(cur.files.config, files(2).config);
    const old = (await reg.get('cnn', 'shop', 1))!;
    assert.deepEqual(old.files.weights, files(1).weights);
    assert.equal(old.current, false);
    assert.equal(await reg.get('cnn', 'shop', 9), undefined);
    assert.equal(await reg.get('cnn', 'nothing'), undefined);
    assert.deepEqual(await reg.list('cnn'), ['shop']);
    assert.deepEqual((await reg.versions('cnn', 'shop')).map((v) => v.version), [1, 2]);
    await reg.close();
  });

  t('rollback moves the current pointer; a later put descends from the version rolled back to; good marks', async () => {
    const reg = await h.open('rollback');
    for (let i = 1; i <= 3; i++) await reg.put('m', 'a', files(i));
    const good = await reg.markGood('m', 'a', 1);
    assert.equal(good.good, true);
    const r = await reg.rollback('m', 'a', 1);
    assert.equal(r.current, true);
    assert.equal(await reg.current('m', 'a'), 1);
    assert.deepEqual((await reg.get('m', 'a'))!.files.weights, files(1).weights);
    assert.deepEqual((await reg.versions('m', 'a')).map((v) => [v.version, v.current, v.good]), [[1, true, true], [2, false, false], [3, false, false]]);
    const v4 = await reg.put('m', 'a', files(4));
    assert.equal(v4.version, 4, 'version numbers are never reused');
    assert.equal(v4.parent, 1);
    assert.equal((await reg.markGood('m', 'a', 1, false)).good, false);
    await assert.rejects(reg.rollback('m', 'a', 7), (e: Error) => e instanceof RegistryError && e.code === 'not-found' && /no version 7 \(stored: 1, 2, 3, 4\)/.test(e.message));
    await assert.rejects(reg.rollback('m', 'zz', 1), /model 'm' has no adapter 'zz'/);
    await assert.rejects(reg.rollback('m', 'a', 0), /positive integer/);
    assert.equal(await reg.delete('m', 'a'), true);
    assert.equal(await reg.delete('m', 'a'), false);
    assert.deepEqual(await reg.versions('m', 'a'), []);
    assert.equal(await reg.current('m', 'a'), null);
    await reg.close();
  });

  t('a compare-and-set put (expectCurrent) stores only when the current version is the one expected', async () => {
    const reg = await h.open('cas');
    const v1 = await reg.put('m', 'a', files(1), {}, { expectCurrent: null }); // a new adapter: no current version
    assert.equal(v1.version, 1);
    // Two writers read version 1 as current; the first put wins, the second is refused and stores nothing.
    const first = await reg.put('m', 'a', files(2), {}, { expectCurrent: 1 });
    assert.equal(first.version, 2);
    await assert.rejects(reg.put('m', 'a', files(3), {}, { expectCurrent: 1 }), (e: Error) => e instanceof RegistryError && e.code === 'conflict' && /at version 2, not 1/.test(e.message));
    await assert.rejects(reg.put('m', 'a', files(3), {}, { expectCurrent: null }), (e: Error) => e instanceof RegistryError && e.code === 'conflict');
    assert.deepEqual((await reg.versions('m', 'a')).map((v) => v.version), [1, 2]);
    assert.equal(await reg.current('m', 'a'), 2);
    // After a rollback the current version is the one rolled back to; the next version number is still new.
    await reg.rollback('m', 'a', 1);
    await assert.rejects(reg.put('m', 'a', files(3), {}, { expectCurrent: 2 }), /at version 1, not 2/);
    assert.equal((await reg.put('m', 'a', files(3), {}, { expectCurrent: 1 })).version, 3);
    await reg.close();
  });

  t('retention keeps the newest N, every good version and the current one', async () => {
    const reg = await h.open('retention', { keep: 2 });
    await reg.put('m', 'a', files(1));
    await reg.markGood('m', 'a', 1);
    await reg.put('m', 'a', files(2));
    await reg.put('m', 'a', files(3));
    await reg.rollback('m', 'a', 2);
    await reg.put('m', 'a', files(4));
    await reg.put('m', 'a', files(5));
    // newest two: 4, 5; good: 1; 2 was current only until 4 was put
    assert.deepEqual((await reg.versions('m', 'a')).map((v) => v.version), [1, 4, 5]);
    await reg.close();
  });

  t('names that could escape a path or key are refused', async () => {
    const reg = await h.open('names');
    for (const bad of ['../x', 'a/b', '', '.hidden', 'a..b', 'x'.repeat(200)]) {
      await assert.rejects(reg.put('m', bad, files(1)), (e: Error) => e instanceof RegistryError && /not allowed/.test(e.message), bad);
    }
    await assert.rejects(reg.getTenantState('m', '../../etc'), /tenant name/);
    await reg.close();
  });

  t('a corrupted blob is reported with the version, the file and what to do', async () => {
    const reg = await h.open('corrupt');
    await reg.put('m', 'a', files(1));
    await reg.put('m', 'a', files(2));
    await reg.close();
    await h.corruptWeights('corrupt', 'm', 'a', 2);
    const again = await h.open('corrupt');
    await assert.rejects(again.get('m', 'a'), (e: Error) => e instanceof RegistryError && e.code === 'corrupt'
      && /adapter 'a' version 2 of model 'm' is corrupted/.test(e.message) && /adapter_model\.safetensors/.test(e.message) && /Roll back/.test(e.message));
    // the other version is intact, and rolling back to it works
    await again.rollback('m', 'a', 1);
    assert.deepEqual((await again.get('m', 'a'))!.files.weights, files(1).weights);
    await again.close();
  });

  t('a failure inside the write transaction leaves the previous version whole and current', async () => {
    const reg = await h.open('fail');
    await reg.put('m', 'a', files(1));
    // Fail after the new version row is inserted, at the step that moves the current pointer.
    const undo = await h.failPointerMove('fail');
    await assert.rejects(reg.put('m', 'a', files(2)), /simulated crash mid-write/);
    assert.deepEqual((await reg.versions('m', 'a')).map((v) => v.version), [1], 'no half version');
    assert.equal(await reg.current('m', 'a'), 1);
    assert.deepEqual((await reg.get('m', 'a'))!.files.weights, files(1).weights);
    await h.afterFailedPut?.('fail', reg);
    await undo();
    const v = await reg.put('m', 'a', files(2));
    assert.equal(v.version, 2, 'the failed write consumed no version number');
    await reg.close();
  });

  t('reopening reads back versions, pointers, marks and tenant state; a newer schema is refused', async () => {
    const reg = await h.open('reopen');
    await reg.put('m', 'a', files(1));
    await reg.put('m', 'a', files(2));
    await reg.markGood('m', 'a', 2);
    await reg.rollback('m', 'a', 1);
    const state = new Uint8Array([1, 2, 3, 4]);
    await reg.putTenantState('m', 'tenant-1', 'tent', state);
    await reg.putTenantState('m', 'tenant-1', 'tent', new Uint8Array([5, 6]));
    await reg.close();
    const again = await h.open('reopen');
    await h.afterReopen?.('reopen', again);
    assert.equal(await again.current('m', 'a'), 1);
    assert.deepEqual((await again.versions('m', 'a')).map((v) => [v.version, v.good]), [[1, false], [2, true]]);
    assert.equal((await again.get('m', 'a', 2))!.files.config, files(2).config);
    const t = (await again.getTenantState('m', 'tenant-1'))!;
    assert.equal(t.method, 'tent');
    assert.deepEqual([...t.bytes], [5, 6]);
    assert.deepEqual(await again.listTenants('m'), ['tenant-1']);
    assert.equal(await again.deleteTenantState('m', 'tenant-1'), true);
    assert.equal(await again.getTenantState('m', 'tenant-1'), undefined);
    await again.close();
    // a store from a newer refit is refused rather than misread
    await h.bumpSchema('reopen');
    await assert.rejects(h.open('reopen'), /schema version \d+, newer than this refit understands/);
  });

  t('tenants and models are isolated: same names under another model or tenant are other data', async () => {
    const reg = await h.open('isolation');
    await reg.put('m1', 'a', files(1));
    await reg.put('m2', 'a', files(2));
    await reg.putTenantState('m1', 't', 'tent', new Uint8Array([1]));
    await reg.putTenantState('m2', 't', 'cont', new Uint8Array([2]));
    assert.deepEqual((await reg.get('m1', 'a'))!.files.weights, files(1).weights);
    assert.deepEqual((await reg.get('m2', 'a'))!.files.weights, files(2).weights);
    assert.deepEqual([...(await reg.getTenantState('m1', 't'))!.bytes], [1]);
    assert.equal((await reg.getTenantState('m2', 't'))!.method, 'cont');
    assert.equal(await reg.delete('m1', 'a'), true);
    assert.equal(await reg.current('m2', 'a'), 1);
    assert.deepEqual(await reg.list('m1'), []);
    assert.deepEqual(await reg.listTenants('m3'), []);
    await reg.close();
  });
}
