// Adam's update loop keeps m and v in locals (rounded to float32 as the buffers are); it must give
// bitwise the same parameters and buffers as the straightforward loop that re-reads the arrays.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Adam, AdamW } from '../../src/train/optim/adam.ts';
import { Rng } from '../../src/data/random.ts';

/** The reference: torch.optim.Adam / AdamW with float32 buffers, each value re-read from its array. */
function referenceStep(p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, t: number, o: { lr: number; b1: number; b2: number; eps: number; wd: number; decoupled: boolean }): void {
  const stepSize = o.lr / (1 - o.b1 ** t), bc2Sqrt = Math.sqrt(1 - o.b2 ** t);
  for (let i = 0; i < p.length; i++) {
    if (o.decoupled) p[i] = Math.fround(p[i]! * (1 - o.lr * o.wd));
    const gi = o.decoupled ? g[i]! : Math.fround(g[i]! + o.wd * p[i]!);
    m[i] = o.b1 * m[i]! + (1 - o.b1) * gi;
    v[i] = o.b2 * v[i]! + (1 - o.b2) * gi * gi;
    p[i] = p[i]! - (stepSize * m[i]!) / (Math.sqrt(v[i]!) / bc2Sqrt + o.eps);
  }
}

for (const [name, make, wd, decoupled] of [['Adam', (wd: number) => new Adam({ lr: 1e-3, weightDecay: wd }), 0, false], ['Adam + L2', (wd: number) => new Adam({ lr: 1e-3, weightDecay: wd }), 0.05, false], ['AdamW', (wd: number) => new AdamW({ lr: 1e-3, weightDecay: wd }), 0.01, true]] as const) {
  test(`${name}: the update loop is bitwise the reference loop over 12 steps`, () => {
    const rng = Rng.xoshiro(3);
    const n = 4099;
    const p0 = Float32Array.from({ length: n }, () => rng.uniform(-1, 1));
    // Gradients of mixed scales, exact zeros and negative zeros among them.
    const grads = Array.from({ length: 12 }, (_, s) => Float32Array.from({ length: n }, (_, i) => (i % 97 === 0 ? (s % 2 ? -0 : 0) : rng.uniform(-1, 1) * 10 ** -(i % 6))));
    const opt = make(wd);
    const p = p0.slice();
    const rp = p0.slice(), rm = new Float32Array(n), rv = new Float32Array(n);
    grads.forEach((g, s) => {
      opt.step({ w: p }, { w: g });
      referenceStep(rp, g, rm, rv, s + 1, { lr: 1e-3, b1: 0.9, b2: 0.999, eps: 1e-8, wd, decoupled });
    });
    const st = opt.state().buffers.w!;
    for (const [what, a, b] of [['param', p, rp], ['expAvg', st.expAvg!, rm], ['expAvgSq', st.expAvgSq!, rv]] as const) {
      for (let i = 0; i < n; i++) assert.ok(Object.is(a[i], b[i]), `${what}[${i}]: ${a[i]} vs reference ${b[i]}`);
    }
  });
}
