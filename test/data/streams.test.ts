import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CORRUPTIONS, corrupt } from '../../src/data/corruptions/index.ts';
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';
import {
  CLEAN,
  continualStream,
  correlatedLabelStream,
  gradualStream,
  mixedStream,
  recurringStream,
  singleDomainStream,
  type Stream,
  type StreamBatch,
} from '../../src/data/streams.ts';

// A small subset keeps corruption cheap; the label-correlation test uses the clean domain
// (no corruption) on the full 10k set.
const full = loadFashionMnist('test');
const small = loadFashionMnist('test', { limit: 120 });
const PX = 28 * 28;

function collect(s: Stream): StreamBatch[] {
  return [...s];
}

function sameBatches(a: StreamBatch[], b: StreamBatch[]): boolean {
  if (a.length !== b.length) return false;
  return a.every((x, i) => {
    const y = b[i]!;
    return (
      x.domain === y.domain &&
      x.severity === y.severity &&
      x.index === y.index &&
      x.ids.length === y.ids.length &&
      x.ids.every((v, j) => v === y.ids[j]) &&
      x.x.every((v, j) => v === y.x[j])
    );
  });
}

describe('stream scenarios', () => {
  it('continual: the 15 corruptions in order, with the requested batch size and length', () => {
    const s = continualStream(small, { batchSize: 16, batchesPerDomain: 2, seed: 1 });
    assert.equal(s.numBatches, 30);
    assert.equal(s.numSamples, 480);
    assert.deepEqual(
      s.segments.map((g) => g.domain),
      [...CORRUPTIONS],
    );
    const batches = collect(s);
    assert.equal(batches.length, 30);
    batches.forEach((b, i) => {
      assert.equal(b.index, i);
      assert.equal(b.size, 16);
      assert.equal(b.x.length, 16 * PX);
      assert.equal(b.y.length, 16);
      assert.equal(b.severity, 5);
      assert.equal(b.domain, CORRUPTIONS[Math.floor(i / 2)]);
      b.ids.forEach((id, j) => assert.equal(b.y[j], small.labels[id]));
      for (const v of b.x) assert.ok(v >= 0 && v <= 1);
      // The pixels are those of the batch's own corruption.
      const id = b.ids[0]!;
      const want = corrupt(small.images.subarray(id * PX, (id + 1) * PX), 1, 28, 28, b.domain, 5, 1, { ids: [id] });
      assert.deepEqual(b.x.subarray(0, PX), want, `batch ${i} (${b.domain})`);
    });
  });

  it('defaults to one pass over the data per domain, last batch smaller', () => {
    const s = singleDomainStream(small, { domain: 'fog', severity: 2, batchSize: 50 });
    const batches = collect(s);
    assert.deepEqual(
      batches.map((b) => b.size),
      [50, 50, 20],
    );
    assert.ok(batches.every((b) => b.domain === 'fog' && b.severity === 2));
    const ids = batches.flatMap((b) => [...b.ids]).sort((a, b) => a - b);
    assert.deepEqual(ids, Array.from({ length: 120 }, (_, i) => i));
  });

  it('is deterministic: same options give the same batches, a new seed another order', () => {
    const opts = { domains: ['gaussian_noise', 'jpeg_compression', CLEAN] as const, batchSize: 10, batchesPerDomain: 3 };
    const s = continualStream(small, { ...opts, seed: 5 });
    const a = collect(s);
    assert.ok(sameBatches(a, collect(s)), 'iterating twice differs');
    assert.ok(sameBatches(a, collect(continualStream(small, { ...opts, seed: 5 }))), 'rebuilding differs');
    assert.ok(!sameBatches(a, collect(continualStream(small, { ...opts, seed: 6 }))), 'seed has no effect');
    // Clean batches are the images themselves.
    const clean = a.filter((b) => b.domain === CLEAN);
    assert.equal(clean.length, 3);
    for (const b of clean) {
      assert.equal(b.severity, 0);
      b.ids.forEach((id, j) => assert.deepEqual(b.x.subarray(j * PX, (j + 1) * PX), small.images.subarray(id * PX, (id + 1) * PX)));
    }
  });

  it('corrupts an image the same way wherever it appears (and as corrupt() does)', () => {
    const s = singleDomainStream(small, { domain: 'shot_noise', severity: 4, batchSize: 8, batchesPerDomain: 2, seed: 3, corruptionSeed: 11 });
    const all = corrupt(small.images, small.n, 28, 28, 'shot_noise', 4, 11);
    for (const b of s) {
      b.ids.forEach((id, j) => assert.deepEqual(b.x.subarray(j * PX, (j + 1) * PX), all.subarray(id * PX, (id + 1) * PX)));
    }
    // A one-set cache gives the same pixels.
    const one = collect(continualStream(small, { domains: ['snow', 'fog', 'snow'], batchSize: 8, batchesPerDomain: 2, cacheDomains: 1 }));
    const two = collect(continualStream(small, { domains: ['snow', 'fog', 'snow'], batchSize: 8, batchesPerDomain: 2, cacheDomains: 4 }));
    assert.ok(sameBatches(one, two));
  });

  it('gradual: severity 1→5→1 within each domain', () => {
    const s = gradualStream(small, { domains: ['contrast', 'pixelate'], batchSize: 4, batchesPerDomain: 1 });
    const batches = collect(s);
    assert.equal(batches.length, 18);
    assert.deepEqual(
      batches.map((b) => `${b.domain}:${b.severity}`),
      [1, 2, 3, 4, 5, 4, 3, 2, 1].map((l) => `contrast:${l}`).concat([1, 2, 3, 4, 5, 4, 3, 2, 1].map((l) => `pixelate:${l}`)),
    );
  });

  it('mixed: domains shuffled together within batches', () => {
    const domains = ['brightness', 'contrast', 'defocus_blur'] as const;
    const s = mixedStream(small, { domains, batchSize: 12, batchesPerDomain: 2 });
    assert.equal(s.numBatches, 6);
    const batches = collect(s);
    const counts = new Map<string, number>();
    for (const b of batches) {
      assert.equal(b.domain, 'mixed');
      assert.equal(b.domains!.length, b.size);
      for (const d of b.domains!) counts.set(d, (counts.get(d) ?? 0) + 1);
    }
    assert.deepEqual([...counts.entries()].sort(), domains.map((d) => [d, 24]).sort());
    assert.ok(batches.some((b) => new Set(b.domains).size > 1), 'no batch mixes domains');
    // Each sample is corrupted by its own domain.
    const b = batches[0]!;
    b.ids.forEach((id, j) => {
      const want = corrupt(small.images.subarray(id * PX, (id + 1) * PX), 1, 28, 28, b.domains![j]!, 5, 0, { ids: [id] });
      assert.deepEqual(b.x.subarray(j * PX, (j + 1) * PX), want);
    });
  });

  it('recurring: the continual sequence repeated for N rounds', () => {
    const domains = ['impulse_noise', 'zoom_blur'] as const;
    const s = recurringStream(small, { domains, rounds: 3, batchSize: 6, batchesPerDomain: 1 });
    const batches = collect(s);
    assert.deepEqual(
      batches.map((b) => `${b.round}:${b.domain}`),
      ['0:impulse_noise', '0:zoom_blur', '1:impulse_noise', '1:zoom_blur', '2:impulse_noise', '2:zoom_blur'],
    );
  });

  it('correlated labels: smaller gamma gives more temporally correlated labels', () => {
    // Mean share of the most frequent label in a batch: 0.1-0.2 for i.i.d. batches of 64, 1 for single-class batches.
    const majority = (gamma: number) => {
      const s = correlatedLabelStream(full, { domains: [CLEAN], gamma, batchSize: 64, seed: 9 });
      let sum = 0;
      let count = 0;
      const seen = new Uint8Array(full.n);
      for (const b of s) {
        const c = new Array(10).fill(0);
        for (const y of b.y) c[y]++;
        sum += Math.max(...c) / b.size;
        count++;
        for (const id of b.ids) seen[id]!++;
      }
      assert.ok(seen.every((v) => v === 1), 'each sample exactly once per domain');
      return sum / count;
    };
    const m = [0.01, 0.1, 1, 10, 1000].map(majority);
    for (let i = 1; i < m.length; i++) assert.ok(m[i]! < m[i - 1]!, `majority share ${m.map((v) => v.toFixed(3)).join(' > ')} not decreasing`);
    assert.ok(m[0]! > 0.6, `gamma 0.01: ${m[0]}`);
    assert.ok(m[4]! < 0.3, `gamma 1000: ${m[4]}`);
    // i.i.d. order for comparison: no gamma.
    const iid = continualStream(full, { domains: [CLEAN], batchSize: 64, batchesPerDomain: 20 });
    let s = 0;
    for (const b of iid) {
      const c = new Array(10).fill(0);
      for (const y of b.y) c[y]++;
      s += Math.max(...c) / b.size;
    }
    assert.ok(s / 20 < 0.3);
  });

  it('RoTTA block order keeps class runs contiguous within slots', () => {
    const s = correlatedLabelStream(full, { domains: [CLEAN], gamma: 1000, withinSlot: 'blocks', batchSize: 100, samplesPerDomain: 2000 });
    let changes = 0;
    let prev = -1;
    for (const b of s) for (const y of b.y) {
      if (y !== prev) changes++;
      prev = y;
    }
    assert.ok(changes <= 10 * 10 + 1, `${changes} label changes`);
  });

  it('rejects bad options with clear errors', () => {
    assert.throws(() => singleDomainStream(small, { domain: 'rain' as never }), /unknown domain 'rain'; valid: clean, gaussian_noise, .*spatter/);
    assert.throws(() => continualStream(small, { severity: 7 }), /severity must be an integer in 1\.\.5/);
    assert.throws(() => continualStream(small, { batchSize: 0 }), /batchSize must be a positive integer, got 0/);
    assert.throws(() => continualStream(small, { gamma: -1 }), /gamma .* must be a positive finite number/);
    assert.throws(() => continualStream(small, { batchesPerDomain: 2, samplesPerDomain: 5 }), /not both/);
    assert.throws(() => recurringStream(small, { rounds: 0 }), /rounds must be a positive integer/);
    assert.throws(() => continualStream({ ...small, n: 121 }), /images has 94080 values, expected n\*height\*width = 121\*28\*28/);
    assert.throws(() => gradualStream(small, { levels: [1, 9] }), /severity/);
  });
});
