import { tensorEntries } from './tensors.ts';
import type { TensorMap } from './types.ts';

export interface ClipGradNormOptions {
  /** Throw if the total norm is NaN or ±Inf (torch's error_if_nonfinite). Default false. */
  errorIfNonfinite?: boolean;
}

/**
 * Clips gradients in place by their global L2 norm, as
 * torch.nn.utils.clip_grad_norm_(params, maxNorm): the norm is taken over all
 * tensors together; when it exceeds maxNorm every gradient is scaled by
 * maxNorm / (norm + 1e-6). Returns the norm before clipping.
 *
 * A non-finite norm leaves the gradients as they are (the optimizer's step
 * then refuses them), unless `errorIfNonfinite` asks for an error here.
 */
export function clipGradNorm(grads: TensorMap, maxNorm: number, options: ClipGradNormOptions = {}): number {
  if (!(Number.isFinite(maxNorm) && maxNorm >= 0)) {
    throw new Error(`clipGradNorm: maxNorm must be a finite number ≥ 0, got ${maxNorm}`);
  }
  let sq = 0;
  for (const [, g] of tensorEntries(grads)) {
    for (let i = 0; i < g.length; i++) sq += g[i]! * g[i]!;
  }
  const norm = Math.fround(Math.sqrt(sq));
  if (!Number.isFinite(norm)) {
    if (options.errorIfNonfinite) {
      throw new Error(`clipGradNorm: the total gradient norm is ${norm}; refusing to clip non-finite gradients`);
    }
    return norm;
  }
  const coef = maxNorm / (norm + 1e-6);
  if (coef < 1) {
    const c = Math.fround(coef);
    for (const [, g] of tensorEntries(grads)) {
      for (let i = 0; i < g.length; i++) g[i] = g[i]! * c;
    }
  }
  return norm;
}
