// The bridge to onnxruntime-node: sessions and tensor conversion.
import * as ort from 'onnxruntime-node';
import type { Tensor, DType, TypedArray } from './tensor.ts';

export interface SessionOptions {
  /** Intra-op threads; default: onnxruntime's choice (all cores). */
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
}

export async function createSession(bytes: Uint8Array, opts: SessionOptions = {}): Promise<ort.InferenceSession> {
  const o: ort.InferenceSession.SessionOptions = {
    graphOptimizationLevel: opts.optimization ?? 'all',
    executionProviders: ['cpu'],
  };
  if (opts.memoryArena === false) o.enableCpuMemArena = false;
  if (opts.threads) {
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
  o.extra = { session };
  try {
    return await ort.InferenceSession.create(bytes, o);
  } catch (e) {
    throw new Error(`onnxruntime rejected the graph: ${(e as Error).message}`);
  }
}

const ORT_TYPE: Partial<Record<DType, ort.Tensor.Type>> = {
  float32: 'float32', float64: 'float64', float16: 'float16', int8: 'int8', uint8: 'uint8', int16: 'int16',
  uint16: 'uint16', int32: 'int32', uint32: 'uint32', int64: 'int64', uint64: 'uint64', bool: 'bool',
};

export function toOrt(t: Tensor): ort.Tensor {
  const type = ORT_TYPE[t.dtype];
  if (!type) throw new Error(`dtype ${t.dtype} cannot be passed to onnxruntime`);
  return new ort.Tensor(type, t.data as never, t.dims);
}

export function fromOrt(t: ort.Tensor): Tensor {
  const dtype = (t.type === 'bool' ? 'bool' : t.type) as DType;
  return { dtype, dims: [...t.dims], data: t.data as TypedArray };
}

export { ort };
