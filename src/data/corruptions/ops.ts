/**
 * Small image operations on single-channel float images stored row-major inside a larger
 * Float32Array (an offset selects the image). They mirror the library calls that
 * make_cifar_c.py uses (scipy.ndimage / skimage / OpenCV / PIL / ImageMagick) closely enough
 * to reproduce the corruptions' look; each function names the call it stands in for.
 * Written by hand because no JS library offers these on raw Float32Arrays at this speed.
 */

/** Border handling, named after the library that uses it as its default. */
export type Border =
  | 'nearest' // edge replication: aaa|abcd|ddd (scipy 'nearest', skimage.filters.gaussian default, ImageMagick 'edge')
  | 'reflect' // half-sample symmetric: cba|abcd|dcb (scipy 'reflect')
  | 'reflect101'; // whole-sample symmetric: dcb|abcd|cba (OpenCV BORDER_REFLECT_101, the OpenCV default)

export function borderIndex(i: number, n: number, mode: Border): number {
  if (n === 1) return 0;
  if (i >= 0 && i < n) return i;
  switch (mode) {
    case 'nearest':
      return i < 0 ? 0 : n - 1;
    case 'reflect': {
      const period = 2 * n;
      let k = ((i % period) + period) % period;
      if (k >= n) k = period - 1 - k;
      return k;
    }
    case 'reflect101': {
      const period = 2 * n - 2;
      let k = ((i % period) + period) % period;
      if (k >= n) k = period - k;
      return k;
    }
  }
}

/** Index table for a padded axis: entry j is the source index of padded position j - r. */
export function padTable(n: number, r: number, mode: Border): Int32Array {
  const t = new Int32Array(n + 2 * r);
  for (let j = 0; j < t.length; j++) t[j] = borderIndex(j - r, n, mode);
  return t;
}

/**
 * 1-D Gaussian kernel as scipy.ndimage.gaussian_filter builds it: radius
 * floor(truncate*sigma + 0.5), normalized to sum 1. sigma <= 0 gives the identity [1].
 */
export function gaussianKernel(sigma: number, truncate = 4): Float32Array {
  if (!(sigma > 0)) return Float32Array.of(1);
  const r = Math.floor(truncate * sigma + 0.5);
  const k = new Float32Array(2 * r + 1);
  let sum = 0;
  for (let i = -r; i <= r; i++) {
    const v = Math.exp((-0.5 * i * i) / (sigma * sigma));
    k[i + r] = v;
    sum += v;
  }
  for (let i = 0; i < k.length; i++) k[i]! /= sum;
  return k;
}

/**
 * Separable correlation with centered odd-length kernels: rows with kx, then columns with ky.
 * src/dst may be the same array at the same offset (tmp holds the intermediate).
 */
export function separableFilter(
  src: Float32Array,
  srcOff: number,
  dst: Float32Array,
  dstOff: number,
  h: number,
  w: number,
  ky: Float32Array,
  kx: Float32Array,
  mode: Border,
  tmp: Float32Array,
): void {
  const rx = (kx.length - 1) >> 1;
  const ry = (ky.length - 1) >> 1;
  const tx = padTable(w, rx, mode);
  const ty = padTable(h, ry, mode);
  for (let y = 0; y < h; y++) {
    const row = srcOff + y * w;
    for (let x = 0; x < w; x++) {
      let s = 0;
      for (let k = 0; k < kx.length; k++) s += kx[k]! * src[row + tx[x + k]!]!;
      tmp[y * w + x] = s;
    }
  }
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let s = 0;
      for (let k = 0; k < ky.length; k++) s += ky[k]! * tmp[ty[y + k]! * w + x]!;
      dst[dstOff + y * w + x] = s;
    }
  }
}

/**
 * 2-D correlation with a kh x kw kernel anchored at its center (cv2.filter2D).
 * src and dst must not overlap.
 */
export function filter2d(
  src: Float32Array,
  srcOff: number,
  dst: Float32Array,
  dstOff: number,
  h: number,
  w: number,
  kernel: Float32Array,
  kh: number,
  kw: number,
  mode: Border,
): void {
  const ry = (kh - 1) >> 1;
  const rx = (kw - 1) >> 1;
  const tx = padTable(w, rx, mode);
  const ty = padTable(h, ry, mode);
  // Skip zero taps (disk kernels are mostly zero).
  const taps: number[] = [];
  for (let i = 0; i < kh; i++) for (let j = 0; j < kw; j++) if (kernel[i * kw + j] !== 0) taps.push(i, j);
  const nt = taps.length >> 1;
  const ti = new Int32Array(nt);
  const tj = new Int32Array(nt);
  const tv = new Float32Array(nt);
  for (let t = 0; t < nt; t++) {
    ti[t] = taps[2 * t]!;
    tj[t] = taps[2 * t + 1]!;
    tv[t] = kernel[ti[t]! * kw + tj[t]!]!;
  }
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let s = 0;
      for (let t = 0; t < nt; t++) s += tv[t]! * src[srcOff + ty[y + ti[t]!]! * w + tx[x + tj[t]!]!]!;
      dst[dstOff + y * w + x] = s;
    }
  }
}

/** cv2.blur with a 3x3 box (BORDER_REFLECT_101). */
export function boxBlur3(src: Float32Array, dst: Float32Array, h: number, w: number, tmp: Float32Array): void {
  const k = Float32Array.of(1 / 3, 1 / 3, 1 / 3);
  separableFilter(src, 0, dst, 0, h, w, k, k, 'reflect101', tmp);
}

/** Python's round(): half to even. */
export function roundHalfEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

/** Linear interpolation table: out[i] = (1-frac[i]) * in[i0[i]] + frac[i] * in[i0[i]+1]. */
export interface LerpTable {
  i0: Int32Array;
  i1: Int32Array;
  frac: Float32Array;
}

/**
 * The coordinate map of make_cifar_c.py's clipped_zoom along one axis of length n:
 * crop ceil(n/z) central pixels, scipy.ndimage.zoom them by z with order 1
 * (output length round(crop*z), input coordinate = out*(crop-1)/(out-1)), then keep the
 * central n outputs.
 */
export function clippedZoomTable(n: number, z: number): LerpTable {
  const ch = Math.ceil(n / z);
  const top = Math.floor((n - ch) / 2);
  const outLen = roundHalfEven(ch * z);
  const trim = Math.floor((outLen - n) / 2);
  const scale = outLen > 1 ? (ch - 1) / (outLen - 1) : 0;
  const i0 = new Int32Array(n);
  const i1 = new Int32Array(n);
  const frac = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const c = top + (trim + i) * scale;
    let f = Math.floor(c);
    if (f > top + ch - 1) f = top + ch - 1;
    const fr = c - f;
    i0[i] = Math.min(Math.max(f, 0), n - 1);
    i1[i] = Math.min(Math.max(f + 1, 0), n - 1);
    frac[i] = fr;
  }
  return { i0, i1, frac };
}

/** Apply a separable lerp resampling (rows table ty, columns table tx); dst is h x w. */
export function lerpResample(
  src: Float32Array,
  srcOff: number,
  srcW: number,
  dst: Float32Array,
  dstOff: number,
  h: number,
  w: number,
  ty: LerpTable,
  tx: LerpTable,
  accumulate: boolean,
): void {
  for (let y = 0; y < h; y++) {
    const r0 = srcOff + ty.i0[y]! * srcW;
    const r1 = srcOff + ty.i1[y]! * srcW;
    const fy = ty.frac[y]!;
    const gy = 1 - fy;
    for (let x = 0; x < w; x++) {
      const a = tx.i0[x]!;
      const b = tx.i1[x]!;
      const fx = tx.frac[x]!;
      const top = src[r0 + a]! + fx * (src[r0 + b]! - src[r0 + a]!);
      const bot = src[r1 + a]! + fx * (src[r1 + b]! - src[r1 + a]!);
      const v = gy * top + fy * bot;
      if (accumulate) dst[dstOff + y * w + x]! += v;
      else dst[dstOff + y * w + x] = v;
    }
  }
}

/**
 * Bilinear sample of one image at (row, col) with border handling on the integer taps
 * (scipy map_coordinates order=1 / cv2.warpAffine INTER_LINEAR).
 */
export function bilinear(src: Float32Array, off: number, h: number, w: number, row: number, col: number, mode: Border): number {
  const y0 = Math.floor(row);
  const x0 = Math.floor(col);
  const fy = row - y0;
  const fx = col - x0;
  if (y0 >= 0 && y0 < h - 1 && x0 >= 0 && x0 < w - 1) {
    const p = off + y0 * w + x0;
    const a = src[p]!;
    const b = src[p + 1]!;
    const c = src[p + w]!;
    const d = src[p + w + 1]!;
    return (1 - fy) * ((1 - fx) * a + fx * b) + fy * ((1 - fx) * c + fx * d);
  }
  const ya = borderIndex(y0, h, mode);
  const yb = borderIndex(y0 + 1, h, mode);
  const xa = borderIndex(x0, w, mode);
  const xb = borderIndex(x0 + 1, w, mode);
  const a = src[off + ya * w + xa]!;
  const b = src[off + ya * w + xb]!;
  const c = src[off + yb * w + xa]!;
  const d = src[off + yb * w + xb]!;
  return (1 - fy) * ((1 - fx) * a + fx * b) + fy * ((1 - fx) * c + fx * d);
}

/**
 * ImageMagick's MotionBlurImage kernel: a one-sided line of 2*ceil(radius)+1 taps, weight
 * exp(-i^2 / (2 sigma^2)) normalized, tap i at the rounded offset (i cos(angle), i sin(angle)).
 * Taps whose weight is below 1e-7 are dropped (they cannot change a float image).
 */
export interface MotionKernel {
  dx: Int32Array;
  dy: Int32Array;
  wt: Float32Array;
}

export function motionKernel(radius: number, sigma: number, angleDeg: number): MotionKernel {
  const width = 2 * Math.ceil(radius) + 1;
  const raw: number[] = [];
  let sum = 0;
  for (let i = 0; i < width; i++) {
    const v = Math.exp(-(i * i) / (2 * sigma * sigma));
    raw.push(v);
    sum += v;
  }
  const a = (angleDeg * Math.PI) / 180;
  const cx = Math.cos(a);
  const sy = Math.sin(a);
  const keep: number[] = [];
  for (let i = 0; i < width; i++) if (raw[i]! / sum >= 1e-7) keep.push(i);
  const dx = new Int32Array(keep.length);
  const dy = new Int32Array(keep.length);
  const wt = new Float32Array(keep.length);
  let ksum = 0;
  keep.forEach((i, t) => {
    dx[t] = Math.ceil(i * cx - 0.5);
    dy[t] = Math.ceil(i * sy - 0.5);
    wt[t] = raw[i]! / sum;
    ksum += wt[t]!;
  });
  for (let t = 0; t < wt.length; t++) wt[t]! /= ksum;
  return { dx, dy, wt };
}

/** Apply a motion kernel with edge-replicated borders (ImageMagick's default virtual pixels). */
export function applyMotion(
  src: Float32Array,
  srcOff: number,
  dst: Float32Array,
  dstOff: number,
  h: number,
  w: number,
  k: MotionKernel,
): void {
  const nt = k.wt.length;
  // Per tap: clamped row offsets and column indices, so the inner loop has no branches.
  const rows = new Int32Array(nt * h);
  const cols = new Int32Array(nt * w);
  for (let t = 0; t < nt; t++) {
    for (let y = 0; y < h; y++) {
      const yy = y + k.dy[t]!;
      rows[t * h + y] = (yy < 0 ? 0 : yy >= h ? h - 1 : yy) * w;
    }
    for (let x = 0; x < w; x++) {
      const xx = x + k.dx[t]!;
      cols[t * w + x] = xx < 0 ? 0 : xx >= w ? w - 1 : xx;
    }
  }
  // Rows that are all zero contribute nothing (snow layers are sparse): skip them.
  const zeroRow = new Uint8Array(h);
  for (let y = 0; y < h; y++) {
    let z = 1;
    for (let x = 0; x < w; x++) {
      if (src[srcOff + y * w + x] !== 0) {
        z = 0;
        break;
      }
    }
    zeroRow[y] = z;
  }
  dst.fill(0, dstOff, dstOff + h * w);
  for (let t = 0; t < nt; t++) {
    const wt = k.wt[t]!;
    for (let y = 0; y < h; y++) {
      const ro = rows[t * h + y]!;
      if (zeroRow[ro / w]) continue;
      const r = srcOff + ro;
      const o = dstOff + y * w;
      for (let x = 0; x < w; x++) dst[o + x]! += wt * src[r + cols[t * w + x]!]!;
    }
  }
}

/** Clamp a whole range of an array into [0, 1] (NaN becomes 0). */
export function clip01(a: Float32Array, off: number, len: number): void {
  for (let i = off; i < off + len; i++) {
    const v = a[i]!;
    a[i] = v > 0 ? (v < 1 ? v : 1) : 0;
  }
}

/**
 * A fixed linear image map (output pixel = sum of weights * input pixels) in compressed
 * sparse rows. Deterministic corruptions that are linear (defocus, zoom blur, pixelate,
 * fixed Gaussian blurs) are built once per call as one of these and then applied per image,
 * which is several times faster than re-running the filters.
 */
export interface LinearOp {
  /** Pixels per image (rows = cols = px). */
  px: number;
  rowStart: Int32Array;
  idx: Int32Array;
  wt: Float32Array;
}

/**
 * Build a LinearOp by feeding a linear per-image function unit impulses
 * (px calls of f; fine for small images such as 28x28).
 */
export function linearOpFrom(
  h: number,
  w: number,
  f: (src: Float32Array, dst: Float32Array) => void,
): LinearOp {
  const px = h * w;
  const dense = new Float32Array(px * px); // dense[out * px + in]
  const e = new Float32Array(px);
  const col = new Float32Array(px);
  for (let j = 0; j < px; j++) {
    e.fill(0);
    e[j] = 1;
    col.fill(0);
    f(e, col);
    for (let i = 0; i < px; i++) if (col[i] !== 0) dense[i * px + j] = col[i]!;
  }
  const rowStart = new Int32Array(px + 1);
  let nnz = 0;
  for (let i = 0; i < px; i++) {
    for (let j = 0; j < px; j++) if (Math.abs(dense[i * px + j]!) > 1e-9) nnz++;
    rowStart[i + 1] = nnz;
  }
  const idx = new Int32Array(nnz);
  const wt = new Float32Array(nnz);
  let k = 0;
  for (let i = 0; i < px; i++) {
    for (let j = 0; j < px; j++) {
      const v = dense[i * px + j]!;
      if (Math.abs(v) > 1e-9) {
        idx[k] = j;
        wt[k] = v;
        k++;
      }
    }
  }
  return { px, rowStart, idx, wt };
}

export function applyLinearOp(op: LinearOp, src: Float32Array, srcOff: number, dst: Float32Array, dstOff: number): void {
  const { px, rowStart, idx, wt } = op;
  for (let i = 0; i < px; i++) {
    let s = 0;
    const end = rowStart[i + 1]!;
    for (let k = rowStart[i]!; k < end; k++) s += wt[k]! * src[srcOff + idx[k]!]!;
    dst[dstOff + i] = s;
  }
}

const opCache = new Map<string, LinearOp>();

/** Memoize LinearOps by a key (corruption, severity, size). Small: ~15 ops of <1 MB each. */
export function cachedLinearOp(key: string, build: () => LinearOp): LinearOp {
  let op = opCache.get(key);
  if (!op) {
    op = build();
    opCache.set(key, op);
  }
  return op;
}

/**
 * skimage.filters.gaussian / scipy.ndimage.gaussian_filter on one h x w image, with the
 * kernel and border tables built once for repeated per-image use.
 */
export function makeGaussianBlur(
  h: number,
  w: number,
  sigma: number,
  mode: Border,
  truncate = 4,
): (src: Float32Array, srcOff: number, dst: Float32Array, dstOff: number) => void {
  const px = h * w;
  if (!(sigma > 0) || gaussianKernel(sigma, truncate).length === 1) {
    return (src, srcOff, dst, dstOff) => {
      if (src !== dst || srcOff !== dstOff) dst.set(src.subarray(srcOff, srcOff + px), dstOff);
    };
  }
  const k = gaussianKernel(sigma, truncate);
  const r = (k.length - 1) >> 1;
  const tx = padTable(w, r, mode);
  const ty = padTable(h, r, mode);
  const tmp = new Float32Array(px);
  const K = k.length;
  // Interior pixels index the source directly; only the r pixels at each border go through
  // the border tables.
  const x0 = Math.min(r, w);
  const x1 = Math.max(x0, w - r);
  const y0 = Math.min(r, h);
  const y1 = Math.max(y0, h - r);
  return (src, srcOff, dst, dstOff) => {
    for (let y = 0; y < h; y++) {
      const row = srcOff + y * w;
      const trow = y * w;
      for (let x = 0; x < x0; x++) {
        let s = 0;
        for (let t = 0; t < K; t++) s += k[t]! * src[row + tx[x + t]!]!;
        tmp[trow + x] = s;
      }
      for (let x = x0; x < x1; x++) {
        // Symmetric kernel: pair the taps at -t and +t.
        const c = row + x;
        let s = k[r]! * src[c]!;
        for (let t = 1; t <= r; t++) s += k[r + t]! * (src[c - t]! + src[c + t]!);
        tmp[trow + x] = s;
      }
      for (let x = x1; x < w; x++) {
        let s = 0;
        for (let t = 0; t < K; t++) s += k[t]! * src[row + tx[x + t]!]!;
        tmp[trow + x] = s;
      }
    }
    for (let y = 0; y < h; y++) {
      const o = dstOff + y * w;
      if (y >= y0 && y < y1) {
        const c = y * w;
        const k0 = k[r]!;
        for (let x = 0; x < w; x++) dst[o + x] = k0 * tmp[c + x]!;
        for (let t = 1; t <= r; t++) {
          const kt = k[r + t]!;
          const up = c - t * w;
          const dn = c + t * w;
          for (let x = 0; x < w; x++) dst[o + x]! += kt * (tmp[up + x]! + tmp[dn + x]!);
        }
      } else {
        for (let x = 0; x < w; x++) {
          let s = 0;
          for (let t = 0; t < K; t++) s += k[t]! * tmp[ty[y + t]! * w + x]!;
          dst[o + x] = s;
        }
      }
    }
  };
}
