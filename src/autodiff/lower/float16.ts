// Float16 models trained in float32: the step graph upcasts every float16 tensor (initializers,
// Constant nodes, Cast targets) to float32 and casts float16 inputs on entry, so the user feeds the
// model's own float16 inputs and every gradient rule and loss works in float32 unchanged.
//
// Why upcast rather than compute the step in float16: onnxruntime's CPU provider has float16 kernels
// for few ops (it inserts float32 casts around the rest itself, InsertCastTransformer), every rule
// and loss emits float32 constants, and float16 gradients underflow without loss scaling. Measured
// by bench/float16.ts on the shipped ViT, batch 64, 2 busy cores (load average 11, so times vary):
// onnxruntime's float16 inference 38.8 ms vs float32 19.0 ms (100.6 vs 50.6, 64.2 vs 38.1 in later
// runs): the CPU float16 path a float16 step would run on is 1.7-2x slower; a LoRA step on the float16
// base, upcast, costs what the float32 step costs (108 vs 150, 151 vs 162, 107 vs 104 ms: noise;
// bench/results/float16.json holds the latest run), and its
// gradients are 6.5e-4 relative from the float32 model's (loss 2.456733 vs 2.456745), the float16
// rounding of the weights and input; test/train/float16.test.ts shows the upcast step equals its
// float32 twin (the same float16 values in float32) to 1e-6. Trainable parameters must be float32: a float16 initializer asked for as
// trainable is refused with a pointer to `upcastFloat16` (a float32 master copy of the model).
import type { Graph, Model, Node } from '../../onnx/ir.ts';
import { cloneModel } from '../../onnx/ir.ts';
import { type Tensor, ONNX_DTYPE } from '../../onnx/tensor.ts';

const F16 = ONNX_DTYPE.float16, F32 = ONNX_DTYPE.float32;

/** IEEE half bits → number. */
export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** number → IEEE half bits, round to nearest even (as numpy's astype(float16)). */
export function floatToHalf(v: number): number {
  const f = new Float32Array([v]), b = new Uint32Array(f.buffer)[0]!;
  const sign = (b >>> 16) & 0x8000, exp = (b >>> 23) & 0xff, man = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (man ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const full = man | 0x800000, shift = 14 - e;
    let r = full >>> shift;
    const rem = full & ((1 << shift) - 1), half = 1 << (shift - 1);
    if (rem > half || (rem === half && (r & 1))) r++;
    return sign | r;
  }
  let r = (e << 10) | (man >>> 13);
  const rem = man & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1))) r++;
  return sign | r;
}

export function halfTensorToFloat(t: Tensor): Tensor {
  const src = t.data as Uint16Array, out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = halfToFloat(src[i]!);
  return { dtype: 'float32', dims: [...t.dims], data: out };
}

export function floatTensorToHalf(t: Tensor): Tensor {
  const src = t.data as Float32Array, out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = floatToHalf(src[i]!);
  return { dtype: 'float16', dims: [...t.dims], data: out };
}

/** A float16 input not yet cast on entry (only read by Casts to float32). */
const uncast = (g: Graph, name: string) => g.nodes.some((n) => n.inputs.includes(name) && !(n.opType === 'Cast' && n.attrs.to?.value === F32));

const hasHalf = (g: Graph) => [...g.initializers.values()].some((t) => t.dtype === 'float16') || g.inputs.some((v) => v.dtype === 'float16' && uncast(g, v.name)) ||
  g.outputs.some((v) => v.dtype === 'float16') || g.nodes.some((n) => n.opType === 'Cast' && n.attrs.to?.value === F16);

/**
 * In place: every float16 tensor of the graph becomes float32. `castInputs`: float16 graph inputs
 * stay float16 and are cast on entry (the step graph); otherwise they become float32 inputs.
 */
export function graphToFloat32(g: Graph, castInputs: boolean): void {
  for (const [k, t] of g.initializers) if (t.dtype === 'float16') g.initializers.set(k, halfTensorToFloat(t));
  const nodes: Node[] = [];
  for (const v of g.inputs) {
    if (v.dtype !== 'float16') continue;
    if (!castInputs) { v.dtype = 'float32'; continue; }
    if (!uncast(g, v.name)) continue; // already cast on entry (an adapted float16 model)
    const up = `${v.name}.float32`;
    for (const n of g.nodes) n.inputs = n.inputs.map((i) => (i === v.name ? up : i));
    nodes.push({ name: `${v.name}.upcast`, opType: 'Cast', domain: '', inputs: [v.name], outputs: [up], attrs: { to: { kind: 'int', value: F32 } } });
  }
  for (const n of g.nodes) {
    if (n.opType === 'Cast' && n.attrs.to?.value === F16) n.attrs = { ...n.attrs, to: { kind: 'int', value: F32 } };
    for (const [k, a] of Object.entries(n.attrs)) {
      if (a.kind === 'tensor' && a.value.dtype === 'float16') n.attrs = { ...n.attrs, [k]: { kind: 'tensor', value: halfTensorToFloat(a.value) } };
    }
    nodes.push(n);
  }
  g.nodes = nodes;
  for (const v of [...g.outputs, ...g.valueInfo]) if (v.dtype === 'float16') v.dtype = 'float32';
}

/**
 * Refuses float16 trainables (see upcastFloat16). The step builder calls it before anything runs:
 * its shape probe, which exposes intermediate float16 tensors, can trip onnxruntime's own cast
 * insertion first (GPT-2's Pow, which has no float16 CPU kernel), and that error says nothing useful.
 */
export function refuseFloat16Trainables(g: Graph, trainable: readonly string[]): void {
  const half = trainable.filter((p) => g.initializers.get(p)?.dtype === 'float16');
  if (half.length) {
    throw new Error(`trainable parameter${half.length > 1 ? 's' : ''} ${half.map((p) => `'${p}'`).join(', ')} ${half.length > 1 ? 'are' : 'is'} float16; ` +
      'refit trains float32 values (float16 updates round away). Train a float32 master copy: `upcastFloat16(model)` ' +
      '(and `downcastFloat16` to write float16 again), or train float32 adapters (LoRA, (IA)^3, bottleneck) on the frozen float16 base.');
  }
}

/** The step graph's float16 pass: upcasts every float16 tensor (the step builder refused float16 trainables first). */
export function lowerFloat16(g: Graph): void {
  if (hasHalf(g)) graphToFloat32(g, true);
}

/** A float32 copy of a float16 model (inputs, outputs and weights float32): a master copy to train. */
export function upcastFloat16(model: Model): Model {
  const m = cloneModel(model);
  graphToFloat32(m.graph, false);
  return m;
}

/** The float32 weights of `trained` written back into float16 `like` (same graph), rounded to nearest. */
export function downcastFloat16(like: Model, trained: Model): Model {
  const m = cloneModel(like);
  for (const [k, t] of m.graph.initializers) {
    const v = trained.graph.initializers.get(k);
    if (t.dtype === 'float16' && v && v.dtype === 'float32') m.graph.initializers.set(k, floatTensorToHalf(v));
  }
  return m;
}

/**
 * A float16 copy of a float32 model (weights, Constant tensors, Cast targets, inputs and outputs):
 * what converters such as onnxconverter-common write without keep_io_types. For tests and benchmarks.
 */
export function float16Copy(model: Model): Model {
  const m = cloneModel(model);
  const g = m.graph;
  for (const [k, t] of g.initializers) if (t.dtype === 'float32') g.initializers.set(k, floatTensorToHalf(t));
  for (const v of [...g.inputs, ...g.outputs, ...g.valueInfo]) if (v.dtype === 'float32') v.dtype = 'float16';
  for (const n of g.nodes) {
    if (n.opType === 'Cast' && n.attrs.to?.value === F32) n.attrs = { ...n.attrs, to: { kind: 'int', value: F16 } };
    for (const [k, a] of Object.entries(n.attrs)) {
      if (a.kind === 'tensor' && a.value.dtype === 'float32') n.attrs = { ...n.attrs, [k]: { kind: 'tensor', value: floatTensorToHalf(a.value) } };
    }
  }
  return m;
}
