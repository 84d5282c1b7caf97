// JobQueue in one process, for tests and single-machine runs: the same contract as the NATS
// JetStream queue (dedup by id within a window, at-least-once delivery, ack only after the
// handler resolves, exponential backoff after a throw, dead letters after maxAttempts), minus
// durability: the jobs live as long as the process. A consumer cannot die apart from the queue
// here, so there are no leases and keepAlive() does nothing.
import { FleetError, type ConsumeOptions, type Job, type JobContext, type JobQueue } from './types.ts';
import { backoffDelay, checkJob, errorText, retryDefaults, type DeadLetter, type QueueStats, type RetryOptions } from './queue-common.ts';

export interface MemoryQueueOptions extends RetryOptions {
  /** A job id published again within this many ms is a duplicate. @default 120000 (JetStream's default) */
  dedupWindowMs?: number;
}

interface Entry {
  job: Job;
  attempts: number;
}

interface Worker {
  handler: (job: Job, ctx: JobContext) => Promise<void>;
  limit: number;
  running: number;
  stopped: boolean;
  drained: (() => void)[];
}

export class MemoryJobQueue implements JobQueue {
  private readonly retry: { maxAttempts: number; base: number; cap: number };
  private readonly window: number;
  /** id → publish time, pruned as the window passes. Insertion order is publish order. */
  private readonly seen = new Map<string, number>();
  private readonly ready: Entry[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly workers: Worker[] = [];
  private readonly dead: DeadLetter[] = [];
  private delayed = 0;
  private inFlight = 0;
  private next = 0;
  private closed = false;

  constructor(opts: MemoryQueueOptions = {}) {
    this.retry = retryDefaults(opts);
    this.window = opts.dedupWindowMs ?? 120_000;
    if (!(this.window >= 0)) throw new FleetError(`MemoryJobQueue: dedupWindowMs must be ≥ 0, got ${opts.dedupWindowMs}`);
  }

  async publish(job: Job): Promise<{ duplicate: boolean }> {
    checkJob(job);
    if (this.closed) throw new FleetError(`MemoryJobQueue: closed, cannot publish job ${job.id}`, 'unavailable');
    const now = Date.now();
    for (const [id, t] of this.seen) {
      if (now - t < this.window) break;
      this.seen.delete(id);
    }
    if (this.seen.has(job.id)) return { duplicate: true };
    this.seen.set(job.id, now);
    // A copy, as a real queue serializes: the publisher may reuse its object.
    this.ready.push({ job: structuredClone(job), attempts: 0 });
    this.pump();
    return { duplicate: false };
  }

  async consume(handler: (job: Job, ctx: JobContext) => Promise<void>, opts: ConsumeOptions = {}): Promise<{ stop(): Promise<void> }> {
    const limit = opts.concurrency ?? 1;
    if (!Number.isInteger(limit) || limit < 1) throw new FleetError(`MemoryJobQueue.consume: concurrency must be an integer ≥ 1, got ${opts.concurrency}`);
    if (this.closed) throw new FleetError('MemoryJobQueue: closed, cannot consume', 'unavailable');
    const w: Worker = { handler, limit, running: 0, stopped: false, drained: [] };
    this.workers.push(w);
    this.pump();
    return { stop: () => this.stopWorker(w) };
  }

  /** Jobs that failed maxAttempts times, oldest first. */
  async deadLetters(): Promise<DeadLetter[]> {
    return this.dead.map((d) => structuredClone(d));
  }

  async stats(): Promise<QueueStats> {
    return { waiting: this.ready.length + this.delayed, inFlight: this.inFlight, deadLetters: this.dead.length };
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await Promise.all([...this.workers].map((w) => this.stopWorker(w)));
  }

  private stopWorker(w: Worker): Promise<void> {
    w.stopped = true;
    const i = this.workers.indexOf(w);
    if (i >= 0) this.workers.splice(i, 1);
    return w.running === 0 ? Promise.resolve() : new Promise((res) => w.drained.push(res));
  }

  /** Hands ready jobs to workers with free slots, round-robin so competing consumers share. */
  private pump(): void {
    while (this.ready.length > 0 && !this.closed) {
      let w: Worker | undefined;
      for (let k = 0; k < this.workers.length && !w; k++) {
        const c = this.workers[(this.next + k) % this.workers.length];
        if (c.running < c.limit) {
          w = c;
          this.next = (this.next + k + 1) % this.workers.length;
        }
      }
      if (!w) return;
      this.run(w, this.ready.shift()!);
    }
  }

  private run(w: Worker, e: Entry): void {
    w.running++;
    this.inFlight++;
    const attempt = ++e.attempts;
    const ctx: JobContext = { attempt, keepAlive() {} };
    // The job is acknowledged (dropped) only when the handler resolves; a throw redelivers it.
    Promise.resolve()
      .then(() => w.handler(structuredClone(e.job), ctx))
      .then(
        () => {},
        (err) => this.failed(e, attempt, err),
      )
      .finally(() => {
        w.running--;
        this.inFlight--;
        if (w.running === 0) for (const res of w.drained.splice(0)) res();
        this.pump();
      });
  }

  private failed(e: Entry, attempt: number, err: unknown): void {
    if (attempt >= this.retry.maxAttempts) {
      this.dead.push({ job: e.job, attempts: attempt, error: errorText(err), at: new Date().toISOString() });
      return;
    }
    if (this.closed) return;
    this.delayed++;
    const t = setTimeout(() => {
      this.timers.delete(t);
      this.delayed--;
      this.ready.push(e);
      this.pump();
    }, backoffDelay(attempt, this.retry.base, this.retry.cap));
    this.timers.add(t);
  }
}
