// refit's public API (Node). The browser entry is src/web.ts.
import './onnx/runtime-node.ts'; // onnxruntime-node runs the sessions
export * from './core-exports.ts';
export { upgradeOpset, OpsetUpgradeError, type UpgradeOptions, type UpgradeReport, type UpgradeResult } from './onnx/opset-upgrade.ts';
export { gradCheck } from './autodiff/gradcheck.ts';
export { diagnoseTraining, type Diagnosis, type DiagnoseOptions, type ParamGroup } from './autodiff/diagnose.ts';
export { saveAdapter, loadAdapter } from './peft/files-node.ts';
export * as data from './data/index.ts';
export { saveCheckpoint, loadCheckpoint } from './continual/checkpoint-node.ts';
