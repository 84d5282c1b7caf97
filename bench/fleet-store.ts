// Storage throughput for the fleet's capacity plan (docs/fleet.md): adapter puts/s and gets/s of
// the PostgreSQL registry (file-system blobs) against the SQLite registry, at 1 kB and 100 kB,
// and FleetStore.acceptUpload/s (PostgreSQL against in memory). Both sides are durable: SQLite
// with synchronous=FULL, PostgreSQL with fsync on and synchronous_commit on, blobs fsynced.
// Forms alternate A, B, A, B … in one process for `--rounds` rounds of `--ms` each; the report
// is the median rate of each and B/A. PostgreSQL runs on this machine (a throwaway server from
// test/helpers/postgres.ts), so its numbers include the client and the server sharing the CPUs.
//
//   npx tsx bench/fleet-store.ts [--rounds 3] [--ms 200] [--concurrency 8]   (about 20 s)
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createHash } from 'node:crypto';
import { SqliteRegistry } from '../src/registry/sqlite.ts';
import { PostgresRegistry } from '../src/registry/postgres.ts';
import { FsBlobStore } from '../src/registry/blob-store-fs.ts';
import { MemoryFleetStore } from '../src/fleet/store-memory.ts';
import { PostgresFleetStore } from '../src/fleet/store-postgres.ts';
import type { AdapterRegistry } from '../src/registry/types.ts';
import type { FleetStore } from '../src/fleet/types.ts';
import { startPostgres } from '../test/helpers/postgres.ts';
import { quantile } from './stats.ts';

const { values: args } = parseArgs({ options: { rounds: { type: 'string', default: '3' }, ms: { type: 'string', default: '200' }, concurrency: { type: 'string', default: '8' } } });
const ROUNDS = Number(args.rounds), MS = Number(args.ms), CONC = Number(args.concurrency);

/** Operations per second of `op` run by `conc` callers for MS milliseconds. */
async function rate(op: (i: number) => Promise<unknown>, conc = 1): Promise<number> {
  let n = 0;
  const t0 = performance.now(), end = t0 + MS;
  await Promise.all(Array.from({ length: conc }, async () => {
    while (performance.now() < end) await op(n++);
  }));
  return n / ((performance.now() - t0) / 1000);
}

async function ab(label: string, a: [string, () => Promise<number>], b: [string, () => Promise<number>]): Promise<void> {
  const ra: number[] = [], rb: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    ra.push(await a[1]());
    rb.push(await b[1]());
  }
  const ma = quantile(ra, 0.5), mb = quantile(rb, 0.5);
  console.log(`| ${label} | ${a[0]} ${ma.toFixed(0)}/s | ${b[0]} ${mb.toFixed(0)}/s | ${(mb / ma).toFixed(2)} |`);
}

const dir = mkdtempSync(join(tmpdir(), 'refit-bench-store-'));
const pg = await startPostgres({ fsync: true });
try {
  console.log(`rounds ${ROUNDS} × ${MS} ms per form, alternating; medians. concurrency ${CONC} where noted.\n`);
  console.log('| operation | A | B | B/A |');
  console.log('| --- | --- | --- | --- |');
  for (const size of [1024, 100 * 1024]) {
    const sqlite: AdapterRegistry = new SqliteRegistry(join(dir, `s${size}.db`), { keep: 20 });
    const pgReg = await PostgresRegistry.open(await pg.createDatabase(`r${size}`), { blobs: new FsBlobStore(join(dir, `b${size}`)), keep: 20, maxConnections: CONC });
    const filesOf = (i: number) => {
      const w = new Uint8Array(size);
      new DataView(w.buffer).setUint32(0, i); // distinct bytes per put: a new blob each time
      w[size - 1] = i & 255;
      return { weights: w, config: `{"peft_type":"LORA","i":${i}}` };
    };
    let k = 0;
    const kb = `${size / 1024} kB`;
    await ab(`put ${kb}, 1 writer`, ['sqlite', () => rate(() => sqlite.put('m', 'a', filesOf(k++)))], ['postgres+fs', () => rate(() => pgReg.put('m', 'a', filesOf(k++)))]);
    await ab(`put ${kb}, ${CONC} writers, ${CONC} adapters`, ['sqlite', () => rate((i) => sqlite.put('m', `c${i % CONC}`, filesOf(k++)), CONC)], ['postgres+fs', () => rate((i) => pgReg.put('m', `c${i % CONC}`, filesOf(k++)), CONC)]);
    await ab(`get ${kb} (sha256 checked), 1 reader`, ['sqlite', () => rate(() => sqlite.get('m', 'a'))], ['postgres+fs', () => rate(() => pgReg.get('m', 'a'))]);
    await ab(`get ${kb}, ${CONC} readers`, ['sqlite', () => rate(() => sqlite.get('m', 'a'), CONC)], ['postgres+fs', () => rate(() => pgReg.get('m', 'a'), CONC)]);
    await sqlite.close();
    await pgReg.close();
  }
  const mem: FleetStore = new MemoryFleetStore();
  const pgStore: FleetStore = await PostgresFleetStore.open(await pg.createDatabase('fleet'), { maxConnections: CONC });
  const DEVICES = 1000;
  for (const s of [mem, pgStore]) {
    for (let d = 0; d < DEVICES; d += CONC) await Promise.all(Array.from({ length: Math.min(CONC, DEVICES - d) }, (_, j) => s.registerDevice('m', `d${d + j}`, `tok${d + j}`)));
  }
  const rounds = new Map<FleetStore, number[]>([[mem, new Array(DEVICES).fill(0)], [pgStore, new Array(DEVICES).fill(0)]]);
  const accept = (s: FleetStore) => (i: number) => {
    const d = i % DEVICES;
    const round = ++rounds.get(s)![d]!;
    return s.acceptUpload({ model: 'm', device: `d${d}`, round, blobKey: `uploads/m/d${d}/${round}`, sha256: createHash('sha256').update(`${d}/${round}`).digest('hex'), samples: 8, bytes: 25_000 }, `tok${d}`);
  };
  await ab(`acceptUpload, 1 caller, ${DEVICES} devices`, ['memory', () => rate(accept(mem))], ['postgres', () => rate(accept(pgStore))]);
  await ab(`acceptUpload, ${CONC} callers`, ['memory', () => rate(accept(mem), CONC)], ['postgres', () => rate(accept(pgStore), CONC)]);
  await mem.close();
  await pgStore.close();
} finally {
  await pg.stop();
  rmSync(dir, { recursive: true, force: true });
}
