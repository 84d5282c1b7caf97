// The page side of bench/web-bench.ts, bundled apart from refit's bundle (which
// test/web/page-entry.ts puts on globalThis.refitTest): refit's steps for BenchSpec (Tent included)
// and the tfjs-wasm ViT, each opened once and then timed one step per call.
import { tf, setWasmPaths, setThreadsCount, getThreadsCount } from './tfjs-entry.ts';
import { tfjsVit } from './tfjs-vit.ts';
import { prepareBench, vitWeights, type BenchSpec } from './cases.ts';
import type * as Web from '../../src/web.ts';

const refit = () => (globalThis as unknown as { refitTest: { refit: typeof Web } }).refitTest.refit;
const models = new Map<string, Promise<Uint8Array>>();
const bytesOf = (m: string) => { if (!models.has(m)) models.set(m, refit().fetchBytes(`/models/fmnist-${m}.onnx`)); return models.get(m)!; };
const open = new Map<number, { run: () => Promise<unknown>; release: () => Promise<void> | void }>();
let next = 0;
const setTag = (t: string) => { (globalThis as unknown as { __memTag: string }).__memTag = t; };

/** Largest |a − b| and largest |b|. */
function diff(a: ArrayLike<number>, b: ArrayLike<number>) {
  let d = 0, m = 0;
  for (let i = 0; i < b.length; i++) { d = Math.max(d, Math.abs(a[i]! - b[i]!)); m = Math.max(m, Math.abs(b[i]!)); }
  return { maxAbs: d, maxRef: m };
}

const api = {
  async ortOpen(s: BenchSpec, session: Web.SessionOptions) {
    setTag('ort');
    const { step, batch } = await prepareBench(refit(), await bytesOf(s.model), s, session);
    const t = performance.now();
    await step.run(batch);
    const firstMs = performance.now() - t;
    const { graph } = await step.compile({ x: { dtype: 'float32', dims: [...batch.x!.dims] } });
    const id = next++;
    open.set(id, { run: () => step.run(batch), release: () => step.release() });
    return { id, firstMs, timings: { ...graph.timings } };
  },
  async tfSetup(threads: number) {
    setTag('tfjs');
    setWasmPaths('/tfjs/');
    setThreadsCount(threads);
    const ok = await tf.setBackend('wasm');
    return { ok, backend: tf.getBackend(), threads: getThreadsCount(), crossOriginIsolated: globalThis.crossOriginIsolated,
      multithreadSupport: await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT'), simdSupport: await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT'), hardwareConcurrency: navigator.hardwareConcurrency };
  },
  /** The tfjs ViT on the same weights (and LoRA factors) as refit's case; its logits checked against onnxruntime-web's first. */
  async tfOpen(s: BenchSpec) {
    setTag('ort');
    const { model, batch } = await prepareBench(refit(), await bytesOf('vit'), s);
    const ref = (await model.run({ x: batch.x! }, { outputs: ['logits'] })).logits!.data as Float32Array;
    await model.release();
    setTag('tfjs');
    const w = vitWeights(model, s.adapter === 'lora' ? 'lora' : 'full');
    const v = tfjsVit(tf, w.weights, { train: s.adapter === 'lora' ? 'lora' : 'all', lora: w.lora, loraScale: w.loraScale });
    const x = tf.tensor(batch.x!.data as Float32Array, [s.batch, 1, 28, 28]);
    const y = tf.tensor1d(Int32Array.from(batch.y!.data as BigInt64Array, Number), 'int32');
    const logits = v.forward(x);
    const check = diff(await logits.data(), ref);
    logits.dispose();
    const t = performance.now();
    await v.step(x, y);
    const firstMs = performance.now() - t;
    const id = next++;
    open.set(id, { run: () => v.step(x, y), release: () => { v.dispose(); x.dispose(); y.dispose(); } });
    return { id, firstMs, check, trainable: v.vars.length };
  },
  async time(id: number) {
    const t = performance.now();
    await open.get(id)!.run();
    return performance.now() - t;
  },
  async close(id: number) { await open.get(id)?.release(); open.delete(id); },
  /** Bytes of every WebAssembly.Memory, by the runtime that created it. */
  heaps() {
    const mems = (globalThis as unknown as { __wasmMemories: { m: WebAssembly.Memory; tag: string }[] }).__wasmMemories;
    const out: Record<string, number> = {};
    for (const { m, tag } of mems) out[tag] = (out[tag] ?? 0) + m.buffer.byteLength;
    return out;
  },
  async webgpu() {
    const gpu = (navigator as unknown as { gpu?: { requestAdapter(): Promise<null | { info?: Record<string, unknown>; isFallbackAdapter?: boolean }> } }).gpu;
    if (!gpu) return { available: false, reason: 'navigator.gpu is undefined' };
    const a = await gpu.requestAdapter();
    if (!a) return { available: false, reason: 'requestAdapter() returned null' };
    const info = a.info ? { vendor: a.info.vendor, architecture: a.info.architecture, device: a.info.device, description: a.info.description } : {};
    return { available: true, isFallbackAdapter: !!(a.isFallbackAdapter ?? (a.info as { isFallbackAdapter?: boolean } | undefined)?.isFallbackAdapter), info };
  },
};
(globalThis as unknown as { webBench: typeof api }).webBench = api;
