// Seeded initializers for hand-built test models.
import type { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import type { Rng } from '../../src/util/rng.ts';

/** `init(name, dims, scale, offset)` adds an initializer of `rng`'s values within ±scale around offset (BN scales and variances near 1). */
export function randomInitializers(b: ModelBuilder, rng: Rng): (name: string, dims: number[], scale: number, offset?: number) => void {
  return (name, dims, scale, offset = 0) => {
    const d = rng.fill(new Float32Array(dims.reduce((p, q) => p * q, 1)), scale);
    for (let i = 0; i < d.length; i++) d[i]! += offset;
    b.initializer(name, f32(dims, d));
  };
}
