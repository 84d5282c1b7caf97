// The service through app.inject (no port) on the shipped CNN: predictions, input validation,
// tenant isolation under adaptation, the continual controller's feedback, the adapter registry
// routes in the HF PEFT layout, auth, /metrics and the OpenAPI document.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { loadModel } from '../../src/model.ts';
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';
import { PeftModel, lora, adapterFiles } from '../../src/peft/index.ts';
import { SqliteRegistry } from '../../src/registry/index.ts';
import { buildServer, type ServeOptions } from '../../src/serve/index.ts';
import { float32ToBase64 } from '../../src/serve/inputs.ts';
import { PNG } from 'pngjs';

const dir = mkdtempSync(join(tmpdir(), 'refit-serve-'));
const cnn = await loadModel(new URL('../../models/fmnist-cnn.onnx', import.meta.url).pathname, { threads: 1 });
const data = loadFashionMnist('test', { limit: 96 });
test.after(async () => {
  await cnn.release();
  rmSync(dir, { recursive: true, force: true });
});

/** Samples [from, from + n) as { dims, data }. */
const batch = (from: number, n: number) => ({ dims: [n, 1, 28, 28], data: Array.from(data.images.subarray(from * 784, (from + n) * 784)) });

async function server(o: Partial<ServeOptions> = {}): Promise<FastifyInstance> {
  return buildServer({ models: { cnn }, registry: new SqliteRegistry(':memory:'), defaultMetrics: false, ...o });
}

type Predict = { ids: string[]; predictions: number[]; probabilities: number[][]; logits?: number[][]; adaptation?: { used?: number; level?: number } };
async function predict(app: FastifyInstance, tenant: string, inputs: unknown, extra: Record<string, unknown> = {}): Promise<Predict> {
  const r = await app.inject({ method: 'POST', url: '/v1/models/cnn/predict', headers: { 'x-refit-tenant': tenant }, payload: { inputs, ...extra } });
  assert.equal(r.statusCode, 200, r.body);
  return r.json();
}

test('predict on the base model: probabilities, ids and the same classes as the model itself; nested arrays and one sample accepted', async () => {
  const app = await server();
  const b = batch(0, 4);
  const r = await predict(app, 'a', b);
  assert.equal(r.ids.length, 4);
  assert.equal(r.probabilities.length, 4);
  for (const p of r.probabilities) assert.ok(Math.abs(p.reduce((a, v) => a + v, 0) - 1) < 1e-5);
  const direct = (await cnn.run({ x: { dtype: 'float32', dims: b.dims, data: Float32Array.from(b.data) } })).logits!;
  const want = Array.from({ length: 4 }, (_, i) => { const row = Array.from(direct.data.subarray(i * 10, i * 10 + 10) as Float32Array); return row.indexOf(Math.max(...row)); });
  assert.deepEqual(r.predictions, want);
  assert.ok(r.predictions.filter((p, i) => p === data.labels[i]).length >= 3, 'the shipped CNN gets most of these right');
  // one sample as nested arrays without the batch axis: [1][28][28]
  const one = [Array.from({ length: 28 }, (_, y) => Array.from(data.images.subarray(y * 28, y * 28 + 28)))];
  const s = await predict(app, 'a', one, { output: 'logits' });
  assert.equal(s.predictions[0], r.predictions[0]);
  assert.equal(s.logits![0]!.length, 10);
  await app.close();
});

test('micro-batching: concurrent plain predictions are joined into one run and get the same answers', async () => {
  const alone = await server({ microBatch: { maxWaitMs: 0 } });
  const joined = await server({ microBatch: { maxWaitMs: 50, maxSamples: 64 } });
  const sizes = [1, 3, 1, 2, 1, 4, 1, 1];
  let from = 0;
  const inputs = sizes.map((n) => { const b = batch(from, n); from += n; return b; });
  const want = await Promise.all(inputs.map((b) => predict(alone, 'a', b)));
  const got = await Promise.all(inputs.map((b, i) => predict(joined, `t${i}`, b)));
  for (let i = 0; i < sizes.length; i++) {
    assert.equal(got[i]!.probabilities.length, sizes[i]);
    assert.deepEqual(got[i]!.predictions, want[i]!.predictions);
    const d = Math.max(...got[i]!.probabilities.flat().map((p, k) => Math.abs(p - want[i]!.probabilities.flat()[k]!)));
    assert.ok(d < 1e-5, `request ${i}: max difference ${d}`);
  }
  const metric = (app: FastifyInstance, name: string) => app.inject({ url: '/metrics' }).then((r) => Number(new RegExp(`${name}\\{model="cnn"\\} (\\d+)`).exec(r.body)?.[1]));
  assert.equal(await metric(joined, 'refit_microbatch_requests_sum'), 8);
  assert.ok((await metric(joined, 'refit_microbatch_requests_count')) < 8, 'fewer runs than requests');
  assert.equal(await metric(joined, 'refit_microbatch_samples_sum'), 14);
  assert.equal(await metric(alone, 'refit_microbatch_requests_count'), 8, 'maxWaitMs 0: one run per request');
  // Where the time went: one wait per request, one run time per run.
  assert.equal(await metric(joined, 'refit_microbatch_wait_seconds_count'), 8);
  assert.equal(await metric(joined, 'refit_inference_run_seconds_count'), await metric(joined, 'refit_microbatch_requests_count'));
  await alone.close();
  await joined.close();
});

test('inputs as base64 float32 bytes give the same answer as JSON numbers; bad base64 gets a 400 naming the problem', async () => {
  const app = await server();
  const b = batch(8, 3);
  const base64 = float32ToBase64(Float32Array.from(b.data));
  const want = await predict(app, 'a', b, { output: 'logits' });
  const got = await predict(app, 'a', { dims: b.dims, base64 }, { output: 'logits' });
  assert.deepEqual(got.logits, want.logits);
  assert.deepEqual(got.predictions, want.predictions);
  const post = (inputs: unknown) => app.inject({ method: 'POST', url: '/v1/models/cnn/predict', payload: { inputs } });
  let r = await post({ dims: [2, 1, 28, 28], base64 });
  assert.equal(r.statusCode, 400);
  assert.match(r.json().message, /inputs.dims \[2, 1, 28, 28\] hold 1568 values \(6272 bytes of float32\) but inputs.base64 decodes to 9408 bytes/);
  r = await post({ dims: [1, 1, 28, 28], base64: `${'A'.repeat(4180)}!!!!` });
  assert.match(r.json().message, /inputs.base64 is not base64/);
  const nan = new Float32Array(784);
  nan[5] = NaN;
  r = await post({ dims: [1, 1, 28, 28], base64: float32ToBase64(nan) });
  assert.equal(r.statusCode, 400);
  assert.match(r.json().message, /inputs.base64 value 5 is NaN; refusing non-finite values/);
  r = await post({ dims: [1, 1, 28, 28], base64, data: [] });
  assert.match(r.json().message, /inputs has both data and base64/);
  await app.close();
});

test('bad inputs get a 400 that names the problem, never reach the model, and are counted', async () => {
  const app = await server({ maxBatch: 8 });
  const post = (payload: unknown, headers: Record<string, string> = {}) => app.inject({ method: 'POST', url: '/v1/models/cnn/predict', payload: payload as string, headers: { 'content-type': 'application/json', ...headers } });
  let r = await post({ inputs: [[1, 2], [3, 4]] });
  assert.equal(r.statusCode, 400);
  assert.match(r.json().message, /input 'x' expects shape \[N, 1, 28, 28\].*got \[2, 2\]/);
  r = await post({ inputs: { dims: [1, 1, 28, 28], data: [1, 2, 3] } });
  assert.match(r.json().message, /dims \[1, 1, 28, 28\] hold 784 values but inputs.data has 3/);
  const inf = JSON.stringify({ inputs: { dims: [1, 1, 28, 28], data: new Array(784).fill(0) } }).replace('[0,', '[1e999,'); // JSON.parse → Infinity
  r = await post(inf);
  assert.equal(r.statusCode, 400);
  assert.match(r.json().message, /inputs.data\[0\] is Infinity; refusing non-finite values/);
  r = await post('{"inputs": [[[NaN]]]}'); // what Python's json.dumps writes for nan
  assert.equal(r.statusCode, 400);
  assert.match(r.json().message, /not valid JSON.*NaN/);
  r = await post({ inputs: [[[[1, 2], [3]]]] });
  assert.match(r.json().message, /not rectangular: inputs\[0\]\[0\]\[1\] has 1 entries, expected an array of 2/);
  r = await post({ inputs: batch(0, 9) });
  assert.equal(r.statusCode, 413, r.body);
  assert.match(r.json().message, /batch of 9 samples is over the limit of 8/);
  r = await post({ inputs: batch(0, 1), tenantt: 'x' });
  assert.equal(r.statusCode, 400);
  assert.match(r.json().message, /body has an unknown field 'tenantt'/);
  r = await post({ input: [] });
  assert.match(r.json().message, /body must have required property 'inputs'/);
  r = await post({ inputs: batch(0, 1) }, { 'x-refit-tenant': '../etc' });
  assert.match(r.json().message, /tenant "\.\.\/etc" is not allowed/);
  r = await app.inject({ method: 'POST', url: '/v1/models/nope/predict', payload: { inputs: batch(0, 1) } });
  assert.equal(r.statusCode, 404);
  assert.match(r.json().message, /no model 'nope'; this server has: cnn/);
  const metrics = (await app.inject({ url: '/metrics' })).body;
  const count = (reason: string) => Number(new RegExp(`refit_rejected_inputs_total\\{model="cnn",reason="${reason}"\\} (\\d+)`).exec(metrics)?.[1] ?? 0);
  assert.equal(count('shape'), 2);
  assert.equal(count('non-finite'), 1);
  assert.equal(count('invalid-json'), 1);
  assert.equal(count('batch-limit'), 1);
  assert.equal(count('schema'), 2);
  assert.match(metrics, /refit_predicted_samples_total/);
  assert.doesNotMatch(metrics, /refit_predicted_samples_total\{[^}]*\} [1-9]/, 'nothing reached the model');
  await app.close();
});

test('isolation with tent: tenant A\'s adapting traffic, sent concurrently, never changes tenant B\'s predictions', async () => {
  // Reference: B alone.
  const ref = await server({ method: 'tent' });
  const b1 = await predict(ref, 'B', batch(0, 8));
  const b2 = await predict(ref, 'B', batch(8, 8));
  await ref.close();

  const app = await server({ method: 'tent' });
  assert.deepEqual((await predict(app, 'B', batch(0, 8))).probabilities, b1.probabilities);
  const aFirst = await predict(app, 'A', batch(16, 8));
  assert.equal(aFirst.adaptation!.used, 8, 'A adapts');
  // A's batches and B's second batch in flight together.
  const aRuns = Array.from({ length: 10 }, (_, i) => predict(app, 'A', batch(24 + 8 * (i % 8), 8)));
  const bAfter = predict(app, 'B', batch(8, 8));
  await Promise.all(aRuns);
  assert.deepEqual((await bAfter).probabilities, b2.probabilities, 'B sees exactly what it saw without A');
  const aLater = await predict(app, 'A', batch(16, 8));
  const moved = Math.max(...aLater.probabilities.flat().map((p, i) => Math.abs(p - aFirst.probabilities.flat()[i]!)));
  assert.ok(moved > 1e-4, `A's own adaptation changed its predictions (max change ${moved})`);
  const metrics = (await app.inject({ url: '/metrics' })).body;
  assert.match(metrics, /refit_adaptation_steps_total\{model="cnn",method="tent"\} 14/);
  assert.match(metrics, /refit_tenants_active\{model="cnn"\} 2/);
  // TTA methods take no labels
  const fb = await app.inject({ method: 'POST', url: '/v1/models/cnn/feedback', headers: { 'x-refit-tenant': 'A' }, payload: { ids: aLater.ids, labels: [0, 1, 2, 3, 4, 5, 6, 7] } });
  assert.equal(fb.statusCode, 409);
  assert.match(fb.json().message, /method 'tent' takes no labels.*--method continual/);
  await app.close();
});

test('one tenant\'s concurrent requests are serialised: the answers equal a sequential replay in the order they ran', async () => {
  // SAR takes two gradient passes per batch (a SAM step: perturb the weights, step, restore), so
  // two requests interleaved without the queue would see each other's perturbed weights.
  const app = await server({ method: 'sar' });
  const inputs = Array.from({ length: 6 }, (_, i) => batch(8 * i, 8));
  const got = await Promise.all(inputs.map((b) => predict(app, 'A', b)));
  await app.close();
  // ids are "<step>:<row>": the step each request ran as
  const step = got.map((r) => Number(r.ids[0]!.split(':')[0]));
  assert.deepEqual([...step].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5], 'six distinct steps');
  const order = step.map((s, i) => [s, i] as const).sort((a, b) => a[0] - b[0]).map(([, i]) => i);
  const replay = await server({ method: 'sar' });
  for (const i of order) assert.deepEqual((await predict(replay, 'A', inputs[i])).probabilities, got[i]!.probabilities, `request ${i}`);
  await replay.close();
});

test('tenant state survives release (maxTenants) and restart through the registry, exactly', async () => {
  const ref = await server({ method: 'tent' });
  const want: number[][][] = [];
  for (let i = 0; i < 3; i++) want.push((await predict(ref, 'A', batch(8 * i, 8))).probabilities);
  await ref.close();

  const path = join(dir, 'tenants.db');
  let registry = new SqliteRegistry(path);
  let app = await server({ method: 'tent', registry, maxTenants: 1 });
  assert.deepEqual((await predict(app, 'A', batch(0, 8))).probabilities, want[0]);
  await predict(app, 'B', batch(40, 8)); // A's session is saved and released (in A's own queue, after B's request)
  let tenants: { active: { tenant: string }[]; saved: string[] } = { active: [], saved: [] };
  for (let i = 0; i < 100; i++) {
    tenants = (await app.inject({ url: '/v1/models/cnn/tenants' })).json();
    if (tenants.saved.length) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.deepEqual(tenants.saved, ['A']);
  assert.deepEqual(tenants.active.map((t) => t.tenant), ['B']);
  assert.deepEqual((await predict(app, 'A', batch(8, 8))).probabilities, want[1], 'A restored from the registry');
  await app.close(); // saves every session
  await registry.close();
  registry = new SqliteRegistry(path);
  app = await server({ method: 'tent', registry });
  assert.deepEqual((await predict(app, 'A', batch(16, 8))).probabilities, want[2], 'A continues after a restart');
  // reset: A starts again from the base model
  const del = await app.inject({ method: 'DELETE', url: '/v1/models/cnn/tenants/A' });
  assert.equal(del.json().saved, true);
  assert.deepEqual((await predict(app, 'A', batch(0, 8))).probabilities, want[0]);
  await app.close();
  await registry.close();
});

test('continual: predictions with ids, feedback labels accepted, unknown ids counted, controller level reported', async () => {
  const app = await server({ method: 'continual' });
  const r = await predict(app, 't1', batch(0, 16));
  assert.equal(r.ids.length, 16);
  assert.equal(r.adaptation!.level, 0);
  const labels = Array.from(data.labels.subarray(0, 16));
  const fb = await app.inject({ method: 'POST', url: '/v1/models/cnn/feedback', payload: { tenant: 't1', ids: [...r.ids, 'nope'], labels: [...labels, 3] } });
  assert.equal(fb.statusCode, 200, fb.body);
  const rep = fb.json();
  assert.equal(rep.accepted, 16);
  assert.equal(rep.unknown, 1);
  // t2 has its own buffer: t1's ids are unknown there
  const other = await app.inject({ method: 'POST', url: '/v1/models/cnn/feedback', payload: { tenant: 't2', ids: r.ids.slice(0, 2), labels: [1, 2] } });
  assert.equal(other.json().unknown, 2);
  const logits = await app.inject({ method: 'POST', url: '/v1/models/cnn/predict', payload: { inputs: batch(0, 2), output: 'logits' } });
  assert.equal(logits.statusCode, 400);
  assert.match(logits.json().message, /probabilities only/);
  // After the warm-up (5 batches set the entropy reference), a batch of inverted images is
  // unhealthy (entropy 0.52 against a reference of 0.30) and the controller escalates: the
  // event comes back in the response and is counted.
  for (let i = 1; i < 5; i++) await predict(app, 't1', batch(16 * i, 16));
  const inverted = batch(0, 16);
  inverted.data = inverted.data.map((v) => 1 - v);
  const r2 = await predict(app, 't1', inverted) as Predict & { adaptation: { events: { kind: string; to?: number }[] } };
  assert.ok(r2.adaptation.events.some((e) => e.kind === 'escalate' && e.to === 1), JSON.stringify(r2.adaptation.events));
  const metrics = (await app.inject({ url: '/metrics' })).body;
  assert.match(metrics, /refit_controller_events_total\{model="cnn",kind="escalate"\} 1/);
  assert.match(metrics, /refit_feedback_labels_total\{model="cnn",outcome="accepted"\} 16/);
  assert.match(metrics, /refit_feedback_labels_total\{model="cnn",outcome="unknown"\} 3/);
  await app.close();
});

/** A LoRA on the CNN's head with non-zero B (so it changes predictions), as HF PEFT files. */
function loraFiles(seed: number) {
  const peft = PeftModel.from(cnn).withAdapter('shop', lora({ targets: ['head'], rank: 2 }));
  for (const [k, v] of peft.adapterValues('shop')) {
    const d = v.data as Float32Array;
    if (/lora_B|\.B$|_b$/i.test(k)) for (let i = 0; i < d.length; i++) d[i] = Math.sin(seed * 31 + i) * 0.5;
  }
  peft.touch(peft.adapterValues('shop').keys());
  return adapterFiles(peft, 'shop');
}

test('adapters: PUT/GET/versions/rollback/good/DELETE round trip in the HF PEFT layout, used by predict', async () => {
  const app = await server({ registry: new SqliteRegistry(join(dir, 'adapters.db')) });
  const url = '/v1/models/cnn/adapters/shop';
  const f1 = loraFiles(1), f2 = loraFiles(2);
  const put = (f: typeof f1) => app.inject({ method: 'PUT', url, payload: { config: f.config, weights: Buffer.from(f.weights).toString('base64'), meta: { method: 'lora', metrics: { accuracy: 0.5 } } } });
  let r = await put(f1);
  assert.equal(r.statusCode, 201, r.body);
  assert.equal(r.json().version, 1);
  assert.equal(r.json().sha256, createHash('sha256').update(f1.weights).digest('hex'));
  assert.match(r.json().meta.baseModelHash, /^[0-9a-f]{8}$/);
  r = await put(f2);
  assert.equal(r.json().version, 2);
  assert.equal(r.json().parent, 1);
  const got = (await app.inject({ url })).json();
  assert.equal(got.version, 2);
  assert.equal(got.config, f2.config);
  assert.deepEqual(new Uint8Array(Buffer.from(got.weights, 'base64')), f2.weights);
  const raw = await app.inject({ url: `${url}/files/adapter_model.safetensors?version=1` });
  assert.deepEqual(new Uint8Array(raw.rawPayload), f1.weights);
  assert.equal(raw.headers['x-refit-adapter-version'], '1');
  assert.equal(JSON.parse((await app.inject({ url: `${url}/files/adapter_config.json` })).body).peft_type, 'LORA');

  // predict with the adapter: different from the base; v1 vs v2 differ
  const base = await predict(app, 'a', batch(0, 8));
  const withV2 = await predict(app, 'a', batch(0, 8), { adapter: 'shop' });
  assert.deepEqual(withV2.adaptation, undefined);
  const withV1 = await predict(app, 'a', batch(0, 8), { adapter: 'shop', adapterVersion: 1 });
  const diff = (x: Predict, y: Predict) => Math.max(...x.probabilities.flat().map((p, i) => Math.abs(p - y.probabilities.flat()[i]!)));
  assert.ok(diff(base, withV2) > 1e-3 && diff(withV1, withV2) > 1e-3, 'the adapter and its version matter');

  // versions, rollback, good
  let v = (await app.inject({ url: `${url}/versions` })).json();
  assert.deepEqual(v.versions.map((x: { version: number }) => x.version), [1, 2]);
  assert.equal(v.current, 2);
  r = await app.inject({ method: 'POST', url: `${url}/rollback?version=1` });
  assert.equal(r.statusCode, 200, r.body);
  assert.equal((await app.inject({ url })).json().version, 1);
  assert.deepEqual((await predict(app, 'a', batch(0, 8), { adapter: 'shop' })).probabilities, withV1.probabilities);
  r = await app.inject({ method: 'POST', url: `${url}/versions/2/good` });
  assert.equal(r.json().good, true);
  v = (await app.inject({ url: `${url}/versions` })).json();
  assert.deepEqual(v.versions.map((x: { good: boolean; current: boolean }) => [x.good, x.current]), [[false, true], [true, false]]);
  r = await app.inject({ method: 'POST', url: `${url}/rollback?version=7` });
  assert.equal(r.statusCode, 404);
  assert.match(r.json().message, /no version 7 \(stored: 1, 2\)/);

  // a file that does not fit the model is refused before it is stored
  const bad = JSON.parse(f1.config);
  bad.r = 4;
  r = await app.inject({ method: 'PUT', url, payload: { config: bad, weights: Buffer.from(f1.weights).toString('base64') } });
  assert.equal(r.statusCode, 400);
  assert.match(r.json().message, /lora_A.*has shape \[2, 128\], expected \[4, 128\]/);
  r = await app.inject({ method: 'PUT', url, payload: { config: f1.config, weights: '***' } });
  assert.match(r.json().message, /base64/);
  assert.deepEqual((await app.inject({ url: `${url}/versions` })).json().versions.length, 2);
  // names that could escape a path are refused by the route schema
  r = await app.inject({ url: '/v1/models/cnn/adapters/..%2F..%2Fetc' });
  assert.equal(r.statusCode, 400);

  r = await app.inject({ method: 'DELETE', url });
  assert.equal(r.json().deleted, true);
  assert.equal((await app.inject({ url })).statusCode, 404);
  r = await app.inject({ method: 'POST', url: '/v1/models/cnn/predict', payload: { inputs: batch(0, 1), adapter: 'shop' } });
  assert.equal(r.statusCode, 404);
  const metrics = (await app.inject({ url: '/metrics' })).body;
  for (const op of ['put', 'rollback', 'good', 'delete']) assert.match(metrics, new RegExp(`refit_registry_writes_total\\{op="${op}"\\} [1-9]`));
  assert.match(metrics, /refit_http_requests_total\{route="\/v1\/models\/:model\/adapters\/:name",method="PUT",status="201"\} 2/);
  assert.match(metrics, /refit_http_request_duration_seconds_bucket\{le="[^"]+",route="\/v1\/models\/:model\/predict",method="POST"\}/);
  await app.close();
});

test('write routes need the bearer token when one is configured; reads stay open', async () => {
  const app = await server({ token: 's3cret' });
  const f = loraFiles(1);
  const payload = { config: f.config, weights: Buffer.from(f.weights).toString('base64') };
  let r = await app.inject({ method: 'PUT', url: '/v1/models/cnn/adapters/x', payload });
  assert.equal(r.statusCode, 401);
  assert.match(r.json().message, /Authorization: Bearer/);
  r = await app.inject({ method: 'PUT', url: '/v1/models/cnn/adapters/x', payload, headers: { authorization: 'Bearer wrong!' } });
  assert.equal(r.statusCode, 401);
  r = await app.inject({ method: 'PUT', url: '/v1/models/cnn/adapters/x', payload, headers: { authorization: 'Bearer s3cret' } });
  assert.equal(r.statusCode, 201);
  assert.equal((await app.inject({ url: '/v1/models/cnn/adapters/x/versions' })).statusCode, 200);
  assert.equal((await app.inject({ method: 'POST', url: '/v1/models/cnn/adapters/x/rollback?version=1' })).statusCode, 401);
  assert.equal((await app.inject({ method: 'POST', url: '/v1/models/cnn/predict', payload: { inputs: batch(0, 1) } })).statusCode, 200);
  await app.close();
});

test('/healthz, and /docs/json is an OpenAPI 3 document with every route', async () => {
  const app = await server({ method: 'tent' });
  const h = (await app.inject({ url: '/healthz' })).json();
  assert.deepEqual([h.status, h.models, h.method], ['ok', ['cnn'], 'tent']);
  const doc = (await app.inject({ url: '/docs/json' })).json();
  assert.match(doc.openapi, /^3\.\d+\.\d+$/);
  assert.equal(typeof doc.info.title, 'string');
  const want: [string, string][] = [
    ['/v1/models/{model}/predict', 'post'], ['/v1/models/{model}/feedback', 'post'],
    ['/v1/models/{model}/adapters/{name}', 'get'], ['/v1/models/{model}/adapters/{name}', 'put'], ['/v1/models/{model}/adapters/{name}', 'delete'],
    ['/v1/models/{model}/adapters/{name}/versions', 'get'], ['/v1/models/{model}/adapters/{name}/rollback', 'post'],
    ['/v1/models/{model}/adapters/{name}/versions/{version}/good', 'post'], ['/healthz', 'get'], ['/metrics', 'get'],
  ];
  for (const [p, m] of want) {
    const op = doc.paths[p]?.[m];
    assert.ok(op, `${m.toUpperCase()} ${p} is documented`);
    assert.ok(op.responses && Object.keys(op.responses).length > 0, `${p} has responses`);
    for (const seg of p.match(/\{(\w+)\}/g) ?? []) {
      assert.ok(op.parameters?.some((x: { in: string; name: string; required: boolean }) => x.in === 'path' && `{${x.name}}` === seg && x.required), `${p}: path parameter ${seg}`);
    }
  }
  assert.ok(doc.paths['/v1/models/{model}/predict'].post.requestBody.content['application/json'].schema.properties.inputs);
  assert.ok(doc.paths['/v1/models/{model}/adapters/{name}'].put.security);
  assert.equal(doc.paths['/docs/json'], undefined);
  await app.close();
});

/** Samples [from, from + n) of the test images as base64 PNG files, `scale`× larger (nearest). */
function pngs(from: number, n: number, scale = 1): string[] {
  return Array.from({ length: n }, (_, k) => {
    const S = 28 * scale;
    const png = new PNG({ width: S, height: S });
    for (let y = 0; y < S; y++) {
      for (let x = 0; x < S; x++) {
        const v = Math.round(data.images[(from + k) * 784 + Math.floor(y / scale) * 28 + Math.floor(x / scale)]! * 255);
        png.data.set([v, v, v, 255], 4 * (y * S + x));
      }
    }
    return PNG.sync.write(png).toString('base64');
  });
}

test('image inputs: base64 PNGs predict as the same pixels sent as a tensor; resized and normalised as the server was started; bad images refused', async () => {
  const app = await server();
  const want = await predict(app, 'a', batch(0, 4));
  const got = await predict(app, 'a', { images: pngs(0, 4) });
  assert.deepEqual(got.predictions, want.predictions);
  for (let i = 0; i < 4; i++) for (let c = 0; c < 10; c++) assert.ok(Math.abs(got.probabilities[i]![c]! - want.probabilities[i]![c]!) < 1e-6);
  const bad = async (inputs: unknown, status: number, msg: RegExp) => {
    const r = await app.inject({ method: 'POST', url: '/v1/models/cnn/predict', payload: { inputs } });
    assert.equal(r.statusCode, status, r.body);
    assert.match(r.json().message, msg);
  };
  await bad({ images: pngs(0, 1, 2) }, 400, /inputs\.images\[0\]: it is 56×56 and the model takes 28×28 images; --resize brings them to it/);
  await bad({ images: ['not base64!'] }, 400, /inputs\.images\[0\] is not base64/);
  await bad({ images: [Buffer.from('hello, not an image').toString('base64')] }, 400, /inputs\.images\[0\]: cannot decode or resize image/);
  await bad({ images: [] }, 400, /non-empty array of base64-encoded PNG or JPEG files/);
  await bad({ images: pngs(0, 1), dims: [1, 1, 28, 28] }, 400, /inputs with images takes no 'dims'/);
  const metrics = (await app.inject({ url: '/metrics' })).body;
  assert.match(metrics, /refit_rejected_inputs_total\{model="cnn",reason="bad-image"\} 2/);
  await app.close();

  // Resize(28) of 2× images, and a normalisation: as the same normalisation applied to the tensor.
  const prepared = await server({ images: { resize: 28, pixels: { mean: [0.5], std: [0.25] } } });
  const norm = batch(0, 4);
  norm.data = norm.data.map((v) => (v - 0.5) / 0.25);
  const wantNorm = await predict(prepared, 'a', norm);
  const gotNorm = await predict(prepared, 'a', { images: pngs(0, 4) });
  assert.deepEqual(gotNorm.predictions, wantNorm.predictions);
  const big = await predict(prepared, 'a', { images: pngs(0, 4, 2) });
  assert.equal(big.predictions.length, 4);
  await prepared.close();
  await assert.rejects(server({ images: { pixels: { mean: [0.4, 0.5, 0.6], std: [1, 1, 1] } } }), /image normalisation gives 3 channels, but its input 'x' has shape \[.*,1,28,28\]/);
});
