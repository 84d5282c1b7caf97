// `refit serve` as a process: it listens, answers over real HTTP (loopback only), and on SIGTERM
// finishes, saves each tenant's state to the registry file and exits 0. runServe in-process too,
// also on a PostgreSQL registry (a throwaway server, test/helpers/postgres.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runServe, parseModelSpec } from '../../src/cli/serve.ts';
import { SqliteRegistry } from '../../src/registry/index.ts';
import { startPostgres, postgresMissing } from '../helpers/postgres.ts';
import { npy } from '../helpers/cli.ts';
import { loadModel } from '../../src/model.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';
import { ContinualController } from '../../src/continual/controller.ts';
import { methodSetup } from '../../src/cli/method-setup.ts';
import { modelIO } from '../../src/cli/common.ts';
import { createAdapter } from '../../src/tta/index.ts';

const root = new URL('../../', import.meta.url).pathname;
const model = join(root, 'models/fmnist-cnn.onnx');
const dir = mkdtempSync(join(tmpdir(), 'refit-serve-cli-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

const sample = { dims: [2, 1, 28, 28], data: Array.from({ length: 2 * 784 }, (_, i) => (i % 13) / 13) };

test('model specs: name=path, or a path named after its file; unsafe names refused', () => {
  assert.deepEqual(parseModelSpec('cnn=models/a.onnx'), ['cnn', 'models/a.onnx']);
  assert.deepEqual(parseModelSpec('models/fmnist-cnn.onnx'), ['fmnist-cnn', 'models/fmnist-cnn.onnx']);
  assert.throws(() => parseModelSpec('../x=m.onnx'), /name '\.\.\/x' is not allowed/);
});

test('runServe listens on a port; close() stops it', async () => {
  const lines: string[] = [];
  const h = await runServe({ model: [`cnn=${model}`], port: 0, host: '127.0.0.1', signals: false, log: (l) => lines.push(l) });
  try {
    assert.match(h.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    const r = await fetch(`${h.url}/v1/models/cnn/predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ inputs: sample }) });
    assert.equal(r.status, 200);
    assert.equal(((await r.json()) as { predictions: number[] }).predictions.length, 2);
    assert.match(lines.join('\n'), /no --registry given/);
  } finally {
    await h.close();
  }
  await assert.rejects(fetch(`${h.url}/healthz`));
  await assert.rejects(runServe({ model: [], signals: false, log: () => {} }), /at least one --model/);
  await assert.rejects(runServe({ model: ['cnn=/nonexistent.onnx'], signals: false, log: () => {} }), /--model cnn=\/nonexistent\.onnx/);
});

test('runServe --method continual on a token model: --pad-token reaches the controller, so requests of different lengths train together; --source ids calibrate it; image flags refused', async () => {
  const bert = `bert=${join(root, 'test/fixtures/zoo/bert/model.onnx')}`;
  const h = await runServe({ model: [bert], method: 'continual', methodOptions: '{"feedback": {"minBatch": 4, "minNew": 4}}', padToken: 0, port: 0, host: '127.0.0.1', signals: false, log: () => {} });
  try {
    const call = async (route: string, body: unknown) => {
      const r = await fetch(`${h.url}/v1/models/bert/${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      assert.equal(r.status, 200, await r.clone().text());
      return r.json() as Promise<{ ids: string[]; accepted: number }>;
    };
    const a = await call('predict', { inputs: [[5, 9, 14, 3, 0, 0], [7, 7, 2, 30, 11, 4]] });
    const b = await call('predict', { inputs: [[5, 9, 14], [7, 7, 2]] });
    assert.equal((await call('feedback', { ids: [...a.ids, ...b.ids], labels: [0, 1, 0, 1] })).accepted, 4);
  } finally {
    await h.close();
  }
  // --source: in-distribution ids set each tenant's entropy reference before its first request.
  const source = join(dir, 'bert-source.npy');
  writeFileSync(source, npy('<i8', [8, 6], BigInt64Array.from({ length: 48 }, (_, i) => BigInt(2 + (i % 29)))));
  const cal = await runServe({ model: [bert], method: 'continual', source, padToken: 0, port: 0, host: '127.0.0.1', signals: false, log: () => {} });
  try {
    const r = await fetch(`${cal.url}/v1/models/bert/predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ inputs: [[5, 9, 14, 3, 0, 0]] }) });
    assert.equal(r.status, 200);
    const reference = ((await r.json()) as { adaptation: { signals: { reference: number | null } } }).adaptation.signals.reference;
    assert.ok(typeof reference === 'number' && reference > 0, `calibrated reference ${reference}`);
  } finally {
    await cal.close();
  }
  await assert.rejects(runServe({ model: [bert], method: 'continual', source, sourceLabels: source, signals: false, log: () => {} }), /--source-labels: for image data; this model reads token ids/);
});

test('runServe: the micro-batching options reach the batcher; bad values are refused with the flag named', async () => {
  const h = await runServe({ model: [`cnn=${model}`], port: 0, host: '127.0.0.1', signals: false, log: () => {}, microBatchWait: '0' });
  try {
    // maxWaitMs 0: every request is its own run, so 3 concurrent requests make 3 runs.
    const one = { dims: [1, 1, 28, 28], data: new Array(784).fill(0.5) };
    await Promise.all([0, 1, 2].map(() => fetch(`${h.url}/v1/models/cnn/predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ inputs: one }) })));
    const m = await (await fetch(`${h.url}/metrics`)).text();
    assert.match(m, /refit_microbatch_requests_count\{model="cnn"\} 3/);
  } finally {
    await h.close();
  }
  await assert.rejects(runServe({ model: [`cnn=${model}`], port: 0, signals: false, log: () => {}, microBatchMax: '0' }), /--micro-batch-max must be an integer ≥ 1, got '0'/);
  await assert.rejects(runServe({ model: [`cnn=${model}`], port: 0, signals: false, log: () => {}, microBatchWait: '-1' }), /--micro-batch-wait must be an integer ≥ 0/);
});

test('runServe --method continual: the recommended options, and with --source calibration, the deep learner and input alignment per model, as refit adapt sets them up', async () => {
  const src = loadFashionMnist('train', { limit: 32 });
  writeFileSync(join(dir, 'src-x.npy'), npy('<f4', [32, 1, 28, 28], src.images));
  writeFileSync(join(dir, 'src-y.npy'), npy('<i8', [32], BigInt64Array.from(src.labels, (v) => BigInt(v))));
  const flags = { source: join(dir, 'src-x.npy'), sourceLabels: join(dir, 'src-y.npy') };
  const lines: string[] = [];
  const h = await runServe({ model: [`cnn=${model}`], port: 0, signals: false, log: (l) => lines.push(l), method: 'continual', ...flags });
  // A washed-out batch (contrast 0.3): the tenant's controller must answer exactly as one made
  // with methodSetup's options and calibrated on the same source.
  const washed = { dims: [16, 1, 28, 28], data: Array.from(src.images.subarray(0, 16 * 784), (v) => 0.3 * v + 0.45) };
  try {
    assert.match(lines.join('\n'), /adaptation: continual \(calibrated on --source, deep learner, input alignment\)/);
    // The deep learner warmed up once for the model, before the server listened (no tenant warms up in a request).
    const warm = lines.findIndex((l) => /the deep learner's warm-up on the source set \(RMT\): 32\/32 samples \(model cnn\)/.test(l));
    assert.ok(warm >= 0 && warm < lines.findIndex((l) => /listening on/.test(l)), lines.join('\n'));
    assert.match(lines[0]!, /calibrating and warming up the deep learner on --source before listening \(models: cnn\)/);
    const r = await fetch(`${h.url}/v1/models/cnn/predict`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-refit-tenant': 'a' }, body: JSON.stringify({ inputs: washed, output: 'probabilities' }) });
    assert.equal(r.status, 200);
    const served = ((await r.json()) as { probabilities: number[][] }).probabilities.flat();
    const m = await loadModel(model, { memoryArena: false });
    const setup = await methodSetup('continual', m, modelIO(m), flags, { batchSize: 64 });
    assert.equal(setup.deepLearner, true);
    assert.ok(setup.inputAlign && setup.calibration?.length === 1);
    const c = new ContinualController(m, setup.options);
    await c.calibrate(setup.calibration!);
    const direct = (await c.predict(f32([16, 1, 28, 28], Float32Array.from(washed.data)))).probs;
    assert.throws(() => c.useReference(Number.NaN), /useReference: the reference must be a finite normalised entropy ≥ 0, got NaN/);
    assert.ok(served.every((v, i) => Math.abs(v - direct[i]!) < 1e-6), 'served probabilities differ from the controller made directly');
    // A second tenant takes the model's reference computed for the first (calibrated once per model): the same answers.
    const r2 = await fetch(`${h.url}/v1/models/cnn/predict`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-refit-tenant': 'b' }, body: JSON.stringify({ inputs: washed, output: 'probabilities' }) });
    const second = ((await r2.json()) as { probabilities: number[][] }).probabilities.flat();
    assert.ok(second.every((v, i) => Math.abs(v - direct[i]!) < 1e-6), "the second tenant's probabilities differ from the controller made directly");
    // Without alignment the same batch gets other answers (the alignment reached the tenant).
    const plain = new ContinualController(m, { ...setup.options, inputAlign: undefined });
    await plain.calibrate(setup.calibration!);
    const unaligned = (await plain.predict(f32([16, 1, 28, 28], Float32Array.from(washed.data)))).probs;
    assert.ok(unaligned.some((v, i) => Math.abs(v - direct[i]!) > 1e-3));
    await Promise.all([c.release(), plain.release(), m.release()]);
  } finally {
    await h.close();
  }
  // RMT behind the service warms up on one pass over --source (every new tenant does it inside its
  // first request), and says how far it is.
  const m = await loadModel(model, { memoryArena: false });
  const logged: string[] = [];
  const rmt = await methodSetup('rmt', m, modelIO(m), flags, { batchSize: 16, log: (l) => logged.push(l), shortWarmup: true });
  assert.equal(rmt.options.warmupSamples, 32);
  const ad = createAdapter(m, 'rmt', rmt.options);
  await ad.predict(f32([16, 1, 28, 28], Float32Array.from(washed.data)));
  assert.match(logged.at(-1) ?? '', /RMT warm-up on the source set .*: 32\/32 samples/);
  await ad.release();
  await m.release();
  const refused = (o: object, why: RegExp) => assert.rejects(runServe({ model: [`cnn=${model}`], port: 0, signals: false, log: () => {}, ...o }), why);
  await refused({ method: 'continual', methodOptions: '{"lrr": 0.1}' }, /model 'cnn': method 'continual' cannot run on it: continual: unknown option 'lrr'/);
  await refused({ method: 'tent', deep: false }, /--no-deep is for --method continual/);
  await refused({ source: flags.source }, /--source and --input-align are for an adaptation method; give --method/);
  await refused({ method: 'tent', deepParams: 'norm' }, /--deep-params is for --method continual/);
  await refused({ method: 'tent', inputAlign: true }, /--input-align aligns the stream .* give --source/);
});

test('refit serve: SIGTERM saves tenant state to the registry file and exits 0', { timeout: 60_000 }, async () => {
  const db = join(dir, 'registry.sqlite');
  const child = spawn(process.execPath, [join(root, 'bin/refit.js'), 'serve', '--model', `cnn=${model}`, '--port', '0', '--registry', db, '--method', 'tent'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d) => { err += d; });
  const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  try {
    const url = await new Promise<string>((res, rej) => {
      const t = setTimeout(() => rej(new Error(`no 'listening' line in 30 s: ${err}`)), 30_000);
      child.stderr.on('data', () => {
        const m = /listening on (http:\/\/[^\s]+)/.exec(err);
        if (m) { clearTimeout(t); res(m[1]!); }
      });
      child.on('exit', (c) => rej(new Error(`exited ${c}: ${err}`)));
    });
    for (let i = 0; i < 2; i++) {
      const r = await fetch(`${url}/v1/models/cnn/predict`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-refit-tenant': 'shop-1' }, body: JSON.stringify({ inputs: sample }) });
      assert.equal(r.status, 200, await r.text());
    }
  } finally {
    child.kill('SIGTERM');
  }
  assert.equal(await exited, 0, err);
  assert.match(err, /SIGTERM: finishing requests and saving tenant state/);
  const reg = new SqliteRegistry(db);
  const s = await reg.getTenantState('cnn', 'shop-1');
  assert.equal(s?.method, 'tent');
  assert.ok(s!.bytes.byteLength > 100);
  await reg.close();
});

test('runServe --registry postgres://… --blobs file:DIR: tenant state outlives the server; bad specs name the flag', { skip: postgresMissing() ?? false, timeout: 90_000 }, async () => {
  const pg = await startPostgres();
  try {
    const url = await pg.createDatabase('serve_cli');
    const blobs = `file:${join(dir, 'blobs')}`;
    const start = () => runServe({ model: [`cnn=${model}`], port: 0, host: '127.0.0.1', signals: false, log: () => {}, registry: url, blobs, method: 'tent' });
    let h = await start();
    try {
      const r = await fetch(`${h.url}/v1/models/cnn/predict`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-refit-tenant': 'shop-1' }, body: JSON.stringify({ inputs: sample }) });
      assert.equal(r.status, 200, await r.text());
    } finally {
      await h.close(); // saves shop-1's Tent state into PostgreSQL + the blob folder
    }
    h = await start();
    try {
      const tenants = await (await fetch(`${h.url}/v1/models/cnn/tenants`)).json() as { tenants: { tenant: string; saved: boolean }[] } | string[];
      assert.match(JSON.stringify(tenants), /shop-1/);
    } finally {
      await h.close();
    }
    await assert.rejects(runServe({ model: [`cnn=${model}`], port: 0, signals: false, log: () => {}, registry: url }), /--registry: .*needs a blob store/);
    await assert.rejects(runServe({ model: [`cnn=${model}`], port: 0, signals: false, log: () => {}, registry: 'mysql://x' }), /--registry: .*unknown scheme/);
  } finally {
    await pg.stop();
  }
});
