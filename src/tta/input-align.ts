// Input alignment: standardise each batch's input, channel by channel, to the source's mean and
// standard deviation before the model sees it: x' = (x − m_batch) / s_batch · s_source + m_source.
//
// BN-adapt re-estimates normalisation statistics inside the network; this does the same for the
// network's input, which has no normalisation layer of its own. Shifts that act on intensities as
// a whole (brightness, contrast, fog's washed-out look, a camera's exposure or gain) move the
// batch's input moments, and a model without a normalisation layer in front (the shipped ViT: a
// patch projection, then position embeddings, then LayerNorm) sees them in every token. On the
// bundled Fashion-MNIST-C test stream at severity 5 it took the source ViT from 37.1 to 27.1 %
// error and the source CNN from 43.5 to 32.8 % (docs/tta.md, "Input alignment"). A refit addition,
// not from a paper's method; it changes no parameter and holds no state, so an adapter wrapped in
// it saves and restores exactly as before.
//
// The statistics are the batch's, so a batch must hold enough samples to estimate them (per-sample
// standardisation hurt every corruption but contrast in the same measurement).
import { f32, type Tensor } from '../onnx/tensor.ts';
import type { Adapter, AdaptResult, AdapterState } from './types.ts';

/** Per-channel mean and standard deviation of in-distribution inputs (channel = axis 1). */
export interface InputStats {
  mean: number[];
  std: number[];
}

function channelsOf(who: string, x: Tensor): { n: number; C: number; inner: number } {
  if (x.dtype !== 'float32') throw new Error(`${who}: input must be float32, got ${x.dtype}`);
  if (x.dims.length < 2) throw new Error(`${who}: input must be [batch, channels, …], got shape [${x.dims.join(',')}]`);
  const n = x.dims[0]!, C = x.dims[1]!;
  const inner = x.dims.slice(2).reduce((a, b) => a * b, 1);
  return { n, C, inner };
}

/** Channel means and standard deviations of x (its batch and every spatial position pooled), in float64. */
function moments(who: string, x: Tensor): InputStats {
  const { n, C, inner } = channelsOf(who, x);
  const d = x.data as Float32Array;
  const sum = new Float64Array(C), sq = new Float64Array(C);
  for (let b = 0; b < n; b++) {
    for (let c = 0; c < C; c++) {
      const o = (b * C + c) * inner;
      let s = 0, q = 0;
      for (let i = 0; i < inner; i++) {
        const v = d[o + i]!;
        if (!Number.isFinite(v)) throw new Error(`${who}: input value ${v} at flat index ${o + i} (sample ${b}, channel ${c}); inputs must be finite`);
        s += v; q += v * v;
      }
      sum[c]! += s; sq[c]! += q;
    }
  }
  const count = n * inner;
  const mean = Array.from(sum, (s) => s / count);
  const std = Array.from(sq, (q, c) => Math.sqrt(Math.max(0, q / count - mean[c]! * mean[c]!)));
  return { mean, std };
}

/** The statistics `alignInput` aligns to, from in-distribution inputs (e.g. the source set's images). */
export function inputStats(x: Tensor): InputStats {
  if (x.dims[0] === 0) throw new Error('inputStats: no samples');
  return moments('inputStats', x);
}

function checkStats(who: string, s: InputStats, C?: number): void {
  if (!s || !Array.isArray(s.mean) || !Array.isArray(s.std) || s.mean.length !== s.std.length || s.mean.length === 0) {
    throw new Error(`${who}: source statistics must be { mean: number[], std: number[] } of equal, non-zero length (one per channel)`);
  }
  if (C !== undefined && s.mean.length !== C) throw new Error(`${who}: the source statistics have ${s.mean.length} channels, the input has ${C}`);
  for (let c = 0; c < s.mean.length; c++) {
    if (!Number.isFinite(s.mean[c]) || !(s.std[c]! > 0) || !Number.isFinite(s.std[c])) {
      throw new Error(`${who}: source statistics of channel ${c} must be a finite mean and a positive finite std, got ${s.mean[c]}, ${s.std[c]}`);
    }
  }
}

/**
 * x standardised per channel to the source's moments, with the batch's own moments: a new tensor;
 * x is not changed. A channel whose batch std is below 1e-6 of the source's (a constant batch) is
 * only shifted, not scaled.
 */
export function alignInput(x: Tensor, source: InputStats): Tensor {
  const { n, C, inner } = channelsOf('alignInput', x);
  checkStats('alignInput', source, C);
  const batch = moments('alignInput', x);
  const d = x.data as Float32Array, out = new Float32Array(d.length);
  for (let c = 0; c < C; c++) {
    const scale = batch.std[c]! > 1e-6 * source.std[c]! ? source.std[c]! / batch.std[c]! : 1;
    const shift = source.mean[c]! - batch.mean[c]! * scale;
    for (let b = 0; b < n; b++) {
      const o = (b * C + c) * inner;
      for (let i = 0; i < inner; i++) out[o + i] = d[o + i]! * scale + shift;
    }
  }
  return f32([...x.dims], out);
}

/** An adapter that sees every batch aligned to `stats` (createAdapter's `inputAlign` option). */
export class InputAligned implements Adapter {
  readonly save?: () => Promise<AdapterState>;
  readonly load?: (state: AdapterState) => Promise<void>;

  constructor(readonly inner: Adapter, readonly stats: InputStats) {
    checkStats(`${inner.name}: inputAlign`, stats);
    // The alignment holds no state: saving and loading are the wrapped method's own.
    if (inner.save) this.save = () => inner.save!();
    if (inner.load) this.load = (state) => inner.load!(state);
  }

  get name(): string { return this.inner.name; }

  predict(x: Tensor): Promise<AdaptResult> {
    return this.inner.predict(alignInput(x, this.stats));
  }

  reset(): void { this.inner.reset(); }

  release(): Promise<void> { return this.inner.release(); }
}
