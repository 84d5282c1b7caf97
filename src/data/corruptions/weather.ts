/** Weather-like corruptions: snow, fog, spatter. */
import type { Rng } from '../random.ts';
import {
  applyLinearOp,
  applyMotion,
  boxBlur3,
  cachedLinearOp,
  clip01,
  clippedZoomTable,
  filter2d,
  lerpResample,
  linearOpFrom,
  makeGaussianBlur,
  motionKernel,
} from './ops.ts';
import { at, col, type CorruptionDef } from './types.ts';

// ---------------------------------------------------------------- snow

// (mean, std, zoom, threshold, motion radius, motion sigma, blend) as in make_cifar_c.py
const SNOW = [
  [0.1, 0.2, 1, 0.6, 8, 3, 0.95],
  [0.1, 0.2, 1, 0.5, 10, 4, 0.9],
  [0.15, 0.3, 1.75, 0.55, 10, 4, 0.9],
  [0.25, 0.3, 2.25, 0.6, 12, 6, 0.85],
  [0.3, 0.3, 1.25, 0.65, 14, 12, 0.8],
] as const;

export const snow: CorruptionDef = {
  name: 'snow',
  family: 'weather',
  random: true,
  params: [
    { name: 'flake field mean', values: col(SNOW, 0) },
    { name: 'flake field std', values: col(SNOW, 1) },
    { name: 'flake zoom', values: col(SNOW, 2) },
    { name: 'flake threshold', values: col(SNOW, 3) },
    { name: 'streak radius (px)', values: col(SNOW, 4) },
    { name: 'streak sigma (px)', values: col(SNOW, 5) },
    { name: 'image weight (rest: 1.5x+0.5)', values: col(SNOW, 6) },
  ],
  basis: 'CIFAR-10-C',
  apply(src, dst, { n, h, w, severity, rngFor }) {
    const [mean, std, zoom, thr, radius, sigma, blend] = at(SNOW, severity);
    const px = h * w;
    const field = new Float32Array(px);
    const zoomed = new Float32Array(px);
    const layer = new Float32Array(px);
    const ty = clippedZoomTable(h, zoom);
    const tx = clippedZoomTable(w, zoom);
    for (let i = 0; i < n; i++) {
      const rng = rngFor(i);
      for (let p = 0; p < px; p++) field[p] = mean + std * rng.normal();
      lerpResample(field, 0, w, zoomed, 0, h, w, ty, tx, false);
      for (let p = 0; p < px; p++) {
        let v = zoomed[p]!;
        if (v < thr) v = 0;
        v = v > 1 ? 1 : v;
        zoomed[p] = Math.floor(v * 255) / 255; // to an 8-bit PNG for ImageMagick
      }
      applyMotion(zoomed, 0, layer, 0, h, w, motionKernel(radius, sigma, rng.uniform(-135, -45)));
      for (let p = 0; p < px; p++) layer[p] = Math.round(layer[p]! * 255) / 255; // decoded 8-bit PNG
      const off = i * px;
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          const v = src[off + y * w + x]!;
          const whitened = blend * v + (1 - blend) * Math.max(v, v * 1.5 + 0.5);
          dst[off + y * w + x] = whitened + layer[y * w + x]! + layer[(h - 1 - y) * w + (w - 1 - x)]!;
        }
      }
      clip01(dst, off, px);
    }
  },
};

// ---------------------------------------------------------------- fog

const FOG = [
  [0.2, 3],
  [0.5, 3],
  [0.75, 2.5],
  [1, 2],
  [1.5, 1.75],
] as const;

/**
 * make_cifar_c.py's plasma_fractal (diamond-square, from FLHerne/mapgen): a size x size
 * height map in [0, 1]; size must be a power of two. Written into `out` (row-major).
 */
export function plasmaFractal(size: number, wibbleDecay: number, rng: Rng, out: Float64Array): void {
  if ((size & (size - 1)) !== 0) throw new Error(`plasmaFractal: size must be a power of two, got ${size}`);
  const m = size;
  out.fill(0, 0, m * m);
  let step = m;
  let wibble = 100;
  const get = (y: number, x: number) => out[(((y % m) + m) % m) * m + (((x % m) + m) % m)]!;
  const wibbled = (v: number) => v / 4 + wibble * rng.uniform(-wibble, wibble);
  while (step >= 2) {
    const half = step >> 1;
    // squares: centre of each square = mean of its 4 corners + wibble
    for (let y = 0; y < m; y += step) {
      for (let x = 0; x < m; x += step) {
        const s = get(y, x) + get(y + step, x) + get(y, x + step) + get(y + step, x + step);
        out[(y + half) * m + x + half] = wibbled(s);
      }
    }
    // diamonds: the edge midpoints, from the two adjacent square centres and two corners
    for (let y = 0; y < m; y += step) {
      for (let x = 0; x < m; x += step) {
        // (y, x + half): corners (y, x), (y, x+step); centres (y-half, x+half), (y+half, x+half)
        const a = get(y, x) + get(y, x + step) + get(y - half, x + half) + get(y + half, x + half);
        out[y * m + x + half] = wibbled(a);
      }
    }
    for (let y = 0; y < m; y += step) {
      for (let x = 0; x < m; x += step) {
        // (y + half, x): corners (y, x), (y+step, x); centres (y+half, x-half), (y+half, x+half)
        const b = get(y, x) + get(y + step, x) + get(y + half, x - half) + get(y + half, x + half);
        out[(y + half) * m + x] = wibbled(b);
      }
    }
    step = half;
    wibble /= wibbleDecay;
  }
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < m * m; i++) {
    lo = Math.min(lo, out[i]!);
    hi = Math.max(hi, out[i]!);
  }
  const span = hi - lo || 1;
  for (let i = 0; i < m * m; i++) out[i] = (out[i]! - lo) / span;
}

export const fog: CorruptionDef = {
  name: 'fog',
  family: 'weather',
  random: true,
  params: [
    { name: 'fog strength', values: col(FOG, 0) },
    { name: 'fractal wibble decay', values: col(FOG, 1) },
  ],
  basis: 'CIFAR-10-C (32x32 fractal cropped to 28x28)',
  apply(src, dst, { n, h, w, severity, rngFor }) {
    const [strength, decay] = at(FOG, severity);
    let size = 32;
    while (size < Math.max(h, w)) size *= 2;
    const map = new Float64Array(size * size);
    const px = h * w;
    for (let i = 0; i < n; i++) {
      plasmaFractal(size, decay, rngFor(i), map);
      const off = i * px;
      let maxv = 0;
      for (let p = off; p < off + px; p++) maxv = Math.max(maxv, src[p]!);
      const scale = maxv / (maxv + strength);
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          dst[off + y * w + x] = (src[off + y * w + x]! + strength * map[y * size + x]!) * scale;
        }
      }
      clip01(dst, off, px);
    }
  },
};

// ---------------------------------------------------------------- spatter

// (mean, std, blur sigma, threshold, water intensity or mud blur sigma, mode: 0 water, 1 mud).
// Severities 1-3 are CIFAR-10-C's. Its mud severities 4-5, (.65,.1,.7,.69,.6) and
// (.65,.1,.5,.68,.6), leave only a few specks on 28x28 images (milder than severity 3), so
// refit uses the rougher std .3 / sigma 1 field of severity 3 with thresholds .69 and .67.
const SPATTER = [
  [0.62, 0.1, 0.7, 0.7, 0.5, 0],
  [0.65, 0.1, 0.8, 0.7, 0.5, 0],
  [0.65, 0.3, 1, 0.69, 0.5, 0],
  [0.65, 0.3, 1, 0.69, 0.6, 1],
  [0.65, 0.3, 1, 0.67, 0.6, 1],
] as const;

/** Gray levels of make_cifar_c.py's spatter colours (ITU-R 601 luma). */
const WATER_GRAY = (0.299 * 175 + 0.587 * 238 + 0.114 * 238) / 255; // pale turquoise
const MUD_GRAY = (0.299 * 63 + 0.587 * 42 + 0.114 * 20) / 255; // mud brown

const CHAMFER_A = 1;
const CHAMFER_B = 1.4;
const CHAMFER_C = 2.1969;

/**
 * Distance of every pixel to the nearest pixel with isZero set: OpenCV's distanceTransform
 * with DIST_L2 and maskSize 5, i.e. a two-pass 5x5 chamfer (costs 1, 1.4, 2.1969).
 * Works on a grid padded by 2 cells of "infinity" so the passes need no bounds checks.
 */
function chamferDistance(isZero: Uint8Array, h: number, w: number, out: Float32Array, grid: Float32Array): void {
  const INF = 1e6;
  const pw = w + 4;
  grid.fill(INF);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) if (isZero[y * w + x]) grid[(y + 2) * pw + x + 2] = 0;
  const A = CHAMFER_A;
  const B = CHAMFER_B;
  const C = CHAMFER_C;
  for (let y = 2; y < h + 2; y++) {
    for (let x = 2; x < w + 2; x++) {
      const p = y * pw + x;
      let d = grid[p]!;
      if (d === 0) continue;
      d = Math.min(
        d,
        grid[p - 1]! + A,
        grid[p - pw - 1]! + B,
        grid[p - pw]! + A,
        grid[p - pw + 1]! + B,
        grid[p - 2 * pw - 1]! + C,
        grid[p - 2 * pw + 1]! + C,
        grid[p - pw - 2]! + C,
        grid[p - pw + 2]! + C,
      );
      grid[p] = d;
    }
  }
  for (let y = h + 1; y >= 2; y--) {
    for (let x = w + 1; x >= 2; x--) {
      const p = y * pw + x;
      let d = grid[p]!;
      if (d === 0) continue;
      d = Math.min(
        d,
        grid[p + 1]! + A,
        grid[p + pw + 1]! + B,
        grid[p + pw]! + A,
        grid[p + pw - 1]! + B,
        grid[p + 2 * pw + 1]! + C,
        grid[p + 2 * pw - 1]! + C,
        grid[p + pw + 2]! + C,
        grid[p + pw - 2]! + C,
      );
      grid[p] = d;
      out[(y - 2) * w + x - 2] = d;
    }
  }
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) if (isZero[y * w + x]) out[y * w + x] = 0;
}

/** cv2.equalizeHist on 8-bit values held in a float array (in place). */
function equalizeHist(a: Float32Array, len: number): void {
  const hist = new Int32Array(256);
  for (let i = 0; i < len; i++) hist[a[i]!]!++;
  let first = 0;
  while (hist[first] === 0) first++;
  if (hist[first] === len) return; // constant image: OpenCV leaves it as it is
  const scale = 255 / (len - hist[first]!);
  const lut = new Float32Array(256);
  let sum = 0;
  for (let i = first + 1; i < 256; i++) {
    sum += hist[i]!;
    lut[i] = Math.min(255, Math.round(sum * scale));
  }
  for (let i = 0; i < len; i++) a[i] = lut[a[i]!]!;
}

const EMBOSS = Float32Array.of(-2, -1, 0, -1, 1, 1, 0, 1, 2);

export const spatter: CorruptionDef = {
  name: 'spatter',
  family: 'weather',
  random: true,
  params: [
    { name: 'liquid field mean', values: col(SPATTER, 0) },
    { name: 'liquid field std', values: col(SPATTER, 1) },
    { name: 'liquid blur sigma', values: col(SPATTER, 2) },
    { name: 'liquid threshold', values: col(SPATTER, 3) },
    { name: 'water intensity / mud blur sigma', values: col(SPATTER, 4) },
    { name: 'kind', values: SPATTER.map((c) => (c[5] === 0 ? 'water' : 'mud')) as unknown as [string, string, string, string, string] },
  ],
  basis: 'CIFAR-10-C at 1-3; at 4-5 mud on the std .3 field of severity 3 (CIFAR: (.65, .1, .7, .69, .6), (.65, .1, .5, .68, .6))',
  apply(src, dst, { n, h, w, severity, rngFor }) {
    const [mean, std, sigma, thr, c4, mode] = at(SPATTER, severity);
    const px = h * w;
    const liquid = new Float32Array(px);
    const tmp = new Float32Array(px);
    const dist = new Float32Array(px);
    const edge = new Uint8Array(px);
    const grid = new Float32Array((h + 4) * (w + 4));
    const m = new Float32Array(px);
    const blurLiquid = makeGaussianBlur(h, w, sigma, 'nearest');
    const blurMud = makeGaussianBlur(h, w, c4, 'nearest');
    const box3 = cachedLinearOp(`box3:${h}x${w}`, () =>
      linearOpFrom(h, w, (s, d) => boxBlur3(s, d, h, w, new Float32Array(h * w))),
    );
    const emboss = cachedLinearOp(`emboss:${h}x${w}`, () =>
      linearOpFrom(h, w, (s, d) => filter2d(s, 0, d, 0, h, w, EMBOSS, 3, 3, 'reflect101')),
    );
    for (let i = 0; i < n; i++) {
      const rng = rngFor(i);
      const off = i * px;
      for (let p = 0; p < px; p++) tmp[p] = mean + std * rng.normal();
      blurLiquid(tmp, 0, liquid, 0);
      for (let p = 0; p < px; p++) if (liquid[p]! < thr) liquid[p] = 0;
      if (mode === 0) {
        // Water. Edges of the 8-bit liquid layer (cv2.Canny(50, 150) on sharp drop borders
        // marks the drops' boundary pixels; we mark those directly).
        for (let y = 0; y < h; y++) {
          for (let x = 0; x < w; x++) {
            const p = y * w + x;
            const inside = liquid[p]! > 0;
            const border =
              inside &&
              ((y > 0 && liquid[p - w] === 0) ||
                (y < h - 1 && liquid[p + w] === 0) ||
                (x > 0 && liquid[p - 1] === 0) ||
                (x < w - 1 && liquid[p + 1] === 0));
            edge[p] = border ? 1 : 0;
          }
        }
        chamferDistance(edge, h, w, dist, grid);
        for (let p = 0; p < px; p++) dist[p] = Math.min(dist[p]!, 20); // THRESH_TRUNC at 20
        applyLinearOp(box3, dist, 0, tmp, 0);
        for (let p = 0; p < px; p++) tmp[p] = Math.floor(tmp[p]!); // astype(uint8)
        equalizeHist(tmp, px);
        applyLinearOp(emboss, tmp, 0, dist, 0);
        for (let p = 0; p < px; p++) {
          const v = Math.round(dist[p]!);
          dist[p] = v < 0 ? 0 : v > 255 ? 255 : v; // CV_8U saturation
        }
        applyLinearOp(box3, dist, 0, tmp, 0);
        let maxm = 0;
        for (let p = 0; p < px; p++) {
          m[p] = liquid[p]! * tmp[p]!;
          maxm = Math.max(maxm, m[p]!);
        }
        const s = maxm > 0 ? (c4 / maxm) * WATER_GRAY : 0;
        for (let p = 0; p < px; p++) dst[off + p] = src[off + p]! + m[p]! * s;
      } else {
        // Mud: opaque drops where the blurred drop mask is >= 0.8.
        for (let p = 0; p < px; p++) tmp[p] = liquid[p]! > thr ? 1 : 0;
        blurMud(tmp, 0, m, 0);
        for (let p = 0; p < px; p++) {
          const mm = m[p]! < 0.8 ? 0 : m[p]!;
          dst[off + p] = src[off + p]! * (1 - mm) + MUD_GRAY * mm;
        }
      }
      clip01(dst, off, px);
    }
  },
};
