/** Noise corruptions: gaussian_noise, shot_noise, impulse_noise (make_cifar_c.py parameters). */
import { at, type CorruptionDef } from './types.ts';

const GAUSSIAN_SIGMA = [0.04, 0.06, 0.08, 0.09, 0.1] as const;
const SHOT_RATE = [500, 250, 100, 75, 50] as const;
const IMPULSE_AMOUNT = [0.01, 0.02, 0.03, 0.05, 0.07] as const;

export const gaussianNoise: CorruptionDef = {
  name: 'gaussian_noise',
  family: 'noise',
  random: true,
  params: [{ name: 'sigma', values: GAUSSIAN_SIGMA }],
  basis: 'CIFAR-10-C',
  apply(src, dst, { n, h, w, severity, rngFor }) {
    const sigma = at(GAUSSIAN_SIGMA, severity);
    const px = h * w;
    for (let i = 0; i < n; i++) {
      const rng = rngFor(i);
      for (let p = i * px; p < (i + 1) * px; p++) {
        const v = src[p]! + sigma * rng.normal();
        dst[p] = v > 0 ? (v < 1 ? v : 1) : 0;
      }
    }
  },
};

export const shotNoise: CorruptionDef = {
  name: 'shot_noise',
  family: 'noise',
  random: true,
  params: [{ name: 'photons at white (lambda)', values: SHOT_RATE }],
  basis: 'CIFAR-10-C',
  apply(src, dst, { n, h, w, severity, rngFor }) {
    const lam = at(SHOT_RATE, severity);
    const px = h * w;
    for (let i = 0; i < n; i++) {
      const rng = rngFor(i);
      for (let p = i * px; p < (i + 1) * px; p++) {
        const v = rng.poisson(src[p]! * lam) / lam;
        dst[p] = v < 1 ? v : 1;
      }
    }
  },
};

export const impulseNoise: CorruptionDef = {
  name: 'impulse_noise',
  family: 'noise',
  random: true,
  params: [{ name: 'salt-and-pepper amount', values: IMPULSE_AMOUNT }],
  basis: 'CIFAR-10-C',
  apply(src, dst, { n, h, w, severity, rngFor }) {
    const amount = at(IMPULSE_AMOUNT, severity);
    const px = h * w;
    for (let i = 0; i < n; i++) {
      const rng = rngFor(i);
      for (let p = i * px; p < (i + 1) * px; p++) {
        const u = rng.next();
        if (u < amount) dst[p] = u < amount / 2 ? 1 : 0;
        else dst[p] = src[p]!;
      }
    }
  },
};
