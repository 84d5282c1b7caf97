// What the PostgreSQL stores (registry, fleet store) share: versioned migrations applied in one
// transaction under an advisory lock (two processes opening a fresh database at once do not
// both migrate), transactions on one pooled client, and the mapping of a lost connection
// (server restarted, refused, reset) to one clear "unavailable" error. pg.Pool reconnects by
// itself: the call after the server is back gets a new connection.
import pg from 'pg';

export type Pool = pg.Pool;
export type PoolClient = pg.PoolClient;

/** SQLSTATE classes and node error codes that mean "no usable connection", not "bad request". */
const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ENOTFOUND', 'EHOSTUNREACH', '57P01', '57P02', '57P03', '53300']);

export function isConnectionError(e: unknown): boolean {
  const err = e as { code?: string; message?: string };
  if (typeof err?.code === 'string' && (CONNECTION_CODES.has(err.code) || err.code.startsWith('08'))) return true;
  return typeof err?.message === 'string' && /Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error|Connection ended|not queryable/i.test(err.message);
}

/** The URL without its password, for messages. */
export function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable URL)';
  }
}

/**
 * A pool that never crashes the process: pg emits 'error' on idle clients whose server went
 * away, and an unhandled 'error' event would throw.
 */
export function makePool(url: string, opts: { max?: number } = {}): Pool {
  const pool = new pg.Pool({ connectionString: url, max: opts.max ?? 10, connectionTimeoutMillis: 5000, idleTimeoutMillis: 10_000 });
  pool.on('error', () => { /* the next checkout reconnects */ });
  return pool;
}

/** Runs `fn` on one checked-out client; a client whose connection broke is destroyed, not reused. */
export async function withClient<T>(pool: Pool, fn: (c: PoolClient) => Promise<T>): Promise<T> {
  const c = await pool.connect();
  const onError = () => { /* surfaced by the query in flight, or by the next one */ };
  c.on('error', onError);
  let broken = false;
  try {
    return await fn(c);
  } catch (e) {
    broken = isConnectionError(e);
    throw e;
  } finally {
    c.off('error', onError);
    c.release(broken ? true : undefined);
  }
}

/** BEGIN … COMMIT on `c`, ROLLBACK when `fn` throws. */
export async function inTransaction<T>(c: PoolClient, fn: () => Promise<T>): Promise<T> {
  await c.query('BEGIN');
  try {
    const r = await fn();
    await c.query('COMMIT');
    return r;
  } catch (e) {
    await c.query('ROLLBACK').catch(() => {});
    throw e;
  }
}

/**
 * Applies the migrations after the recorded version, all in one transaction, recording each in
 * `table` (created if needed). Returns the version now. Throws `newer(at)` when the database is
 * newer than `migrations` know.
 */
export async function migrate(pool: Pool, table: string, migrations: Record<number, string>, newer: (at: number) => Error): Promise<number> {
  const latest = Math.max(...Object.keys(migrations).map(Number));
  return withClient(pool, (c) => inTransaction(c, async () => {
    // One lock per table name: concurrent openers wait here, then find the work done.
    await c.query('SELECT pg_advisory_xact_lock(hashtext($1))', [table]);
    await c.query(`CREATE TABLE IF NOT EXISTS ${table} (version INTEGER NOT NULL, applied_at TEXT NOT NULL)`);
    const at = (await c.query(`SELECT COALESCE(MAX(version), 0) AS v FROM ${table}`)).rows[0].v as number;
    if (at > latest) throw newer(at);
    for (let v = at + 1; v <= latest; v++) {
      await c.query(migrations[v]!);
      await c.query(`INSERT INTO ${table} (version, applied_at) VALUES ($1, $2)`, [v, new Date().toISOString()]);
    }
    return latest;
  }));
}
