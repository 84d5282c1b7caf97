// Model authoring: build ONNX graphs PyTorch-module style. See ./net-builder.ts.
export { NetBuilder, NetError, type Dim, type Value, type NetOptions, type Conv2dOptions, type PoolOptions, type LinearOptions, type NormOptions, type BatchNormOptions } from './net-builder.ts';
export type { AttentionOptions } from './attention.ts';
export { type InitKind, TRUNC_NORMAL_STD } from './init.ts';
export { resnetCnn, vit, type ResnetCnnOptions, type VitOptions } from './models.ts';
export { countParameters, parameterTable } from './summary.ts';
