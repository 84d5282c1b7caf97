// A throwaway PostgreSQL for tests: initdb into a fresh temporary directory, started on a free
// local port with its unix socket in that directory and trust auth on localhost only. initdb
// and postgres refuse to run as root, so as root they run as the `postgres` user (setpriv), and
// the directory is chowned to it. The server is stopped and the directory removed when the test
// file ends, and on process exit even after a failure. One server per test file; tests take a
// fresh database each (createDatabase), which costs a template copy, not a new server.
import { spawn, spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { track, release, stopProcess, freePort } from './throwaway.ts';

/** Why the PostgreSQL tests skip here, or undefined when a server can be started. */
export function postgresMissing(): string | undefined {
  return findBin() ? undefined : "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): install Debian's 'postgresql' package (.ci/run installs it)";
}

function findBin(): string | undefined {
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return undefined;
  const versions = readdirSync(base).filter((v) => existsSync(join(base, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a));
  return versions.length ? join(base, versions[0]!, 'bin') : undefined;
}

export interface Postgres {
  /** postgres://postgres@127.0.0.1:PORT/postgres */
  url: string;
  port: number;
  /** A new empty database; its URL. */
  createDatabase(name?: string): Promise<string>;
  /** Fast shutdown (SIGINT) and start again on the same port and data. */
  restart(): Promise<void>;
  /** Immediate shutdown (SIGQUIT: no checkpoint, crash recovery on the next start), leaving it down until start(). */
  kill(): Promise<void>;
  /** Start again after kill() or stop(). */
  start(): Promise<void>;
  /** Stop the server and remove its directory. */
  stop(): Promise<void>;
}

export async function startPostgres(opts: { fsync?: boolean } = {}): Promise<Postgres> {
  const bin = findBin();
  if (!bin) throw new Error(postgresMissing());
  const dir = mkdtempSync(join(tmpdir(), 'refit-pg-'));
  const state = track(dir);
  const asRoot = process.getuid?.() === 0;
  let uid = 0, gid = 0;
  if (asRoot) {
    uid = Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim());
    gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim());
    if (!Number.isInteger(uid) || uid <= 0) throw new Error("running as root and there is no 'postgres' user to run the server as (Debian's postgresql package creates it)");
    chownSync(dir, uid, gid);
  }
  const cmd = (exe: string, args: string[]): [string, string[]] =>
    asRoot ? ['setpriv', ['--reuid=postgres', '--regid=postgres', '--init-groups', join(bin, exe), ...args]] : [join(bin, exe), args];
  const data = join(dir, 'data');
  const [ic, ia] = cmd('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync', '--no-instructions']);
  const init = spawnSync(ic, ia, { encoding: 'utf8' });
  if (init.status !== 0) {
    release(state);
    throw new Error(`initdb failed (${init.status}): ${init.stderr || init.stdout}`);
  }
  // Only local connections, all trusted: the server lives for one test file.
  writeFileSync(join(data, 'pg_hba.conf'), 'local all all trust\nhost all all 127.0.0.1/32 trust\n');
  if (asRoot) chownSync(join(data, 'pg_hba.conf'), uid, gid);
  const port = await freePort();
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;

  const start = async (): Promise<void> => {
    // fsync off by default: a throwaway server survives process kills either way (the OS keeps
    // the writes); only a machine crash would need it. Benchmarks turn it on.
    const durability = opts.fsync ? [] : ['-c', 'fsync=off', '-c', 'full_page_writes=off'];
    const [pc, pa] = cmd('postgres', ['-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1', ...durability, '-c', 'max_connections=200']);
    const proc = spawn(pc, pa, { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    proc.stderr!.on('data', (d) => { log = (log + d).slice(-4000); });
    state.proc = proc;
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`postgres exited (${proc.exitCode}): ${log}`);
      const c = new pg.Client({ connectionString: url });
      c.on('error', () => {});
      try {
        await c.connect();
        await c.query('SELECT 1');
        await c.end();
        return;
      } catch {
        await c.end().catch(() => {});
        if (Date.now() > deadline) throw new Error(`postgres did not accept connections within 15 s: ${log}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  };
  const shutdown = (signal: NodeJS.Signals) => stopProcess(state, signal);
  try {
    await start();
  } catch (e) {
    await shutdown('SIGKILL');
    release(state);
    throw e;
  }
  let n = 0;
  return {
    url, port,
    async createDatabase(name = `t${process.pid}_${++n}`) {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      try {
        await c.query(`CREATE DATABASE "${name}"`);
      } finally {
        await c.end();
      }
      return `postgres://postgres@127.0.0.1:${port}/${name}`;
    },
    async restart() {
      await shutdown('SIGINT');
      await start();
    },
    async kill() {
      await shutdown('SIGQUIT');
    },
    start,
    async stop() {
      await shutdown('SIGINT');
      release(state);
    },
  };
}
