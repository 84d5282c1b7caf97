// Seeded parameter initialisation. Each parameter draws from its own stream, seeded by the
// net's seed and the parameter's name: the same seed gives the same weights, and adding a
// layer does not change the weights of the others.
import { Rng } from '../util/rng.ts';

/**
 * How a weight is drawn. Fans follow PyTorch's `_calculate_fan_in_and_fan_out`:
 * fan_in = in/groups · kh · kw, fan_out = out · kh · kw (1 × 1 for linears).
 *
 * - `kaiming_normal` / `kaiming_uniform`: He et al. 2015 for layers followed by ReLU,
 *   gain √2, fan_in mode: std = √2/√fan_in, or U(±√6/√fan_in).
 *   @see https://arxiv.org/abs/1502.01852 (eq. 10)
 * - `xavier_uniform` / `xavier_normal`: Glorot & Bengio 2010, U(±√(6/(fan_in+fan_out))) or
 *   std √(2/(fan_in+fan_out)); the default for linears and attention projections, as in the
 *   original ViT (Dosovitskiy et al. 2021, JAX `nn.initializers.xavier_uniform`).
 * - `trunc_normal`: N(0, 0.02²) resampled outside ±2σ, as ViT/BERT use for embeddings.
 * - `zeros`, `ones`: biases, norm shift and scale.
 */
export type InitKind = 'kaiming_normal' | 'kaiming_uniform' | 'xavier_uniform' | 'xavier_normal' | 'trunc_normal' | 'zeros' | 'ones';

export interface Fans { fanIn: number; fanOut: number }

/** Standard deviation of `trunc_normal` before truncation. */
export const TRUNC_NORMAL_STD = 0.02;

/** FNV-1a over the name, mixed with the seed: an independent stream per parameter. */
export function paramSeed(seed: number, name: string): number {
  let h = 0x811c9dc5 ^ (seed >>> 0);
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return Math.imul(h ^ (h >>> 16), 0x45d9f3b) >>> 0;
}

export function initTensor(kind: InitKind, n: number, fans: Fans, seed: number, name: string): Float32Array {
  const a = new Float32Array(n);
  if (kind === 'zeros') return a;
  if (kind === 'ones') return a.fill(1);
  const rng = new Rng(paramSeed(seed, name));
  const { fanIn, fanOut } = fans;
  switch (kind) {
    case 'kaiming_normal': return rng.fill(a, Math.sqrt(2 / fanIn), 'normal');
    case 'kaiming_uniform': return rng.fill(a, Math.sqrt(6 / fanIn), 'uniform');
    case 'xavier_uniform': return rng.fill(a, Math.sqrt(6 / (fanIn + fanOut)), 'uniform');
    case 'xavier_normal': return rng.fill(a, Math.sqrt(2 / (fanIn + fanOut)), 'normal');
    case 'trunc_normal':
      for (let i = 0; i < n; i++) {
        let v = rng.normal();
        while (Math.abs(v) > 2) v = rng.normal();
        a[i] = v * TRUNC_NORMAL_STD;
      }
      return a;
  }
}
