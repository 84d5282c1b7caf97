// Score an adapter on a labelled stream: error per batch and per domain.
import type { Adapter } from './types.ts';
import type { Stream } from '../data/streams.ts';
import { f32 } from '../onnx/tensor.ts';
import { argmaxRows } from '../data/evaluate.ts';

export interface StreamScore {
  method: string;
  /** Error (0..1) of each batch, in stream order. */
  batchErrors: number[];
  /** Error per domain, in the order domains first appear. */
  domains: { domain: string; severity: number; round: number; error: number; samples: number }[];
  meanError: number;
  /** Mean wall time per batch (predict + adapt), ms, after the first batch (or of the only one), without later one-time set-up (`info.setupMs`). */
  msPerBatch: number;
  /**
   * Wall time of the first batch, ms: it compiles the method's graphs and does one-off preparation
   * (EATA's Fisher, RMT's warm-up); plus one-time set-up met later (the continual controller's deep
   * learner, built when level 3 first needs it).
   */
  firstBatchMs: number;
  skipped: number;
  /** Per batch, for methods that report one in `info.extra` (the continual controller): its level and drift alarms. */
  levels?: number[];
  drifts?: number[];
}

export async function runStream(adapter: Adapter, stream: Stream, onBatch?: (done: number) => void): Promise<StreamScore> {
  const batchErrors: number[] = [];
  const perDomain = new Map<string, { domain: string; severity: number; round: number; wrong: number; samples: number }>();
  let ms = 0, firstBatchMs = 0, skipped = 0;
  let levels: number[] | undefined, drifts: number[] | undefined;
  for (const b of stream) {
    const x = f32([b.size, 1, 28, 28], b.x);
    const r = await adapter.predict(x);
    if (batchErrors.length === 0) firstBatchMs = r.info.ms;
    else {
      const setup = r.info.setupMs ?? 0;
      firstBatchMs += setup;
      ms += r.info.ms - setup;
    }
    skipped = r.info.skipped;
    if (r.info.extra?.level !== undefined) (levels ??= []).push(r.info.extra.level);
    if (r.info.extra?.drift) (drifts ??= []).push(batchErrors.length);
    const pred = argmaxRows(r.logits.data as Float32Array, r.logits.dims[1]!);
    let wrong = 0;
    for (let i = 0; i < b.size; i++) if (pred[i] !== b.y[i]) wrong++;
    batchErrors.push(wrong / b.size);
    const key = `${b.round}|${b.domain}|${b.severity}`;
    const d = perDomain.get(key) ?? { domain: b.domain, severity: b.severity, round: b.round, wrong: 0, samples: 0 };
    d.wrong += wrong;
    d.samples += b.size;
    perDomain.set(key, d);
    onBatch?.(batchErrors.length);
  }
  const domains = [...perDomain.values()].map((d) => ({ domain: d.domain, severity: d.severity, round: d.round, error: d.wrong / d.samples, samples: d.samples }));
  return {
    method: adapter.name,
    batchErrors,
    domains,
    meanError: domains.reduce((s, d) => s + d.error, 0) / Math.max(1, domains.length),
    msPerBatch: batchErrors.length > 1 ? ms / (batchErrors.length - 1) : firstBatchMs,
    firstBatchMs,
    skipped,
    ...(levels ? { levels, drifts: drifts ?? [] } : {}),
  };
}
