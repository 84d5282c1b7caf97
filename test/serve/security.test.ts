// The service's security model through app.inject on the shipped CNN: reads closed by
// configuration (every route but /healthz behind the bearer token), path parameters and tenant
// names that could read as path steps refused before any registry call, and the body, batch and
// shape limits answered with a 4xx that never reaches the model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { FastifyInstance, InjectOptions } from 'fastify';
import { loadModel } from '../../src/model.ts';
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';
import { PeftModel, lora, adapterFiles } from '../../src/peft/index.ts';
import { SqliteRegistry } from '../../src/registry/index.ts';
import type { AdapterRegistry } from '../../src/registry/types.ts';
import { buildServer, type ServeOptions } from '../../src/serve/index.ts';
import { runServe } from '../../src/cli/serve.ts';

const cnn = await loadModel(new URL('../../models/fmnist-cnn.onnx', import.meta.url).pathname, { threads: 1 });
const data = loadFashionMnist('test', { limit: 4 });
test.after(() => cnn.release());

const batch = (n: number) => ({ dims: [n, 1, 28, 28], data: Array.from(data.images.subarray(0, n * 784)) });
const server = (o: Partial<ServeOptions> = {}): Promise<FastifyInstance> =>
  buildServer({ models: { cnn }, registry: new SqliteRegistry(':memory:'), defaultMetrics: false, ...o });

function loraFiles() {
  const peft = PeftModel.from(cnn).withAdapter('shop', lora({ targets: ['head'], rank: 2 }));
  const f = adapterFiles(peft, 'shop');
  return { config: f.config, weights: Buffer.from(f.weights).toString('base64') };
}

/** A registry that records every call, to show that a refused request never reached it. */
function recording(inner: AdapterRegistry): { registry: AdapterRegistry; calls: string[] } {
  const calls: string[] = [];
  const registry = new Proxy(inner, {
    get(t, k, r) {
      const v = Reflect.get(t, k, r);
      return typeof v === 'function' ? (...a: unknown[]) => { calls.push(`${String(k)}(${a.filter((x) => typeof x === 'string').join(', ')})`); return v.apply(t, a); } : v;
    },
  });
  return { registry, calls };
}

test('protectReads: every route but /healthz needs the bearer token; with it, reads and writes work', async () => {
  await assert.rejects(server({ protectReads: true }), /protectReads .* give a token/);
  const app = await server({ token: 's3cret', protectReads: true });
  const auth = { authorization: 'Bearer s3cret' };
  const reads: [string, string, unknown?][] = [
    ['POST', '/v1/models/cnn/predict', { inputs: batch(1) }],
    ['POST', '/v1/models/cnn/feedback', { ids: ['0:0'], labels: [1] }],
    ['GET', '/v1/models'], ['GET', '/v1/models/cnn/tenants'], ['GET', '/v1/models/cnn/adapters'],
    ['GET', '/v1/models/cnn/adapters/shop'], ['GET', '/v1/models/cnn/adapters/shop/versions'],
    ['GET', '/v1/models/cnn/adapters/shop/files/adapter_config.json'],
    ['GET', '/metrics'], ['GET', '/docs/json'], ['GET', '/no/such/route'],
  ];
  for (const [method, url, payload] of reads) {
    for (const headers of [{}, { authorization: 'Bearer wrong!' }, { authorization: 's3cret' }]) {
      const r = await app.inject({ method: method as 'GET', url, headers, ...(payload ? { payload: payload as object } : {}) });
      assert.equal(r.statusCode, 401, `${method} ${url} with ${JSON.stringify(headers)}: ${r.body}`);
      assert.match(r.json().message, /needs the header 'Authorization: Bearer <token>'/);
    }
  }
  assert.equal((await app.inject({ url: '/healthz' })).statusCode, 200, '/healthz stays open for probes');
  // With the token: predict, a write, and the reads that follow it.
  assert.equal((await app.inject({ method: 'POST', url: '/v1/models/cnn/predict', headers: auth, payload: { inputs: batch(1) } })).statusCode, 200);
  assert.equal((await app.inject({ method: 'PUT', url: '/v1/models/cnn/adapters/shop', headers: auth, payload: loraFiles() })).statusCode, 201);
  assert.equal((await app.inject({ url: '/v1/models/cnn/adapters/shop/versions', headers: auth })).json().current, 1);
  assert.equal((await app.inject({ url: '/no/such/route', headers: auth })).statusCode, 404);
  const doc = (await app.inject({ url: '/docs/json', headers: auth })).json();
  assert.deepEqual(doc.security, [{ bearer: [] }], 'the OpenAPI document says every route needs the token');
  assert.deepEqual(doc.paths['/healthz'].get.security, [], '... but /healthz');
  await app.close();
  // Reads open (the default) on the same token: predict needs nothing, writes still do.
  const open = await server({ token: 's3cret' });
  assert.equal((await open.inject({ method: 'POST', url: '/v1/models/cnn/predict', payload: { inputs: batch(1) } })).statusCode, 200);
  assert.equal((await open.inject({ url: '/metrics' })).statusCode, 200);
  assert.equal((await open.inject({ method: 'PUT', url: '/v1/models/cnn/adapters/shop', payload: loraFiles() })).statusCode, 401);
  assert.equal((await open.inject({ url: '/docs/json' })).json().security, undefined);
  await open.close();
});

test('refit serve --protect-reads without a token fails before loading anything', async () => {
  const saved = process.env.REFIT_TOKEN;
  delete process.env.REFIT_TOKEN;
  try {
    await assert.rejects(runServe({ model: ['cnn=/no/such/model.onnx'], protectReads: true, signals: false, log: () => {} }), /--protect-reads .* give --token <token> or set REFIT_TOKEN/);
  } finally {
    if (saved !== undefined) process.env.REFIT_TOKEN = saved;
  }
});

test('refit serve --protect-reads over real HTTP: 401 without the token, /healthz open, the start line says so', async () => {
  const lines: string[] = [];
  const h = await runServe({ model: [`cnn=${new URL('../../models/fmnist-cnn.onnx', import.meta.url).pathname}`], port: 0, token: 't0k', protectReads: true, signals: false, log: (l) => lines.push(l) });
  try {
    assert.match(lines.join('\n'), /token needed on every route but \/healthz/);
    assert.equal((await fetch(`${h.url}/v1/models`)).status, 401);
    assert.equal((await fetch(`${h.url}/metrics`)).status, 401);
    assert.equal((await fetch(`${h.url}/healthz`)).status, 200);
    assert.equal((await fetch(`${h.url}/v1/models`, { headers: { authorization: 'Bearer t0k' } })).status, 200);
  } finally {
    await h.close();
  }
});

test('path parameters, adapter names and tenants that could read as a path are refused before the registry sees them', async () => {
  const { registry, calls } = recording(new SqliteRegistry(':memory:'));
  const app = await server({ registry, token: 't' });
  const auth = { authorization: 'Bearer t' };
  const bad = ['..%2F..%2Fetc', '..', '%2e%2e', 'a..b', '.hidden', 'x%00y', 'a%2Fb', 'a%5Cb', 'x'.repeat(129), '%C3%A9t%C3%A9'];
  for (const seg of bad) {
    const urls: ['GET' | 'PUT' | 'DELETE' | 'POST', string][] = [
      ['GET', `/v1/models/${seg}/adapters`], ['GET', `/v1/models/cnn/adapters/${seg}`], ['GET', `/v1/models/cnn/adapters/${seg}/versions`],
      ['GET', `/v1/models/cnn/adapters/${seg}/files/adapter_model.safetensors`], ['PUT', `/v1/models/cnn/adapters/${seg}`],
      ['DELETE', `/v1/models/cnn/adapters/${seg}`], ['POST', `/v1/models/cnn/adapters/${seg}/rollback?version=1`],
      ['POST', `/v1/models/cnn/adapters/${seg}/versions/1/good`], ['DELETE', `/v1/models/cnn/tenants/${seg}`],
      ['GET', `/v1/models/${seg}/tenants`], ['POST', `/v1/models/${seg}/predict`],
    ];
    for (const [method, url] of urls) {
      const payload = method === 'PUT' ? loraFiles() : url.endsWith('/predict') ? { inputs: batch(1) } : undefined;
      const r = await app.inject({ method, url, headers: auth, ...(payload ? { payload } : {}) });
      // 414: Fastify's router refuses a parameter over 100 characters before the schema's 128 applies.
      assert.ok([400, 404, 414].includes(r.statusCode), `${method} ${url}: ${r.statusCode} ${r.body}`);
      if (r.statusCode === 404) assert.match(r.json().message ?? '', /^Route .* not found/, `${method} ${url}: a 404 only from the router (the segment split the path)`);
    }
  }
  // The other places a name can come in: the file segment, the version, the body's adapter and tenant, the tenant header.
  const refused: [string, InjectOptions][] = [
    ['file segment', { url: '/v1/models/cnn/adapters/shop/files/..%2F..%2Fetc%2Fpasswd' }],
    ['version segment', { method: 'POST', url: '/v1/models/cnn/adapters/shop/versions/1..%2F/good', headers: auth }],
    ['version query', { url: '/v1/models/cnn/adapters/shop?version=..%2F1' }],
    ['body adapter', { method: 'POST', url: '/v1/models/cnn/predict', payload: { inputs: batch(1), adapter: '../shop' } }],
    ['body adapter with ..', { method: 'POST', url: '/v1/models/cnn/predict', payload: { inputs: batch(1), adapter: 'a..b' } }],
    ['body tenant', { method: 'POST', url: '/v1/models/cnn/predict', payload: { inputs: batch(1), tenant: '../../b' } }],
    ['header tenant', { method: 'POST', url: '/v1/models/cnn/predict', headers: { 'x-refit-tenant': 'a/../b' }, payload: { inputs: batch(1) } }],
    ['feedback tenant', { method: 'POST', url: '/v1/models/cnn/feedback', payload: { ids: ['0:0'], labels: [1], tenant: '..' } }],
  ];
  for (const [what, req] of refused) {
    const r = await app.inject(req);
    assert.ok(r.statusCode === 400 || r.statusCode === 409, `${what}: ${r.statusCode} ${r.body}`); // feedback: 409 (no continual method) comes before the tenant is used
  }
  assert.deepEqual(calls.filter((c) => !/^(list|current|get|versions)\(cnn, shop\)$/.test(c)), [], 'no registry call with a refused name');
  assert.deepEqual(calls, [], 'no registry call at all');
  await app.close();
});

test('limits: a body over bodyLimit or adapterBodyLimit, a batch over maxBatch, a wrong or empty shape get a 4xx and never reach the model', async () => {
  const app = await server({ bodyLimit: 64 * 1024, adapterBodyLimit: 1024, maxBatch: 4 });
  const post = (payload: unknown) => app.inject({ method: 'POST', url: '/v1/models/cnn/predict', payload: payload as object });
  const cases: [string, unknown, number, RegExp][] = [
    ['body over bodyLimit (64 KiB)', { inputs: batch(4), tenant: 'x'.repeat(70_000) }, 413, /Request body is too large/],
    ['batch over maxBatch', { inputs: { dims: [5, 1, 28, 28], data: new Array(5 * 784).fill(0) } }, 413, /batch of 5 samples is over the limit of 4/],
    ['empty batch', { inputs: { dims: [0, 1, 28, 28], data: [] } }, 400, /hold no sample/],
    ['negative dims', { inputs: { dims: [-1, 1, 28, 28], data: [] } }, 400, /dims must be non-negative integers/],
    ['a sample of the wrong size', { inputs: { dims: [1, 1, 28, 27], data: new Array(28 * 27).fill(0) } }, 400, /expects shape \[N, 1, 28, 28\]/],
    ['too many axes', { inputs: { dims: [1, 1, 1, 28, 28], data: new Array(784).fill(0) } }, 400, /expects shape/],
    ['a string value', { inputs: { dims: [1, 1, 1, 2], data: [0, 'a'] } }, 400, /inputs.data\[1\] is string|expects shape/],
  ];
  for (const [what, payload, status, msg] of cases) {
    const r = await post(payload);
    assert.equal(r.statusCode, status, `${what}: ${r.body}`);
    assert.match(r.json().message, msg, what);
  }
  const put = await app.inject({ method: 'PUT', url: '/v1/models/cnn/adapters/shop', payload: loraFiles() });
  assert.equal(put.statusCode, 413, `adapter upload over adapterBodyLimit: ${put.body}`);
  const metrics = (await app.inject({ url: '/metrics' })).body;
  assert.match(metrics, /refit_rejected_inputs_total\{model="cnn",reason="too-large"\} 1/);
  assert.doesNotMatch(metrics, /refit_predicted_samples_total\{[^}]*\} [1-9]/, 'nothing reached the model');
  assert.deepEqual((await app.inject({ url: '/v1/models/cnn/adapters' })).json().adapters, [], 'nothing stored');
  await app.close();
});

test('corsOrigins: a listed page may call the service from a browser (preflight answered before the token check, headers on refusals too); other origins get no CORS headers', async () => {
  const origin = 'https://app.example.com';
  const app = await server({ corsOrigins: [origin], token: 'secret-token-123', protectReads: true });
  try {
    const pre = await app.inject({ method: 'OPTIONS', url: '/v1/models/cnn/predict', headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type, x-refit-tenant' } });
    assert.equal(pre.statusCode, 204, pre.body);
    assert.equal(pre.headers['access-control-allow-origin'], origin);
    assert.match(String(pre.headers['access-control-allow-headers']), /x-refit-tenant/);
    const ok = await app.inject({ method: 'POST', url: '/v1/models/cnn/predict', headers: { origin, authorization: 'Bearer secret-token-123', 'x-refit-tenant': 'page' }, payload: { inputs: batch(1) } });
    assert.equal(ok.statusCode, 200, ok.body);
    assert.equal(ok.headers['access-control-allow-origin'], origin);
    const refused = await app.inject({ method: 'POST', url: '/v1/models/cnn/predict', headers: { origin }, payload: { inputs: batch(1) } });
    assert.equal(refused.statusCode, 401);
    assert.equal(refused.headers['access-control-allow-origin'], origin, 'the page can read why it was refused');
    const other = await app.inject({ method: 'GET', url: '/healthz', headers: { origin: 'https://elsewhere.example.com' } });
    assert.equal(other.statusCode, 200);
    assert.equal(other.headers['access-control-allow-origin'], undefined);
  } finally {
    await app.close();
  }
  const plain = await server();
  try {
    const r = await plain.inject({ method: 'GET', url: '/healthz', headers: { origin } });
    assert.equal(r.headers['access-control-allow-origin'], undefined, 'no CORS unless asked');
  } finally {
    await plain.close();
  }
  await assert.rejects(server({ corsOrigins: ['app.example.com'] }), /buildServer: corsOrigins: CORS origins must be '\*' or origins like/);
});
