import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import {
  CORRUPTIONS,
  CORRUPTION_REGISTRY,
  SEVERITIES,
  corrupt,
  corruptionTableMarkdown,
  getCorruption,
} from '../../src/data/corruptions/index.ts';
import { corruptParallel } from '../../src/data/corruptions/parallel-node.ts';
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';

const N = 200;
const ds = loadFashionMnist('test', { limit: N });
const H = 28;
const W = 28;
const PX = H * W;

function meanAbsDiff(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i]! - b[i]!);
  return s / a.length;
}

function equal(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

describe('corruption registry', () => {
  it('has the 15 CIFAR-10-C style corruptions in benchmark order', () => {
    assert.deepEqual(
      [...CORRUPTIONS],
      [
        'gaussian_noise',
        'shot_noise',
        'impulse_noise',
        'defocus_blur',
        'glass_blur',
        'motion_blur',
        'zoom_blur',
        'snow',
        'fog',
        'brightness',
        'contrast',
        'elastic_transform',
        'pixelate',
        'jpeg_compression',
        'spatter',
      ],
    );
    for (const c of CORRUPTIONS) {
      const d = CORRUPTION_REGISTRY.get(c);
      assert.ok(d, c);
      assert.equal(d.name, c);
      for (const p of d.params) assert.equal(p.values.length, 5, `${c}.${p.name}`);
    }
  });

  it('rejects an unknown corruption, listing the valid ones', () => {
    assert.throws(
      () => corrupt(ds.images.subarray(0, PX), 1, H, W, 'frost', 3, 0),
      /unknown corruption 'frost'; valid corruptions: gaussian_noise, shot_noise, .*, spatter/,
    );
    assert.throws(() => getCorruption('Fog'), /unknown corruption 'Fog'/);
  });

  it('rejects a severity outside 1..5', () => {
    for (const s of [0, 6, 2.5, -1, NaN]) {
      assert.throws(() => corrupt(ds.images.subarray(0, PX), 1, H, W, 'fog', s, 0), /severity must be an integer in 1\.\.5 \(valid: 1, 2, 3, 4, 5\)/);
    }
    assert.throws(() => corrupt(ds.images.subarray(0, PX), 1, H, W, 'fog', '3' as unknown as number, 0), /severity/);
  });

  it('rejects images whose size does not match n*h*w', () => {
    assert.throws(() => corrupt(ds.images.subarray(0, PX), 2, H, W, 'fog', 1, 0), /images has 784 values, expected n\*h\*w = 2\*28\*28 = 1568/);
    assert.throws(() => corrupt(ds.images.subarray(0, PX), 1, H, W, 'fog', 1, 0, { out: new Float32Array(3) }), /out has 3 values/);
  });

  it('documents every parameter in docs/corruptions.md (one table, in sync with the code)', () => {
    const doc = readFileSync(new URL('../../docs/corruptions.md', import.meta.url), 'utf8');
    assert.ok(doc.includes(corruptionTableMarkdown()), 'docs/corruptions.md table is stale: paste corruptionTableMarkdown() output');
  });
});

describe('every corruption at every severity', () => {
  // One pass over all 15 x 5 variants on 200 test images; the checks below share it.
  const outs = new Map<string, Float32Array[]>();
  for (const c of CORRUPTIONS) outs.set(c, SEVERITIES.map((s) => corrupt(ds.images, N, H, W, c, s, 123)));

  it('preserves shape and stays in [0, 1]', () => {
    for (const c of CORRUPTIONS) {
      outs.get(c)!.forEach((o, k) => {
        assert.equal(o.length, N * PX, `${c} s${k + 1}`);
        for (let i = 0; i < o.length; i++) {
          const v = o[i]!;
          if (!(v >= 0 && v <= 1)) assert.fail(`${c} severity ${k + 1}: value ${v} at ${i}`);
        }
      });
    }
  });

  it('moves further from the clean image as severity grows (mean abs diff, 200 images)', () => {
    for (const c of CORRUPTIONS) {
      const d = outs.get(c)!.map((o) => meanAbsDiff(o, ds.images));
      assert.ok(d[0]! > 0, `${c} severity 1 changes nothing`);
      for (let k = 1; k < 5; k++) {
        assert.ok(d[k]! > d[k - 1]!, `${c}: distance ${d.map((v) => v.toFixed(4)).join(' < ')} is not increasing at severity ${k + 1}`);
      }
    }
  });

  it('does not modify its input', () => {
    const fresh = loadFashionMnist('test', { limit: N });
    assert.ok(equal(fresh.images, ds.images));
  });
});

describe('determinism', () => {
  const n = 12;
  const imgs = ds.images.subarray(0, n * PX);

  it('same seed gives identical output; a different seed changes the random ones only', () => {
    for (const c of CORRUPTIONS) {
      const a = corrupt(imgs, n, H, W, c, 3, 7);
      const b = corrupt(imgs, n, H, W, c, 3, 7);
      const other = corrupt(imgs, n, H, W, c, 3, 8);
      assert.ok(equal(a, b), `${c}: same seed, different output`);
      if (getCorruption(c).random) assert.ok(!equal(a, other), `${c}: seed has no effect`);
      else assert.ok(equal(a, other), `${c}: deterministic corruption depends on the seed`);
    }
  });

  it('an image is corrupted the same way alone or in a batch (ids)', () => {
    for (const c of CORRUPTIONS) {
      const all = corrupt(imgs, n, H, W, c, 4, 99);
      const ids = [3, 4, 5, 9];
      const sub = new Float32Array(ids.length * PX);
      ids.forEach((id, j) => sub.set(imgs.subarray(id * PX, (id + 1) * PX), j * PX));
      const part = corrupt(sub, ids.length, H, W, c, 4, 99, { ids });
      ids.forEach((id, j) => {
        assert.ok(equal(part.subarray(j * PX, (j + 1) * PX), all.subarray(id * PX, (id + 1) * PX)), `${c}: image ${id} differs`);
      });
    }
  });

  it('worker threads give the same result as the serial path', async () => {
    const jobs = [
      { type: 'jpeg_compression', severity: 5, seed: 1 },
      { type: 'spatter', severity: 2, seed: 1 },
    ];
    const par = await corruptParallel(ds.images.subarray(0, 40 * PX), 40, H, W, jobs, { workers: 2, chunk: 15 });
    jobs.forEach((j, k) => {
      const ser = corrupt(ds.images.subarray(0, 40 * PX), 40, H, W, j.type, j.severity, j.seed);
      assert.ok(equal(par[k]!, ser), j.type);
    });
  });
});
