// refit/web's page-side API in headless Chromium, bad input first: WebGPU asked for where there is
// none, starting onnxruntime-web before any model, a failed and a truncated model fetch, a file path given to loadModel, adapters in IndexedDB
// (round trip; a failed save leaves nothing behind), and a corruption that needed a Buffer shim.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openTestPage, chromiumMissing, type TestPage } from './browser.ts';
import { corrupt } from '../../src/data/corruptions/index.ts';
import type * as Web from '../../src/web.ts';

type R = typeof Web;
let tp: TestPage | undefined;
before(async () => {
  if (chromiumMissing) return;
  tp = await openTestPage({
    // Promises 4096 bytes, sends 100, then drops the connection.
    '/cut.onnx': (_req, res, headers) => {
      res.writeHead(200, { ...headers, 'Content-Type': 'application/octet-stream', 'Content-Length': '4096' });
      res.write(Buffer.alloc(100));
      setTimeout(() => res.destroy(), 50);
    },
  });
});
after(async () => { await tp?.close(); });

// The function runs in the page as source text; tsx wraps named functions in __name(), which the page lacks.
const inPage = <T>(f: (refit: R) => Promise<T>): Promise<T> =>
  tp!.page.evaluate(`(() => { const __name = (fn) => fn; return (${f.toString()})(globalThis.refitTest.refit); })()`) as Promise<T>;

const askWebGpu = async (refit: R) => {
  const warned: string[] = [];
  const info = await refit.useWebRuntime({ device: 'webgpu', onWarning: (m) => warned.push(m) });
  let error = '';
  try { await refit.useWebRuntime({ device: 'webgpu', fallback: 'error' }); } catch (e) { error = (e as Error).message; }
  await refit.useWebRuntime({ device: 'wasm' });
  return { info, warned, error };
};

test('WebGPU asked for from the wasm-only bundle: wasm with a message naming the WebGPU bundle, or an error', { skip: chromiumMissing }, async () => {
  const r = await inPage(askWebGpu);
  assert.equal(r.info.device, 'wasm');
  assert.match(r.warned[0] ?? '', /^WebGPU was asked for but cannot be used: this bundle of refit\/web holds onnxruntime-web without WebGPU .*refit-web-webgpu\.js.*; running on wasm$/);
  assert.match(r.error, /^WebGPU was asked for but cannot be used: this bundle/);
});

test('WebGPU asked for from the WebGPU bundle where the browser offers no usable adapter: the reason, then wasm or an error', { skip: chromiumMissing }, async () => {
  const gp = await openTestPage(undefined, { webgpu: true });
  try {
    const r = await (gp.page.evaluate(`(() => { const __name = (fn) => fn; return (${askWebGpu.toString()})(globalThis.refitTest.refit); })()`) as ReturnType<typeof askWebGpu>);
    // Headless Chromium with --disable-gpu: no adapter, or only SwiftShader (refused by default).
    assert.equal(r.info.device, 'wasm');
    assert.match(r.warned[0] ?? '', /^WebGPU was asked for but cannot be used: (this browser has no navigator\.gpu|navigator\.gpu\.requestAdapter\(\) returned no adapter|the only WebGPU adapter is a software one).*; running on wasm$/);
    assert.match(r.error, /^WebGPU was asked for but cannot be used: /);
    console.log(`# ${r.warned[0]}`);
  } finally {
    await gp.close();
  }
});

test('useWebRuntime({ start: true }) starts onnxruntime-web before any model, warmUp() steps two tiny models, and models then run', { skip: chromiumMissing }, async () => {
  const fresh = await openTestPage();
  try {
    const r = await (fresh.page.evaluate(`(async () => {
      const refit = globalThis.refitTest.refit;
      const info = await refit.useWebRuntime({ start: true });
      const warmMs = await refit.warmUp();
      const model = await refit.loadModelFrom('/models/fmnist-cnn.onnx');
      const out = await model.run({ x: { dtype: 'float32', dims: [2, 1, 28, 28], data: new Float32Array(2 * 784).fill(0.5) } }, { outputs: ['logits'] });
      return { startMs: info.startMs, warmMs, dims: out.logits.dims, finite: Array.from(out.logits.data).every(Number.isFinite) };
    })()`) as Promise<{ startMs?: number; warmMs: number; dims: number[]; finite: boolean }>);
    assert.ok(typeof r.startMs === 'number' && r.startMs > 0 && Number.isFinite(r.startMs), `startMs ${r.startMs}`);
    assert.deepEqual(r.dims, [2, 10]);
    assert.ok(r.finite);
    assert.ok(r.warmMs > 0 && Number.isFinite(r.warmMs), `warmMs ${r.warmMs}`);
    console.log(`# onnxruntime-web started in ${r.startMs!.toFixed(0)} ms, warmed up in ${r.warmMs.toFixed(0)} ms`);
  } finally {
    await fresh.close();
  }
});

test('model fetches that fail: HTTP 404, a body cut off halfway, a file path', { skip: chromiumMissing }, async () => {
  const r = await inPage(async (refit) => {
    const msg = (p: Promise<unknown>) => p.then(() => 'resolved', (e: Error) => e.message);
    return {
      missing: await msg(refit.loadModelFrom('/models/missing.onnx')),
      cut: await msg(refit.loadModelFrom('/cut.onnx')),
      path: await msg(refit.loadModel('models/fmnist-cnn.onnx')),
    };
  });
  assert.match(r.missing, /^fetching \/models\/missing\.onnx failed: HTTP 404/);
  assert.match(r.cut, /^reading \S*\/cut\.onnx (failed after 100 bytes of 4096|: the body ended after 100 of 4096 bytes)/);
  // The browser logs the two failed requests itself; nothing else may be logged.
  const logged = tp!.errors.splice(0);
  assert.ok(logged.length <= 2 && logged.every((e) => /Failed to load resource|net::ERR_/.test(e)), logged.join('\n'));
  assert.match(r.path, /loadModel\('models\/fmnist-cnn\.onnx'\) reads or writes a file path, which only Node can do; in a browser pass the model's bytes/);
});

test('adapters in IndexedDB: saved, listed, reloaded equal; a failed save writes nothing; a missing one is named', { skip: chromiumMissing }, async () => {
  const r = await inPage(async (refit) => {
    const base = await refit.loadModelFrom('/models/fmnist-vit.onnx');
    const p = refit.peft.withAdapter(base, 'mine', refit.peft.lora({ targets: /blocks\.0\.attn\.(q|v)$/, rank: 2, seed: 3 }));
    const values = new Map<string, Float32Array>();
    for (const [k, t] of p.adapterValues('mine')) values.set(k, Float32Array.from(t.data as Float32Array, (_, i) => Math.sin(i + k.length)));
    p.setParams(values);
    await refit.saveAdapterToIndexedDB(p, 'mine');
    let failed = '';
    try { await refit.saveAdapterToIndexedDB(p, 'nope', 'half'); } catch (e) { failed = (e as Error).message; }
    const stored = await refit.listAdaptersInIndexedDB();
    const back = await refit.loadAdapterFromIndexedDB(await refit.loadModelFrom('/models/fmnist-vit.onnx'), 'mine');
    let same = true;
    for (const [k, v] of values) { const w = back.adapterValues('mine').get(k)!.data as Float32Array; same &&= w.length === v.length && w.every((x, i) => x === v[i]); }
    let missing = '';
    try { await refit.loadAdapterFromIndexedDB(base, 'other'); } catch (e) { missing = (e as Error).message; }
    await refit.deleteAdapterFromIndexedDB('mine');
    return { stored, same, failed, missing, after: await refit.listAdaptersInIndexedDB() };
  });
  assert.deepEqual(r.stored, ['mine'], 'the failed save left a record');
  assert.ok(r.failed.length > 0 && /nope/.test(r.failed), r.failed);
  assert.ok(r.same, 'reloaded adapter values differ');
  assert.equal(r.missing, "no adapter 'other' in IndexedDB; stored: mine");
  assert.deepEqual(r.after, []);
});

test('corruptions run in the page as in Node (jpeg_compression needed a Buffer stand-in)', { skip: chromiumMissing }, async () => {
  const img = Float32Array.from({ length: 4 * 784 }, (_, i) => ((i * 37) % 256) / 255);
  const node = corrupt(img, 4, 28, 28, 'jpeg_compression', 5, 0);
  const web = await tp!.page.evaluate((a) => Array.from((globalThis as unknown as { refitTest: { refit: R } }).refitTest.refit.data.corrupt(Float32Array.from(a), 4, 28, 28, 'jpeg_compression', 5, 0)), Array.from(img));
  assert.deepEqual(web, Array.from(node));
  assert.deepEqual(tp!.errors, []);
});

test('text.createTextEncoder in the page encodes as in Node, from the parsed tokenizer files (WordPiece, byte-level BPE, SentencePiece BPE)', { skip: chromiumMissing }, async () => {
  const { mkdtempSync, readFileSync, rmSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const { writeBertTokenizer, writeGptTokenizer, writeLlamaTokenizer } = await import('../helpers/tokenizers.ts');
  const { createTextEncoder } = await import('../../src/text/encode.ts');
  const dir = mkdtempSync(join(tmpdir(), 'refit-page-text-'));
  try {
    const cases: [(d: string) => void, string[]][] = [
      [writeBertTokenizer, ['The film was VERY good, I liked it!', 'bad']],
      [writeGptTokenizer, ['abcd efgh ab cab', 'ab']],
      [writeLlamaTokenizer, ['the cats', 'cat the the']],
    ];
    for (const [write, texts] of cases) {
      const d = join(dir, write.name);
      write(d);
      const json = JSON.parse(readFileSync(join(d, 'tokenizer.json'), 'utf8')), config = JSON.parse(readFileSync(join(d, 'tokenizer_config.json'), 'utf8'));
      const node = createTextEncoder(json, config);
      const want = node.encode(texts);
      const got = await tp!.page.evaluate(`(() => { const e = globalThis.refitTest.refit.text.createTextEncoder(${JSON.stringify(json)}, ${JSON.stringify(config)}); const r = e.encode(${JSON.stringify(texts)}); return { values: Array.from(r.values), n: r.n, length: r.length, pad: e.padToken }; })()`);
      assert.deepEqual(got, { values: Array.from(want.values), n: want.n, length: want.length, pad: node.padToken }, write.name);
    }
  } finally { rmSync(dir, { recursive: true, force: true }); }
});
