// Exactness: River's own doctest streams (CPython's random with the doctests' seeds) give
// River's documented alarm indices. Expected indices are copied from River's docstrings.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ksTwoSampleEqual } from '../../src/drift/ks-test.ts';
import { PythonRandom, Adwin, PageHinkley, Kswin, Ddm, Eddm, HddmA, HddmW, type DriftDetector } from '../../src/drift/index.ts';

/** rng = random.Random(12345); rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000) */
function twoDistributions(): number[] {
  const r = new PythonRandom(12345);
  return [...r.choices([0, 1], 1000), ...r.choices([4, 5, 6, 7], 1000)];
}
/** rng = random.Random(42); rng.choices([0, 1], k=1000) + rng.choices([0, 1], k=1000, weights=[0.3, 0.7]) */
function errorRateShift(): number[] {
  const r = new PythonRandom(42);
  return [...r.choices([0, 1], 1000), ...r.choices([0, 1], 1000, [0.3, 0.7])];
}

function drifts(d: DriftDetector, stream: number[]): string[] {
  const out: string[] = [];
  stream.forEach((x, i) => { if (d.update(x).drift) out.push(`${i}:${x}`); });
  return out;
}
/** The doctests' print loop: the first warning after each drift, and every drift. */
function warningsAndDrifts(d: DriftDetector, stream: number[]): string[] {
  const out: string[] = [];
  let printWarning = true;
  stream.forEach((x, i) => {
    d.update(x);
    if (d.warning && printWarning) { out.push(`warning ${i}`); printWarning = false; }
    if (d.drift) { out.push(`drift ${i}`); printWarning = true; }
  });
  return out;
}

test('CPython random: the first draws for seed 42 equal CPython\'s', () => {
  const r = new PythonRandom(42);
  assert.equal(r.random(), 0.6394267984578837);
  assert.equal(r.random(), 0.025010755222666936);
  // random.Random(0).sample(range(10), 3) == [6, 9, 0]
  assert.deepEqual(new PythonRandom(0).sampleRange(10, 3), [6, 9, 0]);
});

test('ADWIN: River\'s doctest alarm', () => assert.deepEqual(drifts(new Adwin(), twoDistributions()), ['1023:4']));
test('Page-Hinkley: River\'s doctest alarm', () => assert.deepEqual(drifts(new PageHinkley(), twoDistributions()), ['1006:5']));
test('KSWIN (alpha 0.0001, seed 42): River\'s doctest alarm', () => assert.deepEqual(drifts(new Kswin({ alpha: 0.0001, seed: 42 }), twoDistributions()), ['1016:6']));
test('DDM: River\'s doctest warnings and alarm', () => assert.deepEqual(warningsAndDrifts(new Ddm(), errorRateShift()), ['warning 1084', 'drift 1334', 'warning 1492']));
test('EDDM (alpha 0.8, beta 0.75): River\'s doctest', () => assert.deepEqual(warningsAndDrifts(new Eddm({ alpha: 0.8, beta: 0.75 }), errorRateShift()), ['warning 1059', 'drift 1278']));
test('HDDM-A: River\'s doctest', () => assert.deepEqual(warningsAndDrifts(new HddmA(), errorRateShift()), ['warning 451', 'drift 1206']));
test('HDDM-W: River\'s doctest', () => assert.deepEqual(warningsAndDrifts(new HddmW(), errorRateShift()), ['warning 451', 'drift 1077']));

test('CPython random: big seeds, the set-based sample branch and weighted choices', () => {
  assert.equal(new PythonRandom(2 ** 40 + 5).random(), 0.5043802970418443);
  const r = new PythonRandom(7);
  assert.deepEqual(r.sampleRange(1000, 5), [331, 970, 154, 404, 666]);
  assert.deepEqual(r.choices([1, 2, 3], 4, [0.2, 0.5, 0.3]), [1, 3, 1, 2]);
});

test('KS test: statistic and exact p-value equal scipy.stats.ks_2samp', () => {
  const fx = JSON.parse(readFileSync(new URL('../fixtures/drift/ks.json', import.meta.url), 'utf8')) as { cases: { a: number[]; b: number[]; statistic: number; pvalue: number }[] };
  for (const c of fx.cases) {
    const got = ksTwoSampleEqual(c.a, c.b);
    assert.ok(Math.abs(got.statistic - c.statistic) < 1e-12, `statistic ${got.statistic} vs scipy ${c.statistic}`);
    assert.ok(Math.abs(got.pValue - c.pvalue) <= 1e-12 + 1e-9 * c.pvalue, `p ${got.pValue} vs scipy ${c.pvalue}`);
  }
});
