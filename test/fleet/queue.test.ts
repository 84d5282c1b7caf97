// One conformance suite for both JobQueue implementations (in-process and NATS JetStream), then
// the NATS fault tests issue 15 asks for: a worker killed mid-job, the server restarted while
// jobs flow, the connection dropped and restored under an idle consumer.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FleetError, type Job, type JobQueue } from '../../src/fleet/types.ts';
import type { DeadLetter, QueueStats, RetryOptions } from '../../src/fleet/queue-common.ts';
import { MemoryJobQueue } from '../../src/fleet/queue-memory.ts';
import { NatsJobQueue } from '../../src/fleet/queue-nats.ts';
import { NATS_MISSING, startNats, type NatsServer } from '../helpers/nats.ts';
import { commitOnce } from './queue-commit.ts';

type Q = JobQueue & { deadLetters(): Promise<DeadLetter[]>; stats(): Promise<QueueStats> };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const job = (id: string, payload?: Record<string, unknown>): Job => ({ id, kind: 'consolidate', model: 'm', device: 'd1', round: 1, ...(payload ? { payload } : {}) });

async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

let nats: NatsServer | undefined;
let prefixes = 0;
const natsQueue = (o: RetryOptions & { ackWaitMs?: number; publishTimeoutMs?: number } = {}) =>
  NatsJobQueue.connect({ servers: nats!.url, prefix: `t${process.pid}_${prefixes++}`, ackWaitMs: o.ackWaitMs ?? 2000, warn: () => {}, ...o });

before(async () => {
  nats = await startNats();
});
after(async () => {
  await nats?.cleanup();
});

type MakeOptions = RetryOptions & { ackWaitMs?: number };
const impls: { name: string; make: (o?: MakeOptions) => Promise<Q> }[] = [
  // No leases in one process: ackWaitMs has no meaning there.
  { name: 'MemoryJobQueue', make: async ({ ackWaitMs: _a, ...o } = {}) => new MemoryJobQueue(o) },
  { name: 'NatsJobQueue', make: (o = {}) => natsQueue(o) },
];

// The two implementations' suites run side by side too (the fault tests below, which stop the
// shared server, run alone after them).
describe('JobQueue conformance', { concurrency: true }, () => {
  for (const impl of impls) {
    // Each test has its own queue (and, on NATS, its own streams), so they run side by side.
    describe(`${impl.name} conformance`, { concurrency: true }, () => {
      const queues: Q[] = [];
      const make = async (o?: MakeOptions) => {
        const q = await impl.make(o);
        queues.push(q);
        return q;
      };
      after(async () => {
        await Promise.all(queues.map((q) => q.close()));
      });
      const skip = () => impl.name === 'NatsJobQueue' && !nats;

      it('refuses a malformed job with FleetError(invalid), publishes nothing', async (t) => {
        if (skip()) return t.skip(NATS_MISSING);
        const q = await make();
        for (const bad of [null, {}, { ...job('a'), id: '' }, { ...job('a'), kind: 'x' }, { ...job('a'), round: -1 }, { ...job('a'), model: '../x' }]) {
          await assert.rejects(q.publish(bad as Job), (e: unknown) => e instanceof FleetError && e.code === 'invalid');
        }
        assert.equal((await q.stats()).waiting, 0);
      });

      it('dedup: the same id published twice is delivered once', async (t) => {
        if (skip()) return t.skip(NATS_MISSING);
        const q = await make();
        assert.deepEqual(await q.publish(job('dup-1')), { duplicate: false });
        assert.deepEqual(await q.publish(job('dup-1', { other: 1 })), { duplicate: true });
        assert.deepEqual(await q.publish(job('dup-2')), { duplicate: false });
        const seen: string[] = [];
        const c = await q.consume(async (j) => {
          seen.push(j.id);
        });
        await until('two deliveries', () => seen.length >= 2);
        await sleep(300);
        await c.stop();
        assert.deepEqual(seen.sort(), ['dup-1', 'dup-2']);
      });

      it('at-least-once: a handler that throws twice gets a third attempt, after growing backoff', async (t) => {
        if (skip()) return t.skip(NATS_MISSING);
        const q = await make({ maxAttempts: 5, backoffMs: { base: 200, cap: 2000 } });
        const at: { attempt: number; t: number }[] = [];
        let done = false;
        const c = await q.consume(async (_j, ctx) => {
          at.push({ attempt: ctx.attempt, t: performance.now() });
          if (at.length <= 2) throw new Error(`transient ${at.length}`);
          done = true;
        });
        await q.publish(job('retry-1'));
        await until('the third attempt', () => done);
        await sleep(200);
        await c.stop();
        assert.deepEqual(at.map((a) => a.attempt), [1, 2, 3]);
        const gap1 = at[1].t - at[0].t, gap2 = at[2].t - at[1].t;
        // Backoff base * 2^(n-1): ≥ 200 then ≥ 400 ms (a few ms of timer slack).
        assert.ok(gap1 >= 190, `first redelivery after ${gap1.toFixed(0)} ms, expected ≥ 200`);
        assert.ok(gap2 >= 390, `second redelivery after ${gap2.toFixed(0)} ms, expected ≥ 400`);
        assert.ok(gap2 > gap1 * 1.5, `backoff grows: ${gap1.toFixed(0)} then ${gap2.toFixed(0)} ms`);
        assert.equal((await q.deadLetters()).length, 0);
      });

      it('dead letter after maxAttempts, with the last error, and no further attempt', async (t) => {
        if (skip()) return t.skip(NATS_MISSING);
        const q = await make({ maxAttempts: 3, backoffMs: { base: 50, cap: 100 } });
        let calls = 0;
        const c = await q.consume(async (_j, ctx) => {
          calls++;
          throw new Error(`boom on attempt ${ctx.attempt}`);
        });
        await q.publish(job('dead-1', { x: 1 }));
        await until('a dead letter', async () => (await q.deadLetters()).length > 0);
        await sleep(400);
        await c.stop();
        const dead = await q.deadLetters();
        assert.equal(dead.length, 1);
        assert.equal(dead[0].job.id, 'dead-1');
        assert.deepEqual(dead[0].job.payload, { x: 1 });
        assert.equal(dead[0].attempts, 3);
        assert.match(dead[0].error, /boom on attempt 3/);
        assert.equal(calls, 3);
        const s = await q.stats();
        assert.equal(s.waiting + s.inFlight, 0, `nothing left to deliver: ${JSON.stringify(s)}`);
      });

      it('acknowledges only after the handler resolves', async (t) => {
        if (skip()) return t.skip(NATS_MISSING);
        const q = await make();
        let release!: () => void;
        const gate = new Promise<void>((r) => (release = r));
        let entered = false;
        let calls = 0;
        const c = await q.consume(async () => {
          calls++;
          entered = true;
          await gate;
        });
        await q.publish(job('ack-1'));
        await until('the handler to start', () => entered);
        await sleep(100);
        assert.deepEqual(await q.stats(), { waiting: 0, inFlight: 1, deadLetters: 0 }, 'held, not acknowledged, while the handler runs');
        release();
        await until('the ack', async () => (await q.stats()).inFlight === 0);
        await sleep(200);
        await c.stop();
        assert.equal(calls, 1);
        assert.deepEqual(await q.stats(), { waiting: 0, inFlight: 0, deadLetters: 0 });
      });

      it('keepAlive() holds a job past its lease: one delivery, not a redelivery to a second worker', async (t) => {
        if (skip()) return t.skip(NATS_MISSING);
        const q = await make({ ackWaitMs: 1000 });
        const attempts: number[] = [];
        const handler = async (_j: Job, ctx: { attempt: number; keepAlive(): void }) => {
          attempts.push(ctx.attempt);
          for (let i = 0; i < 25; i++) {
            await sleep(100);
            ctx.keepAlive();
          }
        };
        const [c1, c2] = [await q.consume(handler), await q.consume(handler)];
        await q.publish(job('alive-1'));
        await until('the job to finish', async () => attempts.length > 0 && (await q.stats()).inFlight === 0, 5000);
        await sleep(200);
        await Promise.all([c1.stop(), c2.stop()]);
        assert.deepEqual(attempts, [1], 'a 2.5 s job with a 1 s lease kept alive is delivered once');
      });

      it('runs at most `concurrency` jobs at once, and uses all of them', async (t) => {
        if (skip()) return t.skip(NATS_MISSING);
        const q = await make();
        let now = 0, peak = 0, done = 0;
        for (let i = 0; i < 8; i++) await q.publish(job(`conc-${i}`));
        const c = await q.consume(
          async () => {
            peak = Math.max(peak, ++now);
            await sleep(150);
            now--;
            done++;
          },
          { concurrency: 4 },
        );
        await until('eight jobs', () => done === 8);
        await c.stop();
        assert.equal(peak, 4);
      });

      it('stop() waits for the running job, then takes no more; another consumer gets them', async (t) => {
        if (skip()) return t.skip(NATS_MISSING);
        const q = await make();
        let release!: () => void;
        const gate = new Promise<void>((r) => (release = r));
        const first: string[] = [];
        const c = await q.consume(async (j) => {
          first.push(j.id);
          await gate;
        });
        await q.publish(job('stop-1'));
        await until('the first job', () => first.length === 1);
        let stopped = false;
        const stopping = c.stop().then(() => (stopped = true));
        await sleep(100);
        assert.equal(stopped, false, 'stop() resolved while a job was still running');
        release();
        await stopping;
        await q.publish(job('stop-2'));
        await sleep(300);
        assert.deepEqual(first, ['stop-1']);
        const second: string[] = [];
        const c2 = await q.consume(async (j) => {
          second.push(j.id);
        });
        await until('the second consumer', () => second.length === 1);
        await c2.stop();
        assert.deepEqual(second, ['stop-2']);
      });
    });
  }
});

describe('NatsJobQueue faults', () => {
  it('a message on the jobs subject that is not a job goes to the dead letters at once, the handler never sees it', async (t) => {
    if (!nats) return t.skip(NATS_MISSING);
    const q = await natsQueue({ maxAttempts: 5 });
    try {
      const seen: string[] = [];
      const c = await q.consume(async (j) => {
        seen.push(j.id);
      });
      const prefix = `t${process.pid}_${prefixes - 1}`;
      await q.nc.jetstream().publish(`${prefix}.jobs.consolidate`, new TextEncoder().encode('{"id": 42}'));
      await q.publish(job('after-poison'));
      await until('the good job', () => seen.length === 1);
      await until('the dead letter', async () => (await q.deadLetters()).length === 1);
      await c.stop();
      const [d] = await q.deadLetters();
      assert.equal(d.attempts, 1);
      assert.match(d.error, /bad job: id must match/);
      assert.deepEqual(seen, ['after-poison']);
    } finally {
      await q.close();
    }
  });

  it('a worker SIGKILLed mid-job: the job goes to another worker after ack_wait, its effect happens once', async (t) => {
    if (!nats) return t.skip(NATS_MISSING);
    const ackWaitMs = 1000;
    const prefix = `kill${process.pid}`;
    const dir = mkdtempSync(join(tmpdir(), 'refit-queue-commit-'));
    const q = await NatsJobQueue.connect({ servers: nats.url, prefix, ackWaitMs, maxAttempts: 3, backoffMs: { base: 100, cap: 1000 }, warn: () => {} });
    const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./queue-child.ts', import.meta.url)), nats.url, prefix, dir, String(ackWaitMs)], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      let out = '', err = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (err += d));
      await until('the child worker', () => out.includes('ready') || child.exitCode !== null, 15_000);
      assert.ok(out.includes('ready'), `child worker failed: ${err}`);
      // A: dies after committing its effect, before the ack. B: dies before committing.
      await q.publish(job('kill-A', { die: 'after-commit' }));
      await q.publish(job('kill-B', { die: 'before-commit' }));
      await until('both jobs in the child', () => out.includes('committed kill-A true 1') && out.includes('started kill-B 1'));
      const killedAt = performance.now();
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));

      const got = new Map<string, { attempt: number; created: boolean; after: number }>();
      const c = await q.consume(async (j, ctx) => {
        got.set(j.id, { attempt: ctx.attempt, created: commitOnce(dir, j.id), after: performance.now() - killedAt });
      });
      await until('both redeliveries', () => got.size === 2, 3 * ackWaitMs + 2000);
      await sleep(300);
      await c.stop();
      assert.deepEqual(got.get('kill-A')?.attempt, 2);
      assert.deepEqual(got.get('kill-B')?.attempt, 2);
      assert.equal(got.get('kill-A')?.created, false, 'A was committed by the dead worker: the redelivery must not commit again');
      assert.equal(got.get('kill-B')?.created, true, 'B was not committed before the kill: the redelivery commits it');
      assert.deepEqual(readdirSync(dir).sort(), ['kill-A', 'kill-B']);
      assert.deepEqual(await q.stats(), { waiting: 0, inFlight: 0, deadLetters: 0 });
    } finally {
      child.kill('SIGKILL');
      await q.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('server killed and restarted while jobs are published and consumed: every acknowledged publish is handled, none twice in effect', async (t) => {
    if (!nats) return t.skip(NATS_MISSING);
    const q = await natsQueue({ ackWaitMs: 1000, publishTimeoutMs: 4000, maxAttempts: 10, backoffMs: { base: 50, cap: 500 } });
    try {
      // handled: deliveries per job; applied: effects, behind a commitJob-style guard (a repeat
      // delivery finds the committed result and applies nothing).
      const handled = new Map<string, number>();
      const applied = new Map<string, number>();
      const committed = new Set<string>();
      const c = await q.consume(
        async (j) => {
          handled.set(j.id, (handled.get(j.id) ?? 0) + 1);
          await sleep(2);
          if (!committed.has(j.id)) {
            committed.add(j.id);
            applied.set(j.id, (applied.get(j.id) ?? 0) + 1);
          }
        },
        { concurrency: 2 },
      );
      const published: string[] = [];
      const failed: string[] = [];
      const N = 100;
      const publisher = (async () => {
        for (let i = 0; i < N; i++) {
          const id = `r-${i}`;
          try {
            await q.publish(job(id));
            published.push(id);
          } catch (e) {
            assert.ok(e instanceof FleetError && e.code === 'unavailable', String(e));
            failed.push(id);
          }
          await sleep(5);
        }
      })();
      await until('some jobs through', () => published.length >= 30);
      await nats.kill();
      await sleep(300);
      await nats.restart();
      await publisher;
      await until('every acknowledged publish handled', () => published.every((id) => handled.has(id)), 10_000);
      await sleep(300);
      await c.stop();
      const again = [...handled].filter(([, n]) => n > 1).length;
      t.diagnostic(`published ${published.length}, publish failed ${failed.length}, handled ${handled.size} jobs, ${again} of them delivered more than once`);
      assert.ok(published.length > N / 2, `most publishes should ride through the restart: ${published.length}/${N}`);
      for (const id of published) assert.ok(handled.has(id), `acknowledged job ${id} never handled`);
      for (const [id, n] of applied) assert.equal(n, 1, `job ${id} applied ${n} times`);
      // A job whose publish failed may still be stored (the server had it, the PubAck was lost): at most once more.
      for (const id of handled.keys()) assert.ok(published.includes(id) || failed.includes(id), `unknown job ${id}`);
    } finally {
      await q.close();
    }
  });

  it('connection dropped and restored: a waiting consumer resumes; a publish during the outage fails in bounded time', async (t) => {
    if (!nats) return t.skip(NATS_MISSING);
    const q = await natsQueue({ ackWaitMs: 1000, publishTimeoutMs: 600 });
    try {
      const seen: string[] = [];
      const c = await q.consume(async (j) => {
        seen.push(j.id);
      });
      await q.publish(job('conn-1'));
      await until('the first job', () => seen.length === 1);
      await nats.stop();
      const t0 = performance.now();
      await assert.rejects(q.publish(job('conn-lost')), (e: unknown) => e instanceof FleetError && e.code === 'unavailable');
      const waited = performance.now() - t0;
      assert.ok(waited < 5000, `publish during the outage gave up after ${waited.toFixed(0)} ms, expected about 600`);
      await sleep(500);
      await nats.restart();
      // The client reconnects on its own (every 250 ms); a caller retries a publish that gave up.
      await until('a publish after the restart', () => q.publish(job('conn-2')).then(() => true, () => false), 8000);
      await until('the consumer to resume', () => seen.includes('conn-2'), 8000);
      await c.stop();
      assert.deepEqual(seen.filter((id) => id !== 'conn-lost'), ['conn-1', 'conn-2']);
    } finally {
      await q.close();
    }
  });
});
