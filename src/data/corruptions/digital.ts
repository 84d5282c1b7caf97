/** Digital corruptions: brightness, contrast, elastic_transform, pixelate, jpeg_compression. */
import jpeg from 'jpeg-js';
import { applyLinearOp, bilinear, cachedLinearOp, clip01, linearOpFrom, makeGaussianBlur } from './ops.ts';
import { at, col, type CorruptionDef } from './types.ts';

// ---------------------------------------------------------------- brightness

const BRIGHTNESS = [0.05, 0.1, 0.15, 0.2, 0.3] as const;

export const brightness: CorruptionDef = {
  name: 'brightness',
  family: 'digital',
  random: false,
  params: [{ name: 'added to HSV value', values: BRIGHTNESS }],
  basis: 'CIFAR-10-C',
  apply(src, dst, { n, h, w, severity }) {
    const c = at(BRIGHTNESS, severity);
    for (let p = 0; p < n * h * w; p++) {
      const v = src[p]! + c;
      dst[p] = v < 1 ? v : 1;
    }
  },
};

// ---------------------------------------------------------------- contrast

const CONTRAST = [0.75, 0.5, 0.4, 0.3, 0.15] as const;

export const contrast: CorruptionDef = {
  name: 'contrast',
  family: 'digital',
  random: false,
  params: [{ name: 'contrast factor', values: CONTRAST }],
  basis: 'CIFAR-10-C',
  apply(src, dst, { n, h, w, severity }) {
    const c = at(CONTRAST, severity);
    const px = h * w;
    for (let i = 0; i < n; i++) {
      const off = i * px;
      let mean = 0;
      for (let p = off; p < off + px; p++) mean += src[p]!;
      mean /= px;
      for (let p = off; p < off + px; p++) dst[p] = (src[p]! - mean) * c + mean;
      clip01(dst, off, px);
    }
  },
};

// ---------------------------------------------------------------- elastic_transform

// Fractions of the image size: (displacement amplitude, displacement smoothness sigma, affine jitter).
// CIFAR-10-C uses (0, 0, .08), (.05, .2, .07), (.08, .06, .06), (.1, .04, .05), (.1, .03, .03):
// its affine jitter shrinks as the elastic part grows, and on 28x28 Fashion-MNIST that makes
// severity 1 the most distorted. refit keeps the CIFAR elastic smoothness values and makes
// the amplitude and the affine jitter grow with severity.
const ELASTIC = [
  [0, 0, 0.02],
  [0.05, 0.06, 0.025],
  [0.08, 0.05, 0.03],
  [0.1, 0.04, 0.035],
  [0.12, 0.03, 0.04],
] as const;

/** The affine map taking the 3 points `from` onto `to` (cv2.getAffineTransform): [a, b, c, d, e, f]. */
export function affineFrom3(from: readonly number[], to: readonly number[]): Float64Array {
  // Solve [x y 1] * [a d; b e; c f] = [x' y'] for the three point pairs.
  const [x0, y0, x1, y1, x2, y2] = from as [number, number, number, number, number, number];
  const det = x0 * (y1 - y2) - y0 * (x1 - x2) + (x1 * y2 - x2 * y1);
  if (Math.abs(det) < 1e-12) throw new Error('affineFrom3: the three points are collinear');
  const inv = [
    (y1 - y2) / det,
    (y2 - y0) / det,
    (y0 - y1) / det,
    (x2 - x1) / det,
    (x0 - x2) / det,
    (x1 - x0) / det,
    (x1 * y2 - x2 * y1) / det,
    (x2 * y0 - x0 * y2) / det,
    (x0 * y1 - x1 * y0) / det,
  ];
  const solve = (v0: number, v1: number, v2: number) => [
    inv[0]! * v0 + inv[1]! * v1 + inv[2]! * v2,
    inv[3]! * v0 + inv[4]! * v1 + inv[5]! * v2,
    inv[6]! * v0 + inv[7]! * v1 + inv[8]! * v2,
  ];
  const [a, b, c] = solve(to[0]!, to[2]!, to[4]!) as [number, number, number];
  const [d, e, f] = solve(to[1]!, to[3]!, to[5]!) as [number, number, number];
  return Float64Array.of(a, b, c, d, e, f);
}

export const elasticTransform: CorruptionDef = {
  name: 'elastic_transform',
  family: 'digital',
  random: true,
  params: [
    { name: 'displacement amplitude (x size)', values: col(ELASTIC, 0) },
    { name: 'displacement sigma (x size)', values: col(ELASTIC, 1) },
    { name: 'affine point jitter (x size)', values: col(ELASTIC, 2) },
  ],
  basis: 'CIFAR-10-C procedure with size 28; amplitude and jitter grow with severity (CIFAR: amplitude 0, .05, .08, .1, .1; sigma 0, .2, .06, .04, .03; jitter .08, .07, .06, .05, .03)',
  apply(src, dst, { n, h, w, severity, rngFor }) {
    const [amp, sig, jit] = at(ELASTIC, severity).map((v) => v * h) as [number, number, number];
    const px = h * w;
    const warped = new Float32Array(px);
    const fx = new Float32Array(px);
    const fy = new Float32Array(px);
    const ux = new Float32Array(px);
    const uy = new Float32Array(px);
    const blur = makeGaussianBlur(h, w, sig, 'reflect', 3);
    const cx = Math.floor(w / 2);
    const cy = Math.floor(h / 2);
    const sq = Math.floor(Math.min(h, w) / 3);
    // pts1 in (x, y) order, as the reference passes them to cv2.
    const pts1 = [cx + sq, cy + sq, cx + sq, cy - sq, cx - sq, cy - sq];
    for (let i = 0; i < n; i++) {
      const rng = rngFor(i);
      const off = i * px;
      const pts2 = pts1.map((v) => v + rng.uniform(-jit, jit));
      // warpAffine samples the source at M^-1 (dst): the map from pts2 back to pts1.
      const inv = affineFrom3(pts2, pts1);
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          const sx = inv[0]! * x + inv[1]! * y + inv[2]!;
          const sy = inv[3]! * x + inv[4]! * y + inv[5]!;
          warped[y * w + x] = bilinear(src, off, h, w, sy, sx, 'reflect101');
        }
      }
      if (amp === 0) {
        dst.set(warped, off);
      } else {
        for (let p = 0; p < px; p++) ux[p] = rng.uniform(-1, 1);
        for (let p = 0; p < px; p++) uy[p] = rng.uniform(-1, 1);
        blur(ux, 0, fx, 0);
        blur(uy, 0, fy, 0);
        for (let y = 0; y < h; y++) {
          for (let x = 0; x < w; x++) {
            const p = y * w + x;
            dst[off + p] = bilinear(warped, 0, h, w, y + amp * fy[p]!, x + amp * fx[p]!, 'reflect');
          }
        }
      }
      clip01(dst, off, px);
    }
  },
};

// ---------------------------------------------------------------- pixelate

const PIXELATE = [0.95, 0.9, 0.85, 0.75, 0.65] as const;

/** PIL's resampling coefficients (Resample.c precompute_coeffs) for the BOX filter. */
export function boxCoefficients(inSize: number, outSize: number): { start: Int32Array; count: Int32Array; ksize: number; k: Float32Array } {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = 0.5 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const k = new Float32Array(outSize * ksize);
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const t = (x + xmin - center + 0.5) * ss;
      const v = t > -0.5 && t <= 0.5 ? 1 : 0;
      k[xx * ksize + x] = v;
      ww += v;
    }
    if (ww !== 0) for (let x = 0; x < xmax; x++) k[xx * ksize + x]! /= ww;
    start[xx] = xmin;
    count[xx] = xmax;
  }
  return { start, count, ksize, k };
}

/** PIL Image.resize(..., BOX) on a float image: horizontal pass, then vertical. */
export function resizeBox(
  src: Float32Array,
  srcOff: number,
  h: number,
  w: number,
  dst: Float32Array,
  dstOff: number,
  oh: number,
  ow: number,
): void {
  const cx = boxCoefficients(w, ow);
  const cy = boxCoefficients(h, oh);
  const tmp = new Float32Array(h * ow);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < ow; x++) {
      let s = 0;
      const st = cx.start[x]!;
      for (let t = 0; t < cx.count[x]!; t++) s += cx.k[x * cx.ksize + t]! * src[srcOff + y * w + st + t]!;
      tmp[y * ow + x] = s;
    }
  }
  for (let y = 0; y < oh; y++) {
    const st = cy.start[y]!;
    for (let x = 0; x < ow; x++) {
      let s = 0;
      for (let t = 0; t < cy.count[y]!; t++) s += cy.k[y * cy.ksize + t]! * tmp[(st + t) * ow + x]!;
      dst[dstOff + y * ow + x] = s;
    }
  }
}

export const pixelate: CorruptionDef = {
  name: 'pixelate',
  family: 'digital',
  random: false,
  params: [
    { name: 'downscale factor', values: PIXELATE },
    { name: 'intermediate size (28x28 input)', values: PIXELATE.map((c) => `${Math.floor(28 * c)}x${Math.floor(28 * c)}`) as unknown as [string, string, string, string, string] },
  ],
  basis: 'CIFAR-10-C',
  apply(src, dst, { n, h, w, severity }) {
    const c = at(PIXELATE, severity);
    const sh = Math.max(1, Math.floor(h * c));
    const sw = Math.max(1, Math.floor(w * c));
    const op = cachedLinearOp(`pixelate:${severity}:${h}x${w}`, () => {
      const small = new Float32Array(sh * sw);
      return linearOpFrom(h, w, (s, d) => {
        resizeBox(s, 0, h, w, small, 0, sh, sw);
        resizeBox(small, 0, sh, sw, d, 0, h, w);
      });
    });
    const px = h * w;
    for (let i = 0; i < n; i++) {
      applyLinearOp(op, src, i * px, dst, i * px);
      clip01(dst, i * px, px);
    }
  },
};

// ---------------------------------------------------------------- jpeg_compression

const JPEG_QUALITY = [80, 65, 58, 50, 40] as const;

/**
 * Images per JPEG mosaic: 64 x 32 tiles of 32 x 32 for Fashion-MNIST, a 2048 x 1024 picture.
 * Big mosaics amortize jpeg-js's per-call set-up (tables, allocations): 16 x 16 was ~1.7x slower.
 */
const MOSAIC_COLS = 64;
const MOSAIC_ROWS = 32;

export const jpegCompression: CorruptionDef = {
  name: 'jpeg_compression',
  family: 'digital',
  random: false,
  params: [{ name: 'JPEG quality', values: JPEG_QUALITY }],
  basis: 'CIFAR-10-C; codec: jpeg-js',
  apply(src, dst, { n, h, w, severity }) {
    const quality = at(JPEG_QUALITY, severity);
    // Each tile is the image padded to a multiple of 8 by edge replication: that is what
    // jpeg-js does at an image's right and bottom borders, so blocks never mix images.
    const th = Math.ceil(h / 8) * 8;
    const tw = Math.ceil(w / 8) * 8;
    const px = h * w;
    const per = MOSAIC_COLS * MOSAIC_ROWS;
    for (let first = 0; first < n; first += per) {
      const count = Math.min(per, n - first);
      const cols = Math.min(MOSAIC_COLS, count);
      const rows = Math.ceil(count / cols);
      const W = cols * tw;
      const H = rows * th;
      const rgba = new Uint8Array(W * H * 4);
      for (let t = 0; t < rows * cols; t++) {
        const img = first + Math.min(t, count - 1); // pad the last row with copies
        const ox = (t % cols) * tw;
        const oy = Math.floor(t / cols) * th;
        for (let y = 0; y < th; y++) {
          const sy = Math.min(y, h - 1);
          for (let x = 0; x < tw; x++) {
            const sx = Math.min(x, w - 1);
            const v = src[img * px + sy * w + sx]!;
            const b = Math.round((v < 0 ? 0 : v > 1 ? 1 : v) * 255);
            const q = ((oy + y) * W + ox + x) * 4;
            rgba[q] = b;
            rgba[q + 1] = b;
            rgba[q + 2] = b;
            rgba[q + 3] = 255;
          }
        }
      }
      const encoded = jpeg.encode({ data: rgba, width: W, height: H }, quality);
      const decoded = jpeg.decode(encoded.data, { useTArray: true, formatAsRGBA: false });
      if (decoded.width !== W || decoded.height !== H) {
        throw new Error(`jpeg_compression: decoded ${decoded.width}x${decoded.height}, expected ${W}x${H}`);
      }
      const rgb = decoded.data;
      for (let t = 0; t < count; t++) {
        const ox = (t % cols) * tw;
        const oy = Math.floor(t / cols) * th;
        const off = (first + t) * px;
        for (let y = 0; y < h; y++) {
          for (let x = 0; x < w; x++) {
            const q = ((oy + y) * W + ox + x) * 3;
            const luma = 0.299 * rgb[q]! + 0.587 * rgb[q + 1]! + 0.114 * rgb[q + 2]!;
            dst[off + y * w + x] = Math.round(luma) / 255;
          }
        }
      }
      clip01(dst, first * px, count * px);
    }
  },
};
