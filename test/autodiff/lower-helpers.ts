// Run a one-op model as onnxruntime runs it and as refit lowers it, to compare forward outputs.
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { cloneModel, opsetVersion, type Model, type AttrInput } from '../../src/onnx/ir.ts';
import { Emitter } from '../../src/onnx/emitter.ts';
import { encodeModel } from '../../src/onnx/proto.ts';
import { createSession, toOrt, fromOrt } from '../../src/onnx/runtime.ts';
import { probeShapes, signatureOf } from '../../src/onnx/shapes.ts';
import { lowerForGradient } from '../../src/autodiff/lower/index.ts';
import { NCHWC_DOMAIN, nchwcBlockSize } from '../../src/onnx/nchwc.ts';
import { type Tensor, f32 } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import assert from 'node:assert/strict';

export async function runModel(m: Model, feeds: Record<string, Tensor>): Promise<Map<string, Tensor>> {
  const s = await createSession(encodeModel(m), { threads: 1, optimization: 'disabled' });
  const ort: Record<string, ReturnType<typeof toOrt>> = {};
  for (const [k, v] of Object.entries(feeds)) ort[k] = toOrt(v);
  const out = await s.run(ort);
  await s.release();
  return new Map(Object.entries(out).map(([k, v]) => [k, fromOrt(v)]));
}

/** The model with its lowerable nodes rewritten (as if every listed initializer trained). */
export async function lowered(m: Model, feeds: Record<string, Tensor>, trainable: string[], probe = true): Promise<{ model: Model; count: number }> {
  // Without a probe (onnxruntime cannot run the op), shapes come from the feeds and initializers.
  const shapes = probe ? await probeShapes(m, signatureOf(feeds)) : null;
  const shapeOf = (t: string) => shapes?.get(t)?.dims ?? feeds[t]?.dims ?? m.graph.initializers.get(t)?.dims ?? [];
  const c = cloneModel(m);
  const em = new Emitter(c.graph, opsetVersion(c));
  // onnxruntime's block size, as the step builder asks it, when the model holds blocked NCHWc nodes
  const nchwcBlock = c.graph.nodes.some((n) => n.domain === NCHWC_DOMAIN) ? await nchwcBlockSize() : null;
  const dtypeOf = (t: string) => shapes?.get(t)?.dtype ?? feeds[t]?.dtype ?? m.graph.initializers.get(t)?.dtype;
  const r = lowerForGradient(c.graph, shapeOf, em, { trainable, nchwcBlock, dtypeOf });
  return { model: c, count: r.lowered.length };
}

export function maxAbsDiff(a: Tensor, b: Tensor): number {
  if (a.dims.join() !== b.dims.join()) throw new Error(`shapes differ: [${a.dims}] vs [${b.dims}]`);
  let d = 0;
  for (let i = 0; i < a.data.length; i++) d = Math.max(d, Math.abs(Number(a.data[i]) - Number(b.data[i])));
  return d;
}

export interface OneOp {
  op: string;
  domain?: string;
  /** Input name → shape (random float initializer), or a fixed tensor; '' for an omitted input. */
  inputs: [string, number[] | Tensor][];
  /** Graph input fed at run time (random), first of `inputs` by default; '' for none (all parameters). */
  feed?: string;
  attrs?: Record<string, AttrInput>;
  outputs: string[];
  opset?: number;
  seed?: number;
  scale?: number;
}

/** A model of one node: the fed input is a graph input, the others initializers. */
export function oneOp(spec: OneOp): { model: Model; feeds: Record<string, Tensor>; params: string[] } {
  const b = new ModelBuilder({ opset: spec.opset ?? 17 });
  if (spec.domain) b.model.opsets.push({ domain: spec.domain, version: 1 });
  const rng = new Rng(spec.seed ?? 1);
  const feedName = spec.feed ?? spec.inputs[0]![0];
  const feeds: Record<string, Tensor> = {};
  if (feedName === '') {
    // Every input a parameter: a dummy graph input keeps refit's signature non-empty.
    b.input('dummy', 'float32', [1]);
    feeds.dummy = f32([1], [0]);
  }
  const params: string[] = [];
  for (const [name, v] of spec.inputs) {
    if (!name) continue;
    const t = Array.isArray(v) ? f32(v, rng.fill(new Float32Array(v.reduce((a, c) => a * c, 1)), spec.scale ?? 0.5, 'normal')) : v;
    if (name === feedName) { b.input(name, t.dtype, t.dims); feeds[name] = t; }
    else { b.initializer(name, t); if (Array.isArray(v)) params.push(name); }
  }
  b.node(spec.op, spec.inputs.map(([n]) => n), spec.outputs, spec.attrs ?? {}, 'node_under_test');
  if (spec.domain) b.model.graph.nodes[0]!.domain = spec.domain;
  for (const o of spec.outputs) if (o) b.model.graph.outputs.push({ name: o, dtype: 'float32', shape: null, untyped: true }); // typed by onnxruntime (mask_index is int32)
  return { model: b.build(), feeds, params };
}

/** Max |onnxruntime − lowered| over every output of a one-op model. */
export async function forwardGap(spec: OneOp): Promise<{ gap: number; count: number }> {
  const { model, feeds, params } = oneOp(spec);
  const ref = await runModel(model, feeds);
  const { model: low, count } = await lowered(model, feeds, params);
  const got = await runModel(low, feeds);
  let gap = 0;
  for (const o of spec.outputs) if (o) gap = Math.max(gap, maxAbsDiff(got.get(o)!, ref.get(o)!));
  return { gap, count };
}

/** Each labelled one-op model is lowered (one node) and its outputs equal onnxruntime's kernel within `tol`. */
export async function assertLowersLikeOrt(cases: Iterable<readonly [string, OneOp]>, tol = 1e-5): Promise<void> {
  for (const [label, spec] of cases) {
    const { gap, count } = await forwardGap(spec);
    assert.equal(count, 1, `${label}: not lowered`);
    assert.ok(gap <= tol, `${label}: max |diff| ${gap}`);
  }
}
