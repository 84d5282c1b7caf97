// Emits nodes and constants into a graph with unique names, in the forms the
// graph's opset expects (e.g. Reduce* axes as attribute before opset 18, as input after).
import { type Graph, type Node, type AttrInput, toAttr } from './ir.ts';
import { type Tensor, f32, i64 } from './tensor.ts';

export class Emitter {
  private used = new Set<string>();
  private counter = 0;
  private constCache = new Map<string, string>();

  constructor(readonly graph: Graph, readonly opset: number, readonly prefix = '') {
    for (const v of graph.inputs) this.used.add(v.name);
    for (const k of graph.initializers.keys()) this.used.add(k);
    for (const n of graph.nodes) {
      this.used.add(n.name);
      for (const o of n.outputs) this.used.add(o);
    }
  }

  /** A tensor or node name not yet used in the graph. */
  fresh(hint: string): string {
    const base = `${this.prefix}${hint}`;
    let name = base;
    while (this.used.has(name)) name = `${base}_${++this.counter}`;
    this.used.add(name);
    return name;
  }

  reserve(name: string): void {
    if (this.used.has(name)) throw new Error(`tensor name '${name}' is already used in the graph`);
    this.used.add(name);
  }

  /** Append a node; returns its output names. `attrs` numbers that must be floats use floatAttr(). */
  emit(opType: string, inputs: string[], attrs: Record<string, AttrInput> = {}, nOutputs = 1, hint?: string): string[] {
    const tag = hint ?? opType;
    const outputs = Array.from({ length: nOutputs }, () => this.fresh(tag));
    const node: Node = {
      name: this.fresh(`${tag}_node`),
      opType,
      domain: '',
      inputs,
      outputs,
      attrs: Object.fromEntries(Object.entries(attrs).map(([k, v]) => [k, toAttr(v)])),
    };
    this.graph.nodes.push(node);
    return outputs;
  }

  /**
   * Run `fn` and take back the nodes it appended, for a pass that places them itself (in the
   * middle of the graph, where the node they replace was).
   */
  collect<T>(fn: () => T): { value: T; nodes: Node[] } {
    const start = this.graph.nodes.length;
    const value = fn();
    return { value, nodes: this.graph.nodes.splice(start) };
  }

  op(opType: string, inputs: string[], attrs: Record<string, AttrInput> = {}, hint?: string): string {
    return this.emit(opType, inputs, attrs, 1, hint)[0]!;
  }

  /** An initializer holding a constant; small constants are shared by value. */
  constant(t: Tensor, hint = 'const'): string {
    const key = t.data.length <= 16 ? `${t.dtype}|${t.dims}|${Array.from(t.data as ArrayLike<number | bigint>).join(',')}` : null;
    if (key) {
      const hit = this.constCache.get(key);
      // a pass may have dropped it since (a fold that left it unread)
      if (hit && this.graph.initializers.has(hit)) return hit;
    }
    const name = this.fresh(hint);
    this.graph.initializers.set(name, t);
    if (key) this.constCache.set(key, name);
    return name;
  }

  scalar(v: number): string {
    return this.constant(f32([], [v]), 'scalar');
  }

  ints(values: number[]): string {
    return this.constant(i64([values.length], values), 'ints');
  }

  reduce(op: 'ReduceSum' | 'ReduceMean' | 'ReduceMax' | 'ReduceMin' | 'ReduceSumSquare' | 'ReduceLogSumExp', x: string, axes: number[], keepdims: boolean): string {
    if (axes.length === 0) return x;
    // ReduceSum moved axes to an input at opset 13, the other reductions at 18.
    const axesAsInput = op === 'ReduceSum' ? this.opset >= 13 : this.opset >= 18;
    return axesAsInput
      ? this.op(op, [x, this.ints(axes)], { keepdims: keepdims ? 1 : 0 })
      : this.op(op, [x], { axes, keepdims: keepdims ? 1 : 0 });
  }

  reshape(x: string, shape: number[]): string {
    // A 0 here is an empty dimension (an expert given no token), not "copy the input's": allowzero.
    return this.op('Reshape', [x, this.ints(shape)], shape.includes(0) && this.opset >= 14 ? { allowzero: 1 } : {});
  }

  unsqueeze(x: string, axes: number[]): string {
    return this.opset >= 13 ? this.op('Unsqueeze', [x, this.ints(axes)]) : this.op('Unsqueeze', [x], { axes });
  }

  squeeze(x: string, axes: number[]): string {
    return this.opset >= 13 ? this.op('Squeeze', [x, this.ints(axes)]) : this.op('Squeeze', [x], { axes });
  }

  transpose(x: string, perm: number[]): string {
    return this.op('Transpose', [x], { perm });
  }

  add(a: string, b: string): string { return this.op('Add', [a, b]); }
  sub(a: string, b: string): string { return this.op('Sub', [a, b]); }
  mul(a: string, b: string): string { return this.op('Mul', [a, b]); }
  div(a: string, b: string): string { return this.op('Div', [a, b]); }
  neg(a: string): string { return this.op('Neg', [a]); }

  /** Sum of several tensors of the same shape (gradient accumulation). */
  sum(xs: string[]): string {
    if (xs.length === 1) return xs[0]!;
    return this.op('Sum', xs);
  }
}
