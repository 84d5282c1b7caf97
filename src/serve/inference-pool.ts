// Plain inference off the event loop. onnxruntime-node's `run` returns a promise but runs the
// graph synchronously on the calling thread (inside a setImmediate), so while a batch runs the
// server can neither read the next request nor start a second run on an idle core: a request that
// arrives mid-run waits for the run, then for the HTTP work queued behind it (docs/serve.md, load
// test). Here each worker thread holds its own onnxruntime session per model and runs one batch at
// a time; the micro-batcher keeps one batch in flight per worker. On 2 cores, 2 workers of 1 thread
// gave the same samples/s as one session of 2 threads (batch 32: 1.02–1.04×), and a request that
// arrives during a run starts on the other core instead of waiting.
//
// Node-only (worker_threads), like the rest of src/serve.
import type { Worker } from 'node:worker_threads';
import { startModuleWorker } from '../util/worker-node.ts';
import type { SessionOptions } from '../onnx/runtime.ts';
import type { Tensor } from '../onnx/tensor.ts';
import type { WorkerRequest, WorkerReply } from './inference-worker.ts';

export interface InferencePoolOptions {
  /** Worker threads. @default 2 */
  workers?: number;
  /** onnxruntime options of every worker's sessions; `threads` is per worker. @default { threads: 1 } */
  session?: SessionOptions;
  /** Models each worker keeps loaded (least recently used dropped first). @default 16 */
  modelsPerWorker?: number;
}

interface Slot {
  worker: Worker;
  /** Runs sent and not answered, by request id. */
  pending: Set<number>;
  /** Model keys loaded, least recently used first. */
  loaded: string[];
  failed?: Error;
}

interface Waiting {
  resolve: (r: Float32Array) => void;
  reject: (e: Error) => void;
}

interface Queued extends Waiting {
  key: string;
  bytes: () => Uint8Array;
  input: string;
  x: Tensor;
  output: string;
}

export class InferencePool {
  private slots: Slot[] = [];
  private waiting = new Map<number, Waiting>();
  private queue: Queued[] = [];
  private nextId = 1;
  private closed = false;
  readonly size: number;
  private readonly modelsPerWorker: number;

  constructor(opts: InferencePoolOptions = {}) {
    this.size = opts.workers ?? 2;
    if (!Number.isInteger(this.size) || this.size < 1) throw new Error(`InferencePool: workers must be a positive integer, got ${opts.workers}`);
    this.modelsPerWorker = opts.modelsPerWorker ?? 16;
    const session = { threads: 1, ...opts.session };
    for (let i = 0; i < this.size; i++) {
      const slot: Slot = { worker: startModuleWorker(import.meta.url, 'inference-worker', { session }), pending: new Set(), loaded: [] };
      slot.worker.on('message', (m: WorkerReply) => this.onReply(slot, m));
      slot.worker.on('error', (e) => this.onExit(slot, e));
      slot.worker.on('exit', (code) => this.onExit(slot, new Error(`inference worker exited (code ${code})`)));
      slot.worker.unref(); // an idle pool does not keep the process alive; a busy worker does (pump)
      this.slots.push(slot);
    }
  }

  /** Runs sent to the workers and not yet answered, and runs waiting for a worker. */
  get inFlight(): number {
    return this.slots.reduce((a, s) => a + s.pending.size, 0) + this.queue.length;
  }

  /**
   * The `output` of `model` (identified by `key`; `bytes` is asked for only by a worker that has not
   * loaded it) for `x` fed to `input`. Each worker runs one batch at a time; runs wait in one queue
   * and go to the first idle worker, preferring one that has the model loaded. `x.data` is copied
   * to the worker, never transferred: callers keep their arrays.
   */
  run(key: string, bytes: () => Uint8Array, input: string, x: Tensor, output: string): Promise<Float32Array> {
    if (this.closed) return Promise.reject(new Error('inference pool is closed'));
    return new Promise((resolve, reject) => {
      this.queue.push({ key, bytes, input, x, output, resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    while (this.queue.length > 0) {
      const live = this.slots.filter((s) => !s.failed);
      if (live.length === 0) {
        const e = this.slots[0]!.failed!;
        for (const q of this.queue.splice(0)) q.reject(new Error(`inference workers failed: ${e.message}`));
        return;
      }
      const idle = live.filter((s) => s.pending.size === 0);
      if (idle.length === 0) return;
      const q = this.queue.shift()!;
      const slot = idle.find((s) => s.loaded.includes(q.key)) ?? idle[0]!;
      const id = this.nextId++;
      const req: WorkerRequest = { id, key: q.key, input: q.input, output: q.output, dtype: q.x.dtype, dims: [...q.x.dims], data: q.x.data };
      const at = slot.loaded.indexOf(q.key);
      if (at >= 0) slot.loaded.splice(at, 1);
      else {
        try {
          req.model = q.bytes();
        } catch (e) {
          q.reject(e as Error);
          continue;
        }
        if (slot.loaded.length >= this.modelsPerWorker) req.evict = slot.loaded.shift();
      }
      slot.loaded.push(q.key);
      if (slot.pending.size === 0) slot.worker.ref();
      slot.pending.add(id);
      this.waiting.set(id, { resolve: q.resolve, reject: q.reject });
      slot.worker.postMessage(req);
    }
  }

  /** Drop every model whose key matches from every worker (e.g. a deleted adapter's versions). */
  forget(match: (key: string) => boolean): void {
    for (const s of this.slots) {
      if (s.failed) continue;
      for (const key of s.loaded.filter(match)) s.worker.postMessage({ forget: key } satisfies WorkerRequest);
      s.loaded = s.loaded.filter((k) => !match(k));
    }
  }

  /**
   * Runs still waiting for a worker are failed; runs already on a worker finish (their callers get
   * their answers); then each worker releases its sessions and exits by itself. Terminating a
   * worker inside onnxruntime's native run aborts the whole process ("terminate called after
   * throwing an instance of 'Napi::Error'"), so a worker is terminated only if it has not exited
   * `graceMs` after it was asked to.
   */
  async close(graceMs = 10_000): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const q of this.queue.splice(0)) q.reject(new Error('inference pool closed'));
    await Promise.all(this.slots.map(async (s) => {
      if (s.failed) return;
      const exited = new Promise<void>((res) => s.worker.once('exit', () => res()));
      s.worker.ref();
      s.worker.postMessage({ close: true } satisfies WorkerRequest);
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<'late'>((res) => { timer = setTimeout(() => res('late'), graceMs); });
      if ((await Promise.race([exited, late])) === 'late') await s.worker.terminate();
      clearTimeout(timer);
    }));
    for (const w of this.waiting.values()) w.reject(new Error('inference pool closed'));
    this.waiting.clear();
  }

  private onReply(slot: Slot, m: WorkerReply): void {
    const w = this.waiting.get(m.id);
    if (!w) return;
    this.waiting.delete(m.id);
    slot.pending.delete(m.id);
    if (slot.pending.size === 0) slot.worker.unref();
    if (m.error !== undefined) {
      // A failed load leaves the model unloaded there; the next run sends the bytes again.
      if (m.unloaded) slot.loaded = slot.loaded.filter((k) => k !== m.unloaded);
      w.reject(new Error(m.error));
    } else w.resolve(m.data!);
    this.pump();
  }

  private onExit(slot: Slot, e: Error): void {
    if (slot.failed || this.closed) return;
    slot.failed = e;
    // The runs it held cannot be answered: fail them rather than leave them hanging. Later runs go
    // to the workers still alive (or fail at once when none is).
    for (const id of slot.pending) {
      this.waiting.get(id)?.reject(new Error(`inference worker failed: ${e.message}`));
      this.waiting.delete(id);
    }
    slot.pending.clear();
    this.pump();
  }
}
