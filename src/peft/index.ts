// Parameter-efficient fine-tuning as ONNX graph rewrites: one folder per method, each a config
// plus a plan (targets, tensors), a rewrite and, where possible, a fold into the base weights.
export { PeftModel, withAdapter, gateName, type AdapterInfo } from './peft-model.ts';
export { lora, type LoraConfig } from './lora/index.ts';
export { dora, type DoraConfig } from './dora/index.ts';
export { vera, type VeraConfig } from './vera/index.ts';
export { ia3, type Ia3Config } from './ia3/index.ts';
export { bitfit, normAffine, type SelectionConfig } from './selection/index.ts';
export { head, type HeadConfig } from './head/index.ts';
export { bottleneck, type BottleneckConfig } from './bottleneck/index.ts';
export { combineAdapters, type CombineOptions } from './combine.ts';
export { accounting, type Accounting } from './accounting.ts';
export { adapterFiles, withAdapterFiles, type AdapterFiles, WEIGHTS_FILE, CONFIG_FILE } from './files.ts';
export { PeftError } from './errors.ts';
export { findSites, type Site, type SiteOp, type TargetSelector, type TargetOptions } from './sites.ts';
export { svd, lowRank } from './linalg.ts';
export type { AdapterMethod, AdapterPlan } from './types.ts';
export { quantizeDynamic, type QuantizeDynamicOptions } from './quantize-dynamic.ts';
export { quantizeNBits, packNBits, type QuantizeNBitsOptions } from './quantize-nbits.ts';
export { upcastFloat16, downcastFloat16, float16Copy } from '../autodiff/lower/float16.ts';
