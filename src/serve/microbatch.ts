// Micro-batching for plain inference: concurrent predict requests for the same model (and the
// same registry adapter version) are joined into one onnxruntime run, which is far cheaper per
// sample at batch 32 than at batch 1. While `maxInFlight` runs are in flight, requests that
// arrive wait and go together in the next run as soon as one ends (under load the batch grows by
// itself). With a run slot free, the first request waits at most `maxWaitMs` for companions. A
// batch is sent at once when it reaches `maxSamples`. On the event loop's thread one run is in
// flight (onnxruntime-node's run blocks that thread anyway); with an inference pool
// (inference-pool.ts) one per worker, so a request that arrives during a run starts on an idle
// worker instead of waiting. Requests with adaptation never go through here: each tenant's batch
// is its own adaptation step.
import type { RefitModel } from '../model.ts';
import type { Tensor } from '../onnx/tensor.ts';

/** Runs one joined batch: the logits rows of `x`, [n·classes]. */
export type BatchRunner = (x: Tensor) => Promise<Float32Array>;

/** A runner on the event loop's thread: `model.run`, output `logits`. */
export function modelRunner(model: RefitModel, logits: string): BatchRunner {
  const input = model.inputs[0]!.name;
  return async (x) => (await model.run({ [input]: x }, { outputs: [logits] }))[logits]!.data as Float32Array;
}

export interface MicroBatchOptions {
  /** Longest wait of a request for others to join it when no run is in flight; 0 turns micro-batching off. @default 2 */
  maxWaitMs?: number;
  /** Samples at which a batch is sent without waiting (and the most one run takes). @default 32 */
  maxSamples?: number;
  /** onnxruntime runs of one batcher at once. @default 1 (the server sets it to its inference workers) */
  maxInFlight?: number;
}

interface Pending {
  x: Tensor;
  resolve: (logits: Float32Array) => void;
  reject: (e: unknown) => void;
  /** performance.now() when the request reached the batcher. */
  at: number;
}

/** What the server's metrics see of the batcher: where a request's time goes before its answer. */
export interface BatchObserver {
  /** A batch is sent: its requests, its samples, and how long each request waited for it (ms). */
  batch?(requests: number, samples: number, waitedMs: readonly number[]): void;
  /** A run ended (answered or failed): its samples and its time from send to answer (ms). */
  run?(samples: number, ms: number): void;
}

export class MicroBatcher {
  private pending: Pending[] = [];
  private samples = 0;
  private inFlight = 0;
  private timer: NodeJS.Timeout | undefined;
  readonly maxWaitMs: number;
  readonly maxSamples: number;
  readonly maxInFlight: number;

  constructor(
    readonly runBatch: BatchRunner,
    opts: MicroBatchOptions = {},
    /** Told of each batch sent and each run ended (for the metrics). */
    readonly observer: BatchObserver = {},
  ) {
    this.maxWaitMs = opts.maxWaitMs ?? 2;
    this.maxSamples = opts.maxSamples ?? 32;
    this.maxInFlight = opts.maxInFlight ?? 1;
  }

  /** The logits rows of `x`, computed alone or with requests that arrive within the wait. */
  run(x: Tensor): Promise<Float32Array> {
    return new Promise((resolve, reject) => {
      if (this.maxWaitMs <= 0) {
        // Off: every request is its own run, at once.
        void this.send([{ x, resolve, reject, at: performance.now() }], x.dims[0]!);
        return;
      }
      this.pending.push({ x, resolve, reject, at: performance.now() });
      this.samples += x.dims[0]!;
      if (this.inFlight >= this.maxInFlight) return; // taken when the run in flight ends
      if (this.samples >= this.maxSamples) this.flush();
      else this.timer ??= setTimeout(() => this.flush(), this.maxWaitMs);
    });
  }

  private flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    while (this.pending.length > 0 && this.inFlight < this.maxInFlight) {
      // Up to maxSamples (a single request over it goes alone); the rest waits for the next run.
      let k = 0, samples = 0;
      while (k < this.pending.length && (k === 0 || samples + this.pending[k]!.x.dims[0]! <= this.maxSamples)) samples += this.pending[k++]!.x.dims[0]!;
      const batch = this.pending.splice(0, k);
      this.samples -= samples;
      void this.send(batch, samples);
    }
  }

  private async send(batch: Pending[], samples: number): Promise<void> {
    this.inFlight++;
    const first = batch[0]!.x;
    let x = first;
    if (batch.length > 1) {
      // One array of the requests' type (float32 samples, or token ids).
      const per = first.data.length / first.dims[0]!;
      const data = new (first.data.constructor as new (n: number) => Float32Array)(samples * per);
      let off = 0;
      for (const p of batch) {
        data.set(p.x.data as Float32Array, off);
        off += p.x.data.length;
      }
      x = { dtype: first.dtype, dims: [samples, ...first.dims.slice(1)], data };
    }
    const sent = performance.now();
    this.observer.batch?.(batch.length, samples, batch.map((p) => sent - p.at));
    try {
      const d = await this.runBatch(x).finally(() => this.observer.run?.(samples, performance.now() - sent));
      const C = d.length / samples;
      let row = 0;
      for (const p of batch) {
        const n = p.x.dims[0]!;
        p.resolve(batch.length === 1 ? d : d.subarray(row * C, (row + n) * C));
        row += n;
      }
    } catch (e) {
      for (const p of batch) p.reject(e);
    } finally {
      this.inFlight--;
      // What arrived during the run goes now, without waiting for more.
      if (this.pending.length > 0 && this.maxWaitMs > 0) this.flush();
    }
  }
}
