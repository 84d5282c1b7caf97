// CPython's `random.Random` (MT19937, seeded from an int as CPython seeds it), for the parts
// River's KSWIN uses (`sample`) and the tests use (`random`, `choices`). With it, KSWIN draws
// the same reference samples as River for the same seed, so alarm indices can be compared.
// Written here because no npm package reproduces CPython's seeding and `sample` algorithm.

const N = 624;
const M = 397;

export class PythonRandom {
  private mt = new Uint32Array(N);
  private index = N + 1;

  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) throw new Error(`PythonRandom: seed must be a safe integer, got ${seed}`);
    // CPython splits |seed| into 32-bit words, least significant first.
    let a = Math.abs(seed);
    const key: number[] = [];
    do {
      key.push(a % 0x100000000);
      a = Math.floor(a / 0x100000000);
    } while (a > 0);
    this.initByArray(key);
  }

  private initGenrand(s: number): void {
    const mt = this.mt;
    mt[0] = s >>> 0;
    for (let i = 1; i < N; i++) {
      const prev = mt[i - 1]! ^ (mt[i - 1]! >>> 30);
      mt[i] = (Math.imul(1812433253, prev) + i) >>> 0;
    }
    this.index = N;
  }

  private initByArray(key: number[]): void {
    const mt = this.mt;
    this.initGenrand(19650218);
    let i = 1, j = 0;
    for (let k = Math.max(N, key.length); k > 0; k--) {
      const prev = mt[i - 1]! ^ (mt[i - 1]! >>> 30);
      mt[i] = ((mt[i]! ^ Math.imul(prev, 1664525)) + key[j]! + j) >>> 0;
      i++; j++;
      if (i >= N) { mt[0] = mt[N - 1]!; i = 1; }
      if (j >= key.length) j = 0;
    }
    for (let k = N - 1; k > 0; k--) {
      const prev = mt[i - 1]! ^ (mt[i - 1]! >>> 30);
      mt[i] = ((mt[i]! ^ Math.imul(prev, 1566083941)) - i) >>> 0;
      i++;
      if (i >= N) { mt[0] = mt[N - 1]!; i = 1; }
    }
    mt[0] = 0x80000000;
  }

  /** One 32-bit output of MT19937. */
  uint32(): number {
    const mt = this.mt;
    if (this.index >= N) {
      for (let k = 0; k < N; k++) {
        const y = (mt[k]! & 0x80000000) | (mt[(k + 1) % N]! & 0x7fffffff);
        mt[k] = mt[(k + M) % N]! ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
      }
      this.index = 0;
    }
    let y = mt[this.index++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** `random.random()`: 53 random bits in [0, 1). */
  random(): number {
    const a = this.uint32() >>> 5, b = this.uint32() >>> 6;
    return (a * 67108864 + b) / 9007199254740992;
  }

  /** `random.getrandbits(k)` for 0 < k ≤ 32. */
  getrandbits(k: number): number {
    return this.uint32() >>> (32 - k);
  }

  /** `random._randbelow(n)`: rejection sampling on bit_length(n) bits. */
  randbelow(n: number): number {
    const k = 32 - Math.clz32(n);
    let r = this.getrandbits(k);
    while (r >= n) r = this.getrandbits(k);
    return r;
  }

  /** `random.sample(range(n), k)`, with CPython's choice between its two algorithms. */
  sampleRange(n: number, k: number): number[] {
    if (k < 0 || k > n) throw new Error(`sample larger than population or negative: ${k} of ${n}`);
    let setsize = 21;
    if (k > 5) setsize += 4 ** Math.ceil(Math.log(k * 3) / Math.log(4));
    const result: number[] = [];
    if (n <= setsize) {
      const pool = Array.from({ length: n }, (_, i) => i);
      for (let i = 0; i < k; i++) {
        const j = this.randbelow(n - i);
        result.push(pool[j]!);
        pool[j] = pool[n - i - 1]!;
      }
    } else {
      const selected = new Set<number>();
      for (let i = 0; i < k; i++) {
        let j = this.randbelow(n);
        while (selected.has(j)) j = this.randbelow(n);
        selected.add(j);
        result.push(j);
      }
    }
    return result;
  }

  /** `random.choices(population, weights?, k)`. */
  choices<T>(population: readonly T[], k: number, weights?: readonly number[]): T[] {
    const n = population.length;
    if (!weights) return Array.from({ length: k }, () => population[Math.floor(this.random() * n)]!);
    const cum: number[] = [];
    let acc = 0;
    for (const w of weights) cum.push((acc += w));
    const total = cum[cum.length - 1]!;
    return Array.from({ length: k }, () => {
      const v = this.random() * total;
      // bisect_right over cum[0 .. n-1)
      let lo = 0, hi = n - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (v < cum[mid]!) hi = mid; else lo = mid + 1;
      }
      return population[lo]!;
    });
  }

  /** The full generator state (for checkpoints). */
  getState(): { mt: number[]; index: number } {
    return { mt: [...this.mt], index: this.index };
  }

  setState(s: { mt: number[]; index: number }): void {
    if (s.mt.length !== N) throw new Error(`PythonRandom: state must hold ${N} words, got ${s.mt.length}`);
    this.mt.set(s.mt);
    this.index = s.index;
  }
}
