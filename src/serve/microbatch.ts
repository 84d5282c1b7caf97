// Micro-batching for plain inference: concurrent predict requests for the same model (and the
// same registry adapter version) are joined into one onnxruntime run, which is far cheaper per
// sample at batch 32 than at batch 1. The first request of a batch waits at most `maxWaitMs`;
// a batch is sent at once when it reaches `maxSamples`. Requests with adaptation never go
// through here: each tenant's batch is its own adaptation step.
import type { RefitModel } from '../model.ts';
import type { Tensor } from '../onnx/tensor.ts';

export interface MicroBatchOptions {
  /** Longest wait of a request for others to join it; 0 turns micro-batching off. @default 2 */
  maxWaitMs?: number;
  /** Samples at which a batch is sent without waiting. @default 64 */
  maxSamples?: number;
}

interface Pending {
  x: Tensor;
  resolve: (logits: Float32Array) => void;
  reject: (e: unknown) => void;
}

export class MicroBatcher {
  private pending: Pending[] = [];
  private samples = 0;
  private timer: NodeJS.Timeout | undefined;
  readonly maxWaitMs: number;
  readonly maxSamples: number;

  constructor(
    readonly model: RefitModel,
    readonly logits: string,
    opts: MicroBatchOptions = {},
    /** Called with the size of each batch sent (for the metrics). */
    readonly onBatch: (requests: number, samples: number) => void = () => {},
  ) {
    this.maxWaitMs = opts.maxWaitMs ?? 2;
    this.maxSamples = opts.maxSamples ?? 64;
  }

  /** The logits rows of `x`, computed alone or with requests that arrive within the wait. */
  run(x: Tensor): Promise<Float32Array> {
    return new Promise((resolve, reject) => {
      this.pending.push({ x, resolve, reject });
      this.samples += x.dims[0]!;
      if (this.maxWaitMs <= 0 || this.samples >= this.maxSamples) this.flush();
      else this.timer ??= setTimeout(() => this.flush(), this.maxWaitMs);
    });
  }

  private flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.pending;
    const samples = this.samples;
    this.pending = [];
    this.samples = 0;
    if (batch.length === 0) return;
    void this.send(batch, samples);
  }

  private async send(batch: Pending[], samples: number): Promise<void> {
    const input = this.model.inputs[0]!.name;
    const first = batch[0]!.x;
    let x = first;
    if (batch.length > 1) {
      const per = first.data.length / first.dims[0]!;
      const data = new Float32Array(samples * per);
      let off = 0;
      for (const p of batch) {
        data.set(p.x.data as Float32Array, off);
        off += p.x.data.length;
      }
      x = { dtype: 'float32', dims: [samples, ...first.dims.slice(1)], data };
    }
    this.onBatch(batch.length, samples);
    try {
      const y = (await this.model.run({ [input]: x }, { outputs: [this.logits] }))[this.logits]!;
      const d = y.data as Float32Array;
      const C = d.length / samples;
      let row = 0;
      for (const p of batch) {
        const n = p.x.dims[0]!;
        p.resolve(d.slice(row * C, (row + n) * C));
        row += n;
      }
    } catch (e) {
      for (const p of batch) p.reject(e);
    }
  }
}
