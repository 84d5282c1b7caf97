// A base model first met in a request (a registry adapter's) warms its continual deep learner up
// in the background, once: tenants created before it finished and after it both start from that
// warm state, so none of them warms up inside the request that reaches level 3.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/model.ts';
import { SqliteRegistry } from '../../src/registry/index.ts';
import { TenantPool } from '../../src/serve/tenants.ts';
import { createMetrics } from '../../src/serve/metrics.ts';
import { deep, noisyBatches, cnnPath } from '../continual/deep-fixture.ts';

const B = 5;
const { shifted, calibration } = noisyBatches(B);

test('a registry adapter\'s deep learner warms up once, in the background, for its tenants', async () => {
  const base = await loadModel(cnnPath, { threads: 1 });
  const adapterBase = await loadModel(cnnPath, { threads: 1 }); // stands in for base + adapter: a model no start() prepared
  let warmups = 0;
  const registry = new SqliteRegistry(':memory:');
  const logged: string[] = [];
  const pool = new TenantPool({
    method: 'continual', registry, metrics: createMetrics({ defaultMetrics: false }), calibration: () => calibration,
    methodOptions: { logits: 'logits', patience: 1, stableBatches: 50, lr: 0.001, deep: { ...deep, rmt: { ...deep.rmt, onWarmup: () => warmups++ } } },
    log: { warn: (m) => logged.push(m), info: (m) => logged.push(m) },
  });
  const ref = { name: 'shop', version: 1 };
  const early = await pool.use('cnn', 'early', adapterBase, ref, async (s) => { await s.controller!.predict(shifted(0)); return s; });
  await pool.warmUps();
  assert.ok(warmups > 0, 'the background warm-up ran');
  assert.ok(logged.some((l) => /deep learner is warm/.test(l)), logged.join('\n'));
  const once = warmups;
  const late = await pool.use('cnn', 'late', adapterBase, ref, async (s) => s);
  for (let i = 1; i < B; i++) await pool.use('cnn', 'early', adapterBase, ref, (s) => s.controller!.predict(shifted(i)));
  for (let i = 0; i < B; i++) await pool.use('cnn', 'late', adapterBase, ref, (s) => s.controller!.predict(shifted(i)));
  for (const s of [early, late]) assert.equal(s.controller!.currentLevel, 3, `${s.tenant} reached level 3`);
  assert.equal(warmups, once, 'neither tenant warmed up inside a request');
  // The base the server prepared before listening is not warmed up again in the background.
  await pool.start('cnn', base, true);
  const n = warmups;
  await pool.use('cnn', 'plain', base, undefined, (s) => s.controller!.predict(shifted(0)));
  assert.equal(logged.filter((l) => /in the background/.test(l)).length, 1, 'one background warm-up, for the adapter only');
  await pool.warmUps();
  assert.equal(warmups, n);
  await pool.close();
  await registry.close();
  await base.release();
  await adapterBase.release();
});
