// onnxruntime-web as refit's runtime: wasm (SIMD; threads where the page is cross-origin
// isolated) by default, WebGPU by option. Importing this file registers wasm, so `refit/web`
// works with no call; useWebRuntime() changes the device, the wasm file location and threads.
//
// Threads: onnxruntime-web has one thread pool per page (env.wasm.numThreads), fixed when the
// first session starts the wasm module, and only when the page is cross-origin isolated (served
// with COOP: same-origin and COEP: require-corp); without it onnxruntime-web silently runs one
// thread. useWebRuntime() reports the threads it will really get.
//
// WebGPU: onnxruntime runs the ops its WebGPU provider has on the GPU and the rest on wasm. A
// browser may offer only a software adapter (headless Chromium: SwiftShader, 16 s per CNN step,
// and wrong outputs for some grouped Convs), so a fallback adapter counts as no WebGPU unless
// allowSoftwareAdapter is set. On WebGPU the backend carries webgpu-faults.ts, and the gradient
// rules avoid the ops it names.
import * as ortWeb from 'onnxruntime-web';
import { useRuntime, createSession, type OrtModule, type RuntimeBackend } from './runtime.ts';
import { ModelBuilder } from './model-builder.ts';
import { WEBGPU_FAULTS } from './webgpu-faults.ts';

export type WebDevice = 'wasm' | 'webgpu';

export interface WebRuntimeOptions {
  /** Where sessions run. Default 'wasm'. */
  device?: WebDevice;
  /** When WebGPU was asked for and the browser has none: run on wasm with a warning (default), or throw. */
  fallback?: 'wasm' | 'error';
  /** Accept a software WebGPU adapter (SwiftShader). Default false: see the note at the top of this file. */
  allowSoftwareAdapter?: boolean;
  /**
   * Where onnxruntime-web's wasm files are (a folder URL ending in '/', or {mjs, wasm} URLs).
   * Default: next to the bundle that holds onnxruntime-web (`npm run build:web` copies them there).
   */
  wasmPaths?: ortWeb.Env.WasmPrefixOrFilePaths;
  /** wasm threads (one pool per page; needs cross-origin isolation). Default: onnxruntime-web's (min(4, cores/2)). */
  threads?: number;
  /** Receives the fallback and thread warnings. Default console.warn. */
  onWarning?: (message: string) => void;
  /**
   * Start onnxruntime-web now (fetch, compile and instantiate its wasm, start its threads) instead
   * of inside the first model's session. Call it at page load, while the model downloads: the
   * first session then costs what later ones cost. Default false.
   */
  start?: boolean;
}

export interface WebRuntimeInfo {
  device: WebDevice;
  /** wasm threads the page gets (1 when not cross-origin isolated). */
  threads: number;
  crossOriginIsolated: boolean;
  /** The WebGPU adapter's vendor/architecture, when WebGPU runs. */
  adapter?: string;
  /** Why the device or threads differ from what was asked, if they do. */
  warnings: string[];
  /** With `start`: ms to start onnxruntime-web (once per page). */
  startMs?: number;
}

/** A session of a one-node graph, created and released: onnxruntime-web starts its wasm for it. */
async function startRuntime(): Promise<number> {
  const t = performance.now();
  const b = new ModelBuilder({ opset: 13 });
  b.input('x', 'float32', [1]);
  b.node('Identity', ['x'], ['y']);
  b.output('y');
  const session = await createSession(b.build());
  await session.release();
  return performance.now() - t;
}

const ort = ortWeb as unknown as OrtModule;

// Set by the bundler (scripts/build-web.ts): whether this bundle holds onnxruntime-web's WebGPU
// build. Unbundled (Node, other bundlers) it is not defined, and 'onnxruntime-web' decides.
declare const REFIT_WEB_WEBGPU: boolean | undefined;
const bundledWithoutWebGpu = typeof REFIT_WEB_WEBGPU !== 'undefined' && !REFIT_WEB_WEBGPU;

function backendFor(device: WebDevice): RuntimeBackend {
  return {
    name: `onnxruntime-web (${device})`,
    ort,
    executionProviders: device === 'webgpu' ? ['webgpu'] : ['wasm'],
    threadsPerSession: false,
    ...(device === 'webgpu' ? { faults: WEBGPU_FAULTS } : {}),
  };
}

useRuntime(backendFor('wasm'));

interface GpuAdapterLike {
  info?: { vendor?: string; architecture?: string; description?: string; isFallbackAdapter?: boolean };
  isFallbackAdapter?: boolean;
}
interface NavigatorGpu { gpu?: { requestAdapter(o?: Record<string, unknown>): Promise<GpuAdapterLike | null> } }

/** Why WebGPU cannot be used here, or the adapter's description when it can. */
async function probeWebGpu(allowSoftware: boolean): Promise<{ ok: true; adapter: string } | { ok: false; why: string }> {
  const gpu = (globalThis.navigator as NavigatorGpu | undefined)?.gpu;
  if (!gpu) return { ok: false, why: 'this browser has no navigator.gpu (WebGPU is off or unsupported)' };
  let adapter: GpuAdapterLike | null;
  try {
    adapter = await gpu.requestAdapter();
  } catch (e) {
    return { ok: false, why: `navigator.gpu.requestAdapter() failed: ${(e as Error).message}` };
  }
  if (!adapter) return { ok: false, why: 'navigator.gpu.requestAdapter() returned no adapter' };
  const info = adapter.info ?? {};
  const desc = [info.vendor, info.architecture, info.description].filter(Boolean).join(' ') || 'unknown adapter';
  const software = info.isFallbackAdapter ?? adapter.isFallbackAdapter ?? /swiftshader/i.test(desc);
  if (software && !allowSoftware) {
    return { ok: false, why: `the only WebGPU adapter is a software one (${desc}): far slower than wasm and wrong on some grouped convolutions; pass allowSoftwareAdapter: true to use it anyway` };
  }
  return { ok: true, adapter: desc };
}

/**
 * Choose where refit's sessions run in this page. Call before the first model is used: wasm
 * paths and threads are fixed once onnxruntime-web has started.
 */
export async function useWebRuntime(opts: WebRuntimeOptions = {}): Promise<WebRuntimeInfo> {
  const warn = opts.onWarning ?? ((m: string) => console.warn(`refit: ${m}`));
  const warnings: string[] = [];
  const note = (m: string) => { warnings.push(m); warn(m); };
  const device = opts.device ?? 'wasm';
  if (device !== 'wasm' && device !== 'webgpu') throw new Error(`useWebRuntime: device must be 'wasm' or 'webgpu', got ${JSON.stringify(device)}`);
  if (opts.threads !== undefined && !(Number.isInteger(opts.threads) && opts.threads >= 1)) throw new Error(`useWebRuntime: threads must be a positive integer, got ${opts.threads}`);
  const env = ortWeb.env;
  if (opts.wasmPaths !== undefined) env.wasm.wasmPaths = opts.wasmPaths;
  const isolated = (globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated === true;
  if (opts.threads !== undefined) env.wasm.numThreads = opts.threads;
  // onnxruntime-web's own default when unset (its initializeFlags).
  const cores = (globalThis.navigator as { hardwareConcurrency?: number } | undefined)?.hardwareConcurrency || 1;
  let threads = env.wasm.numThreads || (isolated ? Math.min(4, Math.ceil(cores / 2)) : 1);
  if (threads > 1 && !isolated) {
    note(`${threads} wasm threads need a cross-origin isolated page (Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp); running 1 thread`);
    env.wasm.numThreads = threads = 1;
  }
  let chosen: WebDevice = device;
  let adapter: string | undefined;
  if (device === 'webgpu') {
    const p = bundledWithoutWebGpu
      ? { ok: false as const, why: 'this bundle of refit/web holds onnxruntime-web without WebGPU (refit-web.js); load refit-web-webgpu.js (refit/web/webgpu) for it' }
      : await probeWebGpu(opts.allowSoftwareAdapter === true);
    if (p.ok) adapter = p.adapter;
    else if (opts.fallback === 'error') throw new Error(`WebGPU was asked for but cannot be used: ${p.why}`);
    else {
      note(`WebGPU was asked for but cannot be used: ${p.why}; running on wasm`);
      chosen = 'wasm';
    }
  }
  useRuntime(backendFor(chosen));
  const startMs = opts.start ? await startRuntime() : undefined;
  return { device: chosen, threads, crossOriginIsolated: isolated, ...(adapter ? { adapter } : {}), warnings, ...(startMs !== undefined ? { startMs } : {}) };
}

export { ortWeb };
