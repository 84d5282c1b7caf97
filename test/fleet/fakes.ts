// Small in-test stand-ins for the cloud-service and worker tests: a JobQueue that records what
// was published (and can fail once), and a Consolidator that averages uploads instead of
// training, so a test can tell exactly which uploads reached which adapter.
import { serializeSafetensors, parseSafetensors } from '../../src/io/safetensors.ts';
import { FleetError, type Job, type JobQueue } from '../../src/fleet/types.ts';
import type { Consolidator, ConsolidateJob } from '../../src/fleet/consolidator.ts';
import type { AdapterFiles } from '../../src/registry/types.ts';

/** Records published jobs (deduplicated by id); consume is not used by the service tests. */
export class RecordingQueue implements JobQueue {
  jobs: Job[] = [];
  failNext = false;
  async publish(job: Job) {
    if (this.failNext) { this.failNext = false; throw new FleetError('queue down (test)', 'unavailable'); }
    if (this.jobs.some((j) => j.id === job.id)) return { duplicate: true };
    this.jobs.push(structuredClone(job));
    return { duplicate: false };
  }
  async consume(): Promise<{ stop(): Promise<void> }> { throw new Error('RecordingQueue does not deliver'); }
  async close() {}
}

/**
 * A consolidator that "trains" by averaging: the adapter is one tensor `mean` = the mean of every
 * uploaded value plus the previous adapter's mean, and `n` = samples seen, so a test can tell
 * exactly which uploads reached which adapter. `calls` records each call's inputs.
 */
export function averagingConsolidator(o: { delayMs?: number } = {}): Consolidator & { calls: ConsolidateJob[] } {
  const calls: ConsolidateJob[] = [];
  const files = (mean: number, n: number): AdapterFiles => ({
    weights: serializeSafetensors(new Map([['mean', { dtype: 'float32', dims: [1], data: new Float32Array([mean]) }], ['n', { dtype: 'float32', dims: [1], data: new Float32Array([n]) }]]), { format: 'pt' }),
    config: '{"peft_type":"TEST"}\n',
  });
  return {
    calls,
    async consolidate(job) {
      calls.push(job);
      if (o.delayMs) await new Promise((r) => setTimeout(r, o.delayMs));
      let sum = 0, count = 0;
      for (const u of job.uploads) for (const v of u.data) { sum += v; count++; }
      const prev = job.adapter ? readAdapter(job.adapter) : { mean: 0, n: 0 };
      return {
        files: files(sum / count + prev.mean, prev.n + job.uploads.reduce((a, u) => a + u.dims[0]!, 0)),
        metrics: { uploads: job.uploads.length, replay: job.replay?.length ?? 0, steps: 1, skippedSteps: 0, klBefore: 1, klAfter: 0.5, agreeBefore: 0.5, agreeAfter: 0.9, teacher: 'test', ms: 0 },
      };
    },
    aggregate(inputs) {
      let w = 0, s = 0;
      for (const x of inputs) { w += x.samples; s += x.samples * readAdapter(x.files).mean; }
      return files(s / w, w);
    },
    async release() {},
  };
}

export function readAdapter(f: AdapterFiles): { mean: number; n: number } {
  const t = parseSafetensors(f.weights, 'adapter').tensors;
  return { mean: (t.get('mean')!.data as Float32Array)[0]!, n: (t.get('n')!.data as Float32Array)[0]! };
}
