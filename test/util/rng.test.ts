// refit's one Rng: both engines give exactly the streams of the two classes it replaced (values
// pinned from src/util/rng.ts and src/data/random.ts at commit fe191f2), and state round trips.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../src/util/rng.ts';
import { Rng as DataRng } from '../../src/data/random.ts';

test('mulberry32 (new Rng(seed)) reproduces the old src/util/rng.ts stream', () => {
  const r = new Rng(7);
  assert.deepEqual([r.uniform(), r.normal(), r.normal(), r.int(10)], [0.9823943767696619, -0.5515358851833668, -1.3741483920778468, 1]);
});

test('xoshiro128** (Rng.xoshiro(seed)) reproduces the old src/data/random.ts stream', () => {
  const r = Rng.xoshiro(7);
  assert.deepEqual([r.next(), r.normal(), r.int(3, 9), r.gamma(0.5)], [0.09170933766290545, 0.7222555306598156, 6, 0.2274576179034681]);
  assert.equal(DataRng, Rng, 'the data layer re-exports the same class');
});

test('state round trip continues the same stream on both engines; engines do not mix', () => {
  for (const make of [() => new Rng(3), () => Rng.xoshiro(3)]) {
    const a = make();
    a.normal(); // leaves a spare normal cached
    const b = make();
    b.setState(JSON.parse(JSON.stringify(a.state())));
    assert.deepEqual([b.normal(), b.uniform(), b.int(100)], [a.normal(), a.uniform(), a.int(100)]);
  }
  assert.throws(() => new Rng(1).setState(Rng.xoshiro(1).state()), /engine xoshiro128\*\*, this generator is mulberry32/);
  assert.throws(() => new Rng(NaN), /finite/);
});
