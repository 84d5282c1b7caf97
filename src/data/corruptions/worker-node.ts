/** Worker thread body for corruptParallel (parallel-node.ts). */
import { parentPort, workerData } from 'node:worker_threads';
import { corrupt } from './index.ts';
import type { WorkerInit, WorkerTask } from './parallel-node.ts';

const init = workerData as WorkerInit;
const images = new Float32Array(init.images);
const px = init.h * init.w;

parentPort!.on('message', (t: WorkerTask) => {
  try {
    const count = t.end - t.start;
    const ids = new Uint32Array(count);
    for (let i = 0; i < count; i++) ids[i] = t.start + i;
    const src = images.subarray(t.start * px, t.end * px);
    const opts = t.out ? { ids, out: new Float32Array(t.out, t.start * px * 4, count * px) } : { ids };
    corrupt(src, count, init.h, init.w, t.type, t.severity, t.seed, opts);
    parentPort!.postMessage({ ok: true });
  } catch (e) {
    parentPort!.postMessage({ ok: false, error: (e as Error).stack ?? String(e) });
  }
});
