// Build one-op models with random float initializers and finite-difference check them.
import assert from 'node:assert/strict';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { gradCheck, type GradCheckOptions } from '../../src/autodiff/gradcheck.ts';
import { type Tensor, f32, tensor } from '../../src/onnx/tensor.ts';
import type { AttrInput } from '../../src/onnx/ir.ts';
import { Rng } from '../../src/util/rng.ts';

export interface OpInput {
  name: string;
  shape: number[];
  /** Float inputs are random parameters (checked); give `value` for fixed ones (indices, axes, shapes). */
  value?: Tensor;
  /** Random values are scaled by this (default 1) and shifted by `offset`. */
  scale?: number;
  offset?: number;
  /** 'uniform' draws in [offset - scale, offset + scale]. */
  dist?: 'normal' | 'uniform';
}

/** Check the gradient of a single node w.r.t. every random float input. */
export async function checkOp(op: string, inputs: OpInput[], attrs: Record<string, AttrInput> = {}, opts: GradCheckOptions & { nOutputs?: number; opset?: number; tol?: number } = {}) {
  const b = new ModelBuilder({ opset: opts.opset ?? 17 });
  const rng = new Rng(opts.seed ?? 3);
  const checked: string[] = [];
  for (const i of inputs) {
    if (i.name === '') continue;
    if (i.value) { b.initializer(i.name, i.value); continue; }
    const data = rng.fill(new Float32Array(i.shape.reduce((a, c) => a * c, 1)), i.scale ?? 1, i.dist ?? 'normal');
    if (i.offset) for (let k = 0; k < data.length; k++) data[k]! += i.offset;
    b.initializer(i.name, f32(i.shape, data));
    checked.push(i.name);
  }
  // A dummy graph input keeps the model valid (onnxruntime needs no inputs, but refit's API feeds one).
  b.input('dummy', 'float32', [1]);
  const outs = Array.from({ length: opts.nOutputs ?? 1 }, (_, k) => `y${k}`);
  b.node(op, inputs.map((i) => i.name), outs, attrs, 'node_under_test');
  b.node('Identity', ['dummy'], ['dummy_out']);
  for (const o of outs) b.output(o);
  const reports = await gradCheck(b.build(), { dummy: tensor('float32', [1], [0]) }, { params: checked, outputs: outs, ...opts });
  const tol = opts.tol ?? 1e-2;
  for (const r of reports) {
    assert.ok(r.relError <= tol, `${op} d/d${r.param}: relative error ${r.relError.toExponential(2)} > ${tol} (checked ${r.checked}, |g|=${r.analyticNorm.toExponential(2)})`);
    assert.ok(r.analyticNorm > 0 || opts.allowZero, `${op} d/d${r.param}: gradient is all zero, the check proves nothing`);
  }
  return reports;
}

declare module '../../src/autodiff/gradcheck.ts' {
  interface GradCheckOptions { allowZero?: boolean }
}
