// refit's public API (Node). The browser entry is src/web.ts.
import './onnx/runtime-node.ts'; // onnxruntime-node runs the sessions
export { loadModel, RefitModel, type CompileOptions } from './model.ts';
export { upgradeOpset, OpsetUpgradeError, type UpgradeOptions, type UpgradeReport, type UpgradeResult } from './onnx/opset-upgrade.ts';
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
export { gradCheck } from './autodiff/gradcheck.ts';
export { supportedOps } from './autodiff/rule.ts';
export { diagnoseTraining, type Diagnosis, type DiagnoseOptions, type ParamGroup } from './autodiff/diagnose.ts';
export { parseSafetensors, serializeSafetensors } from './io/safetensors.ts';
export { Rng } from './util/rng.ts';
export * as peft from './peft/index.ts';
export { saveAdapter, loadAdapter } from './peft/files-node.ts';
export * as tta from './tta/index.ts';
export * as nn from './nn/index.ts';
export * as data from './data/index.ts';
export * as drift from './drift/index.ts';
export * as continual from './continual/index.ts';
export { useRuntime, type RuntimeBackend, type SessionOptions } from './onnx/runtime.ts';
export { saveCheckpoint, loadCheckpoint } from './continual/checkpoint-node.ts';
