/**
 * Optimizers and lr schedules over Float32Arrays keyed by parameter name.
 *
 *     import * as optim from './train/optim/index.ts';
 *     const opt = optim.adamw({
 *       lr: 1e-3, weightDecay: 1e-4,
 *       groups: [{ params: /bias|norm/, weightDecay: 0 }, { params: ['head.weight'], lr: 1e-2 }],
 *       schedule: optim.warmupCosine({ warmupSteps: 100, totalSteps: 1000, minLrRatio: 0.1 }),
 *     });
 *     optim.clipGradNorm(grads, 1.0);
 *     opt.step(params, grads);
 */
import { Adam, AdamW, type AdamOptions } from './adam.ts';
import { SGD, type SGDOptions } from './sgd.ts';

export type {
  CommonOptions,
  Optimizer,
  OptimizerState,
  OptimizerStepOptions,
  ParamGroup,
  ParamMatcher,
  Schedule,
  TensorMap,
} from './types.ts';
export { BaseOptimizer, type ParamSlots } from './base.ts';
export { SGD, type SGDHyper, type SGDOptions } from './sgd.ts';
export { Adam, AdamW, type AdamHyper, type AdamOptions } from './adam.ts';
export { clipGradNorm, type ClipGradNormOptions } from './clip.ts';
export { constant, warmupCosine, stepDecay, type WarmupCosineOptions, type StepDecayOptions } from './schedules.ts';
export { encodeOptimizerState, decodeOptimizerState } from './serialize.ts';
export { firstNonFinite } from './tensors.ts';

/** torch.optim.SGD (momentum, dampening, Nesterov, coupled weight decay). Defaults: lr 1e-2, all else off. */
export function sgd(options: SGDOptions = {}): SGD {
  return new SGD(options);
}

/** torch.optim.Adam (coupled weight decay). Defaults: lr 1e-3, betas [0.9, 0.999], eps 1e-8, weightDecay 0. */
export function adam(options: AdamOptions = {}): Adam {
  return new Adam(options);
}

/** torch.optim.AdamW (decoupled weight decay). Defaults: lr 1e-3, betas [0.9, 0.999], eps 1e-8, weightDecay 1e-2. */
export function adamw(options: AdamOptions = {}): AdamW {
  return new AdamW(options);
}
