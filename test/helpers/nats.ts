// A throwaway NATS server with JetStream for tests and benchmarks: a free loopback port, a
// temporary store directory, stopped and removed after (also when the process exits early).
// restart() brings it back on the same port with the same store, as an operator's restart would.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { track, release, stopProcess, freePort } from './throwaway.ts';

export interface NatsServer {
  url: string;
  port: number;
  dir: string;
  /** The running server's process id (undefined while stopped), e.g. to read its CPU time. */
  pid(): number | undefined;
  /** Graceful stop (SIGTERM), waits for the exit. The store directory stays until cleanup(). */
  stop(): Promise<void>;
  /** Starts it again on the same port and store directory; waits until it accepts clients. */
  restart(): Promise<void>;
  /** SIGKILL, as a crash: nothing flushed beyond what the server already wrote. */
  kill(): Promise<void>;
  /** Stops it and removes the store directory. */
  cleanup(): Promise<void>;
}

export const NATS_MISSING = 'nats-server not installed (.ci/run installs the Debian package nats-server)';

/** The nats-server binary, or undefined when it is not installed. */
export function natsServerBin(): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/local/sbin'];
  for (const d of dirs) if (d && existsSync(join(d, 'nats-server'))) return join(d, 'nats-server');
  return undefined;
}

/** Resolves when the server on `port` sends its INFO line advertising JetStream. */
async function waitReady(port: number, proc: ChildProcess, log: () => string, timeoutMs = 10_000): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`nats-server exited (${proc.exitCode ?? proc.signalCode}) before it was ready:\n${log()}`);
    const ok = await new Promise<boolean>((res) => {
      const s = tcpConnect(port, '127.0.0.1');
      let buf = '';
      const done = (v: boolean) => {
        s.destroy();
        res(v);
      };
      s.setTimeout(500, () => done(false));
      s.on('data', (d) => {
        buf += d;
        if (buf.includes('\n')) done(buf.startsWith('INFO ') && buf.includes('"jetstream":true'));
      });
      s.on('error', () => done(false));
    });
    if (ok) return;
    if (Date.now() - t0 > timeoutMs) throw new Error(`nats-server on port ${port} not ready after ${timeoutMs} ms:\n${log()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Starts nats-server -js; undefined when the binary is missing (the caller skips with NATS_MISSING). */
export async function startNats(): Promise<NatsServer | undefined> {
  const bin = natsServerBin();
  if (!bin) return undefined;
  const dir = mkdtempSync(join(tmpdir(), 'refit-nats-'));
  const port = await freePort();
  const entry = track(dir);
  let log = '';

  const launch = async () => {
    log = '';
    const proc = spawn(bin, ['-js', '-sd', dir, '-p', String(port), '-a', '127.0.0.1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    proc.stdout!.on('data', (d) => (log = (log + d).slice(-4000)));
    proc.stderr!.on('data', (d) => (log = (log + d).slice(-4000)));
    entry.proc = proc;
    await waitReady(port, proc, () => log);
  };
  // A graceful stop that takes too long becomes a kill, so a test never hangs here.
  const halt = (signal: NodeJS.Signals) => stopProcess(entry, signal, 5000);

  try {
    await launch();
  } catch (e) {
    await halt('SIGKILL');
    release(entry);
    throw e;
  }
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    dir,
    pid: () => entry.proc?.pid,
    stop: () => halt('SIGTERM'),
    kill: () => halt('SIGKILL'),
    restart: async () => {
      await halt('SIGTERM');
      await launch();
    },
    cleanup: async () => {
      await halt('SIGTERM');
      release(entry);
    },
  };
}
