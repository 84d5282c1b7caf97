// The bridge to onnxruntime: sessions and tensor conversion, behind a pluggable backend so the
// rest of refit does not know whether onnxruntime-node or onnxruntime-web runs its graphs.
// Both packages re-export onnxruntime-common (same version), so its types describe either; only
// the classes (InferenceSession, Tensor) come from the registered package, which owns them.
//
// This file imports no onnxruntime package itself: the web bundle must never reach
// onnxruntime-node. runtime-node.ts and runtime-web.ts register one (src/index.ts and src/web.ts
// import them). Code that imports a module directly (the CLI, tests, benchmarks) and never went
// through an entry still works in Node: the first use loads onnxruntime-node with require() taken
// from process.getBuiltinModule — no import statement, so bundlers do not follow it.
import type * as Ort from 'onnxruntime-common';
import type { Tensor, DType, TypedArray } from './tensor.ts';
import type { Model } from './ir.ts';
import { encodeModel, encodeModelExternal } from './proto.ts';
import './ort-telemetry.ts'; // sets ORT_DISABLE_TELEMETRY before onnxruntime-node loads (lazily, below)

export interface SessionOptions {
  /**
   * Intra-op threads; default: onnxruntime's choice (all cores). onnxruntime-web has one thread
   * pool per page (env.wasm.numThreads, see runtime-web.ts), so there it is ignored.
   */
  threads?: number;
  /** Graph optimization level; 'all' enables the blocked NCHWc conv kernels (see DESIGN.md). */
  optimization?: 'disabled' | 'basic' | 'extended' | 'all';
  /** Let idle worker threads spin-wait (onnxruntime's default). Default false: see createSession. */
  spinning?: boolean;
  /**
   * onnxruntime's CPU memory arena (default on). Off, each session frees what it does not hold:
   * a service with a Tent session per tenant measured about 31 MB per tenant with the arena and
   * 6.5 MB without, at a small cost per request (docs/serve.md).
   */
  memoryArena?: boolean;
  /**
   * onnxruntime's memory pattern (enableMemPattern; onnxruntime's default is on, refit's is off):
   * from the second run on it allocates one block laid out after the first run's allocations, on top
   * of what the arena already holds from that run. Off, peak RSS of cnn28's Tent step went
   * 325 → 237 MB and of its full step 513 → 338 MB, at no measured speed cost (off/on 0.72–1.00,
   * bench/results/step-memory.md). One-shot sessions (shape probes) run once, where it does nothing.
   * @default false
   */
  memoryPattern?: boolean;
  /**
   * How onnxruntime computes a DequantizeLinear(int8/int4 weight) → MatMul it fuses into MatMulNBits
   * at level 'all' (session.qdq_matmulnbits_accuracy_level: 1 float32, 2 float16, 3 bfloat16, 4 int8).
   * onnxruntime's default, 4, quantizes the activations too, which the model's graph never asked for:
   * on a small QDQ transformer it moved the logits by 1.4e-3, and a training step (whose forward
   * dequantizes the same weights, and is not fused: that DequantizeLinear has two consumers) would then
   * not match the inference. refit’s default, 1, keeps
   * the fused kernel exact (test/peft/quantized.test.ts checks 'all' against 'disabled'); 4 is faster.
   * @default 1
   */
  qdqMatMulAccuracy?: 0 | 1 | 2 | 3 | 4;
  /**
   * Keep onnxruntime's own error log quiet (logSeverityLevel 4, fatal only): for runs whose failure
   * refit expects and reports itself, such as an opset upgrade's verification trying smaller
   * synthetic inputs first. The error still reaches the caller.
   * @default false
   */
  quiet?: boolean;
  /**
   * Whether onnxruntime pre-packs constant matrix weights (its default; session.disable_prepacking
   * when false). A pre-packed MatMul or Gemm weight is a second copy of it in the kernel's layout, and
   * a frozen weight that both the forward and the input gradient read is packed twice: on a
   * 135M-parameter decoder's LoRA step that was 0.7 GB (docs/speed.md, session 19). Unpacked, the
   * kernel packs panels per call, which costs little when the product has many rows (a training
   * batch) and more at one row (a single-token inference), so inference keeps it.
   * @default true
   */
  prepack?: boolean;
  /**
   * Training steps on onnxruntime-node's CPU provider (optimization 'all'): run convolutions whose
   * weights are fed (trainable) on onnxruntime's blocked NCHWc kernels, which it uses by itself
   * only for constant weights (src/onnx/nchwc.ts). Same numbers (tested); ignored elsewhere.
   * @default true
   */
  blockedConvs?: boolean;
}

/** The two classes refit takes from an onnxruntime package (either one's module namespace fits). */
export interface OrtModule {
  InferenceSession: typeof Ort.InferenceSession;
  Tensor: typeof Ort.Tensor;
  env: typeof Ort.env;
}

/** One onnxruntime package as refit uses it. */
export interface RuntimeBackend {
  /** Shown in messages: 'onnxruntime-node', 'onnxruntime-web (wasm)', … */
  name: string;
  ort: OrtModule;
  /** Execution providers for every session, in preference order. */
  executionProviders: Ort.InferenceSession.ExecutionProviderConfig[];
  /** Whether SessionOptions.threads applies per session (Node) or not at all (web: one pool per page). */
  threadsPerSession: boolean;
  /**
   * Whether createSession hands a Model's large initializers over as in-memory external data
   * (SessionOptions.externalData) instead of encoding them into the model bytes.
   */
  externalData?: boolean;
  /**
   * Standard-op shapes this backend computes wrongly or fails to run, which the gradient rules avoid
   * by emitting another form with the same numbers (read when a step graph is built; BackendFaults).
   * Absent: none known (onnxruntime-node, onnxruntime-web on wasm).
   */
  faults?: BackendFaults;
}

/** What a backend gets wrong, as the gradient rules ask it. */
export interface BackendFaults {
  /** Whether a Conv with `group` groups and `outputsPerGroup` output channels per group gives wrong outputs. */
  groupedConv?(group: number, outputsPerGroup: number): boolean;
  /** Whether BatchNormalization with training_mode=1 fails to run (the batch statistics are then decomposed). */
  batchNormTrainingMode?: boolean;
  /** Whether MaxPool's optional Indices output fails to run (its gradient then recomputes the argmax). */
  maxPoolIndices?: boolean;
  /** The most inputs one Concat may take (forms that concatenate more are not emitted). */
  maxConcatInputs?: number;
  /** Whether ConvTranspose is wrong when a dim's begin and end pads differ. */
  convTransposeUnequalPads?: boolean;
}

/** The registered backend's faults; none before one is registered (Node's fallback has none). */
export const runtimeFaults = (): BackendFaults => current?.faults ?? {};

let current: RuntimeBackend | undefined;

/** Make `backend` run every session created from now on (sessions already made keep theirs). */
export function useRuntime(backend: RuntimeBackend): void {
  current = backend;
}

/** The backend in use; in Node, onnxruntime-node when none was registered. */
export function runtime(): RuntimeBackend {
  if (current) return current;
  const node = loadNodeFallback();
  if (node) return (current = node);
  throw new Error(
    "no onnxruntime backend is registered: in a browser import refit from 'refit/web' (it registers onnxruntime-web), " +
      'or call useRuntime(...) with your own onnxruntime package first',
  );
}

/** The backend for onnxruntime-node's (or any onnxruntime-common-shaped) module. */
export function nodeBackend(ort: OrtModule): RuntimeBackend {
  return { name: 'onnxruntime-node', ort, executionProviders: ['cpu'], threadsPerSession: true, externalData: true };
}

function loadNodeFallback(): RuntimeBackend | undefined {
  const proc = (globalThis as { process?: { versions?: { node?: string }; getBuiltinModule?: (id: string) => unknown } }).process;
  if (!proc?.versions?.node) return undefined;
  if (typeof proc.getBuiltinModule !== 'function') {
    throw new Error(`Node ${proc.versions.node} has no process.getBuiltinModule (Node ≥ 20.16): import 'refit' (or src/onnx/runtime-node.ts) once to register onnxruntime-node`);
  }
  const { createRequire } = proc.getBuiltinModule('node:module') as { createRequire: (from: string) => (id: string) => unknown };
  return nodeBackend(createRequire(import.meta.url)('onnxruntime-node') as OrtModule);
}

/**
 * A session for model bytes, or for a Model: then, where the backend takes external data, its large
 * initializers go to onnxruntime as views of their own memory (proto.ts encodeModelExternal) rather
 * than copied into the bytes. Same graph, same numbers; the JS side never holds a second copy of the
 * weights (ResNet-18's Tent step: 64 MB less at its peak, docs/speed.md, session 6).
 */
export async function createSession(model: Uint8Array | Model, opts: SessionOptions = {}): Promise<Ort.InferenceSession> {
  const backend = runtime();
  let bytes: Uint8Array;
  let externalData: Ort.InferenceSession.SessionOptions['externalData'];
  if (model instanceof Uint8Array) bytes = model;
  else if (backend.externalData) ({ bytes, files: externalData } = encodeModelExternal(model));
  else bytes = encodeModel(model);
  const o: Ort.InferenceSession.SessionOptions = {
    graphOptimizationLevel: opts.optimization ?? 'all',
    executionProviders: backend.executionProviders,
  };
  if (opts.memoryArena === false) o.enableCpuMemArena = false;
  if (opts.quiet) o.logSeverityLevel = 4;
  if (opts.memoryPattern !== true) o.enableMemPattern = false;
  if (opts.threads && backend.threadsPerSession) {
    o.intraOpNumThreads = opts.threads;
    o.interOpNumThreads = 1;
  }
  // onnxruntime's worker threads spin after each parallel section by default. refit alternates
  // several sessions (inference, training steps, teachers), and a session's spinning threads
  // then steal the cores from the next one: on 2 cores a Tent step on the CNN took 79 ms with
  // spinning and 43 ms without (bench/tta.ts cost table). A lone session loses a little
  // (ViT inference 5.0 → 6.2 ms), so `spinning: true` brings it back.
  const session: Record<string, unknown> = { qdq_matmulnbits_accuracy_level: String(opts.qdqMatMulAccuracy ?? 1) };
  if (!opts.spinning) Object.assign(session, { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } });
  if (opts.prepack === false) session.disable_prepacking = '1';
  o.extra = { session };
  if (externalData?.length) o.externalData = externalData;
  try {
    return await backend.ort.InferenceSession.create(bytes, o);
  } catch (e) {
    throw new Error(`${backend.name} rejected the graph: ${(e as Error).message}`);
  }
}

const ORT_TYPE: Partial<Record<DType, Ort.Tensor.Type>> = {
  float32: 'float32', float64: 'float64', float16: 'float16', int8: 'int8', uint8: 'uint8', int16: 'int16',
  uint16: 'uint16', int32: 'int32', uint32: 'uint32', int64: 'int64', uint64: 'uint64', bool: 'bool',
};

export function toOrt(t: Tensor): Ort.Tensor {
  const type = ORT_TYPE[t.dtype];
  if (!type) throw new Error(`dtype ${t.dtype} cannot be passed to onnxruntime`);
  return new (runtime().ort.Tensor)(type, t.data as never, t.dims);
}

export function fromOrt(t: Ort.Tensor): Tensor {
  const dtype = (t.type === 'bool' ? 'bool' : t.type) as DType;
  return { dtype, dims: [...t.dims], data: t.data as TypedArray };
}

/**
 * The registered package's classes, for code that needs them directly (`ort.InferenceSession.create`),
 * and its types (`ort.Tensor`, `ort.InferenceSession`). Resolved on each access, so importing this
 * does not pick a backend.
 */
export const ort: OrtModule = new Proxy({} as OrtModule, { get: (_t, key) => runtime().ort[key as keyof OrtModule] });
// eslint-disable-next-line @typescript-eslint/no-namespace
export declare namespace ort {
  type InferenceSession = Ort.InferenceSession;
  namespace InferenceSession {
    type SessionOptions = Ort.InferenceSession.SessionOptions;
    type RunOptions = Ort.InferenceSession.RunOptions;
    type FeedsType = Ort.InferenceSession.FeedsType;
    type ReturnType = Ort.InferenceSession.ReturnType;
    type ExecutionProviderConfig = Ort.InferenceSession.ExecutionProviderConfig;
  }
  type Tensor = Ort.Tensor;
  namespace Tensor {
    type Type = Ort.Tensor.Type;
    type DataType = Ort.Tensor.DataType;
  }
  type Env = Ort.Env;
}
