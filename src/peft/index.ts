// Parameter-efficient fine-tuning as ONNX graph rewrites. One folder or file per method.
export { PeftModel, withAdapter, gateName, type AdapterInfo } from './peft-model.ts';
export { lora, type LoraConfig } from './lora/index.ts';
export { PeftError } from './errors.ts';
export { findSites, type Site, type SiteOp, type TargetSelector, type TargetOptions } from './sites.ts';
export type { AdapterMethod, AdapterPlan } from './types.ts';
