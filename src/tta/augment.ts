// CoTTA's test-time augmentations (Wang et al. 2022; the code's get_tta_transforms, non-"soft"
// setting, also what RMT uses), for NCHW image batches with values in [0, 1]:
//
//   1. clip to [0, 1];
//   2. colour jitter in a random order: brightness ×U(0.6, 1.4), contrast U(0.7, 1.3) (blend with
//      each image's grey mean), gamma U(0.7, 1.3) (x^γ); each clipped to [0, 1]. The code's
//      saturation and hue jitter are left out: they do nothing to a one-channel image, and refit
//      does not implement them for colour images either;
//   3. random affine about the centre: rotation U(−15°, 15°), scale U(0.9, 1.1), translation by a
//      whole number of pixels up to 1/16 of the padded size (the code pads by half the image
//      size first, so up to ⌊W/8⌉), bilinear; pixels outside the image repeat the edge (the
//      code's edge padding, then a centre crop back to the image size);
//   4. Gaussian blur, 5×5 kernel, σ ~ U(0.001, 0.5) (edges repeated);
//   5. horizontal flip with probability 0.5;
//   6. additive Gaussian noise, σ = 0.005, per pixel; clip to [0, 1].
//
// As in the code, where the transform is applied to the whole batch tensor at once, one draw of
// the parameters (jitter, affine, blur, flip) is shared by every image of the batch; only the
// noise differs per pixel. Deterministic for a given Rng.
import type { Rng } from '../data/random.ts';

export const COTTA_AUGMENT = {
  brightness: [0.6, 1.4],
  contrast: [0.7, 1.3],
  gamma: [0.7, 1.3],
  degrees: 15,
  /** Fraction of the padded image size (the code: translate = 1/16 after padding by half the size). */
  translate: 1 / 16,
  scale: [0.9, 1.1],
  blurKernel: 5,
  blurSigma: [0.001, 0.5],
  flip: 0.5,
  noiseStd: 0.005,
} as const;

/** The parameters one augmentation draws (exposed for tests and reports). */
export interface AugmentDraw {
  order: ('brightness' | 'contrast' | 'gamma')[];
  brightness: number;
  contrast: number;
  gamma: number;
  angle: number;
  scale: number;
  tx: number;
  ty: number;
  sigma: number;
  flip: boolean;
}

export function drawAugment(rng: Rng, h: number, w: number): AugmentDraw {
  const A = COTTA_AUGMENT;
  const ops: AugmentDraw['order'] = ['brightness', 'contrast', 'gamma'];
  for (let i = ops.length - 1; i > 0; i--) { const j = rng.int(0, i + 1); [ops[i], ops[j]] = [ops[j]!, ops[i]!]; }
  const brightness = rng.uniform(A.brightness[0], A.brightness[1]);
  const contrast = rng.uniform(A.contrast[0], A.contrast[1]);
  const gamma = rng.uniform(A.gamma[0], A.gamma[1]);
  const angle = rng.uniform(-A.degrees, A.degrees);
  // torchvision RandomAffine: max_dx = translate·width of the padded (2w) image, tx = round(U(−max_dx, max_dx)).
  const tx = Math.round(rng.uniform(-A.translate * 2 * w, A.translate * 2 * w));
  const ty = Math.round(rng.uniform(-A.translate * 2 * h, A.translate * 2 * h));
  const scale = rng.uniform(A.scale[0], A.scale[1]);
  const sigma = rng.uniform(A.blurSigma[0], A.blurSigma[1]);
  const flip = rng.next() < A.flip;
  return { order: ops, brightness, contrast, gamma, angle, scale, tx, ty, sigma, flip };
}

const clip01 = (v: number) => (v < 0 ? 0 : v > 1 ? 1 : v);

/**
 * One augmented copy of the batch `x` ([n, c, h, w] flattened), written to a new array.
 * Every image gets the same drawn transform; the noise is drawn per pixel from `rng`.
 * The affine's bilinear taps and the blur's index tables depend only on the draw, so they are
 * computed once per copy and every image is then a gather.
 */
export function augmentBatch(x: Float32Array, dims: readonly number[], rng: Rng, draw?: AugmentDraw): Float32Array {
  if (dims.length !== 4) throw new Error(`augmentations need NCHW image batches, got shape [${dims.join(', ')}]`);
  const [n, c, h, w] = dims as [number, number, number, number];
  const d = draw ?? drawAugment(rng, h, w);
  const hw = h * w, chw = c * hw;
  const out = new Float32Array(n * chw);
  // Affine taps: output pixel q reads 4 input pixels with bilinear weights (edges repeated).
  const rad = (d.angle * Math.PI) / 180;
  const cos = Math.cos(rad) / d.scale, sin = Math.sin(rad) / d.scale;
  const cx = (w - 1) / 2, cy = (h - 1) / 2;
  const tapIdx = new Int32Array(hw * 4), tapW = new Float64Array(hw * 4);
  const clampX = (v: number) => (v < 0 ? 0 : v > w - 1 ? w - 1 : v), clampY = (v: number) => (v < 0 ? 0 : v > h - 1 ? h - 1 : v);
  for (let y = 0; y < h; y++) for (let xo = 0; xo < w; xo++) {
    const u = xo - cx - d.tx, v = y - cy - d.ty;
    const sx = cos * u + sin * v + cx, sy = -sin * u + cos * v + cy;
    const x0 = Math.floor(sx), y0 = Math.floor(sy), fx = sx - x0, fy = sy - y0;
    const q = (y * w + xo) * 4;
    const r0 = clampY(y0) * w, r1 = clampY(y0 + 1) * w, c0 = clampX(x0), c1 = clampX(x0 + 1);
    tapIdx[q] = r0 + c0; tapW[q] = (1 - fy) * (1 - fx);
    tapIdx[q + 1] = r0 + c1; tapW[q + 1] = (1 - fy) * fx;
    tapIdx[q + 2] = r1 + c0; tapW[q + 2] = fy * (1 - fx);
    tapIdx[q + 3] = r1 + c1; tapW[q + 3] = fy * fx;
  }
  // Blur: clamped neighbour indices per row/column position.
  const kernel = gaussianKernel(COTTA_AUGMENT.blurKernel, d.sigma);
  const K = kernel.length, half = (K - 1) / 2;
  const colIdx = new Int32Array(w * K), rowIdx = new Int32Array(h * K);
  for (let xo = 0; xo < w; xo++) for (let k = 0; k < K; k++) colIdx[xo * K + k] = clampX(xo + k - half);
  for (let y = 0; y < h; y++) for (let k = 0; k < K; k++) rowIdx[y * K + k] = clampY(y + k - half) * w;
  const img = new Float64Array(chw);
  const a = new Float64Array(hw), b = new Float64Array(hw);
  for (let im = 0; im < n; im++) {
    for (let i = 0; i < chw; i++) img[i] = clip01(x[im * chw + i]!);
    // 2. colour jitter, in the drawn order.
    for (const op of d.order) {
      if (op === 'brightness') for (let i = 0; i < chw; i++) img[i] = clip01(img[i]! * d.brightness);
      else if (op === 'gamma') for (let i = 0; i < chw; i++) img[i] = clip01(img[i]! ** d.gamma);
      else {
        let mean = 0;
        if (c === 3) for (let i = 0; i < hw; i++) mean += 0.299 * img[i]! + 0.587 * img[hw + i]! + 0.114 * img[2 * hw + i]!;
        else for (let i = 0; i < chw; i++) mean += img[i]! / c;
        mean /= hw;
        for (let i = 0; i < chw; i++) img[i] = clip01(d.contrast * img[i]! + (1 - d.contrast) * mean);
      }
    }
    for (let ch = 0; ch < c; ch++) {
      const base = ch * hw;
      // 3. affine (bilinear gather).
      for (let q = 0; q < hw; q++) {
        const t = q * 4;
        a[q] = tapW[t]! * img[base + tapIdx[t]!]! + tapW[t + 1]! * img[base + tapIdx[t + 1]!]! + tapW[t + 2]! * img[base + tapIdx[t + 2]!]! + tapW[t + 3]! * img[base + tapIdx[t + 3]!]!;
      }
      // 4. separable Gaussian blur: rows (a → b), then columns (b → a).
      for (let y = 0; y < h; y++) {
        const row = y * w;
        for (let xo = 0; xo < w; xo++) {
          let s = 0;
          for (let k = 0; k < K; k++) s += kernel[k]! * a[row + colIdx[xo * K + k]!]!;
          b[row + xo] = s;
        }
      }
      for (let y = 0; y < h; y++) for (let xo = 0; xo < w; xo++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += kernel[k]! * b[rowIdx[y * K + k]! + xo]!;
        a[y * w + xo] = s;
      }
      // 5. flip, 6. noise and clip.
      const o = im * chw + base;
      for (let y = 0; y < h; y++) for (let xo = 0; xo < w; xo++) {
        const src = a[y * w + (d.flip ? w - 1 - xo : xo)]!;
        out[o + y * w + xo] = clip01(src + COTTA_AUGMENT.noiseStd * rng.normal());
      }
    }
  }
  return out;
}

function gaussianKernel(size: number, sigma: number): Float64Array {
  const k = new Float64Array(size), half = (size - 1) / 2;
  let s = 0;
  for (let i = 0; i < size; i++) s += k[i] = Math.exp(-((i - half) ** 2) / (2 * sigma * sigma));
  for (let i = 0; i < size; i++) k[i]! /= s;
  return k;
}
