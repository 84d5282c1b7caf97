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
 */
export function augmentBatch(x: Float32Array, dims: readonly number[], rng: Rng, draw?: AugmentDraw): Float32Array {
  if (dims.length !== 4) throw new Error(`augmentations need NCHW image batches, got shape [${dims.join(', ')}]`);
  const [n, c, h, w] = dims as [number, number, number, number];
  const d = draw ?? drawAugment(rng, h, w);
  const hw = h * w, chw = c * hw;
  const out = new Float32Array(n * chw);
  const img = new Float64Array(chw);
  const tmp = new Float64Array(hw);
  // Inverse affine (output → input coordinates) about the image centre.
  const rad = (d.angle * Math.PI) / 180;
  const cos = Math.cos(rad) / d.scale, sin = Math.sin(rad) / d.scale;
  const cx = (w - 1) / 2, cy = (h - 1) / 2;
  const kernel = gaussianKernel(COTTA_AUGMENT.blurKernel, d.sigma);
  const half = (kernel.length - 1) / 2;
  for (let b = 0; b < n; b++) {
    for (let i = 0; i < chw; i++) img[i] = clip01(x[b * chw + i]!);
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
      // 3. affine, bilinear, edges repeated.
      for (let y = 0; y < h; y++) {
        for (let xo = 0; xo < w; xo++) {
          const u = xo - cx - d.tx, v = y - cy - d.ty;
          const sx = cos * u + sin * v + cx, sy = -sin * u + cos * v + cy;
          const x0 = Math.floor(sx), y0 = Math.floor(sy);
          const fx = sx - x0, fy = sy - y0;
          const px = (yy: number, xx: number) => img[base + Math.min(h - 1, Math.max(0, yy)) * w + Math.min(w - 1, Math.max(0, xx))]!;
          tmp[y * w + xo] = (1 - fy) * ((1 - fx) * px(y0, x0) + fx * px(y0, x0 + 1)) + fy * ((1 - fx) * px(y0 + 1, x0) + fx * px(y0 + 1, x0 + 1));
        }
      }
      // 4. separable Gaussian blur (rows into img, columns back into tmp), edges repeated.
      for (let y = 0; y < h; y++) for (let xo = 0; xo < w; xo++) {
        let s = 0;
        for (let k = 0; k < kernel.length; k++) s += kernel[k]! * tmp[y * w + Math.min(w - 1, Math.max(0, xo + k - half))]!;
        img[base + y * w + xo] = s;
      }
      for (let y = 0; y < h; y++) for (let xo = 0; xo < w; xo++) {
        let s = 0;
        for (let k = 0; k < kernel.length; k++) s += kernel[k]! * img[base + Math.min(h - 1, Math.max(0, y + k - half)) * w + xo]!;
        tmp[y * w + xo] = s;
      }
      // 5. flip, 6. noise and clip.
      const o = b * chw + base;
      for (let y = 0; y < h; y++) for (let xo = 0; xo < w; xo++) {
        const src = tmp[y * w + (d.flip ? w - 1 - xo : xo)]!;
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
