// The standard ONNX domain's attention ops (opset 23 and 24), written as ops with gradient rules:
// Attention (scaled dot-product attention with masks, a causal triangle, grouped-query heads, a
// KV cache and softcap) and RotaryEmbedding. PyTorch's exporter writes Attention for
// scaled_dot_product_attention at opset 23 and later. Semantics follow the ONNX reference
// implementation (onnx/reference/ops/op_attention.py, op_rotary_embedding.py) and are checked
// against onnxruntime's kernels in test/autodiff/onnx-attention.test.ts.
import type { Node } from '../../onnx/ir.ts';
import { attrFloat, attrInt, isDefaultDomain } from '../../onnx/ir.ts';
import type { Emitter } from '../../onnx/emitter.ts';
import { f32, type DType } from '../../onnx/tensor.ts';
import { bind, present, refuse, repeatKvHeads, wanted } from './util.ts';
import { rotate } from './rotary.ts';

export const ONNX_ATTENTION_OPS = new Set(['Attention', 'RotaryEmbedding']);

export const isOnnxAttentionLowerable = (node: Node) => isDefaultDomain(node) && ONNX_ATTENTION_OPS.has(node.opType);

/**
 * A masked score's additive bias: finite, so that a sum of two stays finite and a row with every
 * key masked is found (and zeroed, as the spec says) rather than turning into NaN; exp of it
 * underflows to exactly 0 as exp(−∞) does.
 */
const MASKED = -1e30;

/** Why this node cannot be written as standard ops here, or undefined when it can. */
export function onnxAttentionRefusal(node: Node, shapeOf?: (t: string) => number[]): string | undefined {
  if (node.opType === 'RotaryEmbedding') {
    if (!shapeOf) return undefined;
    const rank = shapeOf(node.inputs[0]!).length;
    if (rank !== 3 && rank !== 4) return `input of rank ${rank} is not supported (only [batch, sequence, hidden] or [batch, heads, sequence, head size])`;
    if (rank === 3 && attrInt(node, 'num_heads', 0) <= 0) return 'a 3-D input needs num_heads';
    return undefined;
  }
  if (present(node, 6)) return 'input nonpad_kv_seqlen (a static KV cache) is not supported';
  if (wanted(node, 3)) return 'output qk_matmul_output is not supported';
  if (attrInt(node, 'left_window_size', -1) >= 0 || attrInt(node, 'right_window_size', -1) >= 0) return 'sliding-window attention is not supported';
  if (present(node, 4) !== present(node, 5)) return 'past_key and past_value must be given together';
  if (!shapeOf) return undefined;
  const rank = shapeOf(node.inputs[0]!).length;
  if (rank !== 3 && rank !== 4) return `Q of rank ${rank} is not supported (only 3-D or 4-D)`;
  return undefined;
}

export function lowerOnnxAttention(node: Node, em: Emitter, shapeOf: (t: string) => number[], dtypeOf: (t: string) => DType | undefined): void {
  if (node.opType === 'RotaryEmbedding') return lowerOnnxRotary(node, em, shapeOf);
  const why = onnxAttentionRefusal(node, shapeOf);
  if (why) refuse(node, why);
  const [q0, k0, v0] = node.inputs as [string, string, string];
  const rank3 = shapeOf(q0).length === 3;
  const B = shapeOf(q0)[0]!;
  // [B, S, N·d] → [B, N, S, d]
  const heads = (t: string, n: number) => {
    if (!rank3) return t;
    const [, S, D] = shapeOf(t) as [number, number, number];
    if (D % n) refuse(node, `hidden size ${D} of '${t}' is not a multiple of ${n} heads`);
    return em.transpose(em.reshape(t, [B, S, n, D / n]), [0, 2, 1, 3]);
  };
  const q = heads(q0, attrInt(node, 'q_num_heads', 0));
  let k = heads(k0, attrInt(node, 'kv_num_heads', 0)), v = heads(v0, attrInt(node, 'kv_num_heads', 0));
  const dims = (t: string, n: number) => (rank3 ? [B, n, shapeOf(t)[1]!, shapeOf(t)[2]! / n] : shapeOf(t));
  const [, Hq, S, dq] = dims(q0, attrInt(node, 'q_num_heads', 0)) as [number, number, number, number];
  const [, Hkv, , dv] = dims(v0, attrInt(node, 'kv_num_heads', 0)) as [number, number, number, number];
  let P = 0; // the past's length: the causal frontier's offset
  if (present(node, 4)) {
    P = shapeOf(node.inputs[4]!)[2]!;
    k = em.op('Concat', [node.inputs[4]!, k], { axis: 2 });
    v = em.op('Concat', [node.inputs[5]!, v], { axis: 2 });
  }
  if (wanted(node, 1)) bind(em, k, node.outputs[1]!);
  if (wanted(node, 2)) bind(em, v, node.outputs[2]!);
  const L = P + (rank3 ? shapeOf(k0)[1]! : shapeOf(k0)[2]!);
  if (Hq !== Hkv) {
    if (Hq % Hkv) refuse(node, `${Hq} query heads are not a multiple of ${Hkv} key-value heads`);
    k = repeatKvHeads(em, k, B, Hkv, Hq, L, dq); // [h0, h0, h1, h1, …], as the spec repeats them
    v = repeatKvHeads(em, v, B, Hkv, Hq, L, dv);
  }
  let scores = em.mul(em.op('MatMul', [q, em.transpose(k, [0, 1, 3, 2])]), em.scalar(attrFloat(node, 'scale', 1 / Math.sqrt(dq)))); // [B, Hq, S, L]
  const softcap = attrFloat(node, 'softcap', 0);
  if (softcap > 0) scores = em.mul(em.op('Tanh', [em.div(scores, em.scalar(softcap))]), em.scalar(softcap));
  let bias: string | null = null;
  if (present(node, 3)) bias = maskBias(em, node.inputs[3]!, dtypeOf(node.inputs[3]!) === 'bool');
  if (attrInt(node, 'is_causal', 0) !== 0) {
    const tri = new Float32Array(S * L);
    for (let i = 0; i < S; i++) for (let j = 0; j < L; j++) tri[i * L + j] = j <= i + P ? 0 : MASKED;
    const causal = em.constant(f32([S, L], tri), 'causal_bias');
    bias = bias ? em.add(bias, causal) : causal;
  }
  if (bias) scores = em.add(scores, bias);
  let probs = em.op('Softmax', [scores], { axis: -1 });
  if (present(node, 3)) {
    // a query row that may attend no key gives 0, not a uniform average (the spec's fully-masked rows)
    const any = em.op('Greater', [em.reduce('ReduceMax', bias!, [-1], true), em.scalar(MASKED / 2)]);
    probs = em.mul(probs, em.op('Cast', [any], { to: 1 }));
  }
  const y = em.op('MatMul', [probs, v]); // [B, Hq, S, dv]
  bind(em, rank3 ? em.reshape(em.transpose(y, [0, 2, 1, 3]), [B, S, Hq * dv]) : y, node.outputs[0]!);
}

/** attn_mask as an additive bias: a float mask added (−∞ kept finite), a bool one 0 where True and MASKED where False. */
function maskBias(em: Emitter, mask: string, isBool: boolean): string {
  return isBool ? em.op('Where', [mask, em.scalar(0), em.scalar(MASKED)]) : em.op('Max', [mask, em.scalar(MASKED)]);
}

/**
 * RotaryEmbedding(input, cos_cache, sin_cache, position_ids?): input [B, N, S, H] or [B, S, N·H]
 * (num_heads N); cos/sin rows [max position, R/2] gathered by position_ids [B, S], or given as
 * [B, S, R/2] without them; the first R = rotary_embedding_dim (or H) channels of each head are
 * rotated in halves or (interleaved) pairs, the rest pass through: com.microsoft's rotation.
 */
function lowerOnnxRotary(node: Node, em: Emitter, shapeOf: (t: string) => number[]): void {
  const why = onnxAttentionRefusal(node, shapeOf);
  if (why) refuse(node, why);
  const [input, cosCache, sinCache, positionIds] = node.inputs as [string, string, string, string?];
  const dims = shapeOf(input);
  const cd = shapeOf(cosCache);
  const half = cd[cd.length - 1]!;
  const interleaved = attrInt(node, 'interleaved', 0) !== 0;
  let cos = cosCache, sin = sinCache; // [B, S, half]
  if (positionIds) {
    cos = em.op('Gather', [cosCache, positionIds], { axis: 0 });
    sin = em.op('Gather', [sinCache, positionIds], { axis: 0 });
  }
  if (dims.length === 4) {
    const c = em.unsqueeze(cos, [1]), s = em.unsqueeze(sin, [1]); // over the heads of [B, N, S, H]
    bind(em, rotate(em, input, dims.slice(0, 3), dims[3]!, c, s, half, interleaved), node.outputs[0]!);
    return;
  }
  const N = attrInt(node, 'num_heads', 0);
  const [Bn, S, D] = dims as [number, number, number];
  const x = em.reshape(input, [Bn, S, N, D / N]);
  const y = rotate(em, x, [Bn, S, N], D / N, em.unsqueeze(cos, [2]), em.unsqueeze(sin, [2]), half, interleaved);
  bind(em, em.reshape(y, dims), node.outputs[0]!);
}
