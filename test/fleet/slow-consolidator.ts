// A stand-in consolidator for worker-process tests (scripts/fleet-worker.ts --consolidator-module):
// the averaging one from ./fakes.ts, slowed by REFIT_TEST_CONSOLIDATE_MS, printing a
// {"msg":"consolidating"} line first so that a test can kill the worker in the middle of a job.
import type { Consolidator } from '../../src/fleet/consolidator.ts';
import { averagingConsolidator } from './fakes.ts';

export async function createConsolidator(): Promise<Consolidator> {
  const inner = averagingConsolidator({ delayMs: Number(process.env.REFIT_TEST_CONSOLIDATE_MS ?? 0) });
  return {
    ...inner,
    consolidate(job) {
      process.stdout.write(`${JSON.stringify({ level: 'info', msg: 'consolidating', pid: process.pid, uploads: job.uploads.length })}\n`);
      return inner.consolidate(job);
    },
  };
}
