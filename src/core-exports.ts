// The API both entries share (src/index.ts for Node, src/web.ts for the browser): everything
// here is browser-safe. Each entry adds its runtime, its I/O and its own `data` namespace.
export { loadModel, RefitModel, type CompileOptions } from './model.ts';
export { TrainStep, type StepResult } from './train/train-step.ts';
export { Trainer, type TrainerOptions, type TrainerStepResult } from './train/trainer.ts';
export { accountStep, accountTrainStep, livenessPeak, formatBytes, OPTIMIZER_SLOTS, type StepMemory, type SavedTensor, type OptimizerKind, type LivenessPeak } from './train/memory-accounting.ts';
export { BudgetedTrainStep, MemoryBudgetError, BUDGET_RUNGS, type MemoryBudget, type BudgetRung, type BudgetChoice, type BudgetCandidate, type BudgetCompileOptions } from './train/memory-budget.ts';
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
export * as drift from './drift/index.ts';
export * as continual from './continual/index.ts';
export * as fleet from './fleet/device-side.ts';
export { useRuntime, type RuntimeBackend, type SessionOptions } from './onnx/runtime.ts';
export { withTokenInputs, type TokenInputsOptions } from './onnx/token-companions.ts';
export { withoutKvCache, kvCacheOf, writeWeightsBack, type KvCache } from './onnx/kv-cache.ts';
export { joinModels, splitWeights, type JoinOptions, type JoinResult } from './onnx/join.ts';
export { inlineConstantIfs } from './onnx/inline-if.ts';
