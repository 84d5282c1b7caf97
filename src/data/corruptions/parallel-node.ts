/**
 * Node-only: run many corruptions over one image set on a pool of worker threads.
 * Results are identical to calling `corrupt` serially (each image's randomness depends only
 * on the seed, the type, the severity and the image's index).
 */
import { availableParallelism } from 'node:os';
import { startModuleWorker } from '../../util/worker-node.ts';
import { assertCorruptionName, assertSeverity } from './index.ts';

export interface CorruptJob {
  type: string;
  severity: number;
  seed: number;
}

export interface ParallelOptions {
  /** Worker threads (default: available cores, at most jobs x chunks). */
  workers?: number;
  /** Images per work unit (default 2500). */
  chunk?: number;
  /** Return the corrupted sets (default true). false: compute and discard (benchmarks). */
  keep?: boolean;
}

/** Messages between the pool and a worker. */
export interface WorkerInit {
  images: SharedArrayBuffer;
  n: number;
  h: number;
  w: number;
}
export interface WorkerTask {
  id: number;
  type: string;
  severity: number;
  seed: number;
  start: number;
  end: number;
  /** Shared output for the whole job (absent when results are discarded). */
  out?: SharedArrayBuffer;
}

/**
 * Corrupt `images` (n x h x w floats) once per job, on worker threads. Resolves to one
 * Float32Array per job (backed by a SharedArrayBuffer), or nulls when keep is false.
 */
export async function corruptParallel(
  images: Float32Array,
  n: number,
  h: number,
  w: number,
  jobs: readonly CorruptJob[],
  opts: ParallelOptions = {},
): Promise<(Float32Array | null)[]> {
  for (const j of jobs) {
    assertCorruptionName(j.type);
    assertSeverity(j.severity);
  }
  if (images.length !== n * h * w) throw new Error(`corruptParallel: images has ${images.length} values, expected ${n * h * w}`);
  const keep = opts.keep ?? true;
  const chunk = Math.max(1, opts.chunk ?? 2500);
  const shared = new SharedArrayBuffer(images.byteLength);
  new Float32Array(shared).set(images);
  const outs = jobs.map(() => (keep ? new SharedArrayBuffer(n * h * w * 4) : undefined));
  const tasks: WorkerTask[] = [];
  jobs.forEach((j, k) => {
    for (let s = 0; s < n; s += chunk) {
      const t: WorkerTask = { id: tasks.length, type: j.type, severity: j.severity, seed: j.seed, start: s, end: Math.min(n, s + chunk) };
      const out = outs[k];
      if (out) t.out = out;
      tasks.push(t);
    }
  });
  const nWorkers = Math.max(1, Math.min(opts.workers ?? availableParallelism(), tasks.length));
  const init: WorkerInit = { images: shared, n, h, w };
  let next = 0;
  await Promise.all(
    Array.from({ length: nWorkers }, async () => {
      const worker = startModuleWorker(import.meta.url, 'worker-node', init);
      try {
        await new Promise<void>((resolve, reject) => {
          const feed = () => {
            if (next >= tasks.length) return resolve();
            worker.postMessage(tasks[next++]);
          };
          worker.on('message', (m: { ok: boolean; error?: string }) => {
            if (!m.ok) reject(new Error(`corruption worker failed: ${m.error}`));
            else feed();
          });
          worker.on('error', reject);
          worker.on('exit', (code) => {
            if (code !== 0) reject(new Error(`corruption worker exited with code ${code}`));
          });
          feed();
        });
      } finally {
        await worker.terminate();
      }
    }),
  );
  return outs.map((o) => (o ? new Float32Array(o) : null));
}
