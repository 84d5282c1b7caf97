// Unsupervised shift signals from what a forward pass returns (issue 11, part 2): prediction
// entropy and confidence, per-channel feature statistics against the source statistics, and
// MMD between embeddings. Each is a number per batch that can feed a drift detector.
import type { Tensor } from '../onnx/tensor.ts';
import { formatShape } from '../onnx/tensor.ts';

export interface PredictionStats {
  /** Mean softmax entropy (nats). */
  entropy: number;
  /** Mean top-1 softmax probability. */
  confidence: number;
}

/** Mean entropy and confidence of softmax(logits) over a batch of [N, C] logits. */
export function predictionStats(logits: Tensor): PredictionStats {
  if (logits.dims.length !== 2) throw new Error(`predictionStats: logits must be [N, C], got ${formatShape(logits.dims)}`);
  const [n, c] = logits.dims as [number, number];
  const d = logits.data as Float32Array;
  let entropy = 0, confidence = 0;
  for (let i = 0; i < n; i++) {
    let m = -Infinity;
    for (let k = 0; k < c; k++) m = Math.max(m, d[i * c + k]!);
    let z = 0;
    for (let k = 0; k < c; k++) z += Math.exp(d[i * c + k]! - m);
    const logZ = Math.log(z);
    let h = 0;
    for (let k = 0; k < c; k++) {
      const lp = d[i * c + k]! - m - logZ;
      h -= Math.exp(lp) * lp;
    }
    entropy += h;
    confidence += 1 / z; // the top class has logit m: p = exp(0) / z
  }
  if (!Number.isFinite(entropy)) throw new Error('predictionStats: logits hold non-finite values');
  return { entropy: entropy / n, confidence: confidence / n };
}

export interface ChannelStats {
  mean: Float64Array;
  /** Biased variance (divides by the count), as BatchNorm's batch statistics. */
  variance: Float64Array;
}

/** Per-channel mean and variance of an [N, C, …] tensor over every axis but 1. */
export function channelStats(x: Tensor): ChannelStats {
  if (x.dims.length < 2) throw new Error(`channelStats: expected [N, C, …], got ${formatShape(x.dims)}`);
  const [n, c] = x.dims as [number, number];
  const inner = x.dims.slice(2).reduce((a, b) => a * b, 1);
  const d = x.data as Float32Array;
  const mean = new Float64Array(c), variance = new Float64Array(c);
  const count = n * inner;
  for (let ch = 0; ch < c; ch++) {
    let s = 0;
    for (let i = 0; i < n; i++) for (let j = 0, o = (i * c + ch) * inner; j < inner; j++) s += d[o + j]!;
    const mu = s / count;
    let v = 0;
    for (let i = 0; i < n; i++) for (let j = 0, o = (i * c + ch) * inner; j < inner; j++) v += (d[o + j]! - mu) ** 2;
    mean[ch] = mu;
    variance[ch] = v / count;
  }
  return { mean, variance };
}

/**
 * Symmetric KL divergence between per-channel Gaussians, averaged over channels:
 * ½[KL(p‖q) + KL(q‖p)] = ¼[(σp²/σq² + σq²/σp² − 2) + (μp − μq)²(1/σp² + 1/σq²)].
 * `eps` (BatchNorm's epsilon) keeps a dead channel from dividing by zero.
 */
export function gaussianSymmetricKl(p: ChannelStats, q: { mean: ArrayLike<number>; variance: ArrayLike<number> }, eps = 1e-5): number {
  const c = p.mean.length;
  if (q.mean.length !== c || q.variance.length !== c) throw new Error(`gaussianSymmetricKl: ${c} channels against ${q.mean.length}`);
  let s = 0;
  for (let k = 0; k < c; k++) {
    const vp = p.variance[k]! + eps, vq = q.variance[k]! + eps;
    const dm = p.mean[k]! - q.mean[k]!;
    s += 0.25 * (vp / vq + vq / vp - 2 + dm * dm * (1 / vp + 1 / vq));
  }
  return s / c;
}

/**
 * Squared MMD between two sets of D-dimensional rows with a Gaussian kernel
 * k(a, b) = exp(−‖a − b‖² / (2·bandwidth²)); the biased estimator (never negative).
 */
export function mmd2(a: Float32Array, nA: number, b: Float32Array, nB: number, dim: number, bandwidth: number): number {
  if (a.length !== nA * dim || b.length !== nB * dim) throw new Error(`mmd2: expected ${nA}×${dim} and ${nB}×${dim} values, got ${a.length} and ${b.length}`);
  if (!(bandwidth > 0)) throw new Error(`mmd2: bandwidth must be > 0, got ${bandwidth}`);
  const g = 1 / (2 * bandwidth * bandwidth);
  const k = (x: Float32Array, i: number, y: Float32Array, j: number) => {
    let d2 = 0;
    for (let t = 0; t < dim; t++) d2 += (x[i * dim + t]! - y[j * dim + t]!) ** 2;
    return Math.exp(-g * d2);
  };
  let kaa = 0, kbb = 0, kab = 0;
  for (let i = 0; i < nA; i++) for (let j = 0; j < nA; j++) kaa += k(a, i, a, j);
  for (let i = 0; i < nB; i++) for (let j = 0; j < nB; j++) kbb += k(b, i, b, j);
  for (let i = 0; i < nA; i++) for (let j = 0; j < nB; j++) kab += k(a, i, b, j);
  return Math.max(0, kaa / (nA * nA) + kbb / (nB * nB) - (2 * kab) / (nA * nB));
}

/** The median pairwise distance of a set of rows (the usual fixed bandwidth for an MMD kernel). */
export function medianDistance(x: Float32Array, n: number, dim: number): number {
  const ds: number[] = [];
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) {
    let d2 = 0;
    for (let t = 0; t < dim; t++) d2 += (x[i * dim + t]! - x[j * dim + t]!) ** 2;
    ds.push(Math.sqrt(d2));
  }
  if (ds.length === 0) throw new Error('medianDistance needs at least two rows');
  ds.sort((p, q) => p - q);
  return ds[Math.floor(ds.length / 2)]! || 1;
}
