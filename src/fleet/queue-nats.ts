// JobQueue on NATS JetStream (nats.js v2 against nats-server ≥ 2.9). The server does the hard
// parts: a file-backed work-queue stream `<prefix>_jobs` on subjects `<prefix>.jobs.<kind>`
// deduplicates publishes by msgID (= job id) within `duplicate_window`; one durable pull
// consumer shared by every worker process hands each job to one of them, redelivers it when
// the holder dies (ack_wait, then the consumer's backoff list) and stops after max_deliver.
// This file adds: ack only after the handler resolves (and wait for the server to confirm the
// ack), nak with exponential backoff on a throw, dead letters (with the last error) in a second
// stream `<prefix>_dead`, and publishes that give up after a bounded wait during an outage
// with FleetError('unavailable') instead of hanging.
import { connect, nanos, AckPolicy, DeliverPolicy, RetentionPolicy, StorageType, type ConnectionOptions, type JsMsg, type JetStreamClient, type JetStreamManager, type NatsConnection, type Consumer } from 'nats';
import { FleetError, type ConsumeOptions, type Job, type JobContext, type JobQueue } from './types.ts';
import { backoffDelay, checkJob, errorText, retryDefaults, type DeadLetter, type QueueStats, type RetryOptions } from './queue-common.ts';

export interface NatsQueueOptions extends RetryOptions {
  /** Server URL(s), e.g. 'nats://127.0.0.1:4222'. Ignored when `connection` is given. */
  servers?: string | string[];
  /** An open connection to share; the queue then does not close it. */
  connection?: NatsConnection;
  /** Names the streams (`<prefix>_jobs`, `<prefix>_dead`), subjects and consumer. @default 'refit' */
  prefix?: string;
  /** A job id published again within this window is a duplicate. @default 120000 */
  duplicateWindowMs?: number;
  /** A delivered job not acknowledged (nor kept alive) within this time goes to another worker. @default 30000 */
  ackWaitMs?: number;
  /** Total time a publish may spend (retrying through a reconnect) before FleetError('unavailable'). @default 5000 */
  publishTimeoutMs?: number;
  /** Longest idle pull; also bounds how long stop() waits for an idle worker. ≥ 1000. @default 1000 */
  pullExpiresMs?: number;
  /** Extra connection options (reconnect policy, name). */
  connectOptions?: Partial<ConnectionOptions>;
  /** Where warnings go (a lost ack, a failed dead-letter write). @default console.warn */
  warn?: (msg: string) => void;
}

const PREFIX = /^[A-Za-z0-9_-]{1,64}$/;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class NatsJobQueue implements JobQueue {
  private readonly retry: { maxAttempts: number; base: number; cap: number };
  private readonly jobsStream: string;
  private readonly deadStream: string;
  private readonly durable: string;
  private readonly workers = new Set<{ stop(): Promise<void> }>();
  private readonly loops = new Set<Promise<unknown>>();
  private closed = false;

  private constructor(
    readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly prefix: string,
    private readonly opts: NatsQueueOptions & { ackWaitMs: number; publishTimeoutMs: number; pullExpiresMs: number; duplicateWindowMs: number },
    private readonly ownsConnection: boolean,
  ) {
    this.retry = retryDefaults(opts);
    this.jobsStream = `${prefix}_jobs`;
    this.deadStream = `${prefix}_dead`;
    this.durable = `${prefix}_workers`;
  }

  /** Connects (reconnecting forever after a loss), and creates or updates the streams and the consumer. */
  static async connect(o: NatsQueueOptions): Promise<NatsJobQueue> {
    const prefix = o.prefix ?? 'refit';
    if (!PREFIX.test(prefix)) throw new FleetError(`NatsJobQueue: prefix must match ${PREFIX}, got ${JSON.stringify(prefix)}`);
    const opts = {
      ...o,
      ackWaitMs: o.ackWaitMs ?? 30_000,
      publishTimeoutMs: o.publishTimeoutMs ?? 5000,
      pullExpiresMs: o.pullExpiresMs ?? 1000,
      duplicateWindowMs: o.duplicateWindowMs ?? 120_000,
    };
    if (!(opts.ackWaitMs >= 100)) throw new FleetError(`NatsJobQueue: ackWaitMs must be ≥ 100, got ${o.ackWaitMs}`);
    if (!(opts.pullExpiresMs >= 1000)) throw new FleetError(`NatsJobQueue: pullExpiresMs must be ≥ 1000 (the client's minimum), got ${o.pullExpiresMs}`);
    if (!(opts.publishTimeoutMs > 0)) throw new FleetError(`NatsJobQueue: publishTimeoutMs must be > 0, got ${o.publishTimeoutMs}`);
    if (!(opts.duplicateWindowMs >= 100)) throw new FleetError(`NatsJobQueue: duplicateWindowMs must be ≥ 100, got ${o.duplicateWindowMs}`);
    retryDefaults(o);
    let nc = o.connection;
    if (!nc) {
      if (!o.servers) throw new FleetError('NatsJobQueue: give servers or connection');
      try {
        nc = await connect({ servers: o.servers, maxReconnectAttempts: -1, reconnectTimeWait: 250, name: `${prefix}-queue`, ...o.connectOptions });
      } catch (e) {
        throw new FleetError(`NatsJobQueue: cannot connect to ${String(o.servers)}: ${errorText(e)}`, 'unavailable');
      }
    }
    try {
      const jsm = await nc.jetstreamManager();
      const q = new NatsJobQueue(nc, nc.jetstream(), jsm, prefix, opts, !o.connection);
      await q.setup();
      return q;
    } catch (e) {
      if (!o.connection) await nc.close().catch(() => {});
      throw e instanceof FleetError ? e : new FleetError(`NatsJobQueue: JetStream setup on ${String(o.servers ?? 'the given connection')} failed: ${errorText(e)}`, 'unavailable');
    }
  }

  private async setup(): Promise<void> {
    const p = this.prefix;
    await this.ensureStream({
      name: this.jobsStream,
      subjects: [`${p}.jobs.>`],
      storage: StorageType.File,
      // A job leaves the stream when it is acknowledged (or terminated); only one consumer may read it.
      retention: RetentionPolicy.Workqueue,
      duplicate_window: nanos(this.opts.duplicateWindowMs),
    });
    await this.ensureStream({
      name: this.deadStream,
      subjects: [`${p}.dead.>`],
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      duplicate_window: nanos(this.opts.duplicateWindowMs),
    });
    const { maxAttempts, cap } = this.retry;
    const ackWait = this.opts.ackWaitMs;
    // Redelivery after a dead holder: ack_wait, then doubling up to max(cap, ack_wait). The server
    // requires max_deliver > backoff.length; one delivery beyond maxAttempts lets the next worker
    // dead-letter a job whose last holder died instead of the server dropping it silently.
    const backoff = Array.from({ length: maxAttempts }, (_, i) => nanos(Math.min(Math.max(cap, ackWait), ackWait * 2 ** i)));
    const cfg = {
      durable_name: this.durable,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(ackWait),
      max_deliver: maxAttempts + 1,
      backoff,
      max_ack_pending: 10_000,
      filter_subject: `${p}.jobs.>`,
    };
    try {
      await this.jsm.consumers.add(this.jobsStream, cfg);
    } catch {
      // It exists with other settings (another worker's options, or an older version): take ours.
      const { durable_name: _d, deliver_policy: _p, ack_policy: _a, filter_subject: _f, ...update } = cfg;
      await this.jsm.consumers.update(this.jobsStream, this.durable, update);
    }
  }

  private async ensureStream(cfg: { name: string; subjects: string[]; storage: StorageType; retention: RetentionPolicy; duplicate_window: number }): Promise<void> {
    try {
      await this.jsm.streams.add(cfg);
    } catch {
      const { name, retention: _r, storage: _s, ...update } = cfg;
      await this.jsm.streams.update(name, update);
    }
  }

  async publish(job: Job): Promise<{ duplicate: boolean }> {
    checkJob(job);
    if (this.closed) throw new FleetError(`NatsJobQueue: closed, cannot publish job ${job.id}`, 'unavailable');
    const data = new TextEncoder().encode(JSON.stringify(job));
    const deadline = Date.now() + this.opts.publishTimeoutMs;
    let last: unknown;
    // Retried through a reconnect (or JetStream still recovering after a restart) until the
    // deadline. A publish that timed out may still have been stored; publishing again with
    // the same id is then answered as a duplicate, so retries never double a job.
    while (!this.nc.isClosed()) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      try {
        const ack = await this.js.publish(`${this.prefix}.jobs.${job.kind}`, data, { msgID: job.id, timeout: Math.max(50, Math.min(left, 2000)) });
        return { duplicate: ack.duplicate };
      } catch (e) {
        last = e;
        await sleep(Math.min(100, Math.max(0, deadline - Date.now())));
      }
    }
    throw new FleetError(`NatsJobQueue: publishing job ${job.id} failed within ${this.opts.publishTimeoutMs} ms (${last ? errorText(last) : 'connection closed'}); it may or may not be stored, publishing it again is safe`, 'unavailable');
  }

  async consume(handler: (job: Job, ctx: JobContext) => Promise<void>, opts: ConsumeOptions = {}): Promise<{ stop(): Promise<void> }> {
    const limit = opts.concurrency ?? 1;
    if (!Number.isInteger(limit) || limit < 1) throw new FleetError(`NatsJobQueue.consume: concurrency must be an integer ≥ 1, got ${opts.concurrency}`);
    if (this.closed) throw new FleetError('NatsJobQueue: closed, cannot consume', 'unavailable');
    let consumer: Consumer;
    try {
      consumer = await this.js.consumers.get(this.jobsStream, this.durable);
    } catch (e) {
      throw new FleetError(`NatsJobQueue: consumer ${this.durable} on ${this.jobsStream} unavailable: ${errorText(e)}`, 'unavailable');
    }
    let stopped = false;
    const busy = new Set<Promise<void>>();
    // One pull loop per slot: each holds at most one job, so no job waits in a client buffer
    // while its ack_wait runs out.
    const slot = async () => {
      while (!stopped && !this.nc.isClosed()) {
        let msg: JsMsg | null;
        try {
          msg = await consumer.next({ expires: this.opts.pullExpiresMs });
        } catch {
          // Disconnected, or the server is restarting: the client reconnects; try again shortly.
          await sleep(200);
          continue;
        }
        if (!msg) continue;
        if (stopped) {
          msg.nak(); // arrived after stop(): hand it straight back instead of after ack_wait
          break;
        }
        const h = this.handle(msg, handler);
        busy.add(h);
        await h;
        busy.delete(h);
      }
    };
    const loops = Promise.all(Array.from({ length: limit }, slot));
    this.loops.add(loops);
    void loops.then(() => this.loops.delete(loops));
    // stop() waits for running jobs only; an idle pull still open (≤ pullExpiresMs) ends in the
    // background and hands back whatever it receives. close() waits for those too.
    const w = {
      stop: async () => {
        stopped = true;
        await Promise.all(busy);
        this.workers.delete(w);
      },
    };
    this.workers.add(w);
    return w;
  }

  private async handle(msg: JsMsg, handler: (job: Job, ctx: JobContext) => Promise<void>): Promise<void> {
    const attempt = msg.info.deliveryCount;
    let job: Job;
    try {
      job = checkJob(msg.json());
    } catch (e) {
      // Not a job (someone else published to our subject): keep it for an operator, never retry it.
      await this.toDeadLetters(msg, { id: `seq-${msg.seq}`, kind: 'consolidate', model: 'unknown', round: 0, payload: { raw: msg.string().slice(0, 1000) } }, attempt, errorText(e));
      return;
    }
    if (attempt > this.retry.maxAttempts) {
      await this.toDeadLetters(msg, job, attempt - 1, 'the worker holding the last attempt stopped answering (ack wait expired)');
      return;
    }
    const ctx: JobContext = { attempt, keepAlive: () => msg.working() };
    try {
      await handler(job, ctx);
    } catch (e) {
      if (attempt >= this.retry.maxAttempts) await this.toDeadLetters(msg, job, attempt, errorText(e));
      else msg.nak(backoffDelay(attempt, this.retry.base, this.retry.cap));
      return;
    }
    try {
      await msg.ackAck({ timeout: Math.min(5000, this.opts.ackWaitMs) });
    } catch (e) {
      // The server may not have the ack: the job comes back after ack_wait and the handler's
      // idempotent commit (FleetStore.commitJob) makes the repeat a no-op.
      this.warn(`NatsJobQueue: ack of job ${job.id} (attempt ${attempt}) not confirmed: ${errorText(e)}; it may be redelivered`);
    }
  }

  /** Records the dead letter, then terminates the job; if the record cannot be written the job stays unacknowledged and comes back. */
  private async toDeadLetters(msg: JsMsg, job: Job, attempts: number, error: string): Promise<void> {
    const rec: DeadLetter = { job, attempts, error, at: new Date().toISOString() };
    try {
      await this.js.publish(`${this.prefix}.dead.${job.kind}`, new TextEncoder().encode(JSON.stringify(rec)), { msgID: `dead:${job.id}`, timeout: Math.min(5000, this.opts.ackWaitMs) });
    } catch (e) {
      this.warn(`NatsJobQueue: cannot record dead letter for job ${job.id}: ${errorText(e)}; leaving it for redelivery`);
      return;
    }
    msg.term();
  }

  /** Dead letters, oldest first (at most `limit`). */
  async deadLetters(limit = 10_000): Promise<DeadLetter[]> {
    const info = await this.jsm.streams.info(this.deadStream).catch((e) => {
      throw new FleetError(`NatsJobQueue: dead letters unavailable: ${errorText(e)}`, 'unavailable');
    });
    const out: DeadLetter[] = [];
    for (let seq = info.state.first_seq; seq <= info.state.last_seq && out.length < limit && info.state.messages > 0; seq++) {
      try {
        const m = await this.jsm.streams.getMessage(this.deadStream, { seq });
        out.push(m.json<DeadLetter>());
      } catch {
        // deleted sequence (an operator removed it): skip
      }
    }
    return out;
  }

  /** waiting: not yet delivered; inFlight: delivered and not acknowledged, including naked jobs waiting out their backoff. */
  async stats(): Promise<QueueStats> {
    const [ci, dead] = await Promise.all([this.jsm.consumers.info(this.jobsStream, this.durable), this.jsm.streams.info(this.deadStream)]).catch((e) => {
      throw new FleetError(`NatsJobQueue: stats unavailable: ${errorText(e)}`, 'unavailable');
    });
    return { waiting: ci.num_pending, inFlight: ci.num_ack_pending, deadLetters: dead.state.messages };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.workers].map((w) => w.stop()));
    await Promise.all(this.loops);
    if (!this.ownsConnection) return;
    // drain() flushes our acks; it waits on the server, so a dead server gets a plain close instead.
    const drained = this.nc.drain().then(() => true, () => false);
    if (!(await Promise.race([drained, sleep(2000).then(() => false)]))) await this.nc.close().catch(() => {});
  }

  private warn(m: string): void {
    (this.opts.warn ?? console.warn)(m);
  }
}
