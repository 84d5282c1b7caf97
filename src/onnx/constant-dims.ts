// The shape of a tensor the graph computes from constants alone (a weight standardized or
// weight-normed in the graph), found without running it: through the ops exporters write for such
// arithmetic. undefined where an op outside this list, or a shape only a run would tell, is met.
import type { Graph, Node } from './ir.ts';
import { attrInt, attrInts, constantValue } from './ir.ts';
import type { Tensor } from './tensor.ts';

export const SAME_AS_FIRST = new Set(['Identity', 'Cast', 'Neg', 'Abs', 'Sqrt', 'Exp', 'Log', 'Reciprocal', 'Relu', 'Sigmoid', 'Tanh', 'Clip',
  'BatchNormalization', 'InstanceNormalization', 'LayerNormalization', 'LpNormalization', 'Softmax', 'Dropout']);
export const BROADCAST = new Set(['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Max', 'Min', 'Where']);
export const REDUCE = /^Reduce(Sum|Mean|Max|Min|Prod|L1|L2|SumSquare|LogSum|LogSumExp)$/;

/** numpy broadcasting of `shapes`, or undefined where two dims other than 1 disagree. */
export function broadcast(shapes: number[][]): number[] | undefined {
  const r = Math.max(...shapes.map((s) => s.length));
  const out: number[] = [];
  for (let i = 0; i < r; i++) {
    const ds = shapes.map((s) => s[s.length - r + i] ?? 1).filter((d) => d !== 1);
    if (new Set(ds).size > 1) return undefined;
    out.push(ds[0] ?? 1);
  }
  return out;
}

/** numpy's matmul: a 1-D operand is a row (left) or a column (right) that the result drops. */
export function matmulDims(a: number[] | undefined, b: number[] | undefined): number[] | undefined {
  if (!a || !b || !a.length || !b.length) return undefined;
  const l = a.length === 1 ? [1, a[0]!] : a, r = b.length === 1 ? [b[0]!, 1] : b;
  if (l[l.length - 1] !== r[r.length - 2]) return undefined;
  const batch = broadcast([l.slice(0, -2), r.slice(0, -2)]);
  if (!batch) return undefined;
  return [...batch, ...(a.length === 1 ? [] : [l[l.length - 2]!]), ...(b.length === 1 ? [] : [r[r.length - 1]!])];
}

/** Reshape's target: 0 copies the input's dim (allowzero 0), one −1 takes what is left. */
export function reshaped(n: Node, x: number[], shape: number[]): number[] | undefined {
  const dims = shape.map((d, i) => (d === 0 && attrInt(n, 'allowzero', 0) === 0 ? x[i] : d));
  if (dims.some((d) => d === undefined || d < -1) || dims.filter((d) => d === -1).length > 1) return undefined;
  const total = x.reduce((a, b) => a * b, 1), known = (dims as number[]).filter((d) => d !== -1).reduce((a, b) => a * b, 1);
  return (dims as number[]).map((d) => (d === -1 ? total / known : d));
}

/** An integer tensor's values as numbers (undefined for none). */
export const intValues = (t: Tensor | undefined) => (t ? Array.from(t.data as ArrayLike<number | bigint>, Number) : undefined);

/**
 * The output dims of `n` for the ops above, from its inputs' dims (`dims`) and its constant inputs'
 * values (`value`); undefined for another op, or where a dim or a needed value is unknown. Both
 * shape propagations read it: constantDims here, over constants, and staticShapes
 * (static-shapes.ts), over an input signature.
 */
export function commonOpDims(n: Node, dims: (i: number) => number[] | undefined, value: (i: number) => Tensor | undefined): number[] | undefined {
  const x = dims(0);
  if (!x) return undefined;
  const op = n.opType;
  if (SAME_AS_FIRST.has(op)) return x;
  if (BROADCAST.has(op)) {
    const all = n.inputs.map((_, i) => (i === 0 ? x : dims(i)));
    return all.every((d): d is number[] => !!d) ? broadcast(all) : undefined;
  }
  if (op === 'Reshape') {
    const shape = intValues(value(1));
    return shape ? reshaped(n, x, shape) : undefined;
  }
  if (op === 'Transpose') return (attrInts(n, 'perm') ?? x.map((_, i) => x.length - 1 - i)).map((p) => x[p]!);
  if (op === 'Flatten') {
    const axis = attrInt(n, 'axis', 1), at = axis < 0 ? axis + x.length : axis;
    const prod = (d: number[]) => d.reduce((p, v) => p * v, 1);
    return [prod(x.slice(0, at)), prod(x.slice(at))];
  }
  if (op === 'MatMul') return matmulDims(x, dims(1));
  if (REDUCE.test(op)) {
    const given = n.inputs[1] ? intValues(value(1)) : attrInts(n, 'axes');
    if (n.inputs[1] && !given) return undefined;
    // No axes: every axis, or none with noop_with_empty_axes (opset 18's input form).
    if (!given?.length && attrInt(n, 'noop_with_empty_axes', 0) === 1) return x;
    const axes = (given?.length ? given : x.map((_, i) => i)).map((a) => (a < 0 ? a + x.length : a));
    return attrInt(n, 'keepdims', 1) === 1 ? x.map((d, i) => (axes.includes(i) ? 1 : d)) : x.filter((_, i) => !axes.includes(i));
  }
  return undefined;
}

/** Static dims of `t`, where it is a constant or computed from constants by the ops above. */
export function constantDims(g: Graph, prod: Map<string, Node>, t: string, depth = 0): number[] | undefined {
  const c = constantValue(g, t);
  if (c) return [...c.dims];
  const n = prod.get(t);
  if (!n || depth > 64 || (n.domain !== '' && n.domain !== 'ai.onnx') || n.outputs[0] !== t) return undefined;
  return commonOpDims(n, (i) => (n.inputs[i] ? constantDims(g, prod, n.inputs[i]!, depth + 1) : undefined), (i) => (n.inputs[i] ? constantValue(g, n.inputs[i]!) : undefined));
}
