// Light training augmentation for 1×H×W images: random shift (pad-and-crop) and horizontal flip.
import { Rng } from '../util/rng.ts';

/** Writes augmented copies of `n` images from `src` (at `indices`) into `out`. */
export function augmentBatch(src: Float32Array, indices: ArrayLike<number>, h: number, w: number, out: Float32Array, rng: Rng, maxShift = 2, flip = true): void {
  const hw = h * w;
  for (let b = 0; b < indices.length; b++) {
    const base = indices[b]! * hw, o = b * hw;
    const dy = rng.int(2 * maxShift + 1) - maxShift, dx = rng.int(2 * maxShift + 1) - maxShift;
    const mirror = flip && rng.uniform() < 0.5;
    for (let y = 0; y < h; y++) {
      const sy = y + dy;
      for (let x = 0; x < w; x++) {
        const sx0 = x + dx;
        const sx = mirror ? w - 1 - sx0 : sx0;
        out[o + y * w + x] = sy >= 0 && sy < h && sx >= 0 && sx < w ? src[base + sy * w + sx]! : 0;
      }
    }
  }
}
