// One rewrite per op whose signature or semantics changed between opset 7 and 13. Each takes a
// node in its old form and returns the nodes that compute exactly the same thing at opset 13,
// or throws an UpgradeRefusal that says why it cannot.
import type { Attr, Node } from '../ir.ts';
import { attrFloat, attrInt, attrInts, attrString } from '../ir.ts';
import type { DType, Tensor } from '../tensor.ts';
import { allocate } from '../tensor.ts';

export class UpgradeRefusal extends Error {
  constructor(readonly node: Node, readonly why: string) {
    super(`node '${node.name}' (${node.opType}): ${why}`);
  }
}

export interface RewriteContext {
  /** Default-domain opset of the source model. */
  from: number;
  /** Rank of a tensor as run on the verification inputs; undefined when not known. */
  rank(name: string): number | undefined;
  dtype(name: string): DType | undefined;
  /** A tensor's value: initializers, Constant outputs, and node outputs as computed on the verification inputs. */
  value(name: string): Tensor | undefined;
  /** Whether any node or graph output reads this tensor. */
  used(name: string): boolean;
  /** A name not yet used in the graph, derived from `hint`. */
  fresh(hint: string): string;
}

export interface Rewrite {
  /** Rewrite applies to models whose opset is below this version. */
  below: number;
  apply(ctx: RewriteContext, node: Node): Node[];
}

// ---- helpers ----

const INT64_MAX = 2n ** 63n - 1n;
const INT64_MIN = -(2n ** 63n);

/** int64 from a JS number; attributes decoded to ±2^63 (INT64_MAX/MIN lose precision as doubles) are clamped. */
function toInt64(v: number): bigint {
  if (v >= 9223372036854775807) return INT64_MAX;
  if (v <= -9223372036854775808) return INT64_MIN;
  return BigInt(Math.trunc(v));
}

function int64Tensor(values: number[], dims: number[] = [values.length]): Tensor {
  return { dtype: 'int64', dims, data: BigInt64Array.from(values.map(toInt64)) };
}

function scalarTensor(dtype: DType, value: number): Tensor {
  if (dtype !== 'float32' && dtype !== 'float64') throw new Error(`internal: scalar constant of dtype ${dtype}`);
  const data = allocate(dtype, 1) as Float32Array | Float64Array;
  data[0] = value;
  return { dtype, dims: [], data };
}

function constant(ctx: RewriteContext, node: Node, hint: string, value: Tensor): { node: Node; name: string } {
  const name = ctx.fresh(`${node.name}__${hint}`);
  return { name, node: { name, opType: 'Constant', domain: '', inputs: [], outputs: [name], attrs: { value: { kind: 'tensor', value } } } };
}

function without(attrs: Record<string, Attr>, ...names: string[]): Record<string, Attr> {
  const out = { ...attrs };
  for (const n of names) delete out[n];
  return out;
}

/** Float dtype of a node's data input, for constants that must share it (Clip bounds, Pad value). */
function floatTypeOf(ctx: RewriteContext, node: Node, input: string, what: string): 'float32' | 'float64' {
  const d = ctx.dtype(input) ?? 'float32';
  if (d !== 'float32' && d !== 'float64') throw new UpgradeRefusal(node, `${what} on a ${d} tensor ('${input}') is not converted (only float32 and float64)`);
  return d;
}

/** An attribute list that became an int64 input (Squeeze/Unsqueeze/ReduceSum axes, Split sizes, TopK k). */
function attrToInput(name: string, inputIndex: number): Rewrite['apply'] {
  return (ctx, node) => {
    const v = attrInts(node, name);
    if (v === undefined) return [{ ...node, attrs: without(node.attrs, name) }];
    const c = constant(ctx, node, name, int64Tensor(v));
    const inputs = [...node.inputs];
    while (inputs.length < inputIndex) inputs.push('');
    inputs[inputIndex] = c.name;
    return [c.node, { ...node, inputs, attrs: without(node.attrs, name) }];
  };
}

// ---- the rewrites, keyed by op ----

/** Opset < 13 Softmax family: coerce to 2-D [prod(dims[:axis]), prod(dims[axis:])] and normalise each row. */
const softmaxFamily: Rewrite = {
  below: 13,
  apply(ctx, node) {
    const x = node.inputs[0]!;
    const r = ctx.rank(x);
    if (r === undefined) throw new UpgradeRefusal(node, `the rank of input '${x}' is unknown, so the old 2-D coercion at the axis cannot be rewritten`);
    let axis = attrInt(node, 'axis', 1);
    if (axis < 0) axis += r;
    if (axis < 0 || axis >= Math.max(r, 1)) throw new UpgradeRefusal(node, `axis ${attrInt(node, 'axis', 1)} is out of range for input '${x}' of rank ${r}`);
    // On the last axis the old and the new meanings coincide.
    if (axis === r - 1) return [{ ...node, attrs: { ...node.attrs, axis: { kind: 'int', value: -1 } } }];
    const y = node.outputs[0]!;
    const flat = ctx.fresh(`${y}__2d`);
    const out2d = ctx.fresh(`${y}__2d_out`);
    const shape = ctx.fresh(`${y}__shape`);
    return [
      { name: ctx.fresh(`${node.name}__flatten`), opType: 'Flatten', domain: '', inputs: [x], outputs: [flat], attrs: { axis: { kind: 'int', value: axis } } },
      { ...node, inputs: [flat], outputs: [out2d], attrs: { ...node.attrs, axis: { kind: 'int', value: -1 } } },
      { name: ctx.fresh(`${node.name}__shape`), opType: 'Shape', domain: '', inputs: [x], outputs: [shape], attrs: {} },
      { name: ctx.fresh(`${node.name}__reshape`), opType: 'Reshape', domain: '', inputs: [out2d, shape], outputs: [y], attrs: {} },
    ];
  },
};

/**
 * Upsample (deprecated at 10) and Resize-10: asymmetric coordinates (x_in = x_out / scale).
 * onnxruntime's nearest pixel for these old ops truncates on an up-sampled axis and rounds up on a
 * down-sampled one, so nearest_mode is 'floor' or 'ceil' by the scales; an axis with scale 1 maps
 * integers to integers and agrees with both. Mixed directions have no single nearest_mode.
 */
function toResize11(ctx: RewriteContext, node: Node, scalesInput: string | undefined, pre: Node[], scales?: number[]): Node[] {
  const mode = attrString(node, 'mode', 'nearest');
  if (mode !== 'nearest' && mode !== 'linear') throw new UpgradeRefusal(node, `mode '${mode}' has no exact Resize equivalent (only 'nearest' and 'linear')`);
  if (!scalesInput) throw new UpgradeRefusal(node, 'no scales given');
  const attrs: Record<string, Attr> = { mode: { kind: 'string', value: mode }, coordinate_transformation_mode: { kind: 'string', value: 'asymmetric' } };
  if (mode === 'nearest') {
    const s = scales ?? (() => {
      const t = ctx.value(scalesInput);
      return t ? Array.from(t.data as ArrayLike<number>, Number) : undefined;
    })();
    if (!s) throw new UpgradeRefusal(node, `the value of scales '${scalesInput}' is unknown, so the old nearest rounding (down when up-sampling, up when down-sampling) cannot be chosen`);
    const down = s.some((v) => v < 1);
    if (down && s.some((v) => v > 1)) throw new UpgradeRefusal(node, `scales [${s.join(', ')}] up-sample some axes and down-sample others; the old nearest rounding differs per axis and Resize has one nearest_mode`);
    attrs.nearest_mode = { kind: 'string', value: down ? 'ceil' : 'floor' };
  }
  return [...pre, { name: node.name, opType: 'Resize', domain: '', inputs: [node.inputs[0]!, '', scalesInput], outputs: [node.outputs[0]!], attrs }];
}

export const REWRITES: Record<string, Rewrite> = {
  // 5: the shape became an input (consumed_inputs, below 6, is dropped from every node first).
  Reshape: {
    below: 5,
    apply(ctx, node) {
      const shape = attrInts(node, 'shape');
      if (shape === undefined) return [node];
      const c = constant(ctx, node, 'shape', int64Tensor(shape));
      return [c.node, { ...node, inputs: [node.inputs[0]!, c.name], attrs: without(node.attrs, 'shape') }];
    },
  },

  Softmax: softmaxFamily,
  LogSoftmax: softmaxFamily,
  Hardmax: softmaxFamily,

  // 13: axes/split became inputs.
  Squeeze: { below: 13, apply: attrToInput('axes', 1) },
  Unsqueeze: {
    below: 13,
    apply(ctx, node) {
      if (attrInts(node, 'axes') === undefined) throw new UpgradeRefusal(node, "required attribute 'axes' is missing");
      return attrToInput('axes', 1)(ctx, node);
    },
  },
  ReduceSum: { below: 13, apply: attrToInput('axes', 1) },
  Split: { below: 13, apply: attrToInput('split', 1) },

  // 10: starts/ends/axes became inputs (steps new, default 1).
  Slice: {
    below: 10,
    apply(ctx, node) {
      const starts = attrInts(node, 'starts');
      const ends = attrInts(node, 'ends');
      if (!starts || !ends) throw new UpgradeRefusal(node, "attributes 'starts' and 'ends' are required");
      const axes = attrInts(node, 'axes');
      const cs = constant(ctx, node, 'starts', int64Tensor(starts));
      const ce = constant(ctx, node, 'ends', int64Tensor(ends));
      const pre = [cs.node, ce.node];
      const inputs = [node.inputs[0]!, cs.name, ce.name];
      if (axes) {
        const ca = constant(ctx, node, 'axes', int64Tensor(axes));
        pre.push(ca.node);
        inputs.push(ca.name);
      }
      return [...pre, { ...node, inputs, attrs: without(node.attrs, 'starts', 'ends', 'axes') }];
    },
  },

  // 10: k became a 1-element int64 input.
  TopK: {
    below: 10,
    apply(ctx, node) {
      const k = attrInt(node, 'k');
      if (k === undefined) throw new UpgradeRefusal(node, "required attribute 'k' is missing");
      const c = constant(ctx, node, 'k', int64Tensor([k]));
      return [c.node, { ...node, inputs: [node.inputs[0]!, c.name], attrs: without(node.attrs, 'k') }];
    },
  },

  // 11: min/max became inputs. Clip-6's defaults are ±FLT_MAX (not ±inf: they clamp infinities), so they are kept explicitly.
  Clip: {
    below: 11,
    apply(ctx, node) {
      const dt = floatTypeOf(ctx, node, node.inputs[0]!, 'Clip');
      const lo = constant(ctx, node, 'min', scalarTensor(dt, attrFloat(node, 'min', -3.4028234663852886e38)));
      const hi = constant(ctx, node, 'max', scalarTensor(dt, attrFloat(node, 'max', 3.4028234663852886e38)));
      return [lo.node, hi.node, { ...node, inputs: [node.inputs[0]!, lo.name, hi.name], attrs: without(node.attrs, 'min', 'max') }];
    },
  },

  // 11: pads and the constant value became inputs.
  Pad: {
    below: 11,
    apply(ctx, node) {
      const pads = attrInts(node, 'pads');
      if (!pads) throw new UpgradeRefusal(node, "required attribute 'pads' is missing");
      const mode = attrString(node, 'mode', 'constant');
      const cp = constant(ctx, node, 'pads', int64Tensor(pads));
      const pre = [cp.node];
      const inputs = [node.inputs[0]!, cp.name];
      if (mode === 'constant') {
        const dt = ctx.dtype(node.inputs[0]!) ?? 'float32';
        const value = attrFloat(node, 'value', 0);
        if (dt === 'float32' || dt === 'float64') {
          const cv = constant(ctx, node, 'value', scalarTensor(dt, value));
          pre.push(cv.node);
          inputs.push(cv.name);
        } else if (value !== 0) {
          throw new UpgradeRefusal(node, `constant value ${value} on a ${dt} tensor is not converted`);
        } // an omitted value pads with 0 of any type, as before
      }
      return [...pre, { ...node, inputs, attrs: without(node.attrs, 'pads', 'value') }];
    },
  },

  // 12: ratio became an input; without training_mode the op is the identity at inference, as before.
  // 10: the mask output became bool (it was the data type before).
  Dropout: {
    below: 12,
    apply(ctx, node) {
      const mask = node.outputs[1];
      if (ctx.from < 10 && mask && ctx.used(mask)) throw new UpgradeRefusal(node, `its mask output '${mask}' is read, and the mask's type changed from the data type to bool at opset 10`);
      const dt = floatTypeOf(ctx, node, node.inputs[0]!, 'Dropout');
      const c = constant(ctx, node, 'ratio', scalarTensor(dt, attrFloat(node, 'ratio', 0.5)));
      return [c.node, { ...node, inputs: [node.inputs[0]!, c.name], outputs: mask && ctx.used(mask) ? node.outputs : [node.outputs[0]!], attrs: without(node.attrs, 'ratio', 'is_test') }];
    },
  },

  // 9 removed `spatial` (its default 1 is the only meaning left).
  BatchNormalization: {
    below: 9,
    apply(_ctx, node) {
      const spatial = attrInt(node, 'spatial', 1);
      if (spatial !== 1) throw new UpgradeRefusal(node, 'spatial=0 (per-activation statistics) was removed at opset 9 and has no exact rewrite');
      return [{ ...node, attrs: without(node.attrs, 'spatial', 'consumed_inputs', 'is_test') }];
    },
  },

  // Upsample: 7–8 scales as an attribute, 9–10 as an input; deprecated at 10 in favour of Resize.
  Upsample: {
    below: 14,
    apply(ctx, node) {
      if (ctx.from < 9) {
        const a = node.attrs.scales;
        if (a?.kind !== 'floats') throw new UpgradeRefusal(node, "required attribute 'scales' (floats) is missing");
        const scales = a.value;
        const c = constant(ctx, node, 'scales', { dtype: 'float32', dims: [scales.length], data: Float32Array.from(scales) });
        return toResize11(ctx, node, c.name, [c.node], scales);
      }
      return toResize11(ctx, node, node.inputs[1], []);
    },
  },
  // Resize-10 had inputs (X, scales) and asymmetric nearest/linear semantics; 11 added roi and modes.
  Resize: {
    below: 11,
    apply(ctx, node) {
      return toResize11(ctx, node, node.inputs[1], []);
    },
  },

  // Scatter (9) was renamed ScatterElements at 11 with the same meaning.
  Scatter: {
    below: 14,
    apply(_ctx, node) {
      return [{ ...node, opType: 'ScatterElements' }];
    },
  },
};
