// The FleetStore contract, run against MemoryFleetStore and PostgresFleetStore: devices with
// their token stored as sha256 only, uploads whose rounds must increase (replays refused as
// 'conflict', wrong or borrowed tokens as 'unauthorized', bad fields as 'invalid', none of them
// changing state), model and device isolation, applied versions, job results committed once per
// id, concurrent uploads of one round (exactly one wins), and, for PostgreSQL, a lost server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import pg from 'pg';
import { FleetError, type FleetStore } from '../../src/fleet/types.ts';
import { MemoryFleetStore } from '../../src/fleet/store-memory.ts';
import { PostgresFleetStore } from '../../src/fleet/store-postgres.ts';
import { startPostgres, postgresMissing, type Postgres } from '../helpers/postgres.ts';

const skipPg = postgresMissing();
if (skipPg) console.log(`# skipping the PostgreSQL fleet store tests: ${skipPg}`);
const server: Postgres | undefined = skipPg ? undefined : await startPostgres();
test.after(async () => { await server?.stop(); });

const hex = (s: string) => createHash('sha256').update(s).digest('hex');
const upload = (model: string, device: string, round: number, extra: Record<string, unknown> = {}) =>
  ({ model, device, round, blobKey: `uploads/${model}/${device}/${round}`, sha256: hex(`${device}:${round}`), samples: 8, bytes: 1024, ...extra });
const is = (code: string, re?: RegExp) => (e: Error) => e instanceof FleetError && e.code === code && (!re || re.test(e.message));

interface Harness { open(): Promise<FleetStore & { url?: string }>; skip?: string }

function suite(label: string, h: Harness): void {
  const t = (name: string, fn: () => Promise<void>) => test(`${label}: ${name}`, { skip: h.skip }, fn);

  t('devices register once; tokens are checked; names are validated', async () => {
    const s = await h.open();
    const d = await s.registerDevice('cnn', 'cam-1', 'secret-1');
    assert.deepEqual({ ...d, registeredAt: typeof d.registeredAt }, { model: 'cnn', device: 'cam-1', registeredAt: 'string', lastRound: 0, appliedVersion: null });
    assert.ok(!Number.isNaN(Date.parse(d.registeredAt)));
    await assert.rejects(s.registerDevice('cnn', 'cam-1', 'other'), is('conflict', /already registered/));
    assert.equal(await s.checkToken('cnn', 'cam-1', 'secret-1'), true);
    assert.equal(await s.checkToken('cnn', 'cam-1', 'secret-2'), false);
    assert.equal(await s.checkToken('cnn', 'cam-2', 'secret-1'), false);
    assert.equal(await s.checkToken('other', 'cam-1', 'secret-1'), false, 'a device is its model\'s');
    assert.deepEqual(await s.getDevice('cnn', 'cam-1'), d);
    assert.equal(await s.getDevice('cnn', 'nope'), undefined);
    for (const bad of ['../x', 'a/b', '', '.h', 'a..b']) {
      await assert.rejects(s.registerDevice('cnn', bad, 't'), is('invalid', /device name/), bad);
      await assert.rejects(s.getDevice(bad, 'cam-1'), is('invalid', /model name/), bad);
    }
    await assert.rejects(s.registerDevice('cnn', 'cam-9', ''), is('invalid', /token/));
    await s.close();
  });

  t('uploads: rounds must increase; replays, wrong tokens, borrowed ids and bad fields are refused and change nothing', async () => {
    const s = await h.open();
    await s.registerDevice('cnn', 'a', 'token-a');
    await s.registerDevice('cnn', 'b', 'token-b');
    const u1 = await s.acceptUpload(upload('cnn', 'a', 1), 'token-a');
    assert.equal(u1.round, 1);
    assert.ok(!Number.isNaN(Date.parse(u1.createdAt)));
    assert.deepEqual({ ...u1, createdAt: 0 }, { ...upload('cnn', 'a', 1), createdAt: 0 });
    await assert.rejects(s.acceptUpload(upload('cnn', 'a', 1), 'token-a'), is('conflict', /round 1 is not newer than device 'a''s last accepted round 1/));
    await s.acceptUpload(upload('cnn', 'a', 5), 'token-a'); // gaps are fine
    await assert.rejects(s.acceptUpload(upload('cnn', 'a', 3), 'token-a'), is('conflict', /replay/));
    await assert.rejects(s.acceptUpload(upload('cnn', 'a', 6), 'token-x'), is('unauthorized', /not device 'a''s/));
    // device b claims a's id with its own (valid) token
    await assert.rejects(s.acceptUpload(upload('cnn', 'a', 6), 'token-b'), is('unauthorized'));
    await assert.rejects(s.acceptUpload(upload('cnn', 'ghost', 1), 'token-a'), is('unauthorized', /not registered/));
    await assert.rejects(s.acceptUpload(upload('other', 'a', 6), 'token-a'), is('unauthorized'), 'the same device name under another model is another device');
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ round: 0 }, /round must be a positive integer/], [{ round: 6.5 }, /round/], [{ round: '7' }, /round/],
      [{ samples: -1 }, /samples/], [{ bytes: Number.NaN }, /bytes/], [{ sha256: 'abc' }, /sha256/],
      [{ blobKey: '../../etc/passwd' }, /blob key/], [{ blobKey: '/abs' }, /blob key/], [{ model: '../m' }, /model name/],
    ];
    for (const [extra, re] of bad) await assert.rejects(s.acceptUpload(upload('cnn', 'a', 6, extra) as never, 'token-a'), is('invalid', re), JSON.stringify(extra));
    assert.equal((await s.getDevice('cnn', 'a'))!.lastRound, 5, 'refusals changed nothing');
    assert.deepEqual((await s.uploads('cnn', 'a')).map((u) => u.round), [1, 5]);
    assert.deepEqual(await s.uploads('cnn', 'b'), []);
    assert.deepEqual((await s.uploads('cnn', 'a', 1)).map((u) => u.round), [5]);
    assert.deepEqual(await s.uploads('cnn', 'a', 5), []);
    await s.acceptUpload(upload('cnn', 'b', 1), 'token-b');
    assert.deepEqual((await s.uploads('cnn', 'b')).map((u) => [u.device, u.round]), [['b', 1]]);
    await s.close();
  });

  t('concurrent uploads of one round: exactly one is accepted, the others are conflicts', async () => {
    const s1 = await h.open();
    const s2 = s1.url ? await PostgresFleetStore.open(s1.url) : s1; // a second pool on the same database
    await s1.registerDevice('cnn', 'a', 'tok');
    for (const round of [1, 2, 3]) {
      const r = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => (i % 2 ? s1 : s2).acceptUpload(upload('cnn', 'a', round), 'tok')));
      assert.equal(r.filter((x) => x.status === 'fulfilled').length, 1, `round ${round}`);
      for (const x of r) if (x.status === 'rejected') assert.ok(is('conflict')(x.reason), String(x.reason));
    }
    assert.deepEqual((await s2.uploads('cnn', 'a')).map((u) => u.round), [1, 2, 3]);
    if (s2 !== s1) await s2.close();
    await s1.close();
  });

  t('applied versions and job results (committed once per id, the first result kept)', async () => {
    const s = await h.open();
    await s.registerDevice('cnn', 'a', 'tok');
    await s.setAppliedVersion('cnn', 'a', 3);
    assert.equal((await s.getDevice('cnn', 'a'))!.appliedVersion, 3);
    await s.setAppliedVersion('cnn', 'a', null);
    assert.equal((await s.getDevice('cnn', 'a'))!.appliedVersion, null);
    await assert.rejects(s.setAppliedVersion('cnn', 'nope', 1), is('not-found'));
    await assert.rejects(s.setAppliedVersion('cnn', 'a', 0), is('invalid'));
    const first = await s.commitJob({ jobId: 'consolidate/cnn/a/1', version: 4, detail: { uploads: 2, nested: { x: [1, 2] } } });
    assert.equal(first.created, true);
    assert.deepEqual({ ...first.result, finishedAt: 0 }, { jobId: 'consolidate/cnn/a/1', version: 4, detail: { uploads: 2, nested: { x: [1, 2] } }, finishedAt: 0 });
    const again = await s.commitJob({ jobId: 'consolidate/cnn/a/1', version: 5, detail: {} });
    assert.equal(again.created, false);
    assert.deepEqual(again.result, first.result, 'the stored result, not the repeat');
    assert.deepEqual(await s.jobResult('consolidate/cnn/a/1'), first.result);
    assert.equal(await s.jobResult('nope'), undefined);
    const many = await Promise.all(Array.from({ length: 6 }, (_, i) => s.commitJob({ jobId: 'agg/1', version: i + 1, detail: { i } })));
    assert.equal(many.filter((m) => m.created).length, 1);
    assert.equal(new Set(many.map((m) => m.result.version)).size, 1);
    await assert.rejects(s.commitJob({ jobId: '', version: null, detail: {} }), is('invalid'));
    await assert.rejects(s.commitJob({ jobId: 'x', version: -1, detail: {} }), is('invalid'));
    await s.close();
  });
}

suite('memory', { open: async () => new MemoryFleetStore() });

let n = 0;
suite('postgres', {
  skip: skipPg,
  async open() {
    const url = await server!.createDatabase(`fleet_${++n}`);
    return Object.assign(await PostgresFleetStore.open(url), { url });
  },
});

test('postgres: only the token\'s sha256 is stored; a lost server is FleetError(unavailable), and the next call after it is back works', { skip: skipPg }, async () => {
  const url = await server!.createDatabase('fleet_raw');
  const s = await PostgresFleetStore.open(url);
  await s.registerDevice('cnn', 'a', 'the-token');
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  const row = (await c.query("SELECT * FROM fleet_devices WHERE device = 'a'")).rows[0] as Record<string, unknown>;
  await c.end();
  assert.deepEqual(row.token_sha256, createHash('sha256').update('the-token').digest());
  assert.ok(!JSON.stringify(row).includes('the-token'));
  await s.acceptUpload(upload('cnn', 'a', 1), 'the-token');
  await server!.kill();
  await assert.rejects(s.acceptUpload(upload('cnn', 'a', 2), 'the-token'), is('unavailable', /PostgreSQL at postgres:\/\/postgres@127\.0\.0\.1:\d+\/fleet_raw is unavailable/));
  await server!.start();
  await s.acceptUpload(upload('cnn', 'a', 2), 'the-token');
  assert.deepEqual((await s.uploads('cnn', 'a')).map((u) => u.round), [1, 2]);
  await s.close();
});
