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
// classes has moments of its own, which alignment removes as if they were a shift. On the
// validation stream's clean images in label-correlated order that took the source ViT from 9.72
// to 18.61 % error. Given per-class statistics (`inputStats(images, labels)`), a channel is
// therefore aligned only when the batch's (mean, within-sample variance) lies outside every class
// mix's (./class-mix.ts) by more than `margin`, in units of the source's std (variance: its
// square). Then clean label-correlated batches stay as they came (9.72 %), and the shifts that
// alignment undoes (brightness, contrast, fog, snow) lie far outside. On the validation stream,
// always aligning → the class-mix gate: source ViT continual 23.23 → 23.04, correlated 26.92 →
// 24.21; CNN with BN-adapt 18.15 → 17.87, 33.30 → 31.95 (margin 0.2 chosen there; docs/tta.md).
import { f32, type Tensor } from '../onnx/tensor.ts';
import { convexHull, distanceToHull, type Point } from './class-mix.ts';
import type { Adapter, AdaptResult, AdapterState } from './types.ts';

/**
 * In-distribution input statistics per channel (channel = axis 1): the mean, and the pooled
 * within-sample standard deviation (the square root of the mean over samples of each sample's
 * variance around its own mean). `inputStats` computes both from data.
 */
export interface InputStats {
  mean: number[];
  sampleStd: number[];
  /** Per class, the same statistics (`inputStats` with labels): turns on the class-mix gate. */
  classes?: { mean: number[]; sampleStd: number[] }[];
}

/** How far outside the class-mix hull a batch's moments must lie to be aligned (source-std units; chosen on the validation stream). */
export const CLASS_MIX_MARGIN = 0.2;

function shapeOf(who: string, x: Tensor): { n: number; C: number; inner: number } {
  if (x.dtype !== 'float32') throw new Error(`${who}: input must be float32, got ${x.dtype}`);
  if (x.dims.length < 2) throw new Error(`${who}: input must be [batch, channels, …], got shape [${x.dims.join(',')}]`);
  const n = x.dims[0]!, C = x.dims[1]!;
  const inner = x.dims.slice(2).reduce((a, b) => a * b, 1);
  return { n, C, inner };
}

/** Each sample's mean and variance per channel ([n·C], sample-major) and, per channel, the batch mean and pooled within-sample variance. */
function moments(who: string, x: Tensor): { sampleMean: Float64Array; sampleVar: Float64Array; mean: Float64Array; within: Float64Array } {
  const { n, C, inner } = shapeOf(who, x);
  const d = x.data as Float32Array;
  const sampleMean = new Float64Array(n * C), sampleVar = new Float64Array(n * C), mean = new Float64Array(C), within = new Float64Array(C);
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
      sampleVar[b * C + c] = q / inner;
      mean[c]! += m / n;
      within[c]! += q / inner / n;
    }
  }
  return { sampleMean, sampleVar, mean, within };
}

/**
 * The statistics `alignInput` aligns to, from in-distribution inputs (e.g. the source set's
 * images). With their labels, also each class's (for the class-mix gate).
 */
export function inputStats(x: Tensor, labels?: ArrayLike<number>): InputStats {
  if (x.dims[0] === 0) throw new Error('inputStats: no samples');
  const m = moments('inputStats', x);
  const stats: InputStats = { mean: Array.from(m.mean), sampleStd: Array.from(m.within, Math.sqrt) };
  if (labels === undefined) return stats;
  const n = x.dims[0]!, C = x.dims[1]!;
  if (labels.length !== n) throw new Error(`inputStats: ${n} samples but ${labels.length} labels`);
  const count: number[] = [], mean: number[][] = [], within: number[][] = [];
  for (let b = 0; b < n; b++) {
    const k = labels[b]!;
    if (!(Number.isInteger(k) && k >= 0)) throw new Error(`inputStats: label ${k} of sample ${b} is not a class index (a non-negative integer)`);
    count[k] = (count[k] ?? 0) + 1;
    mean[k] ??= new Array<number>(C).fill(0);
    within[k] ??= new Array<number>(C).fill(0);
    for (let c = 0; c < C; c++) { mean[k]![c]! += m.sampleMean[b * C + c]!; within[k]![c]! += m.sampleVar[b * C + c]!; }
  }
  // Classes without samples have no statistics and take no part in the hull.
  stats.classes = [];
  for (let k = 0; k < count.length; k++) {
    if (!count[k]) continue;
    stats.classes.push({ mean: mean[k]!.map((v) => v / count[k]!), sampleStd: within[k]!.map((v) => Math.sqrt(v / count[k]!)) });
  }
  return stats;
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
  if (s.classes === undefined) return;
  if (!Array.isArray(s.classes) || s.classes.length === 0) throw new Error(`${who}: classes must be a non-empty array of per-class statistics (tta.inputStats(images, labels) computes them)`);
  s.classes.forEach((k, i) => {
    const ok = k && Array.isArray(k.mean) && Array.isArray(k.sampleStd) && k.mean.length === s.mean.length && k.sampleStd.length === s.mean.length
      && k.mean.every(Number.isFinite) && k.sampleStd.every((v) => Number.isFinite(v) && v >= 0);
    if (!ok) throw new Error(`${who}: classes[${i}] must hold a finite mean and a non-negative finite sampleStd for each of the ${s.mean.length} channels`);
  });
}

/** Per channel, the hull of the classes' (mean, variance) points, in source-std units. */
function classHulls(source: InputStats): Point[][] | null {
  const cls = source.classes;
  if (!cls) return null;
  return source.mean.map((_, c) => {
    const sd = source.sampleStd[c]!;
    return convexHull(cls.map((k): Point => [k.mean[c]! / sd, (k.sampleStd[c]! / sd) ** 2]));
  });
}

/**
 * x aligned to the source statistics (the formula above): a new tensor; x is not changed. A
 * channel whose samples are all constant (no within-sample spread) is only shifted. With per-class
 * statistics, a channel whose moments some class mix explains (within `margin`) is left as it came.
 */
export function alignInput(x: Tensor, source: InputStats, opts: { margin?: number } = {}): Tensor {
  return alignInputDetailed(x, source, opts).x;
}

/** alignInput, and per channel whether it was aligned (false: the class-mix gate left it as it came). */
export function alignInputDetailed(x: Tensor, source: InputStats, opts: { margin?: number } = {}): { x: Tensor; aligned: boolean[] } {
  const { n, C, inner } = shapeOf('alignInput', x);
  checkStats('alignInput', source, C);
  const margin = opts.margin ?? CLASS_MIX_MARGIN;
  if (!(margin >= 0 && Number.isFinite(margin))) throw new Error(`alignInput: margin must be a finite number ≥ 0, got ${margin}`);
  const m = moments('alignInput', x);
  const hulls = classHulls(source);
  const d = x.data as Float32Array, out = new Float32Array(d.length);
  const aligned = new Array<boolean>(C).fill(true);
  for (let c = 0; c < C; c++) {
    const sd = source.sampleStd[c]!;
    if (hulls && distanceToHull([m.mean[c]! / sd, m.within[c]! / sd ** 2], hulls[c]!) <= margin) {
      aligned[c] = false;
      for (let b = 0; b < n; b++) { const at = (b * C + c) * inner; out.set(d.subarray(at, at + inner), at); }
      continue;
    }
    const target = sd ** 2;
    const k = m.within[c]! > 1e-12 * target ? Math.sqrt(target / m.within[c]!) : 1;
    for (let b = 0; b < n; b++) {
      const o = (b * C + c) * inner, mi = m.sampleMean[b * C + c]!;
      const base = source.mean[c]! + mi - m.mean[c]!;
      for (let i = 0; i < inner; i++) out[o + i] = base + k * (d[o + i]! - mi);
    }
  }
  return { x: f32([...x.dims], out), aligned };
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
