// Shared helpers for the src/nn tests: build a one-layer net, run it in onnxruntime.
import assert from 'node:assert/strict';
import { NetBuilder, type Dim, type Value } from '../../src/nn/index.ts';
import { RefitModel } from '../../src/model.ts';
import { type Tensor, f32 } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';

export function randn(dims: number[], seed: number): Tensor {
  const n = dims.reduce((a, b) => a * b, 1);
  return f32(dims, new Rng(seed).fill(new Float32Array(n)));
}

/** Concrete dims of a declared shape at batch size `n` (the symbolic 'N'). */
export const atBatch = (shape: readonly Dim[], n: number) => shape.map((d) => (d === 'N' ? n : d));

/**
 * Build `x → layer(x)` with input shape `inShape`, run it at batch sizes 1 and 5, check the
 * onnxruntime output shape against `expected` and the builder's declared shape, and return
 * the model and the batch-5 output.
 */
export async function checkLayer(inShape: Dim[], layer: (net: NetBuilder, x: Value) => Value, expected: Dim[], opts: { opset?: number } = {}) {
  const net = new NetBuilder({ name: 'layer', seed: 0, opset: opts.opset });
  const x = net.input('x', inShape);
  const y = layer(net, x);
  assert.deepEqual(y.shape, expected, 'declared shape');
  net.output(y, 'y');
  const model = new RefitModel(net.build());
  let out: Tensor | undefined, input: Tensor | undefined;
  for (const n of [1, 5]) {
    input = randn(atBatch(inShape, n) as number[], 7);
    out = (await model.run({ x: input })).y!;
    assert.deepEqual(out.dims, atBatch(expected, n), `output shape at batch ${n}`);
    for (const v of out.data as Float32Array) assert.ok(Number.isFinite(v), 'finite output');
  }
  return { model, x: input!, y: out! };
}
