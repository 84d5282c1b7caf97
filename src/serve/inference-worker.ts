// Worker thread body of InferencePool (inference-pool.ts): one onnxruntime session per model key,
// one run at a time (messages are handled in order; each run awaits before the next message's).
import { parentPort, workerData } from 'node:worker_threads';
import '../onnx/runtime-node.ts';
import { createSession, toOrt, type SessionOptions } from '../onnx/runtime.ts';
import type { DType, TypedArray } from '../onnx/tensor.ts';
import type * as Ort from 'onnxruntime-common';

export interface WorkerRequest {
  id?: number;
  key?: string;
  /** The model's ONNX bytes, sent the first time this worker sees `key`. */
  model?: Uint8Array;
  /** A key to unload before loading `model`. */
  evict?: string;
  /** A key to unload (no run). */
  forget?: string;
  /** Finish the runs taken, release every session and exit. */
  close?: boolean;
  input?: string;
  output?: string;
  dtype?: DType;
  dims?: number[];
  data?: TypedArray;
}

export interface WorkerReply {
  id: number;
  data?: Float32Array;
  error?: string;
  /** Set when the model could not be loaded, so the pool sends its bytes again next time. */
  unloaded?: string;
}

const { session: options } = workerData as { session: SessionOptions };
const sessions = new Map<string, Promise<Ort.InferenceSession>>();

const unload = (key: string) => {
  const s = sessions.get(key);
  sessions.delete(key);
  s?.then((x) => x.release()).catch(() => undefined);
};

// Runs are chained so that one worker never runs two graphs at once (its thread count is its
// share of the cores).
let chain: Promise<void> = Promise.resolve();

parentPort!.on('message', (m: WorkerRequest) => {
  if (m.forget !== undefined) {
    unload(m.forget);
    return;
  }
  if (m.close) {
    // After the runs already taken; closing the port ends the thread once the sessions are released.
    chain = chain.then(async () => {
      await Promise.all([...sessions.values()].map((s) => s.then((x) => x.release()).catch(() => undefined)));
      sessions.clear();
      parentPort!.close();
    });
    return;
  }
  chain = chain.then(() => handle(m));
});

async function handle(m: WorkerRequest): Promise<void> {
  const id = m.id!, key = m.key!;
  if (m.evict !== undefined) unload(m.evict);
  if (m.model) sessions.set(key, createSession(m.model, options));
  const s = sessions.get(key);
  if (!s) {
    parentPort!.postMessage({ id, error: `inference worker: model ${key} is not loaded`, unloaded: key } satisfies WorkerReply);
    return;
  }
  try {
    const session = await s;
    const out = await session.run({ [m.input!]: toOrt({ dtype: m.dtype!, dims: m.dims!, data: m.data! }) }, [m.output!]);
    const y = out[m.output!]!;
    if (y.type !== 'float32') throw new Error(`output ${m.output} is ${y.type}, not float32`);
    // A copy we own (onnxruntime's output buffer may not be detachable), moved, not cloned.
    const data = (y.data as Float32Array).slice();
    parentPort!.postMessage({ id, data } satisfies WorkerReply, [data.buffer as ArrayBuffer]);
  } catch (e) {
    const failedLoad = await s.then(() => false, () => true);
    if (failedLoad) sessions.delete(key);
    parentPort!.postMessage({ id, error: (e as Error).message, ...(failedLoad ? { unloaded: key } : {}) } satisfies WorkerReply);
  }
}
