// A small builder for hand-made ONNX models (tests, gradient checks, examples).
import type { Model, ValueInfo, Dim, AttrInput } from './ir.ts';
import { toAttr } from './ir.ts';
import type { DType, Tensor } from './tensor.ts';

export class ModelBuilder {
  readonly model: Model;
  private n = 0;

  constructor(opts: { opset?: number; name?: string } = {}) {
    this.model = {
      irVersion: 8,
      opsets: [{ domain: '', version: opts.opset ?? 17 }],
      producerName: 'refit',
      producerVersion: '0.1.0',
      docString: '',
      metadata: {},
      graph: { name: opts.name ?? 'graph', nodes: [], inputs: [], outputs: [], initializers: new Map(), valueInfo: [] },
    };
  }

  input(name: string, dtype: DType, shape: Dim[]): this {
    this.model.graph.inputs.push({ name, dtype, shape });
    return this;
  }

  initializer(name: string, t: Tensor): this {
    this.model.graph.initializers.set(name, t);
    return this;
  }

  node(opType: string, inputs: string[], outputs: string[], attrs: Record<string, AttrInput> = {}, name?: string): this {
    this.model.graph.nodes.push({
      name: name ?? `${opType}_${this.n++}`,
      opType,
      domain: '',
      inputs,
      outputs,
      attrs: Object.fromEntries(Object.entries(attrs).map(([k, v]) => [k, toAttr(v)])),
    });
    return this;
  }

  output(name: string, dtype: DType = 'float32', shape: Dim[] | null = null): this {
    const v: ValueInfo = { name, dtype, shape };
    this.model.graph.outputs.push(v);
    return this;
  }

  build(): Model {
    return this.model;
  }
}
