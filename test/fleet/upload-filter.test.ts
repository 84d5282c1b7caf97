import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UploadFilter, TokenBucket, type PoolItem } from '../../src/fleet/upload-filter.ts';
import { FleetError } from '../../src/fleet/types.ts';
import { Rng } from '../../src/util/rng.ts';
import { ItemReservoir } from '../../src/util/item-reservoir.ts';

const C = 10;
const LN = Math.log(C);
/** A probability row with the given entropy-ish sharpness: mass `top` on class k, the rest uniform. */
function row(top: number, k = 0): number[] {
  return Array.from({ length: C }, (_, c) => (c === k ? top : (1 - top) / (C - 1)));
}
const H = (r: number[]) => -r.reduce((s, p) => s + (p > 0 ? p * Math.log(p) : 0), 0);

test('fixed thresholds: E ≥ E_max is unreliable, E ≤ E_min is low-information, the band is kept', () => {
  const f = new UploadFilter({ classes: C, highMargin: 0.4, lowMargin: 0.05, warmupSamples: null });
  assert.ok(Math.abs(f.high! - 0.4 * LN) < 1e-12);
  assert.ok(Math.abs(f.low! - 0.05 * LN) < 1e-12);
  const rows = [row(0.1), row(0.5), row(0.9), row(0.999), row(0.35)];
  const hs = rows.map(H);
  const r = f.screen(rows.flat());
  for (let i = 0; i < rows.length; i++) {
    const want = hs[i]! >= 0.4 * LN ? 'unreliable' : hs[i]! <= 0.05 * LN ? 'low-info' : 'kept';
    assert.equal(r.verdicts[i], want, `sample ${i} entropy ${hs[i]}`);
    assert.ok(Math.abs(r.entropy[i]! - hs[i]!) < 1e-5);
  }
  assert.deepEqual(r.verdicts, ['unreliable', 'unreliable', 'kept', 'low-info', 'unreliable']);
  assert.deepEqual([...r.predicted], [0, 0, 0, 0, 0]);
});

test('dynamic E_max follows the running mean entropy after warm-up: E_max(t) = E_max(0)·Ē(t)/Ē(warm)·λ', () => {
  const f = new UploadFilter({ classes: C, highMargin: 0.4, lowMargin: null, warmupSamples: 4, highCoeff: 1.5 });
  const e0 = 0.4 * LN;
  const warmRows = [row(0.6), row(0.6), row(0.6), row(0.6)];
  f.screen(warmRows.flat()); // warm-up ends on the 4th sample; its mean is H(row(0.6))
  const hw = H(row(0.6));
  assert.ok(Math.abs(f.meanEntropy.warm! - hw) < 1e-12);
  assert.ok(Math.abs(f.high! - e0 * 1.5) < 1e-9, 'right after warm-up Ē(t) = Ē(warm): E_max = E_max(0)·λ');
  // Sure predictions lower the mean, hence the bar.
  const sure = Array.from({ length: 12 }, () => row(0.99));
  f.screen(sure.flat());
  const mean = (4 * hw + 12 * H(row(0.99))) / 16;
  assert.ok(Math.abs(f.meanEntropy.mean - mean) < 1e-9);
  assert.ok(Math.abs(f.high! - e0 * (mean / hw) * 1.5) < 1e-9);
  assert.ok(f.high! < e0, 'the threshold fell');
  // A sample kept under the initial threshold is now unreliable.
  const mid = row(0.9);
  assert.ok(H(mid) < e0 && H(mid) >= f.high!);
  assert.equal(f.screen(mid).verdicts[0], 'unreliable');
});

test('meanHorizon turns Ē into a moving average that forgets the warm-up', () => {
  const cum = new UploadFilter({ classes: C, warmupSamples: 10, lowMargin: null });
  const ema = new UploadFilter({ classes: C, warmupSamples: 10, lowMargin: null, meanHorizon: 20 });
  const first = Array.from({ length: 10 }, () => row(0.5)).flat();
  const later = Array.from({ length: 200 }, () => row(0.99)).flat();
  for (const f of [cum, ema]) { f.screen(first); f.screen(later); }
  assert.ok(Math.abs(ema.meanEntropy.mean - H(row(0.99))) < 0.01 * H(row(0.5)), 'EMA is close to the recent entropy');
  assert.ok(cum.meanEntropy.mean > ema.meanEntropy.mean * 1.5, 'cumulative mean still remembers the start');
});

test('redundancy (EATA ε): a sample too similar to the running average of kept ones is dropped', () => {
  const f = new UploadFilter({ classes: C, lowMargin: null, highMargin: 0.9, warmupSamples: null, redundancy: 0.95 });
  const a = f.screen([...row(0.7, 0), ...row(0.7, 1)]);
  assert.deepEqual(a.verdicts, ['kept', 'kept'], 'the first batch only starts the average');
  // The average is then half class 0, half class 1: a class-0 row has cos ≈ 0.7 with it; the average itself has cos 1.
  const avg = row(0.7, 0).map((p, c) => (p + row(0.7, 1)[c]!) / 2);
  const b = f.screen([...row(0.7, 0), ...avg]);
  assert.deepEqual(b.verdicts, ['kept', 'redundant']);
  assert.equal(f.counts.redundant, 1);
});

test('bad options are FleetErrors; bad probability rows are unreliable', () => {
  assert.throws(() => new UploadFilter({ classes: 1 }), FleetError);
  assert.throws(() => new UploadFilter({ classes: C, lowMargin: 0.5, highMargin: 0.4 }), /lowMargin/);
  assert.throws(() => new UploadFilter({ classes: C, budget: { bytesPerSecond: 0 } }), /bytesPerSecond/);
  const f = new UploadFilter({ classes: C });
  assert.throws(() => f.screen([0.5, 0.5, 0]), /multiple of 10/);
  const broken = f.screen([...row(0.5).map((p, i) => (i === 3 ? NaN : p)), ...row(0.9)]);
  assert.deepEqual(broken.verdicts, ['unreliable', 'kept'], 'a NaN row is unreliable, not an error');
  assert.equal(broken.predicted[0], -1);
  assert.ok(Math.abs(broken.entropy[0]! - LN) < 1e-6);
  assert.ok(Number.isFinite(f.meanEntropy.mean) && f.meanEntropy.seen === 1, 'and stays out of the running mean');
});

test('token bucket: bytes over any window never exceed burst + rate × window', () => {
  const rate = 1000, burst = 3000;
  const b = new TokenBucket({ bytesPerSecond: rate, burstBytes: burst });
  const rng = new Rng(7);
  const sent: { t: number; bytes: number }[] = [];
  let t = 0;
  for (let i = 0; i < 2000; i++) {
    t += rng.uniform(0, 800);
    const want = Math.floor(rng.uniform(1, 4000));
    if (b.take(want, t)) sent.push({ t, bytes: want });
  }
  assert.ok(sent.length > 100, `only ${sent.length} sends`);
  for (let i = 0; i < sent.length; i++) {
    let sum = 0;
    for (let j = i; j < sent.length; j++) {
      sum += sent[j]!.bytes;
      const window = (sent[j]!.t - sent[i]!.t) / 1000;
      assert.ok(sum <= burst + rate * window + 1e-6, `window [${sent[i]!.t}, ${sent[j]!.t}] sent ${sum} > ${burst + rate * window}`);
    }
  }
  // Long-run rate: total ≤ burst + rate × span, and close to it when demand exceeds supply.
  const total = sent.reduce((s, x) => s + x.bytes, 0);
  assert.ok(total >= 0.8 * rate * (t / 1000), `used ${total} of ${rate * t / 1000}`);
  // A clock that steps back earns nothing.
  const c = new TokenBucket({ bytesPerSecond: 100, burstBytes: 100 });
  assert.ok(c.take(100, 10_000));
  assert.equal(c.available(5_000), 0);
  assert.equal(c.available(10_000), 0);
  assert.equal(c.available(10_500), 50);
});

test('admit: the largest prefix that fits is spent, never more than available', () => {
  const f = new UploadFilter({ classes: C, budget: { bytesPerSecond: 100, burstBytes: 1000 } });
  const bytesFor = (k: number) => 64 + 100 * k;
  assert.deepEqual(f.admit(50, bytesFor, 0), { k: 9, bytes: 964 });
  assert.deepEqual(f.admit(50, bytesFor, 0), { k: 0, bytes: 0 }, 'bucket holds 36 bytes');
  assert.deepEqual(f.admit(50, bytesFor, 2000), { k: 1, bytes: 164 }, '236 bytes after 2 s');
  assert.deepEqual(f.admit(50, bytesFor, 5000), { k: 3, bytes: 364 }, '72 + 300 = 372 bytes 3 s later');
  const free = new UploadFilter({ classes: C });
  assert.deepEqual(free.admit(7, bytesFor, 0), { k: 7, bytes: 764 });
});

test('ranking: most uncertain first, classes interleaved, deterministic with a seed', () => {
  const items: PoolItem<number>[] = [];
  const rng = new Rng(3);
  for (let i = 0; i < 40; i++) items.push({ x: i, entropy: Math.round(rng.uniform(0, 2) * 4) / 4, predicted: i % 7 === 0 ? 1 : 0, seq: i });
  const f1 = new UploadFilter({ classes: C, seed: 11 });
  const f2 = new UploadFilter({ classes: C, seed: 11 });
  const f3 = new UploadFilter({ classes: C, seed: 12 });
  const r1 = f1.rank(items).map((it) => it.x);
  assert.deepEqual(f2.rank(items).map((it) => it.x), r1, 'same seed, same order');
  assert.notDeepEqual(f3.rank(items).map((it) => it.x), r1, 'ties are broken by the seed');
  const ranked = f1.rank(items);
  assert.equal(ranked.length, items.length);
  // Interleaving: the first two are the top of each class; within a class entropy never rises.
  assert.notEqual(ranked[0]!.predicted, ranked[1]!.predicted);
  for (const k of [0, 1]) {
    const es = ranked.filter((it) => it.predicted === k).map((it) => it.entropy);
    for (let i = 1; i < es.length; i++) assert.ok(es[i]! <= es[i - 1]!);
  }
  const top = Math.max(...items.map((it) => it.entropy));
  assert.equal(ranked[0]!.entropy, top);
  // trim keeps the best `poolCapacity`.
  const small = new UploadFilter({ classes: C, poolCapacity: 5, seed: 11 });
  assert.equal(small.trim(items).length, 5);
});

test('state round-trips: a restored filter judges and ranks exactly as the original', () => {
  const opts = { classes: C, warmupSamples: 8, redundancy: 0.99, budget: { bytesPerSecond: 500 }, seed: 5 };
  const a = new UploadFilter(opts);
  const rng = new Rng(1);
  const batch = () => Array.from({ length: 16 }, () => row(rng.uniform(0.15, 1), Math.floor(rng.uniform(0, C)))).flat();
  for (let i = 0; i < 3; i++) a.screen(batch());
  a.admit(3, (k) => 100 * k, 1000);
  const b = new UploadFilter(opts);
  b.restore(JSON.parse(JSON.stringify(a.state())));
  const next = batch();
  assert.deepEqual(b.screen(next), a.screen(next));
  assert.deepEqual(b.admit(100, (k) => 100 * k, 4000), a.admit(100, (k) => 100 * k, 4000));
  const items: PoolItem<number>[] = Array.from({ length: 10 }, (_, i) => ({ x: i, entropy: 1, predicted: 0, seq: i }));
  assert.deepEqual(b.rank(items).map((x) => x.x), a.rank(items).map((x) => x.x));
});

test('uniformShare: a reservoir of every sample, and uploads that mix a uniform draw with the ranking', () => {
  assert.throws(() => new UploadFilter({ classes: C, uniformShare: 1.5 }), /uniformShare must lie in \[0, 1\], got 1.5/);
  const f = new UploadFilter({ classes: C, poolCapacity: 100, uniformShare: 0.5, seed: 2 });
  // Reservoir: 1000 offers into 100 places keep 100 distinct samples spread over the whole stream.
  const res = new ItemReservoir<PoolItem<number>>(f.poolCapacity, f.seed);
  for (let i = 0; i < 1000; i++) res.add({ x: i, entropy: 0, predicted: 0, seq: i });
  const all = res.draw(1000);
  assert.equal(all.length, 100);
  assert.equal(new Set(all.map((it) => it.seq)).size, 100);
  const mean = all.reduce((s, it) => s + it.seq, 0) / 100;
  assert.ok(mean > 400 && mean < 600, `mean position ${mean} of a uniform draw from 0..999`);
  assert.ok(all.filter((it) => it.seq >= 500).length > 30, 'the second half of the stream is drawn too');
  // pick: half from the reservoir, the rest the ranking's top in order, each sample once.
  const ranked = Array.from({ length: 20 }, (_, i) => ({ x: i, entropy: 1, predicted: 0, seq: i }));
  const chosen = f.pick(ranked, res, 10);
  assert.equal(chosen.length, 10);
  const fromRanking = new Set(ranked);
  const drawn = chosen.filter((it) => !fromRanking.has(it));
  assert.equal(drawn.length, 5, 'five from the reservoir');
  const drawnSeqs = new Set(drawn.map((it) => it.seq));
  assert.deepEqual(chosen.filter((it) => fromRanking.has(it)), ranked.filter((it) => !drawnSeqs.has(it.seq)).slice(0, 5), 'then the ranking in order, without the drawn samples');
  // A sample in both is taken once; asking for more than the ranking holds is an error.
  const both = new ItemReservoir<PoolItem<number>>(10, 1);
  for (const it of ranked.slice(0, 4)) both.add(it);
  assert.deepEqual(f.pick(ranked.slice(0, 4), both, 4).map((it) => it.seq).sort(), [0, 1, 2, 3]);
  assert.throws(() => f.pick(ranked.slice(0, 4), both, 5), /pick: 5 items asked, the ranking holds 4/);
  // Without a uniform share an upload is the ranking's prefix.
  assert.deepEqual(new UploadFilter({ classes: C }).pick(ranked, res, 7), ranked.slice(0, 7));
});
