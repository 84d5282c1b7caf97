// com.microsoft's GroupQueryAttention (what onnxruntime-genai's model builder writes into
// Llama/Qwen/Phi decoders) as standard ops, for the form refit trains: a whole sequence with an
// empty KV cache (past length 0, the first prompt), so every position's keys are its own sequence's.
//   q, k, v from query/key/value (or query packed as [q | k | v]), heads split;
//   rotary (do_rotary; halves, or pairs when rotary_interleaved) on q and k at positions 0 … S−1 from cos_cache/sin_cache
//   rows, over the first 2·cos_cache.shape[1] channels of each head;
//   each of the kv_num_heads key/value heads shared by num_heads / kv_num_heads query heads;
//   softmax(scale · q·kᵀ) · v with a causal mask and keys past seqlens_k[b] (the row's last valid
//   position) masked; present_key / present_value = the rotated k and v.
// Checked against onnxruntime's kernel in test/autodiff/contrib-ops.test.ts.
import type { Node } from '../../onnx/ir.ts';
import { attrFloat, attrInt } from '../../onnx/ir.ts';
import type { Emitter } from '../../onnx/emitter.ts';
import { f32 } from '../../onnx/tensor.ts';
import { bind, present, repeatKvHeads, split, wanted } from './util.ts';
import { rotate } from './rotary.ts';

const INPUT = { query: 0, key: 1, value: 2, pastKey: 3, pastValue: 4, seqlensK: 5, totalLength: 6, cos: 7, sin: 8 } as const;

/** Why this GroupQueryAttention cannot be written as standard ops here, or undefined when it can. */
export function gqaRefusal(node: Node, shapeOf?: (t: string) => number[]): string | undefined {
  if (node.inputs.slice(9).some(Boolean)) return 'inputs position_ids, attention_bias and head_sink are not supported';
  if (attrInt(node, 'local_window_size', -1) !== -1) return 'local_window_size (sliding-window attention) is not supported';
  if (attrFloat(node, 'softcap', 0) !== 0) return 'softcap is not supported';
  if (attrInt(node, 'smooth_softmax', 0) !== 0) return 'smooth_softmax is not supported';
  if (!present(node, INPUT.seqlensK)) return 'input seqlens_k is required';
  if (shapeOf && present(node, INPUT.pastKey) && shapeOf(node.inputs[INPUT.pastKey]!)[2] !== 0) {
    return 'a non-empty past (a KV cache) is not supported: refit trains whole sequences (withoutKvCache)';
  }
  return undefined;
}

export function lowerGqa(node: Node, em: Emitter, shapeOf: (t: string) => number[]): void {
  const H = attrInt(node, 'num_heads', 0), KVH = attrInt(node, 'kv_num_heads', 0);
  const [B, S, width] = shapeOf(node.inputs[INPUT.query]!) as [number, number, number];
  const packed = !present(node, INPUT.key);
  const D = packed ? width / (H + 2 * KVH) : width / H;
  let q = node.inputs[INPUT.query]!, k: string, v: string;
  if (packed) [q, k, v] = split(em, q, [H * D, KVH * D, KVH * D], 2) as [string, string, string];
  else { k = node.inputs[INPUT.key]!; v = node.inputs[INPUT.value]!; }
  const heads = (x: string, n: number) => em.transpose(em.reshape(x, [B, S, n, D]), [0, 2, 1, 3]); // [B, n, S, D]
  q = heads(q, H); k = heads(k, KVH); v = heads(v, KVH);
  if (attrInt(node, 'do_rotary', 0) !== 0) {
    const half = shapeOf(node.inputs[INPUT.cos]!)[1]!;
    const rows = (c: string) => em.op('Slice', [c, em.ints([0]), em.ints([S]), em.ints([0])]); // positions 0 … S−1
    const cos = rows(node.inputs[INPUT.cos]!), sin = rows(node.inputs[INPUT.sin]!);
    const interleaved = attrInt(node, 'rotary_interleaved', 0) !== 0;
    q = rotate(em, q, [B, H, S], D, cos, sin, half, interleaved);
    k = rotate(em, k, [B, KVH, S], D, cos, sin, half, interleaved);
  }
  if (wanted(node, 1)) bind(em, k, node.outputs[1]!);
  if (wanted(node, 2)) bind(em, v, node.outputs[2]!);
  const repeat = (x: string) => repeatKvHeads(em, x, B, KVH, H, S, D);
  const scale = attrFloat(node, 'scale', 0) || 1 / Math.sqrt(D);
  const scores = em.mul(em.op('MatMul', [q, em.transpose(repeat(k), [0, 1, 3, 2])]), em.scalar(scale)); // [B, H, S, S]
  // key j is seen by query i when j ≤ i and j ≤ seqlens_k[b]
  const pos = em.op('Range', [em.constant({ dtype: 'int64', dims: [], data: new BigInt64Array([0n]) }), em.constant({ dtype: 'int64', dims: [], data: new BigInt64Array([BigInt(S)]) }), em.constant({ dtype: 'int64', dims: [], data: new BigInt64Array([1n]) })]);
  const causal = em.op('LessOrEqual', [em.unsqueeze(pos, [0]), em.unsqueeze(pos, [1])]); // [S(query), S(key)]
  const last = em.op('Cast', [node.inputs[INPUT.seqlensK]!], { to: 7 });
  const valid = em.op('LessOrEqual', [em.unsqueeze(pos, [0]), em.unsqueeze(last, [1])]); // [B, S(key)]
  const seen = em.op('And', [em.unsqueeze(causal, [0, 1]), em.unsqueeze(valid, [1, 2])]); // [B, 1, S, S]
  const masked = em.op('Where', [seen, scores, em.constant(f32([], [-3.4028234663852886e38]), 'gqa_masked')]);
  const out = em.op('MatMul', [em.op('Softmax', [masked], { axis: -1 }), repeat(v)]); // [B, H, S, D]
  bind(em, em.reshape(em.transpose(out, [0, 2, 1, 3]), [B, S, H * D]), node.outputs[0]!);
}
