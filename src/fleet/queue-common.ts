// What the in-process and the NATS JetStream job queues share: job validation (a bad job is
// refused at publish, never handed to a worker), the retry backoff schedule, the dead-letter
// record and the options both accept, so the same conformance suite can run against either.
import { FleetError, type Job } from './types.ts';

export interface RetryOptions {
  /** Deliveries before a job goes to the dead letters. @default 5 */
  maxAttempts?: number;
  /** Redelivery delay after a failed attempt n (1-based): min(cap, base * 2^(n-1)) ms. @default { base: 500, cap: 30000 } */
  backoffMs?: { base: number; cap: number };
}

/** A job that failed `attempts` times, with the last error, kept for an operator to inspect or replay. */
export interface DeadLetter {
  job: Job;
  attempts: number;
  error: string;
  at: string;
}

/** What a queue holds right now (for tests, metrics and the capacity plan). */
export interface QueueStats {
  /** Published, not yet delivered (or waiting for a redelivery). */
  waiting: number;
  /** Delivered, not yet acknowledged. */
  inFlight: number;
  deadLetters: number;
}

export function retryDefaults(o: RetryOptions): { maxAttempts: number; base: number; cap: number } {
  const maxAttempts = o.maxAttempts ?? 5;
  const base = o.backoffMs?.base ?? 500;
  const cap = o.backoffMs?.cap ?? 30_000;
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1) throw new FleetError(`queue: maxAttempts must be an integer ≥ 1, got ${maxAttempts}`);
  if (!(base >= 0) || !(cap >= base)) throw new FleetError(`queue: backoffMs needs 0 ≤ base ≤ cap, got base ${base}, cap ${cap}`);
  return { maxAttempts, base, cap };
}

/** Delay before redelivering a job whose attempt `attempt` (1-based) failed. */
export function backoffDelay(attempt: number, base: number, cap: number): number {
  return Math.min(cap, base * 2 ** Math.max(0, attempt - 1));
}

const ID = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$/;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** Throws FleetError('invalid') naming the field unless `job` is a well-formed Job; returns it. */
export function checkJob(job: unknown): Job {
  const bad = (why: string): never => {
    throw new FleetError(`queue: bad job: ${why}`, 'invalid');
  };
  if (job === null || typeof job !== 'object' || Array.isArray(job)) return bad(`expected an object, got ${job === null ? 'null' : Array.isArray(job) ? 'an array' : typeof job}`);
  const j = job as Record<string, unknown>;
  if (typeof j.id !== 'string' || !ID.test(j.id)) return bad(`id must match ${ID}, got ${JSON.stringify(j.id)}`);
  if (j.kind !== 'consolidate' && j.kind !== 'aggregate') return bad(`kind must be 'consolidate' or 'aggregate', got ${JSON.stringify(j.kind)} (job ${j.id})`);
  if (typeof j.model !== 'string' || !NAME.test(j.model)) return bad(`model must match ${NAME}, got ${JSON.stringify(j.model)} (job ${j.id})`);
  if (j.device !== undefined && (typeof j.device !== 'string' || !NAME.test(j.device))) return bad(`device must match ${NAME}, got ${JSON.stringify(j.device)} (job ${j.id})`);
  if (typeof j.round !== 'number' || !Number.isSafeInteger(j.round) || j.round < 0) return bad(`round must be an integer ≥ 0, got ${JSON.stringify(j.round)} (job ${j.id})`);
  if (j.payload !== undefined && (j.payload === null || typeof j.payload !== 'object' || Array.isArray(j.payload))) return bad(`payload must be an object when set (job ${j.id})`);
  return job as Job;
}

/** The message text of anything a handler threw. */
export function errorText(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}
