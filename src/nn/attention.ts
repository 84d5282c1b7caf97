// Multi-head self-attention as plain ONNX ops (Vaswani et al. 2017, eq. 1; no fused Attention op,
// so it runs on any onnxruntime build and every op has a gradient rule):
//
//   q, k, v = x·Wq + bq, x·Wk + bk, x·Wv + bv            [N, T, D]
//   split heads: Reshape [N, T, H, D/H], Transpose → [N, H, T, D/H]  (k straight to [N, H, D/H, T])
//   A = Softmax(q·kᵀ / √(D/H)) over the keys             [N, H, T, T]
//   merge heads: Transpose(A·v) → [N, T, H, D/H], Reshape [N, T, D]; then x·Wo + bo
import type { Value } from './core.ts';
import { NetError } from './core.ts';
import type { NetBuilder } from './net-builder.ts';
import type { InitKind } from './init.ts';

export interface AttentionOptions {
  /** Scope of the four linears: `<name>.q`, `<name>.k`, `<name>.v`, `<name>.out`. */
  name: string;
  heads: number;
  /** Biases on the four linears. @default true */
  bias?: boolean;
  /** @default 'xavier_uniform' */
  init?: InitKind;
}

export function selfAttention(net: NetBuilder, x: Value, o: AttentionOptions): Value {
  return net.scope(o.name, () => {
    const where = `selfAttention '${net.qualify('')}'`;
    if (x.shape.length !== 3) throw new NetError(`${where} expects [N, T, D] tokens, got '${x.name}' with shape [${x.shape}]`);
    const [n, t, d] = x.shape as [string | number, string | number, string | number];
    if (typeof d !== 'number' || d % o.heads !== 0) throw new NetError(`${where}: width ${d} must be static and divisible by heads=${o.heads}`);
    const dh = d / o.heads;
    const proj = (v: Value, name: string) => net.linear(v, { name, out: d, bias: o.bias, init: o.init });
    // Reshape 0 copies the input's dim, so N and T stay dynamic.
    const heads = (v: Value, perm: number[]) => {
      const split = net.op('Reshape', [v.name, net.ints([0, 0, o.heads, dh])], [n, t, o.heads, dh]);
      return net.op('Transpose', [split.name], perm.map((p) => split.shape[p]!), { perm });
    };
    const q = heads(proj(x, 'q'), [0, 2, 1, 3]);
    const kT = heads(proj(x, 'k'), [0, 2, 3, 1]);
    const v = heads(proj(x, 'v'), [0, 2, 1, 3]);
    const scoreShape = [n, o.heads, t, t];
    const scores = net.op('Mul', [net.op('MatMul', [q.name, kT.name], scoreShape).name, net.scalar(1 / Math.sqrt(dh))], scoreShape);
    const attn = net.op('Softmax', [scores.name], scoreShape, { axis: -1 });
    const ctx = net.op('MatMul', [attn.name, v.name], [n, o.heads, t, dh]);
    const merged = net.op('Transpose', [ctx.name], [n, t, o.heads, dh], { perm: [0, 2, 1, 3] });
    return proj(net.op('Reshape', [merged.name, net.ints([0, 0, d])], [n, t, d]), 'out');
  });
}
