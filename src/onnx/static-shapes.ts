// Forward shapes of a model's tensors for one input signature, found without running it: node
// by node through the ops image models are made of. A tensor after an op outside this list, or
// whose shape only a run would tell, has none (and neither has what is computed from it). Used
// where a rewrite needs the shapes before the step graph's own probe runs (tiny-conv-dense.ts).
import type { Graph, Node } from './ir.ts';
import { attrInt, attrInts, attrString, attrTensor, isDefaultDomain } from './ir.ts';
import type { Tensor } from './tensor.ts';
import type { InputSignature } from './shapes.ts';
import { broadcast, commonOpDims, intValues as ints } from './constant-dims.ts';

/** Same-shape ops beyond constant-dims.ts's (activations of image models). */
const SAME_SHAPE = new Set(['HardSigmoid', 'HardSwish', 'LeakyRelu', 'Elu', 'Selu', 'Softplus', 'Mish', 'Erf', 'Gelu', 'PRelu', 'GroupNormalization']);

/** Output size of a window op along each spatial axis, or undefined where auto_pad is not NOTSET/VALID. */
export function windowOut(node: Node, inSp: number[], k: number[]): number[] | undefined {
  const auto = attrString(node, 'auto_pad', 'NOTSET');
  if (auto !== 'NOTSET' && auto !== 'VALID') return undefined;
  const nd = inSp.length;
  const s = attrInts(node, 'strides', new Array<number>(nd).fill(1));
  const d = attrInts(node, 'dilations', new Array<number>(nd).fill(1));
  const p = auto === 'VALID' ? new Array<number>(2 * nd).fill(0) : attrInts(node, 'pads', new Array<number>(2 * nd).fill(0));
  const ceil = attrInt(node, 'ceil_mode', 0) === 1;
  return inSp.map((h, i) => {
    const span = h + p[i]! + p[i + nd]! - d[i]! * (k[i]! - 1) - 1;
    return (ceil ? Math.ceil(span / s[i]!) : Math.floor(span / s[i]!)) + 1;
  });
}

/** Static shapes of the tensors of `g` for the input signature `sig`. */
export function staticShapes(g: Graph, sig: InputSignature): Map<string, number[]> {
  const sh = new Map<string, number[]>();
  const values = new Map<string, Tensor>(g.initializers);
  for (const [k, v] of Object.entries(sig)) sh.set(k, v.dims);
  for (const [k, t] of g.initializers) sh.set(k, t.dims);
  for (const n of g.nodes) {
    if (n.opType === 'Constant' && isDefaultDomain(n) && n.outputs[0]) {
      const t = attrTensor(n, 'value');
      if (t) { values.set(n.outputs[0], t); sh.set(n.outputs[0], t.dims); }
      continue;
    }
    if (!isDefaultDomain(n)) continue;
    const outs = outputShapes(n, (i) => (n.inputs[i] ? sh.get(n.inputs[i]!) : undefined), (i) => (n.inputs[i] ? values.get(n.inputs[i]!) : undefined));
    outs?.forEach((y, i) => { if (y && n.outputs[i]) sh.set(n.outputs[i]!, y); });
  }
  return sh;
}

/** The shapes of `n`'s outputs from its inputs' (`dims`) and constant inputs' values (`value`). */
export function outputShapes(n: Node, dims: (i: number) => number[] | undefined, value: (i: number) => Tensor | undefined): (number[] | undefined)[] | undefined {
  const x = dims(0);
  if (!x) return undefined;
  const op = n.opType;
  if (SAME_SHAPE.has(op)) return [x];
  if (op === 'Sum') {
    const all = n.inputs.map((_, i) => dims(i));
    return all.every((d): d is number[] => !!d) ? [broadcast(all)] : undefined;
  }
  if (op === 'Conv' && x.length >= 3) {
    const w = dims(1);
    const sp = w && windowOut(n, x.slice(2), w.slice(2));
    return w && sp ? [[x[0]!, w[0]!, ...sp]] : undefined;
  }
  if ((op === 'MaxPool' || op === 'AveragePool' || op === 'LpPool') && x.length >= 3) {
    const sp = windowOut(n, x.slice(2), attrInts(n, 'kernel_shape', []));
    return sp ? [[x[0]!, x[1]!, ...sp], [x[0]!, x[1]!, ...sp]] : undefined;
  }
  if (op === 'GlobalAveragePool' || op === 'GlobalMaxPool') return [[x[0]!, x[1]!, ...x.slice(2).map(() => 1)]];
  if (op === 'Pad') {
    const pads = n.inputs[1] ? ints(value(1)) : attrInts(n, 'pads');
    const axes = n.inputs[3] ? ints(value(3)) : undefined;
    if (!pads || (n.inputs[3] && !axes)) return undefined;
    const on = (axes ?? x.map((_, i) => i)).map((a) => (a < 0 ? a + x.length : a));
    const y = [...x];
    on.forEach((a, k) => { y[a] = x[a]! + pads[k]! + pads[k + on.length]!; });
    return [y];
  }
  if (op === 'Concat') {
    const all = n.inputs.map((_, i) => dims(i));
    if (!all.every((d): d is number[] => !!d)) return undefined;
    const a = attrInt(n, 'axis', 0), axis = a < 0 ? a + x.length : a;
    return [x.map((d, i) => (i === axis ? all.reduce((s, t) => s + t[i]!, 0) : d))];
  }
  if (op === 'Split') {
    const a = attrInt(n, 'axis', 0), axis = a < 0 ? a + x.length : a;
    const given = n.inputs[1] ? ints(value(1)) : attrInts(n, 'split');
    if (n.inputs[1] && !given) return undefined;
    const parts = given ?? n.outputs.map(() => Math.ceil(x[axis]! / n.outputs.length));
    if (!given && x[axis]! % n.outputs.length !== 0) return undefined;
    return parts.map((p) => x.map((d, i) => (i === axis ? p : d)));
  }
  if (op === 'Unsqueeze' || op === 'Squeeze') {
    const given = n.inputs[1] ? ints(value(1)) : attrInts(n, 'axes');
    if (n.inputs[1] && !given) return undefined;
    if (op === 'Squeeze') {
      const axes = (given ?? x.flatMap((d, i) => (d === 1 ? [i] : []))).map((a) => (a < 0 ? a + x.length : a));
      return [x.filter((_, i) => !axes.includes(i))];
    }
    if (!given) return undefined;
    const r = x.length + given.length;
    const axes = given.map((a) => (a < 0 ? a + r : a));
    const y: number[] = [];
    for (let i = 0, j = 0; i < r; i++) y.push(axes.includes(i) ? 1 : x[j++]!);
    return [y];
  }
  if (op === 'Slice' && n.inputs[1]) {
    const [starts, ends] = [ints(value(1)), ints(value(2))];
    const axes = n.inputs[3] ? ints(value(3)) : starts?.map((_, i) => i);
    const steps = n.inputs[4] ? ints(value(4)) : starts?.map(() => 1);
    if (!starts || !ends || !axes || !steps) return undefined;
    const y = [...x];
    axes.forEach((a0, k) => {
      const a = a0 < 0 ? a0 + x.length : a0, D = x[a]!, st = steps[k]!;
      const clamp = (v: number, lo: number, hi: number) => Math.min(Math.max(v < 0 ? v + D : v, lo), hi);
      const b = st > 0 ? clamp(starts[k]!, 0, D) : clamp(starts[k]!, -1, D - 1);
      const e = st > 0 ? clamp(ends[k]!, 0, D) : clamp(ends[k]!, -1, D - 1);
      y[a] = Math.max(0, Math.ceil((e - b) / st));
    });
    return [y];
  }
  const y = commonOpDims(n, dims, value);
  return y ? [y] : undefined;
}
