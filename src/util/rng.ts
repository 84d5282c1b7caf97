// Seeded pseudo-random numbers: the one generator of refit (initialisation, sampling,
// augmentation, corruptions, stream orders, Dirichlet label schedules, reservoirs). The same seed
// gives the same numbers on every platform (pure 32-bit integer arithmetic, no Math.random).
//
// One class, two engines, so that every seeded result refit has published stays the same:
// - 'mulberry32' (`new Rng(seed)`): initialisation, PEFT, gradient checks, drift and continual
//   state — what src/util/rng.ts always drew;
// - 'xoshiro128**' (`Rng.xoshiro(seed)`, Blackman & Vigna, seeded through splitmix32): the data
//   layer's corruptions, stream orders and Dirichlet schedules, and the TTA augmentations — what
//   src/data/random.ts drew before the two classes became this one.
// Every method (uniform, int, normal, poisson, gamma, dirichlet, shuffle, permutation, fill,
// state) works on either engine. Written here rather than imported because each engine is a few
// lines and the corruptions call it in tight loops.

/** splitmix32 step: a good 32-bit mixer, used for seeding and for hashing seeds together. */
function splitmix32(x: number): number {
  x = (x + 0x9e3779b9) | 0;
  let z = x;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/**
 * Combine integers (seed, stream id, image index, ...) into one 32-bit seed. Order matters.
 * Non-integer or negative parts are folded in through their 32-bit representation.
 */
export function hashSeed(...parts: number[]): number {
  let h = 0x6a09e667;
  for (const p of parts) {
    const lo = p >>> 0;
    const hi = Math.floor(p / 4294967296) >>> 0;
    h = splitmix32(h ^ lo);
    if (hi !== 0) h = splitmix32(h ^ hi);
  }
  return h >>> 0;
}

/** FNV-1a hash of a string, for mixing names (e.g. a corruption type) into seeds. */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

const TWO_POW_32 = 4294967296;

export type RngEngine = 'mulberry32' | 'xoshiro128**';

export interface RngState { engine: RngEngine; a: number; b: number; c: number; d: number; spare: number; hasSpare: boolean }

export class Rng {
  private a = 0;
  private b = 0;
  private c = 0;
  private d = 0;
  private spare = 0;
  private hasSpare = false;

  constructor(seed: number, readonly engine: RngEngine = 'mulberry32') {
    if (!Number.isFinite(seed)) throw new Error(`Rng: seed must be a finite number, got ${seed}`);
    if (engine === 'mulberry32') {
      this.a = (seed >>> 0) ^ 0x9e3779b9;
      return;
    }
    if (engine !== 'xoshiro128**') throw new Error(`Rng: unknown engine '${engine}'; known: mulberry32, xoshiro128**`);
    let s = hashSeed(seed);
    s = splitmix32(s);
    this.a = s;
    s = splitmix32(s);
    this.b = s;
    s = splitmix32(s);
    this.c = s;
    s = splitmix32(s);
    this.d = s;
    if ((this.a | this.b | this.c | this.d) === 0) this.a = 1;
  }

  /** The data layer's engine (corruptions, streams, augmentations). */
  static xoshiro(seed: number): Rng {
    return new Rng(seed, 'xoshiro128**');
  }

  /** Uniform 32-bit unsigned integer. */
  uint32(): number {
    if (this.engine === 'mulberry32') {
      let t = (this.a = (this.a + 0x6d2b79f5) >>> 0);
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return (t ^ (t >>> 14)) >>> 0;
    }
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return result;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.uint32() / TWO_POW_32;
  }

  /** Uniform in [lo, hi); [0, 1) without arguments. */
  uniform(lo = 0, hi = 1): number {
    return lo + (hi - lo) * this.next();
  }

  /** Uniform integer in [lo, hi) (hi exclusive, like numpy's randint); `int(n)` is [0, n). */
  int(lo: number, hi?: number): number {
    if (hi === undefined) return Math.floor(this.next() * lo);
    return lo + Math.floor(this.next() * (hi - lo));
  }

  /** Fill with normal (default) or uniform [−1, 1) values times `scale`. */
  fill(a: Float32Array, scale = 1, kind: 'normal' | 'uniform' = 'normal'): Float32Array {
    for (let i = 0; i < a.length; i++) a[i] = kind === 'normal' ? this.normal() * scale : (this.next() * 2 - 1) * scale;
    return a;
  }

  /** The generator's whole state, for checkpoints: `setState` continues the same stream. */
  state(): RngState {
    return { engine: this.engine, a: this.a, b: this.b, c: this.c, d: this.d, spare: this.spare, hasSpare: this.hasSpare };
  }

  setState(s: RngState): void {
    if (![s?.a, s?.b, s?.c, s?.d].every(Number.isInteger)) throw new Error(`Rng.setState: not a state from Rng.state(): ${JSON.stringify(s)}`);
    if (s.engine !== this.engine) throw new Error(`Rng.setState: the state is of engine ${s.engine}, this generator is ${this.engine}`);
    this.a = s.a; this.b = s.b; this.c = s.c; this.d = s.d;
    this.spare = s.spare;
    this.hasSpare = s.hasSpare;
  }

  /** Standard normal via Box-Muller (both values used). */
  normal(): number {
    if (this.hasSpare) {
      this.hasSpare = false;
      return this.spare;
    }
    let u = this.next();
    while (u <= 0) u = this.next();
    const v = this.next();
    const r = Math.sqrt(-2 * Math.log(u));
    const th = 2 * Math.PI * v;
    this.spare = r * Math.sin(th);
    this.hasSpare = true;
    return r * Math.cos(th);
  }

  /**
   * Poisson(lam). Inversion by sequential search for lam < 10, Hörmann's PTRS
   * (transformed rejection with squeeze, the algorithm numpy uses) for lam >= 10.
   */
  poisson(lam: number): number {
    if (!(lam > 0)) return 0;
    if (lam < 10) {
      // Knuth-style product of uniforms; exact, O(lam).
      const L = Math.exp(-lam);
      let k = 0;
      let p = this.next();
      while (p > L) {
        k++;
        p *= this.next();
      }
      return k;
    }
    const slam = Math.sqrt(lam);
    const loglam = Math.log(lam);
    const b = 0.931 + 2.53 * slam;
    const a = -0.059 + 0.02483 * b;
    const invalpha = 1.1239 + 1.1328 / (b - 3.4);
    const vr = 0.9277 - 3.6224 / (b - 2);
    for (;;) {
      const U = this.next() - 0.5;
      const V = this.next();
      const us = 0.5 - Math.abs(U);
      const k = Math.floor(((2 * a) / us + b) * U + lam + 0.43);
      if (us >= 0.07 && V <= vr) return k;
      if (k < 0 || (us < 0.013 && V > us)) continue;
      if (Math.log(V) + Math.log(invalpha) - Math.log(a / (us * us) + b) <= -lam + k * loglam - logGamma(k + 1)) {
        return k;
      }
    }
  }

  /** Gamma(shape, 1) by Marsaglia & Tsang (2000); shape < 1 via the boost U^(1/shape). */
  gamma(shape: number): number {
    if (!(shape > 0)) throw new Error(`Rng.gamma: shape must be > 0, got ${shape}`);
    if (shape < 1) {
      let u = this.next();
      while (u <= 0) u = this.next();
      return this.gamma(shape + 1) * Math.pow(u, 1 / shape);
    }
    const d = shape - 1 / 3;
    const c = 1 / Math.sqrt(9 * d);
    for (;;) {
      let x: number;
      let v: number;
      do {
        x = this.normal();
        v = 1 + c * x;
      } while (v <= 0);
      v = v * v * v;
      const u = this.next();
      if (u < 1 - 0.0331 * x * x * x * x) return d * v;
      if (Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v;
    }
  }

  /** One draw from Dirichlet(alpha). For tiny alphas, falls back to a one-hot on underflow. */
  dirichlet(alpha: readonly number[]): Float64Array {
    const out = new Float64Array(alpha.length);
    let sum = 0;
    for (let i = 0; i < alpha.length; i++) {
      out[i] = this.gamma(alpha[i]!);
      sum += out[i]!;
    }
    if (sum > 0) {
      for (let i = 0; i < out.length; i++) out[i]! /= sum;
    } else {
      // All gammas underflowed to 0 (alpha ~ 1e-3 or smaller): the limit is a one-hot.
      out[this.int(0, out.length)] = 1;
    }
    return out;
  }

  /** In-place Fisher-Yates shuffle. */
  shuffle<T extends { length: number; [i: number]: any }>(arr: T): T {
    for (let i = arr.length - 1; i > 0; i--) {
      const j = this.int(0, i + 1);
      const t = arr[i];
      arr[i] = arr[j];
      arr[j] = t;
    }
    return arr;
  }

  /** A random permutation of 0..n-1. */
  permutation(n: number): Uint32Array {
    const p = new Uint32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    return this.shuffle(p);
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** log Gamma(x) for x >= 1 (Stirling series with shift, as numpy's random_loggam). */
export function logGamma(x: number): number {
  const a = [
    8.333333333333333e-2, -2.777777777777778e-3, 7.936507936507937e-4, -5.952380952380952e-4,
    8.417508417508418e-4, -1.917526917526918e-3, 6.410256410256410e-3, -2.955065359477124e-2,
    1.796443723688307e-1, -1.39243221690590,
  ];
  if (x === 1 || x === 2) return 0;
  let n = 0;
  let x0 = x;
  if (x <= 7) {
    n = Math.floor(7 - x);
    x0 = x + n;
  }
  const x2 = 1 / (x0 * x0);
  const xp = 2 * Math.PI;
  let gl0 = a[9]!;
  for (let k = 8; k >= 0; k--) gl0 = gl0 * x2 + a[k]!;
  let gl = gl0 / x0 + 0.5 * Math.log(xp) + (x0 - 0.5) * Math.log(x0) - x0;
  if (x <= 7) {
    for (let k = 1; k <= n; k++) {
      gl -= Math.log(x0 - 1);
      x0 -= 1;
    }
  }
  return gl;
}
