// What every throwaway server for tests and benchmarks shares (PostgreSQL, NATS, S3): a free
// loopback port, its temporary directory tracked so that it is removed, and its process killed,
// when the process exits, even early, or is ended by SIGTERM/SIGINT (the test runner's timeout),
// and a stop that waits for the process to exit.
import type { ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { createServer } from 'node:net';

/** A server's directory and, while it runs, its process. */
export interface Throwaway {
  dir: string;
  proc?: ChildProcess;
}

const live = new Set<Throwaway>();
function cleanup(): void {
  for (const t of live) {
    try { t.proc?.kill('SIGKILL'); } catch { /* already gone */ }
    try { rmSync(t.dir, { recursive: true, force: true }); } catch { /* best effort */ }
  }
  live.clear();
}
process.on('exit', cleanup);
// 'exit' does not run when a signal ends the process: clean up, then end as that signal would have.
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.once(sig, () => {
    cleanup();
    process.kill(process.pid, sig);
  });
}

/** Track `dir` (and later its process) for cleanup. */
export function track(dir: string): Throwaway {
  const t: Throwaway = { dir };
  live.add(t);
  return t;
}

/** Remove the directory and stop tracking it (its process must have been stopped). */
export function release(t: Throwaway): void {
  rmSync(t.dir, { recursive: true, force: true });
  live.delete(t);
}

/** Send `signal` and wait for the exit; after `killAfterMs` (if given) a SIGKILL follows, so a caller never hangs. */
export async function stopProcess(t: Throwaway, signal: NodeJS.Signals, killAfterMs?: number): Promise<void> {
  const proc = t.proc;
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) {
    t.proc = undefined;
    return;
  }
  const exited = new Promise<void>((res) => proc.once('exit', () => res()));
  proc.kill(signal);
  const timer = killAfterMs === undefined ? undefined : setTimeout(() => proc.kill('SIGKILL'), killAfterMs);
  await exited;
  clearTimeout(timer);
  t.proc = undefined;
}

export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}
