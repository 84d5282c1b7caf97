// Rotary position embeddings as standard ops: com.microsoft's RotaryEmbedding (what onnxruntime's
// transformer optimizer and onnxruntime-genai's model builder write into Llama/Phi/Qwen decoders),
// and the rotation GroupQueryAttention's do_rotary applies.
//
// RotaryEmbedding(input, position_ids, cos_cache, sin_cache), as onnxruntime's CPU kernel computes it:
//   input [B, S, N·H] (num_heads N, or H = 2·cos_cache.shape[1] when num_heads is 0) or [B, N, S, H];
//   position_ids [B, S], or [1] holding an offset (positions offset … offset + S − 1);
//   rows cos = cos_cache[position], sin = sin_cache[position], each R/2 wide, R the rotary dim
//   (rotary_embedding_dim, or H); of each head's first R channels,
//     halves (x1 | x2), interleaved 0: (x1·cos − x2·sin | x2·cos + x1·sin);
//     pairs (x[2i], x[2i+1]), interleaved 1: (x[2i]·cos_i − x[2i+1]·sin_i, x[2i+1]·cos_i + x[2i]·sin_i);
//   the other H − R channels pass through.
// Checked against onnxruntime's kernel in test/autodiff/contrib-ops.test.ts.
import type { Node } from '../../onnx/ir.ts';
import { attrFloat, attrInt } from '../../onnx/ir.ts';
import type { Emitter } from '../../onnx/emitter.ts';
import { bind, split } from './util.ts';

/** Why this RotaryEmbedding cannot be written as standard ops here, or undefined when it can. */
export function rotaryRefusal(node: Node, shapeOf?: (t: string) => number[]): string | undefined {
  if (attrInt(node, 'is_packed_batching', 0) !== 0) return 'is_packed_batching is not supported';
  if (attrFloat(node, 'scale', 1) !== 1) return 'a scale other than 1 is not supported';
  if (!shapeOf) return undefined;
  const rank = shapeOf(node.inputs[0]!).length;
  if (rank !== 3 && rank !== 4) return `input of rank ${rank} is not supported (only [batch, sequence, hidden] or [batch, heads, sequence, head size])`;
  return undefined;
}

/**
 * Rotate the first 2·`half` channels of the last axis of `x` (shape [...lead, width]) by the angles
 * whose cos and sin are `cos` and `sin` (broadcasting against [...lead, half]).
 */
export function rotate(em: Emitter, x: string, lead: number[], width: number, cos: string, sin: string, half: number, interleaved: boolean): string {
  const [rot, rest] = split(em, x, [2 * half, width - 2 * half].filter((n) => n > 0), -1) as [string, string?];
  let out: string;
  if (!interleaved) {
    const [x1, x2] = split(em, rot, [half, half], -1) as [string, string];
    out = em.op('Concat', [em.sub(em.mul(x1, cos), em.mul(x2, sin)), em.add(em.mul(x2, cos), em.mul(x1, sin))], { axis: -1 });
  } else {
    // the pairs (x[2i], x[2i+1]) on a last axis of 2
    const [a, b] = split(em, em.reshape(rot, [...lead, half, 2]), [1, 1], -1) as [string, string];
    const c = em.unsqueeze(cos, [-1]), s = em.unsqueeze(sin, [-1]);
    const r = em.op('Concat', [em.sub(em.mul(a, c), em.mul(b, s)), em.add(em.mul(b, c), em.mul(a, s))], { axis: -1 });
    out = em.reshape(r, [...lead, 2 * half]);
  }
  return rest ? em.op('Concat', [out, rest], { axis: -1 }) : out;
}

export function lowerRotary(node: Node, em: Emitter, shapeOf: (t: string) => number[]): void {
  const [input, positionIds, cosCache, sinCache] = node.inputs as [string, string, string, string];
  const dims = shapeOf(input);
  const half = shapeOf(cosCache)[1]!;
  const interleaved = attrInt(node, 'interleaved', 0) !== 0;
  const S = dims.length === 3 ? dims[1]! : dims[2]!;
  // Positions [B or 1, S]: the ids themselves, or offset + 0 … S − 1.
  let pos = positionIds;
  if (shapeOf(positionIds).length === 1) {
    const int = (v: number) => em.constant({ dtype: 'int64', dims: [], data: new BigInt64Array([BigInt(v)]) });
    const steps = em.op('Range', [int(0), int(S), int(1)]);
    pos = em.unsqueeze(em.add(steps, positionIds), [0]);
  }
  const rows = (cache: string) => em.op('Gather', [cache, pos], { axis: 0 }); // [B or 1, S, half]
  let cos = rows(cosCache), sin = rows(sinCache);
  if (dims.length === 4) {
    // [B, N, S, H]: the rows broadcast over the heads
    cos = em.unsqueeze(cos, [1]); sin = em.unsqueeze(sin, [1]);
    bind(em, rotate(em, input, dims.slice(0, 3), dims[3]!, cos, sin, half, interleaved), node.outputs[0]!);
    return;
  }
  // [B, S, N·H] → [B, S, N, H], rows broadcast over the heads
  const numHeads = attrInt(node, 'num_heads', 0);
  const H = numHeads > 0 ? dims[2]! / numHeads : 2 * half;
  const N = dims[2]! / H;
  const heads = em.reshape(input, [dims[0]!, S, N, H]);
  cos = em.unsqueeze(cos, [2]); sin = em.unsqueeze(sin, [2]);
  bind(em, em.reshape(rotate(em, heads, [dims[0]!, S, N], H, cos, sin, half, interleaved), dims), node.outputs[0]!);
}
