// Resize / Upsample gradients (src/autodiff/rules/resize.ts). Two checks per form:
// 1. the per-axis interpolation matrices, applied in TypeScript, reproduce onnxruntime's forward
//    Resize (so the reading of the spec is onnxruntime's), for every opset form and mode;
// 2. finite differences of the compiled gradient (checkOp), plus a broken rule shown to fail.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkOp } from './helpers.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { encodeModel } from '../../src/onnx/proto.ts';
import { createSession } from '../../src/onnx/runtime.ts';
import { f32, i64, toNumbers, type Tensor } from '../../src/onnx/tensor.ts';
import type { AttrInput, Node } from '../../src/onnx/ir.ts';
import { Rng } from '../../src/util/rng.ts';
import { axisMatrix, resizeAxes } from '../../src/autodiff/rules/resize.ts';
import { ruleFor, registerRules } from '../../src/autodiff/rule.ts';
import { makeContext } from '../../src/autodiff/context.ts';
import { gradCheck } from '../../src/autodiff/gradcheck.ts';
import { Emitter } from '../../src/onnx/emitter.ts';
import { probeShapes } from '../../src/onnx/shapes.ts';

interface Case {
  op?: 'Resize' | 'Upsample';
  opset: number;
  x: number[];
  attrs: Record<string, AttrInput>;
  scales?: number[];
  sizes?: number[];
}

/** Inputs of the node in its opset's form. */
function nodeInputs(c: Case): { name: string; value: Tensor }[] {
  const sc = c.scales ? f32([c.scales.length], c.scales) : undefined;
  if ((c.op ?? 'Resize') === 'Upsample' || c.opset === 10) return [{ name: 'scales', value: sc! }];
  const ins: { name: string; value: Tensor }[] = [{ name: 'roi', value: f32([0], []) }];
  if (c.sizes) {
    // opset 11–12 need an (empty) scales input before sizes; 13+ may leave it out.
    ins.push({ name: c.opset < 13 ? 'scales' : '', value: f32([0], []) });
    ins.push({ name: 'sizes', value: i64([c.sizes.length], c.sizes) });
  } else ins.push({ name: 'scales', value: sc! });
  return ins;
}

const CASES: [string, Case][] = [
  ['Upsample-9 nearest ×2', { op: 'Upsample', opset: 9, x: [1, 2, 3, 4], attrs: { mode: 'nearest' }, scales: [1, 1, 2, 2] }],
  ['Upsample-9 nearest ×1.5 (simple rounding)', { op: 'Upsample', opset: 9, x: [1, 1, 4, 5], attrs: { mode: 'nearest' }, scales: [1, 1, 1.5, 2.5] }],
  ['Upsample-9 linear ×2', { op: 'Upsample', opset: 9, x: [1, 2, 3, 4], attrs: { mode: 'linear' }, scales: [1, 1, 2, 3] }],
  ['Resize-10 nearest downsample', { opset: 10, x: [1, 1, 6, 5], attrs: { mode: 'nearest' }, scales: [1, 1, 0.5, 0.6] }],
  ['Resize-11 linear sizes half_pixel', { opset: 11, x: [1, 2, 3, 4], attrs: { mode: 'linear' }, sizes: [1, 2, 7, 5] }],
  ['Resize-11 nearest asymmetric floor (PyTorch nearest)', { opset: 11, x: [1, 2, 3, 4], attrs: { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' }, scales: [1, 1, 2, 2] }],
  ['Resize-13 nearest half_pixel round_prefer_floor ×1.5', { opset: 13, x: [1, 1, 4, 6], attrs: { mode: 'nearest' }, scales: [1, 1, 1.5, 1.5] }],
  ['Resize-13 nearest half_pixel round_prefer_ceil', { opset: 13, x: [1, 1, 4, 6], attrs: { mode: 'nearest', nearest_mode: 'round_prefer_ceil' }, scales: [1, 1, 1.5, 0.5] }],
  ['Resize-13 nearest align_corners ceil', { opset: 13, x: [1, 1, 4, 5], attrs: { mode: 'nearest', coordinate_transformation_mode: 'align_corners', nearest_mode: 'ceil' }, sizes: [1, 1, 7, 3] }],
  ['Resize-13 nearest tf_half_pixel_for_nn', { opset: 13, x: [1, 1, 4, 5], attrs: { mode: 'nearest', coordinate_transformation_mode: 'tf_half_pixel_for_nn' }, scales: [1, 1, 2, 1.5] }],
  ['Resize-13 nearest pytorch_half_pixel ×2 (integer factor → ReduceSum)', { opset: 13, x: [2, 2, 3, 4], attrs: { mode: 'nearest', coordinate_transformation_mode: 'pytorch_half_pixel' }, scales: [1, 1, 2, 2] }],
  ['Resize-13 bilinear half_pixel', { opset: 13, x: [2, 2, 3, 4], attrs: { mode: 'linear' }, scales: [1, 1, 2, 2] }],
  ['Resize-13 bilinear pytorch_half_pixel sizes', { opset: 13, x: [1, 2, 4, 3], attrs: { mode: 'linear', coordinate_transformation_mode: 'pytorch_half_pixel' }, sizes: [1, 2, 7, 1] }],
  ['Resize-13 bilinear align_corners', { opset: 13, x: [1, 2, 3, 4], attrs: { mode: 'linear', coordinate_transformation_mode: 'align_corners' }, sizes: [1, 2, 6, 9] }],
  ['Resize-13 bilinear asymmetric downsample', { opset: 13, x: [1, 2, 6, 5], attrs: { mode: 'linear', coordinate_transformation_mode: 'asymmetric' }, scales: [1, 1, 0.5, 0.8] }],
  ['Resize-13 1-D linear', { opset: 13, x: [2, 3, 5], attrs: { mode: 'linear' }, scales: [1, 1, 2.5] }],
  ['Resize-13 bicubic', { opset: 13, x: [1, 2, 4, 5], attrs: { mode: 'cubic' }, scales: [1, 1, 2, 1.5] }],
  ['Resize-13 bicubic a=-0.5 exclude_outside align_corners', { opset: 13, x: [1, 1, 4, 5], attrs: { mode: 'cubic', cubic_coeff_a: -0.5, exclude_outside: 1, coordinate_transformation_mode: 'align_corners' }, sizes: [1, 1, 7, 3] }],
  ['Resize-18 axes [2, 3] linear', { opset: 18, x: [1, 2, 3, 4], attrs: { mode: 'linear', axes: [2, 3] }, scales: [2, 1.5] }],
  ['Resize-18 axes [-1] nearest sizes', { opset: 18, x: [1, 2, 3, 4], attrs: { mode: 'nearest', axes: [-1] }, sizes: [7] }],
  ['Resize-18 keep_aspect_ratio_policy not_larger', { opset: 18, x: [1, 1, 4, 6], attrs: { mode: 'linear', axes: [2, 3], keep_aspect_ratio_policy: 'not_larger' }, sizes: [8, 9] }],
  ['Resize-19 half_pixel_symmetric linear', { opset: 19, x: [1, 1, 4, 5], attrs: { mode: 'linear', coordinate_transformation_mode: 'half_pixel_symmetric' }, scales: [1, 1, 1.7, 0.6] }],
];

/** Y = X ×_d A_d in float64, the matrices of resize.ts. */
function applyMatrices(node: Node, opset: number, xDims: number[], yDims: number[], x: Float32Array, consts: Map<string, Tensor>): Float64Array {
  const axes = resizeAxes(node, opset, xDims, yDims, (n) => (consts.has(n) ? toNumbers(consts.get(n)!) : undefined));
  let cur = Float64Array.from(x);
  const shape = [...xDims];
  for (let d = 0; d < shape.length; d++) {
    const A = axisMatrix(axes[d]!), n = shape[d]!, m = yDims[d]!;
    const pre = shape.slice(0, d).reduce((a, b) => a * b, 1), post = shape.slice(d + 1).reduce((a, b) => a * b, 1);
    const next = new Float64Array(pre * m * post);
    for (let p = 0; p < pre; p++) for (let o = 0; o < m; o++) for (let i = 0; i < n; i++) {
      const w = A[o * n + i]!;
      if (w === 0) continue;
      for (let q = 0; q < post; q++) next[(p * m + o) * post + q] += w * cur[(p * n + i) * post + q]!;
    }
    cur = next;
    shape[d] = m;
  }
  return cur;
}

for (const [name, c] of CASES) {
  test(`${name}: the interpolation matrices reproduce onnxruntime's forward`, async () => {
    const b = new ModelBuilder({ opset: c.opset });
    const rng = new Rng(5);
    const xv = rng.fill(new Float32Array(c.x.reduce((a, q) => a * q, 1)));
    b.initializer('x', f32(c.x, xv));
    const ins = nodeInputs(c);
    const consts = new Map<string, Tensor>();
    for (const i of ins) if (i.name) { b.initializer(i.name, i.value); consts.set(i.name, i.value); }
    b.node(c.op ?? 'Resize', ['x', ...ins.map((i) => i.name)], ['y'], c.attrs, 'resize');
    b.output('y');
    const m = b.build();
    const s = await createSession(encodeModel(m), { threads: 1 });
    const y = (await s.run({})).y!;
    await s.release();
    const ref = applyMatrices(m.graph.nodes[0]!, c.opset, c.x, y.dims as number[], xv, consts);
    const got = y.data as Float32Array;
    assert.equal(got.length, ref.length);
    // Nearest is a selection (exact); linear and cubic may differ by float32 rounding in the sums.
    const exact = c.attrs.mode === 'nearest';
    let worst = 0;
    for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(got[i]! - ref[i]!));
    assert.ok(exact ? worst === 0 : worst <= 2e-6, `max |onnxruntime − matrices| = ${worst}`);
  });
}

// Gradients, through the compiled step (opset ≥ 13, what refit loads).
for (const [name, c] of CASES.filter(([, c]) => c.opset >= 13)) {
  test(`${name}: gradient (finite differences)`, async () => {
    const ins = nodeInputs(c).map((i) => ({ name: i.name, shape: [...i.value.dims], value: i.value }));
    await checkOp('Resize', [{ name: 'x', shape: c.x }, ...ins], c.attrs, { opset: c.opset });
  });
}

test('Resize refuses tf_crop_and_resize and antialias with a message naming the node', async () => {
  const base = (attrs: Record<string, AttrInput>) => checkOp('Resize', [{ name: 'x', shape: [1, 1, 3, 3] }, { name: 'roi', shape: [8], value: f32([8], [0, 0, 0, 0, 1, 1, 1, 1]) }, { name: 'scales', shape: [4], value: f32([4], [1, 1, 2, 2]) }], attrs, { opset: 18 });
  await assert.rejects(base({ mode: 'linear', coordinate_transformation_mode: 'tf_crop_and_resize' }), /Resize node 'node_under_test'.*tf_crop_and_resize/);
  await assert.rejects(base({ mode: 'linear', antialias: 1 }), /Resize node 'node_under_test'.*antialias/);
});

test('a broken Resize rule (align_corners matrices for a half_pixel node) fails the same check', async () => {
  const real = ruleFor('Resize')!;
  registerRules({
    Resize(ctx, node, dOut, needs) {
      const attrs = { ...node.attrs, coordinate_transformation_mode: { kind: 'string' as const, value: 'align_corners' } };
      return real(ctx, { ...node, attrs }, dOut, needs);
    },
  });
  try {
    await assert.rejects(checkOp('Resize', [{ name: 'x', shape: [1, 2, 3, 4] }, { name: 'roi', shape: [0], value: f32([0], []) }, { name: 'scales', shape: [4], value: f32([4], [1, 1, 2, 2]) }], { mode: 'linear' }), /relative error/);
  } finally {
    registerRules({ Resize: real });
  }
});

// refit loads opset ≥ 13 only (older models are upgraded first), so the finite-difference
// checks above cannot reach Upsample and Resize-10/11. Their rule is checked here directly in
// its opset's form by the adjoint identity ⟨dY, Resize(x)⟩ = ⟨dX, x⟩, which holds exactly for
// the right linear map and for no other.
for (const [name, c] of CASES.filter(([, c]) => c.opset < 13)) {
  test(`${name}: the rule emitted at opset ${c.opset} is the adjoint of onnxruntime's forward`, async () => {
    const b = new ModelBuilder({ opset: c.opset });
    const rng = new Rng(9);
    const rand = (d: number[]) => f32(d, rng.fill(new Float32Array(d.reduce((a, q) => a * q, 1))));
    const xt = rand(c.x);
    b.initializer('x', xt);
    const ins = nodeInputs(c);
    for (const i of ins) if (i.name) b.initializer(i.name, i.value);
    b.node(c.op ?? 'Resize', ['x', ...ins.map((i) => i.name)], ['y'], c.attrs, 'resize');
    b.output('y');
    const m = b.build();
    const shapes = await probeShapes(m, {});
    const yDims = shapes.get('y')!.dims;
    const dyt = rand(yDims);
    m.graph.initializers.set('dy', dyt);
    const em = new Emitter(m.graph, c.opset);
    const ctx = makeContext(m.graph, shapes, em, new Set(['x']));
    const node = m.graph.nodes[0]!;
    const [dx] = ruleFor(node.opType)!(ctx, node, ['dy'], node.inputs.map((_, i) => i === 0));
    m.graph.outputs.push({ ...m.graph.outputs[0]!, name: dx! });
    const s = await createSession(encodeModel(m), { threads: 1 });
    const r = await s.run({});
    await s.release();
    const dot = (a: Float32Array, q: Float32Array) => a.reduce((acc, v, i) => acc + v * q[i]!, 0);
    const lhs = dot(dyt.data as Float32Array, r.y!.data as Float32Array), rhs = dot(r[dx!]!.data as Float32Array, xt.data as Float32Array);
    assert.deepEqual(r[dx!]!.dims, c.x);
    assert.ok(Math.abs(lhs - rhs) <= 1e-5 * Math.max(1, Math.abs(lhs)), `⟨dY, Y⟩ = ${lhs} but ⟨dX, X⟩ = ${rhs}`);
  });
}

test('Resize with scales computed from a graph input: the error names the node and the tensor', async () => {
  // Scales that depend on a fed value (not only on shapes and constants) stay unknown at compile time.
  const b = new ModelBuilder({ opset: 17 });
  b.initializer('x', f32([1, 1, 2, 2], [1, 2, 3, 4])).initializer('s0', f32([4], [1, 1, 2, 2]));
  b.input('dummy', 'float32', [1]);
  b.node('Add', ['s0', 'dummy'], ['scales_computed']);
  b.node('Resize', ['x', '', 'scales_computed'], ['y'], { mode: 'nearest' }, 'up');
  b.node('Identity', ['dummy'], ['dummy_out']);
  b.output('y');
  await assert.rejects(
    gradCheck(b.build(), { dummy: f32([1], [0]) }, { params: ['x'], outputs: ['y'] }),
    /Resize node 'up': scales input 'scales_computed' must be a constant/,
  );
});
