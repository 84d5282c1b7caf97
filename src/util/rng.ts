// Seeded randomness: the same seed gives the same numbers on every machine.

/** mulberry32: small, fast, good enough for initialisation, sampling and augmentation. */
export class Rng {
  private s: number;
  private spare: number | null = null;

  constructor(seed: number) {
    this.s = (seed >>> 0) ^ 0x9e3779b9;
  }

  /** Uniform in [0, 1). */
  uniform(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Standard normal (Box–Muller, caching the second value). */
  normal(): number {
    if (this.spare !== null) {
      const v = this.spare;
      this.spare = null;
      return v;
    }
    let u = 0;
    while (u === 0) u = this.uniform();
    const v = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** The generator's whole state, for checkpoints: `setState` continues the same stream. */
  state(): { s: number; spare: number | null } {
    return { s: this.s, spare: this.spare };
  }

  setState(st: { s: number; spare: number | null }): void {
    if (!Number.isInteger(st?.s)) throw new Error(`Rng.setState: not a state from Rng.state(): ${JSON.stringify(st)}`);
    this.s = st.s >>> 0;
    this.spare = st.spare;
  }

  int(n: number): number {
    return Math.floor(this.uniform() * n);
  }

  fill(a: Float32Array, scale = 1, kind: 'normal' | 'uniform' = 'normal'): Float32Array {
    for (let i = 0; i < a.length; i++) a[i] = kind === 'normal' ? this.normal() * scale : (this.uniform() * 2 - 1) * scale;
    return a;
  }
}
