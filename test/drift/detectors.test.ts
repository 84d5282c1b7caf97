// Detection delay and false alarms on seeded synthetic streams with a known change point, state
// round trips, and bad input. Bounds come from bench/results/drift.md (50 seeds) with margin.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Adwin, PageHinkley, Kswin, Ddm, Eddm, HddmA, HddmW, restoreDetector, type DriftDetector } from '../../src/drift/index.ts';
import { scoreDetector, syntheticStream } from '../../src/drift/evaluate.ts';

const SEEDS = [1000, 1001, 1002, 1003, 1004, 1005];
const CHANGE = 5000, LENGTH = 8000;

/** Worst delay and total false alarms per 10k over SEEDS; every seed must detect. */
function measure(make: () => DriftDetector, kind: 'mean' | 'bernoulli', from: number, to: number, ramp = 0) {
  let worst = 0, fa = 0;
  for (const seed of SEEDS) {
    const s = syntheticStream({ kind, length: LENGTH, change: CHANGE, from, to, ramp, seed });
    const r = scoreDetector(make(), s.values, s.change);
    assert.notEqual(r.delay, null, `missed the change (seed ${seed})`);
    worst = Math.max(worst, r.delay!);
    fa += r.falseAlarms;
  }
  return { worst, faPer10k: (fa / (SEEDS.length * CHANGE)) * 1e4 };
}

// [name, factory, worst delay bound abrupt / gradual (samples), false alarms per 10k bound]
const CONTINUOUS: [string, () => DriftDetector, number, number, number][] = [
  ['ADWIN', () => new Adwin(), 450, 1000, 0.5],
  ['ADWIN every-bucket', () => new Adwin({ cuts: 'every-bucket' }), 150, 650, 0.5],
  ['Page-Hinkley', () => new PageHinkley(), 400, 500, 20],
  ['KSWIN', () => new Kswin({ seed: 3 }), 500, 2500, 40],
];
const BINARY: [string, () => DriftDetector, number, number, number][] = [
  ['ADWIN', () => new Adwin(), 500, 1100, 0.5],
  ['Page-Hinkley', () => new PageHinkley(), 300, 800, 1],
  ['DDM', () => new Ddm(), 1500, 2000, 8],
  ['EDDM', () => new Eddm(), 300, 700, 60],
  ['HDDM-A', () => new HddmA(), 300, 800, 1],
  ['HDDM-W', () => new HddmW(), 150, 900, 1],
];

for (const [name, make, abrupt, gradual, fa] of CONTINUOUS) {
  test(`${name}: Gaussian mean 0 → 1, abrupt and over 1000 samples`, () => {
    const a = measure(make, 'mean', 0, 1);
    assert.ok(a.worst <= abrupt, `abrupt: worst delay ${a.worst} > ${abrupt}`);
    assert.ok(a.faPer10k <= fa, `false alarms ${a.faPer10k}/10k > ${fa}`);
    const g = measure(make, 'mean', 0, 1, 1000);
    assert.ok(g.worst <= gradual, `gradual: worst delay ${g.worst} > ${gradual}`);
  });
}
for (const [name, make, abrupt, gradual, fa] of BINARY) {
  test(`${name}: error rate 0.1 → 0.4, abrupt and over 1000 samples`, () => {
    const a = measure(make, 'bernoulli', 0.1, 0.4);
    assert.ok(a.worst <= abrupt, `abrupt: worst delay ${a.worst} > ${abrupt}`);
    assert.ok(a.faPer10k <= fa, `false alarms ${a.faPer10k}/10k > ${fa}`);
    const g = measure(make, 'bernoulli', 0.1, 0.4, 1000);
    assert.ok(g.worst <= gradual, `gradual: worst delay ${g.worst} > ${gradual}`);
  });
}

test('no change: ADWIN and the HDDMs stay silent on a stationary error stream', () => {
  for (const make of [() => new Adwin(), () => new HddmA(), () => new HddmW()]) {
    const s = syntheticStream({ kind: 'bernoulli', length: 20000, change: 20000, from: 0.2, to: 0.2, seed: 9 });
    assert.equal(scoreDetector(make(), s.values, s.change).falseAlarms, 0);
  }
});

test('ADWIN: window statistics equal a direct computation while nothing is dropped', () => {
  const a = new Adwin({ clock: 1_000_000 });
  const xs = Array.from({ length: 77 }, (_, i) => Math.sin(i) * 3 + (i % 5));
  xs.forEach((x) => a.update(x));
  const st = a.state() as unknown as { width: number; total: number; variance: number; rows: { totals: number[] }[] };
  const mean = xs.reduce((p, q) => p + q, 0) / xs.length;
  assert.equal(st.width, 77);
  assert.ok(Math.abs(st.total - mean * 77) < 1e-9);
  assert.ok(Math.abs(st.variance - xs.reduce((p, x) => p + (x - mean) ** 2, 0)) < 1e-9);
  // Exponential histogram: at most maxBuckets buckets per row after compression, sizes 2^row.
  assert.ok(st.rows.every((r) => r.totals.length <= 5));
  assert.equal(st.rows.reduce((p, r, i) => p + r.totals.length * 2 ** i, 0), 77);
});

test('state round trip: a restored detector continues exactly as the uninterrupted one', () => {
  const makers: (() => DriftDetector)[] = [() => new Adwin(), () => new PageHinkley(), () => new Kswin({ seed: 5 }), () => new Ddm(), () => new Eddm(), () => new HddmA(), () => new HddmW()];
  const s = syntheticStream({ kind: 'bernoulli', length: 6000, change: 3000, from: 0.1, to: 0.5, seed: 4 });
  for (const make of makers) {
    const a = make(), b = make();
    const alarmsA: number[] = [], alarmsB: number[] = [];
    for (let i = 0; i < 2500; i++) { if (a.update(s.values[i]!).drift) alarmsA.push(i); b.update(s.values[i]!); }
    const restored = restoreDetector(JSON.parse(JSON.stringify(b.state())));
    for (let i = 2500; i < s.values.length; i++) {
      const x = s.values[i]!;
      const sa = a.update(x), sr = restored.update(x);
      assert.deepEqual(sr, sa, `${a.kind} diverged at ${i}`);
      if (sa.drift) alarmsA.push(i);
      if (sr.drift) alarmsB.push(i);
    }
    assert.ok(alarmsA.some((i) => i >= 3000), `${a.kind}: the check needs an alarm after the change`);
    assert.deepEqual(restored.state(), a.state());
  }
});

test('bad input: non-finite values, non-bits for error-stream detectors, wrong states', () => {
  assert.throws(() => new Adwin().update(NaN), /adwin: input must be a finite number, got NaN/);
  assert.throws(() => new PageHinkley().update(Infinity), /finite/);
  assert.throws(() => new Ddm().update(0.5), /ddm watches a 0\/1 error stream/);
  assert.throws(() => new HddmW().update(NaN), /0\/1 error stream/);
  assert.throws(() => restoreDetector({ kind: 'nope', config: {} }), /unknown drift detector kind 'nope'/);
  assert.throws(() => Ddm.fromState(new Eddm().state()), /cannot restore ddm from a state of kind 'eddm'/);
  assert.throws(() => new Kswin({ windowSize: 50, statSize: 30 }), /windowSize \(50\) must be at least 2 × statSize/);
  assert.throws(() => new Eddm({ alpha: 0.5, beta: 0.9 }), /alpha/);
  // A rejected value changes nothing.
  const d = new Adwin();
  d.update(1);
  const before = JSON.stringify(d.state());
  assert.throws(() => d.update(NaN));
  assert.equal(JSON.stringify(d.state()), before);
});
