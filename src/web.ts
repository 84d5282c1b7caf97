// refit's browser entry (`refit/web`): the core, PEFT, TTA, drift and continual parts on
// onnxruntime-web. Nothing reachable from here imports a Node module (test/web/import-graph.test.ts);
// model, adapter and data I/O take bytes, Blobs, Responses or URLs (./web/io.ts), adapters persist
// in IndexedDB (./web/adapter-store.ts). The bundle (npm run build:web) maps the two modules that
// read files in Node to stand-ins that say what to do instead (src/web/node-only/).
import './onnx/runtime-web.ts'; // registers onnxruntime-web (wasm) as the runtime

export { useWebRuntime, type WebRuntimeOptions, type WebRuntimeInfo, type WebDevice } from './onnx/runtime-web.ts';
export { useRuntime, type RuntimeBackend, type SessionOptions } from './onnx/runtime.ts';
export { loadModel, RefitModel, type CompileOptions } from './model.ts';
export { TrainStep, type StepResult } from './train/train-step.ts';
export { Trainer, type TrainerOptions, type TrainerStepResult } from './train/trainer.ts';
export * as losses from './train/losses.ts';
export * as optim from './train/optim/index.ts';
export type { LossSpec } from './train/loss-spec.ts';
export type { ParamSelector } from './train/params.ts';
export { type Tensor, type DType, tensor, f32, i64 } from './onnx/tensor.ts';
export type { Model, Graph, Node, ValueInfo } from './onnx/ir.ts';
export { ModelBuilder } from './onnx/model-builder.ts';
export { decodeModel, encodeModel } from './onnx/proto.ts';
export { supportedOps } from './autodiff/rule.ts';
export { parseSafetensors, serializeSafetensors } from './io/safetensors.ts';
export { Rng } from './util/rng.ts';
export * as peft from './peft/index.ts';
export * as tta from './tta/index.ts';
export * as nn from './nn/index.ts';
export * as data from './web/data.ts';
export * as drift from './drift/index.ts';
export * as continual from './continual/index.ts';
export { fetchBytes, bytesOf, loadModelFrom, gunzip, downloadBytes, type ByteSource, type FetchOptions } from './web/io.ts';
export { saveAdapterToIndexedDB, readAdapterFromIndexedDB, loadAdapterFromIndexedDB, listAdaptersInIndexedDB, deleteAdapterFromIndexedDB, downloadAdapter } from './web/adapter-store.ts';
