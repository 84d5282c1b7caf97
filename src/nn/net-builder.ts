// NetBuilder: author a model in TypeScript, PyTorch-module style, and get a plain ONNX graph.
//
//     const net = new NetBuilder({ name: 'mlp', seed: 0 });
//     const x = net.input('x', ['N', 784]);
//     const h = net.relu(net.linear(x, { out: 128, name: 'fc1', init: 'kaiming_normal' }));
//     net.output(net.linear(h, { out: 10, name: 'head' }), 'logits');
//     const model = new RefitModel(net.build());
//
// Parameters are initializers named like PyTorch state_dict keys (`fc1.weight`, `bn.running_mean`),
// so `trainable: /^head\./` or `/norm|bn/` select what you expect.
import { type Dim, type Value, NetCore, NetError } from './core.ts';
import type { InitKind } from './init.ts';
import { selfAttention, type AttentionOptions } from './attention.ts';
import { formatShape } from '../onnx/tensor.ts';

export type { Dim, Value, NetOptions } from './core.ts';
export { NetError } from './core.ts';

type Pair = number | [number, number];
const pair = (v: Pair): [number, number] => (typeof v === 'number' ? [v, v] : v);

/** Output size of a sliding window along one axis (floor mode, as PyTorch and ONNX default). */
function windowOut(d: Dim, k: number, s: number, p: number): Dim {
  return typeof d === 'number' ? Math.floor((d + 2 * p - k) / s) + 1 : '?';
}

export interface Conv2dOptions {
  /** Layer name; parameters are `<name>.weight` [out, in/groups, kh, kw] and `<name>.bias` [out]. */
  name: string;
  out: number;
  kernel: Pair;
  /** @default 1 */
  stride?: Pair;
  /** Zero padding on both sides of each spatial axis. @default 0 */
  pad?: Pair;
  /** @default 1 */
  groups?: number;
  /** @default true */
  bias?: boolean;
  /** @default 'kaiming_normal' (the conv is usually followed by ReLU) */
  init?: InitKind;
}

export interface PoolOptions {
  kernel: Pair;
  /** @default kernel */
  stride?: Pair;
  /** @default 0 */
  pad?: Pair;
}

export interface LinearOptions {
  /** Layer name; parameters are `<name>.weight` [in, out] (transposed from PyTorch's [out, in]) and `<name>.bias` [out]. */
  name: string;
  out: number;
  /** @default true */
  bias?: boolean;
  /** @default 'xavier_uniform'; use 'kaiming_normal' before a ReLU */
  init?: InitKind;
}

export interface NormOptions {
  name: string;
  /** @default 1e-5 (PyTorch's default) */
  eps?: number;
}

export interface BatchNormOptions extends NormOptions {
  /**
   * Running-statistics momentum in PyTorch's convention (weight of the new batch).
   * Stored as ONNX `momentum` = 1 − this, the weight of the old value.
   * @default 0.1
   */
  momentum?: number;
}

export class NetBuilder extends NetCore {
  /**
   * 2-D convolution on [N, C, H, W]: one `Conv` node (stride, symmetric pad, groups).
   * @example net.conv2d(x, { out: 32, kernel: 3, pad: 1, name: 'stem.conv' })
   */
  conv2d(x: Value, o: Conv2dOptions): Value {
    const name = this.qualify(o.name);
    const what = `conv2d '${name}'`;
    const [n, , h, w] = this.expectRank(x, 4, '[N, C, H, W]', what);
    const cin = this.staticDim(x, 1, what);
    const groups = o.groups ?? 1;
    if (cin % groups !== 0 || o.out % groups !== 0) throw new NetError(`${what}: groups=${groups} must divide in channels ${cin} and out channels ${o.out}`);
    const [kh, kw] = pair(o.kernel), [sh, sw] = pair(o.stride ?? 1), [ph, pw] = pair(o.pad ?? 0);
    const fans = { fanIn: (cin / groups) * kh * kw, fanOut: o.out * kh * kw };
    const inputs = [x.name, this.param(`${name}.weight`, [o.out, cin / groups, kh, kw], o.init ?? 'kaiming_normal', fans)];
    if (o.bias ?? true) inputs.push(this.param(`${name}.bias`, [o.out], 'zeros'));
    return this.op('Conv', inputs, [n!, o.out, windowOut(h!, kh, sh, ph), windowOut(w!, kw, sw, pw)], {
      kernel_shape: [kh, kw], strides: [sh, sw], pads: [ph, pw, ph, pw], group: groups,
    }, name);
  }

  /**
   * BatchNorm over axis 1 of [N, C, ...], in inference form: one `BatchNormalization` node reading
   * `<name>.weight`, `.bias`, `.running_mean`, `.running_var`. refit's train step swaps in batch
   * statistics when compiled with `batchNorm: 'train'`.
   */
  batchNorm(x: Value, o: BatchNormOptions): Value {
    const name = this.qualify(o.name);
    const c = this.staticDim(x, 1, `batchNorm '${name}'`);
    const m = o.momentum ?? 0.1;
    if (!(m >= 0 && m <= 1)) throw new NetError(`batchNorm '${name}': momentum ${m} is outside [0, 1] (PyTorch convention: weight of the new batch)`);
    const inputs = [x.name, this.param(`${name}.weight`, [c], 'ones'), this.param(`${name}.bias`, [c], 'zeros'),
      this.param(`${name}.running_mean`, [c], 'zeros'), this.param(`${name}.running_var`, [c], 'ones')];
    return this.op('BatchNormalization', inputs, x.shape, { epsilon: { kind: 'float', value: o.eps ?? 1e-5 }, momentum: { kind: 'float', value: 1 - m } }, name);
  }

  /** LayerNorm over the last axis: one `LayerNormalization` node (opset ≥ 17), `<name>.weight` ones, `.bias` zeros. */
  layerNorm(x: Value, o: NormOptions): Value {
    const name = this.qualify(o.name);
    if (this.opset < 17) throw new NetError(`layerNorm '${name}' emits LayerNormalization, which needs opset 17; this net is opset ${this.opset}. Build with opset: 17`);
    const d = this.staticDim(x, -1, `layerNorm '${name}'`);
    const inputs = [x.name, this.param(`${name}.weight`, [d], 'ones'), this.param(`${name}.bias`, [d], 'zeros')];
    return this.op('LayerNormalization', inputs, x.shape, { axis: -1, epsilon: { kind: 'float', value: o.eps ?? 1e-5 } }, name);
  }

  /**
   * y = x·W + b with W [in, out]: `MatMul` then `Add`, for any rank (a [N, T, D] token tensor too).
   * Always MatMul rather than Gemm, so every linear has one form for PEFT rewrites to find;
   * onnxruntime fuses MatMul+Add into Gemm for 2-D inputs anyway.
   */
  linear(x: Value, o: LinearOptions): Value {
    const name = this.qualify(o.name);
    const cin = this.staticDim(x, -1, `linear '${name}'`);
    const w = this.param(`${name}.weight`, [cin, o.out], o.init ?? 'xavier_uniform', { fanIn: cin, fanOut: o.out });
    const shape = [...x.shape.slice(0, -1), o.out];
    const y = this.op('MatMul', [x.name, w], shape, {}, name);
    return (o.bias ?? true) ? this.op('Add', [y.name, this.param(`${name}.bias`, [o.out], 'zeros')], shape, {}, name) : y;
  }

  relu(x: Value): Value {
    return this.op('Relu', [x.name], x.shape);
  }

  /**
   * Exact GELU in its Erf form, 0.5·x·(1 + erf(x/√2)), so it runs at opset 17 (Gelu is opset 20).
   * Emitted in the order PyTorch exports it, which onnxruntime's GeluFusion recognises.
   */
  gelu(x: Value): Value {
    const s = this.qualify('gelu');
    const e = this.op('Erf', [this.op('Div', [x.name, this.scalar(Math.SQRT2)], x.shape, {}, s).name], x.shape, {}, s);
    const onePlus = this.op('Add', [e.name, this.scalar(1)], x.shape, {}, s);
    return this.op('Mul', [this.op('Mul', [x.name, onePlus.name], x.shape, {}, s).name, this.scalar(0.5)], x.shape, {}, s);
  }

  maxPool(x: Value, o: PoolOptions): Value {
    return this.pool('MaxPool', x, o, {});
  }

  /** Average pooling; padded zeros count in the mean, as PyTorch's default `count_include_pad=True`. */
  avgPool(x: Value, o: PoolOptions): Value {
    return this.pool('AveragePool', x, o, { count_include_pad: 1 });
  }

  /** Mean over H and W: [N, C, H, W] → [N, C, 1, 1]. */
  globalAvgPool(x: Value): Value {
    const [n, c] = this.expectRank(x, 4, '[N, C, H, W]', 'globalAvgPool');
    return this.op('GlobalAveragePool', [x.name], [n!, c!, 1, 1]);
  }

  /** Collapse axes from `axis` on: [N, C, H, W] → [N, C·H·W] with the default axis 1. */
  flatten(x: Value, axis = 1): Value {
    const head = x.shape.slice(0, axis), tail = x.shape.slice(axis);
    const inner = tail.every((d) => typeof d === 'number') ? (tail as number[]).reduce((a, b) => a * b, 1) : '?';
    const outer = head.length === 1 ? head[0]! : head.every((d) => typeof d === 'number') ? (head as number[]).reduce((a, b) => a * b, 1) : '?';
    return this.op('Flatten', [x.name], [outer, inner], { axis });
  }

  /** Residual add of two values of the same shape. */
  add(a: Value, b: Value): Value {
    const same = a.shape.length === b.shape.length && a.shape.every((d, i) => d === b.shape[i]);
    if (!same) throw new NetError(`add: '${a.name}' has shape ${formatShape([...a.shape])} but '${b.name}' has ${formatShape([...b.shape])}; a residual needs equal shapes (use a 1×1 projection)`);
    return this.op('Add', [a.name, b.name], a.shape);
  }

  /**
   * Dropout with rate `p`: a `Dropout` node with no training_mode input, which is the identity in
   * onnxruntime. refit compiles training steps with dropout off for now (the gradient passes
   * straight through), so the node only records where dropout belongs. p = 0 emits nothing.
   */
  dropout(x: Value, p: number): Value {
    if (!(p >= 0 && p < 1)) throw new NetError(`dropout rate must be in [0, 1), got ${p}`);
    return p === 0 ? x : this.op('Dropout', [x.name, this.scalar(p)], x.shape);
  }

  /**
   * Patch embedding: a Conv with kernel = stride = patch, then flatten to tokens,
   * [N, C, H, W] → [N, (H/patch)·(W/patch), dim]. Parameters `<name>.weight`, `<name>.bias`.
   */
  patchEmbed(x: Value, o: { name: string; patch: number; dim: number; init?: InitKind }): Value {
    const [, , h, w] = this.expectRank(x, 4, '[N, C, H, W]', `patchEmbed '${o.name}'`);
    if (typeof h !== 'number' || typeof w !== 'number' || h % o.patch !== 0 || w % o.patch !== 0) {
      throw new NetError(`patchEmbed '${this.qualify(o.name)}': image size ${h}×${w} must be static and divisible by patch ${o.patch}`);
    }
    const y = this.conv2d(x, { name: o.name, out: o.dim, kernel: o.patch, stride: o.patch, init: o.init ?? 'xavier_uniform' });
    const tokens = (h / o.patch) * (w / o.patch);
    const scope = this.qualify(o.name);
    const flat = this.op('Reshape', [y.name, this.ints([0, o.dim, tokens])], [x.shape[0]!, o.dim, tokens], {}, scope);
    return this.op('Transpose', [flat.name], [x.shape[0]!, tokens, o.dim], { perm: [0, 2, 1] }, scope);
  }

  /** Learned positional embedding `<name>` [1, T, D] (truncated normal, std 0.02), added to [N, T, D] tokens. */
  posEmbed(x: Value, o: { name: string }): Value {
    const name = this.qualify(o.name);
    const [, t, d] = this.expectRank(x, 3, '[N, T, D]', `posEmbed '${name}'`);
    const tokens = this.staticDim(x, 1, `posEmbed '${name}'`), dim = this.staticDim(x, 2, `posEmbed '${name}'`);
    const p = this.param(name, [1, tokens, dim], 'trunc_normal');
    return this.op('Add', [x.name, p], [x.shape[0]!, t!, d!], {}, name);
  }

  /**
   * Prepend a learned class token `<name>` [1, 1, D] to [N, T, D] tokens → [N, T+1, D]. The token
   * is broadcast to the batch with Shape/Slice/Concat/Expand, so the batch stays dynamic.
   */
  classToken(x: Value, o: { name: string }): Value {
    const name = this.qualify(o.name);
    this.expectRank(x, 3, '[N, T, D]', `classToken '${name}'`);
    const t = x.shape[1]!, d = this.staticDim(x, 2, `classToken '${name}'`);
    const tok = this.param(name, [1, 1, d], 'trunc_normal');
    const batch = this.op('Slice', [this.op('Shape', [x.name], [3], {}, name).name, this.ints([0]), this.ints([1])], [1], {}, name);
    const target = this.op('Concat', [batch.name, this.ints([1, d])], [3], { axis: 0 }, name);
    const expanded = this.op('Expand', [tok, target.name], [x.shape[0]!, 1, d], {}, name);
    return this.op('Concat', [expanded.name, x.name], [x.shape[0]!, typeof t === 'number' ? t + 1 : '?', d], { axis: 1 }, name);
  }

  /** Token `index` of [N, T, D] → [N, D] (e.g. the class token at 0). */
  takeToken(x: Value, index = 0): Value {
    const [n, , d] = this.expectRank(x, 3, '[N, T, D]', 'takeToken');
    return this.op('Gather', [x.name, this.constant({ dtype: 'int64', dims: [], data: new BigInt64Array([BigInt(index)]) })], [n!, d!], { axis: 1 });
  }

  /** Mean over the tokens of [N, T, D] → [N, D]. */
  meanTokens(x: Value): Value {
    const [n, , d] = this.expectRank(x, 3, '[N, T, D]', 'meanTokens');
    // ReduceMean takes its axes as an input from opset 18, as an attribute before.
    return this.opset >= 18
      ? this.op('ReduceMean', [x.name, this.ints([1])], [n!, d!], { keepdims: 0 })
      : this.op('ReduceMean', [x.name], [n!, d!], { axes: [1], keepdims: 0 });
  }

  /**
   * Multi-head self-attention on [N, T, D] with explicit `<name>.q`, `.k`, `.v`, `.out` linears.
   * See ./attention.ts for the ops it emits.
   */
  selfAttention(x: Value, o: AttentionOptions): Value {
    return selfAttention(this, x, o);
  }

  private pool(op: 'MaxPool' | 'AveragePool', x: Value, o: PoolOptions, extra: Record<string, number>): Value {
    const [n, c, h, w] = this.expectRank(x, 4, '[N, C, H, W]', op);
    const [kh, kw] = pair(o.kernel), [sh, sw] = pair(o.stride ?? o.kernel), [ph, pw] = pair(o.pad ?? 0);
    return this.op(op, [x.name], [n!, c!, windowOut(h!, kh, sh, ph), windowOut(w!, kw, sw, pw)], {
      kernel_shape: [kh, kw], strides: [sh, sw], pads: [ph, pw, ph, pw], ...extra,
    });
  }
}
