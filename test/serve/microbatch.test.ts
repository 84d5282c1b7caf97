// The micro-batcher alone, on a fake model that records its runs: requests that arrive while a
// run is in flight go together in the next run as soon as it ends; a batch never exceeds
// maxSamples (but one large request goes alone); maxWaitMs 0 runs every request by itself;
// every request gets exactly its own rows back; a failed run rejects only its own requests; the
// observer (the server's metrics) sees each request's wait and each run's time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MicroBatcher, modelRunner } from '../../src/serve/microbatch.ts';
import type { RefitModel } from '../../src/model.ts';
import type { Tensor } from '../../src/onnx/tensor.ts';

/** A model whose logits row i is [x_i, 2 x_i] for a one-value sample x_i; runs wait for `release()`. */
function fakeModel() {
  const runs: number[][] = [];
  const gates: (() => void)[] = [];
  let failNext = false;
  const model = {
    inputs: [{ name: 'x' }],
    async run(feeds: Record<string, Tensor>) {
      const x = feeds.x!.data as Float32Array;
      runs.push(Array.from(x));
      await new Promise<void>((r) => gates.push(r));
      if (failNext) { failNext = false; throw new Error('run failed'); }
      const y = new Float32Array(2 * x.length);
      x.forEach((v, i) => { y[2 * i] = v; y[2 * i + 1] = 2 * v; });
      return { logits: { dtype: 'float32', dims: [x.length, 2], data: y } };
    },
  } as unknown as RefitModel;
  const tick = () => new Promise((r) => setImmediate(r));
  return { model, runs, release: async () => { await tick(); gates.shift()?.(); await tick(); }, fail: () => { failNext = true; } };
}
const x = (...v: number[]): Tensor => ({ dtype: 'float32', dims: [v.length, 1], data: Float32Array.from(v) });

test('requests arriving during a run are joined into the next run, up to maxSamples', async () => {
  const f = fakeModel();
  const b = new MicroBatcher(modelRunner(f.model, 'logits'), { maxWaitMs: 1, maxSamples: 4 });
  const p1 = b.run(x(1));
  await new Promise((r) => setTimeout(r, 5)); // the wait ends: run 1 = [1], in flight
  assert.deepEqual(f.runs, [[1]]);
  const later = [b.run(x(2)), b.run(x(3, 4)), b.run(x(5)), b.run(x(6))]; // arrive during run 1
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(f.runs.length, 1, 'nothing else starts while a run is in flight');
  await f.release(); // run 1 ends → run 2 takes what fits in 4 samples: [2], [3, 4], [5]
  assert.deepEqual(f.runs[1], [2, 3, 4, 5]);
  await f.release(); // run 2 ends → run 3: [6]
  assert.deepEqual(f.runs[2], [6]);
  await f.release();
  assert.deepEqual(Array.from(await p1), [1, 2]);
  const rows = await Promise.all(later);
  assert.deepEqual(rows.map((r) => Array.from(r)), [[2, 4], [3, 6, 4, 8], [5, 10], [6, 12]]);
});

test('a request over maxSamples goes alone; maxWaitMs 0 runs each request at once', async () => {
  const f = fakeModel();
  const b = new MicroBatcher(modelRunner(f.model, 'logits'), { maxWaitMs: 1, maxSamples: 2 });
  const big = b.run(x(1, 2, 3));
  assert.deepEqual(f.runs, [[1, 2, 3]], 'over maxSamples: sent without waiting');
  await f.release();
  assert.deepEqual(Array.from(await big), [1, 2, 2, 4, 3, 6]);
  const g = fakeModel();
  const off = new MicroBatcher(modelRunner(g.model, 'logits'), { maxWaitMs: 0 });
  const ps = [off.run(x(7)), off.run(x(8))];
  assert.deepEqual(g.runs, [[7], [8]]);
  await g.release();
  await g.release();
  assert.deepEqual((await Promise.all(ps)).map((r) => Array.from(r)), [[7, 14], [8, 16]]);
});

test('a failed run rejects its own requests only; the next run still goes', async () => {
  const f = fakeModel();
  const b = new MicroBatcher(modelRunner(f.model, 'logits'), { maxWaitMs: 1, maxSamples: 8 });
  const p1 = b.run(x(1));
  await new Promise((r) => setTimeout(r, 5));
  const p2 = b.run(x(2));
  const failed = assert.rejects(p1, /run failed/);
  f.fail();
  await f.release();
  await failed;
  await f.release();
  assert.deepEqual(Array.from(await p2), [2, 4]);
});

test('the observer sees each request\'s wait and each run\'s time, failed runs included', async () => {
  const f = fakeModel();
  const batches: { requests: number; samples: number; waited: number[] }[] = [];
  const runs: { samples: number; ms: number }[] = [];
  const b = new MicroBatcher(modelRunner(f.model, 'logits'), { maxWaitMs: 10, maxSamples: 8 }, {
    batch: (requests, samples, waitedMs) => batches.push({ requests, samples, waited: [...waitedMs] }),
    run: (samples, ms) => runs.push({ samples, ms }),
  });
  const p1 = b.run(x(1));
  await new Promise((r) => setTimeout(r, 20)); // run 1 = [1] in flight after its 10 ms wait
  const later = [b.run(x(2, 3)), b.run(x(4))]; // wait for run 1 to end
  await new Promise((r) => setTimeout(r, 30));
  const failed = assert.rejects(p1, /run failed/);
  f.fail();
  await f.release(); // run 1 fails after ≥ 30 ms in flight; run 2 = [2, 3], [4] goes at once
  await failed;
  await f.release();
  await Promise.all(later);
  assert.deepEqual(batches.map((x) => [x.requests, x.samples]), [[1, 1], [2, 3]]);
  // Node's timers count whole milliseconds of loop time, so a timer may fire up to 1 ms early.
  assert.ok(batches[0]!.waited[0]! >= 8.5, `the first request waited out maxWaitMs: ${batches[0]!.waited[0]}`);
  for (const w of batches[1]!.waited) assert.ok(w >= 29, `requests that arrived mid-run waited for it: ${w} ms`);
  assert.equal(runs.length, 2);
  assert.equal(runs[0]!.samples, 1);
  assert.ok(runs[0]!.ms >= 29, `the failed run is timed too: ${runs[0]!.ms} ms`);
  assert.equal(runs[1]!.samples, 3);
});
