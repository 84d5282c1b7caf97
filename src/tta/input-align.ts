// Input alignment: each batch's input is moved, channel by channel, to the source's input
// statistics before the model sees it. Per channel c and sample i, with m_i the sample's own mean,
// M the batch's mean of them and W the batch's pooled within-sample variance (the mean over samples
// of each one's variance around its own mean):
//
//   x' = M_source + (m_i − M) + sqrt(W_source / W) · (x − m_i)
//
// so the batch's mean becomes the source's, each sample's spread around its own mean is scaled to
// the source's typical spread, and the differences between samples' means are kept.
//
// BN-adapt re-estimates normalisation statistics inside the network; this does the same for the
// network's input, which has no normalisation layer of its own. Shifts that act on intensities
// (brightness, contrast, fog's washed-out look, a camera's exposure or gain) move these moments,
// and a model without a normalisation layer in front (the shipped ViT: a patch projection, then
// position embeddings, then LayerNorm) sees them in every token. A brightness offset is undone
// exactly, and so is contrast as ImageNet-C defines it ((x − m_i)·c + m_i). Scaling by the pooled
// within-sample spread instead of the batch's whole spread matters for contrast: the whole spread
// also holds the differences between the samples' means, which contrast does not change. On the
// validation stream (Fashion-MNIST training images, severity 5, docs/tta.md) the source ViT went
// from 35.99 to 23.23 % error (26.35 with the whole-spread form), the CNN with BN-adapt from 21.81
// to 18.15 (20.35). A refit addition, not a published method. It changes no parameter and holds
// no state, so an adapter wrapped in it saves and restores exactly as before.
//
// The statistics are the batch's, so a batch must hold several samples; a batch drawn from a few
// classes has moments of its own, which alignment then partly removes (under temporally correlated
// labels it still gained on the validation stream, 35.99 to 26.92 % for the ViT).
import { f32, type Tensor } from '../onnx/tensor.ts';
import type { Adapter, AdaptResult, AdapterState } from './types.ts';

/**
 * In-distribution input statistics per channel (channel = axis 1): the mean, and the pooled
 * within-sample standard deviation (the square root of the mean over samples of each sample's
 * variance around its own mean). `inputStats` computes both from data.
 */
export interface InputStats {
  mean: number[];
  sampleStd: number[];
}

function shapeOf(who: string, x: Tensor): { n: number; C: number; inner: number } {
  if (x.dtype !== 'float32') throw new Error(`${who}: input must be float32, got ${x.dtype}`);
  if (x.dims.length < 2) throw new Error(`${who}: input must be [batch, channels, …], got shape [${x.dims.join(',')}]`);
  const n = x.dims[0]!, C = x.dims[1]!;
  const inner = x.dims.slice(2).reduce((a, b) => a * b, 1);
  return { n, C, inner };
}

/** Each sample's mean per channel ([n·C], sample-major) and, per channel, the batch mean and pooled within-sample variance. */
function moments(who: string, x: Tensor): { sampleMean: Float64Array; mean: Float64Array; within: Float64Array } {
  const { n, C, inner } = shapeOf(who, x);
  const d = x.data as Float32Array;
  const sampleMean = new Float64Array(n * C), mean = new Float64Array(C), within = new Float64Array(C);
  for (let b = 0; b < n; b++) {
    for (let c = 0; c < C; c++) {
      const o = (b * C + c) * inner;
      let s = 0;
      for (let i = 0; i < inner; i++) {
        const v = d[o + i]!;
        if (!Number.isFinite(v)) throw new Error(`${who}: input value ${v} at flat index ${o + i} (sample ${b}, channel ${c}); inputs must be finite`);
        s += v;
      }
      const m = s / inner;
      let q = 0;
      for (let i = 0; i < inner; i++) { const e = d[o + i]! - m; q += e * e; }
      sampleMean[b * C + c] = m;
      mean[c]! += m / n;
      within[c]! += q / inner / n;
    }
  }
  return { sampleMean, mean, within };
}

/** The statistics `alignInput` aligns to, from in-distribution inputs (e.g. the source set's images). */
export function inputStats(x: Tensor): InputStats {
  if (x.dims[0] === 0) throw new Error('inputStats: no samples');
  const m = moments('inputStats', x);
  return { mean: Array.from(m.mean), sampleStd: Array.from(m.within, Math.sqrt) };
}

function checkStats(who: string, s: InputStats, C?: number): void {
  if (!s || !Array.isArray(s.mean) || !Array.isArray(s.sampleStd) || s.mean.length !== s.sampleStd.length || s.mean.length === 0) {
    throw new Error(`${who}: source statistics must be { mean: number[], sampleStd: number[] } of equal, non-zero length (one per channel; tta.inputStats computes them)`);
  }
  if (C !== undefined && s.mean.length !== C) throw new Error(`${who}: the source statistics have ${s.mean.length} channels, the input has ${C}`);
  for (let c = 0; c < s.mean.length; c++) {
    if (!Number.isFinite(s.mean[c]) || !(s.sampleStd[c]! > 0) || !Number.isFinite(s.sampleStd[c])) {
      throw new Error(`${who}: source statistics of channel ${c} must be a finite mean and a positive finite sampleStd, got ${s.mean[c]}, ${s.sampleStd[c]}`);
    }
  }
}

/**
 * x aligned to the source statistics (the formula above): a new tensor; x is not changed. A
 * channel whose samples are all constant (no within-sample spread) is only shifted.
 */
export function alignInput(x: Tensor, source: InputStats): Tensor {
  const { n, C, inner } = shapeOf('alignInput', x);
  checkStats('alignInput', source, C);
  const m = moments('alignInput', x);
  const d = x.data as Float32Array, out = new Float32Array(d.length);
  for (let c = 0; c < C; c++) {
    const target = source.sampleStd[c]! ** 2;
    const k = m.within[c]! > 1e-12 * target ? Math.sqrt(target / m.within[c]!) : 1;
    for (let b = 0; b < n; b++) {
      const o = (b * C + c) * inner, mi = m.sampleMean[b * C + c]!;
      const base = source.mean[c]! + mi - m.mean[c]!;
      for (let i = 0; i < inner; i++) out[o + i] = base + k * (d[o + i]! - mi);
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
