// The bookkeeping under NetBuilder: the model being built, hierarchical names, parameters,
// constants, and the static shape of every value. Layers live in ./net-builder.ts.
import type { Model, AttrInput } from '../onnx/ir.ts';
import { Emitter } from '../onnx/emitter.ts';
import { type Tensor, type DType, f32, i64, formatShape } from '../onnx/tensor.ts';
import { initTensor, type InitKind, type Fans } from './init.ts';

/** A dimension: a number, or a symbolic name such as 'N' for the batch. */
export type Dim = number | string;

/** A tensor in the graph being built: its name and its shape as far as it is known statically. */
export interface Value {
  readonly name: string;
  readonly shape: readonly Dim[];
}

export interface NetOptions {
  /** Graph name. @default 'net' */
  name?: string;
  /** Seed for every parameter's initialisation. Required: randomness in refit is always explicit. */
  seed: number;
  /** Default-domain opset. LayerNormalization needs 17. @default 17 */
  opset?: number;
}

/** Thrown for a layer applied to a value of the wrong shape, a duplicate name, or a bad option. */
export class NetError extends Error {
  override name = 'NetError';
}

export class NetCore {
  readonly seed: number;
  readonly opset: number;
  protected readonly model: Model;
  protected readonly em: Emitter;
  private readonly scopes: string[] = [];
  private readonly constants = new Map<string, string>();
  private readonly paramNames = new Set<string>();
  private built = false;

  constructor(opts: NetOptions) {
    if (!Number.isInteger(opts.seed)) throw new NetError(`NetBuilder needs an integer seed, got ${String(opts.seed)}`);
    this.seed = opts.seed;
    this.opset = opts.opset ?? 17;
    if (this.opset < 13) throw new NetError(`NetBuilder emits opset 13 or later (refit's minimum), got opset ${this.opset}`);
    this.model = {
      irVersion: 8,
      opsets: [{ domain: '', version: this.opset }],
      producerName: 'refit.nn',
      producerVersion: '0.1.0',
      docString: '',
      metadata: {},
      graph: { name: opts.name ?? 'net', nodes: [], inputs: [], outputs: [], initializers: new Map(), valueInfo: [] },
    };
    this.em = new Emitter(this.model.graph, this.opset);
  }

  /** A graph input. Use a string dim (e.g. 'N') for a dynamic batch. */
  input(name: string, shape: Dim[], dtype: DType = 'float32'): Value {
    this.open();
    this.em.reserve(name);
    this.model.graph.inputs.push({ name, dtype, shape: [...shape] });
    return { name, shape: [...shape] };
  }

  /** Expose a value as a graph output under `name` (through an Identity, so `v` stays usable). */
  output(v: Value, name: string): Value {
    this.open();
    if (this.model.graph.outputs.some((o) => o.name === name)) throw new NetError(`output '${name}' is already declared`);
    this.em.reserve(name);
    this.model.graph.nodes.push({ name: this.em.fresh(`${name}/Identity`), opType: 'Identity', domain: '', inputs: [v.name], outputs: [name], attrs: {} });
    this.model.graph.outputs.push({ name, dtype: 'float32', shape: [...v.shape] });
    return { name, shape: v.shape };
  }

  /**
   * Run `body` with `name` appended to the naming scope, like a PyTorch submodule:
   * `net.scope('blocks.0', () => net.linear(x, { out: 8, name: 'fc' }))` makes `blocks.0.fc.weight`.
   */
  scope<T>(name: string, body: () => T): T {
    this.scopes.push(name);
    try {
      return body();
    } finally {
      this.scopes.pop();
    }
  }

  /** The full hierarchical name of `local` in the current scope. */
  qualify(local: string): string {
    return [...this.scopes, local].filter((s) => s !== '').join('.');
  }

  /** An initializer named `name` (already qualified, e.g. `blocks.0.attn.q.weight`), drawn with `init`. */
  param(name: string, dims: number[], init: InitKind, fans: Fans = { fanIn: 1, fanOut: 1 }): string {
    if (this.paramNames.has(name)) throw new NetError(`parameter '${name}' already exists: give each layer a unique name`);
    this.paramNames.add(name);
    this.em.reserve(name);
    const n = dims.reduce((a, b) => a * b, 1);
    this.model.graph.initializers.set(name, f32(dims, initTensor(init, n, fans, this.seed, name)));
    return name;
  }

  /** Apply one op; the node and its output are named `<scope>/<OpType>`. */
  op(opType: string, inputs: string[], shape: readonly Dim[], attrs: Record<string, AttrInput> = {}, scope = this.qualify('')): Value {
    this.open();
    const name = this.em.op(opType, inputs, attrs, scope ? `${scope}/${opType}` : opType);
    return { name, shape: [...shape] };
  }

  /**
   * A constant as a `Constant` node, not an initializer: initializers are exactly the
   * parameters and buffers, so `trainable: 'all'` never picks up a 0.5 or a shape.
   */
  constant(t: Tensor): string {
    const key = `${t.dtype}|${t.dims}|${Array.from(t.data as ArrayLike<number | bigint>).join(',')}`;
    const hit = this.constants.get(key);
    if (hit) return hit;
    const name = this.em.emit('Constant', [], { value: t }, 1, 'const')[0]!;
    this.constants.set(key, name);
    return name;
  }

  scalar(v: number): string {
    return this.constant(f32([], [v]));
  }

  ints(values: number[]): string {
    return this.constant(i64([values.length], values));
  }

  /** The finished model: `new RefitModel(net.build())`. The builder cannot be used afterwards. */
  build(): Model {
    this.open();
    if (this.model.graph.outputs.length === 0) throw new NetError(`net '${this.model.graph.name}' has no outputs: call net.output(value, name) first`);
    this.built = true;
    this.model.metadata['refit.nn.seed'] = String(this.seed);
    return this.model;
  }

  /** Check a value's rank and return its shape; `what` names the layer in the message. */
  protected expectRank(v: Value, rank: number, layout: string, what: string): readonly Dim[] {
    if (v.shape.length !== rank) throw new NetError(`${what} expects a ${rank}-D ${layout} input, got '${v.name}' with shape ${formatShape([...v.shape])}`);
    return v.shape;
  }

  /** A dimension that must be known to size a weight. */
  protected staticDim(v: Value, axis: number, what: string): number {
    const d = v.shape[axis < 0 ? v.shape.length + axis : axis];
    if (typeof d !== 'number') throw new NetError(`${what} needs a static size for axis ${axis} of '${v.name}' (shape ${formatShape([...v.shape])}) to size its weight`);
    return d;
  }

  private open(): void {
    if (this.built) throw new NetError('this NetBuilder has already built its model; start a new one');
  }
}
