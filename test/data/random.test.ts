import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Rng, hashSeed, hashString, logGamma } from '../../src/data/random.ts';

describe('Rng', () => {
  it('is deterministic per seed and differs across seeds', () => {
    const a = Rng.xoshiro(42);
    const b = Rng.xoshiro(42);
    const c = Rng.xoshiro(43);
    const xa = Array.from({ length: 100 }, () => a.uint32());
    const xb = Array.from({ length: 100 }, () => b.uint32());
    const xc = Array.from({ length: 100 }, () => c.uint32());
    assert.deepEqual(xa, xb);
    assert.notDeepEqual(xa, xc);
  });

  it('gives uniforms in [0, 1) with the right mean, and integers in [lo, hi)', () => {
    const r = Rng.xoshiro(1);
    let sum = 0;
    for (let i = 0; i < 20000; i++) {
      const u = r.next();
      assert.ok(u >= 0 && u < 1);
      sum += u;
    }
    assert.ok(Math.abs(sum / 20000 - 0.5) < 0.01);
    const seen = new Set<number>();
    for (let i = 0; i < 1000; i++) seen.add(r.int(-2, 2));
    assert.deepEqual([...seen].sort(), [-1, -2, 0, 1]);
  });

  it('gives standard normals (Box-Muller)', () => {
    const r = Rng.xoshiro(2);
    let s = 0;
    let s2 = 0;
    const n = 40000;
    for (let i = 0; i < n; i++) {
      const z = r.normal();
      s += z;
      s2 += z * z;
    }
    assert.ok(Math.abs(s / n) < 0.02);
    assert.ok(Math.abs(s2 / n - 1) < 0.03);
  });

  it('samples Poisson with the right mean and variance, small and large lambda', () => {
    const r = Rng.xoshiro(3);
    for (const lam of [0.5, 4, 37.5, 500]) {
      let s = 0;
      let s2 = 0;
      const n = 20000;
      for (let i = 0; i < n; i++) {
        const k = r.poisson(lam);
        assert.ok(Number.isInteger(k) && k >= 0);
        s += k;
        s2 += k * k;
      }
      const mean = s / n;
      const v = s2 / n - mean * mean;
      assert.ok(Math.abs(mean - lam) < 0.03 * lam + 0.02, `mean ${mean} for lambda ${lam}`);
      assert.ok(Math.abs(v - lam) < 0.08 * lam + 0.05, `variance ${v} for lambda ${lam}`);
    }
    assert.equal(r.poisson(0), 0);
  });

  it('samples Dirichlet vectors on the simplex; small alpha concentrates', () => {
    const r = Rng.xoshiro(4);
    const maxOf = (alpha: number) => {
      let m = 0;
      for (let i = 0; i < 200; i++) {
        const p = r.dirichlet(new Array(10).fill(alpha));
        const sum = p.reduce((a, b) => a + b, 0);
        assert.ok(Math.abs(sum - 1) < 1e-9);
        assert.ok(p.every((v) => v >= 0));
        m += Math.max(...p);
      }
      return m / 200;
    };
    const small = maxOf(0.01);
    const large = maxOf(100);
    assert.ok(small > 0.9, `max weight ${small} at alpha 0.01`);
    assert.ok(large < 0.2, `max weight ${large} at alpha 100`);
  });

  it('permutes', () => {
    const p = Rng.xoshiro(5).permutation(50);
    assert.deepEqual([...p].sort((a, b) => a - b), Array.from({ length: 50 }, (_, i) => i));
  });

  it('hashes seeds and strings deterministically', () => {
    assert.equal(hashSeed(1, 2, 3), hashSeed(1, 2, 3));
    assert.notEqual(hashSeed(1, 2, 3), hashSeed(1, 3, 2));
    assert.notEqual(hashSeed(2 ** 40), hashSeed(0));
    assert.equal(hashString('fog'), hashString('fog'));
    assert.notEqual(hashString('fog'), hashString('snow'));
    assert.throws(() => Rng.xoshiro(NaN), /finite/);
  });

  it('computes log Gamma', () => {
    assert.ok(Math.abs(logGamma(5) - Math.log(24)) < 1e-10);
    assert.ok(Math.abs(logGamma(20) - Math.log(121645100408832000)) < 1e-9);
  });
});
