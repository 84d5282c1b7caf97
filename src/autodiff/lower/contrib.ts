// onnxruntime's com.microsoft fused ops, as its optimizer writes them into exported models,
// unfused into default-domain ops that have gradient rules. Semantics follow onnxruntime's
// docs/ContribOperators.md and its CPU kernels (checked against onnxruntime-node in
// test/autodiff/contrib-ops.test.ts).
import type { Graph, Node } from '../../onnx/ir.ts';
import { attrFloat, attrInt, attrInts } from '../../onnx/ir.ts';
import type { Emitter } from '../../onnx/emitter.ts';
import { f32, i64 } from '../../onnx/tensor.ts';
import { bind, constantValue, present, refuse, split, wanted } from './util.ts';
import { dequantizeNBits, nbitsLayout } from '../../onnx/nbits.ts';
import { gqaRefusal, lowerGqa } from './gqa.ts';
import { lowerRotary, rotaryRefusal } from './rotary.ts';

const MS = 'com.microsoft';

/**
 * com.microsoft fused ops unfused here. SimplifiedLayerNormalization (RMSNorm) is onnxruntime's
 * op in the default domain (it is not registered under com.microsoft). BiasAdd is left out: it
 * has no CPU kernel, so no CPU-runnable model holds it and no test could check an unfusing.
 */
export const CONTRIB_OPS = new Set([
  'Gelu', 'FastGelu', 'BiasGelu', 'QuickGelu', 'SkipLayerNormalization', 'SkipSimplifiedLayerNormalization', 'Attention',
  'FusedMatMul', 'FusedGemm', 'FusedConv', 'EmbedLayerNormalization', 'MatMulNBits', 'GroupQueryAttention', 'RotaryEmbedding',
  'MultiHeadAttention',
]);

/** Activations FusedConv / FusedGemm (and com.microsoft.nchwc Conv) carry, with how many float parameters each takes. */
export const FUSED_ACTIVATIONS: Record<string, number> = { Relu: 0, Tanh: 0, Sigmoid: 0, LeakyRelu: 1, HardSigmoid: 2, Clip: 2, HardSwish: 0 };

export function isContribLowerable(node: Node): boolean {
  // onnxruntime's RMSNorm and opset 23's standard one (same inputs and attributes) are default-domain ops
  if (node.opType === 'SimplifiedLayerNormalization' || node.opType === 'RMSNormalization') return node.domain === '' || node.domain === 'ai.onnx';
  return node.domain === MS && CONTRIB_OPS.has(node.opType);
}

/** Why this fused node cannot be unfused exactly, or undefined when it can. */
export function contribRefusal(node: Node, shapeOf?: (t: string) => number[]): string | undefined {
  const used = (i: number) => wanted(node, i);
  switch (node.opType) {
    case 'SkipLayerNormalization':
    case 'SkipSimplifiedLayerNormalization':
      if (used(1) || used(2)) return 'its mean / inv_std_var outputs are used (only output and input_skip_bias_sum are unfused)';
      return undefined;
    case 'SimplifiedLayerNormalization':
      if (used(1)) return 'its inv_std_var output is used';
      return undefined;
    case 'Attention': {
      if (present(node, 4)) return 'input past (a key/value cache) is not supported';
      if (present(node, 6)) return 'input past_sequence_length is not supported';
      if (used(1)) return 'output present (a key/value cache) is not supported';
      if (attrInt(node, 'do_rotary', 0) !== 0) return 'do_rotary=1 is not supported';
      if (attrInt(node, 'past_present_share_buffer', 0) !== 0) return 'past_present_share_buffer is not supported';
      if (present(node, 3) && shapeOf) {
        const m = shapeOf(node.inputs[3]!), x = shapeOf(node.inputs[0]!);
        const ok = (m.length === 1 && m[0] === x[0]) || m.length === 2 || m.length === 3;
        if (!ok) return `mask_index of shape [${m}] is not supported (only a raw mask [batch, total_seq] or [batch, seq, total_seq], or right-padding lengths [batch])`;
      }
      return undefined;
    }
    case 'MultiHeadAttention': {
      if (!shapeOf) return undefined;
      const ranks = [0, 1, 2].map((i) => (present(node, i) ? shapeOf(node.inputs[i]!).length : 0));
      if (ranks[0] !== 3 || ranks[1] !== 3 || ranks[2] !== 3) return `only separate [batch, sequence, hidden] query, key and value are supported (got ranks ${ranks.join(', ')}: packed or pre-projected forms are not)`;
      if (present(node, 4) && shapeOf(node.inputs[4]!).length !== 2) return 'only a key_padding_mask of [batch, key sequence] is supported';
      if ([6, 7].some((i) => present(node, i) && shapeOf(node.inputs[i]!)[2] !== 0)) return 'a non-empty past (a KV cache) is not supported: refit trains whole sequences (withoutKvCache)';
      if (node.inputs.slice(8).some(Boolean)) return 'inputs past_sequence_length and cache_indirection are not supported';
      if (used(3)) return 'output qk is not supported';
      if (attrInt(node, 'unidirectional', 0) !== 0 && shapeOf(node.inputs[0]!)[1] !== shapeOf(node.inputs[1]!)[1]) return 'unidirectional attention with a key sequence of another length is not supported';
      return undefined;
    }
    case 'EmbedLayerNormalization':
      if (used(2)) return 'its embedding_sum output is used';
      if (attrInt(node, 'mask_index_type', 1) !== 1 && used(1)) return 'mask_index_type other than 1 is not supported';
      return undefined;
    case 'FusedMatMul':
      return undefined;
    case 'GroupQueryAttention':
      return gqaRefusal(node, shapeOf);
    case 'RotaryEmbedding':
      return rotaryRefusal(node, shapeOf);
    case 'MatMulNBits': {
      const l = nbitsLayout(node);
      if (typeof l === 'string') return l;
      if (present(node, 4)) return 'input g_idx (act-order) is not supported';
      return undefined;
    }
    case 'FusedGemm':
    case 'FusedConv': {
      const act = node.attrs.activation?.value as string | undefined;
      if (act !== undefined && !(act in FUSED_ACTIVATIONS)) return `fused activation '${act}' is not supported (only ${Object.keys(FUSED_ACTIVATIONS).join(', ')})`;
      if (node.opType === 'FusedGemm' && act === 'Clip') return "fused activation 'Clip' is not supported in FusedGemm";
      return undefined;
    }
    default:
      return undefined;
  }
}

/** The activation a FusedConv / FusedGemm / nchwc Conv applies after its linear part. */
export function fusedActivation(em: Emitter, node: Node, y: string): string {
  const act = node.attrs.activation?.value as string | undefined;
  if (act === undefined) return y;
  // FusedConv and nchwc Conv pack parameters in activation_params; FusedGemm in activation_alpha / _beta.
  const params = node.opType !== 'FusedGemm'
    ? (node.attrs.activation_params?.value as number[] | undefined) ?? []
    : [attrFloat(node, 'activation_alpha', act === 'LeakyRelu' ? 0.01 : 0.2), attrFloat(node, 'activation_beta', 0.5)];
  const f = (v: number) => ({ kind: 'float' as const, value: v });
  switch (act) {
    case 'Relu': case 'Tanh': case 'Sigmoid': return em.op(act, [y]);
    case 'LeakyRelu': return em.op('LeakyRelu', [y], { alpha: f(params[0] ?? 0.01) });
    case 'HardSigmoid': return em.op('HardSigmoid', [y], { alpha: f(params[0] ?? 0.2), beta: f(params[1] ?? 0.5) });
    case 'Clip': return em.op('Clip', [y, em.scalar(params[0]!), em.scalar(params[1]!)]);
    // onnxruntime fuses HardSwish into its blocked nchwc Conv (MobileNetV3 saved at level 'all').
    // Written as x·HardSigmoid(x), never the HardSwish op: onnxruntime inlines that op as a function
    // with names '_inlfunc_HardSwish_token_<n>_…' from a counter that restarts per session, and a
    // model it saved already holds such names, so a new HardSwish is rejected as a duplicate.
    case 'HardSwish': return em.mul(y, em.op('HardSigmoid', [y], { alpha: f(1 / 6), beta: f(0.5) }));
  }
  return refuse(node, `fused activation '${act}' is not supported`);
}

/** x · ½ · (1 + erf(x / √2)): exact GELU from default-domain ops present since opset 9. */
function gelu(em: Emitter, x: string): string {
  const e = em.op('Erf', [em.div(x, em.scalar(Math.SQRT2))]);
  return em.mul(em.mul(x, em.scalar(0.5)), em.add(e, em.scalar(1)));
}

/** Layer normalization over the last axis (LayerNormalization from opset 17, primitives before). */
function layerNorm(em: Emitter, x: string, gamma: string, beta: string | null, eps: number): string {
  if (em.opset >= 17) return em.op('LayerNormalization', beta ? [x, gamma, beta] : [x, gamma], { axis: -1, epsilon: { kind: 'float', value: eps } });
  const d = em.sub(x, em.reduce('ReduceMean', x, [-1], true));
  const v = em.reduce('ReduceMean', em.mul(d, d), [-1], true);
  const y = em.mul(em.div(d, em.op('Sqrt', [em.add(v, em.scalar(eps))])), gamma);
  return beta ? em.add(y, beta) : y;
}

/** RMS normalization over axes [axis, rank): x / √(mean(x²) + ε) · scale. */
function rmsNorm(em: Emitter, x: string, scale: string, rank: number, axis: number, eps: number): string {
  const a = axis < 0 ? axis + rank : axis;
  const axes = Array.from({ length: rank - a }, (_, k) => a + k);
  const ms = em.reduce('ReduceMean', em.mul(x, x), axes, true);
  return em.mul(em.div(x, em.op('Sqrt', [em.add(ms, em.scalar(eps))])), scale);
}

export function lowerContrib(node: Node, graph: Graph, em: Emitter, shapeOf: (t: string) => number[]): void {
  const why = contribRefusal(node, shapeOf);
  if (why) refuse(node, why);
  const inp = (i: number) => (present(node, i) ? node.inputs[i]! : null);
  const out = node.outputs[0]!;
  switch (node.opType) {
    case 'GroupQueryAttention':
      return lowerGqa(node, em, shapeOf);
    case 'RotaryEmbedding':
      return lowerRotary(node, em, shapeOf);
    case 'MatMulNBits': {
      // The frozen low-bit weight, dequantized once here (the ONNX reference's rule, ../../onnx/nbits.ts):
      // the step reads it as a float constant [K, N], and the input's gradient flows through it.
      const l = nbitsLayout(node) as Exclude<ReturnType<typeof nbitsLayout>, string>;
      const c = (i: number) => {
        const t = present(node, i) ? constantValue(graph, node.inputs[i]!) : undefined;
        if (present(node, i) && !t) refuse(node, `input ${i} ('${node.inputs[i]}') is computed in the graph; the quantized weight must be stored in the file`);
        return t;
      };
      const y = em.op('MatMul', [node.inputs[0]!, em.constant(f32([l.K, l.N], dequantizeNBits(l, c(1)!, c(2)!, c(3))), 'nbits_weight')]);
      return bind(em, present(node, 5) ? em.add(y, node.inputs[5]!) : y, out);
    }
    case 'Gelu':
      return bind(em, gelu(em, node.inputs[0]!), out);
    case 'BiasGelu':
      return bind(em, gelu(em, em.add(node.inputs[0]!, node.inputs[1]!)), out);
    case 'FastGelu': {
      // onnxruntime's form: x · ½ · (1 + tanh(x · (√(2/π) + 0.044715·√(2/π) · x²))).
      const b = inp(1);
      const x = b ? em.add(node.inputs[0]!, b) : node.inputs[0]!;
      const alpha = Math.sqrt(2 / Math.PI), beta = 0.044715 * alpha;
      const inner = em.mul(x, em.add(em.mul(em.mul(x, x), em.scalar(beta)), em.scalar(alpha)));
      return bind(em, em.mul(em.mul(x, em.scalar(0.5)), em.add(em.op('Tanh', [inner]), em.scalar(1))), out);
    }
    case 'QuickGelu': {
      const x = node.inputs[0]!;
      const alpha = attrFloat(node, 'alpha', 1.702);
      return bind(em, em.mul(x, em.op('Sigmoid', [em.mul(x, em.scalar(alpha))])), out);
    }
    case 'SkipLayerNormalization':
    case 'SkipSimplifiedLayerNormalization': {
      const simplified = node.opType === 'SkipSimplifiedLayerNormalization';
      const eps = attrFloat(node, 'epsilon', 1e-12);
      let s = em.add(node.inputs[0]!, node.inputs[1]!);
      const bias = inp(simplified ? 3 : 4);
      if (bias) s = em.add(s, bias);
      const y = simplified
        ? rmsNorm(em, s, node.inputs[2]!, shapeOf(node.inputs[0]!).length, -1, eps)
        : layerNorm(em, s, node.inputs[2]!, inp(3), eps);
      if (wanted(node, 0)) bind(em, y, out);
      if (wanted(node, 3)) bind(em, s, node.outputs[3]!);
      return;
    }
    case 'SimplifiedLayerNormalization':
    case 'RMSNormalization': {
      const x = node.inputs[0]!;
      return bind(em, rmsNorm(em, x, node.inputs[1]!, shapeOf(x).length, attrInt(node, 'axis', -1), attrFloat(node, 'epsilon', 1e-5)), out);
    }
    case 'Attention':
      return bind(em, attention(node, em, shapeOf), out);
    case 'MultiHeadAttention':
      return multiHeadAttention(node, em, shapeOf);
    case 'EmbedLayerNormalization': {
      // LayerNorm(word[input_ids] + position[position_ids or 0..S-1] + segment[segment_ids]);
      // mask_index is the per-row count of the mask (int32; zeros without a mask, as onnxruntime writes).
      const [ids, seg, word, pos, segEmb, gamma, beta] = node.inputs as string[];
      const [Bn, S] = shapeOf(ids!) as [number, number];
      let e = em.op('Gather', [word!, ids!], { axis: 0 });
      const positions = inp(8) ?? em.constant(i64([1, S], Array.from({ length: S }, (_, j) => j)), 'positions');
      e = em.add(e, em.op('Gather', [pos!, positions], { axis: 0 }));
      if (seg && segEmb) e = em.add(e, em.op('Gather', [segEmb, seg], { axis: 0 }));
      bind(em, layerNorm(em, e, gamma!, beta || null, attrFloat(node, 'epsilon', 1e-12)), out);
      if (wanted(node, 1)) {
        const count = inp(7)
          ? em.reduce('ReduceSum', em.op('Cast', [inp(7)!], { to: 6 }), [1], false)
          : em.constant({ dtype: 'int32', dims: [Bn], data: new Int32Array(Bn) }, 'mask_index'); // onnxruntime writes zeros without a mask
        bind(em, count, node.outputs[1]!);
      }
      return;
    }
    case 'FusedMatMul': {
      // alpha · op(A) · op(B). transBatchA/B first move axis 0 behind the batch axes (perm
      // [1, …, r−2, 0, r−1]): onnxruntime's MatmulTransposeFusion folds a Transpose such as
      // nn.MultiheadAttention's [L, N·H, E] → [N·H, L, E] into it, and its kernel then takes the rows
      // from axis 0 (matmul_helper's leading axis; it wants both inputs of one rank ≥ 3 then).
      // transA/B transpose the last two axes after that.
      const t = (x: string, batch: boolean, last: boolean) => {
        const r = shapeOf(x).length;
        if (batch && r > 2) x = em.transpose(x, [...Array.from({ length: r - 2 }, (_, k) => k + 1), 0, r - 1]);
        return last ? em.transpose(x, [...Array.from({ length: r - 2 }, (_, k) => k), r - 1, r - 2]) : x;
      };
      const on = (a: string) => attrInt(node, a, 0) !== 0;
      const y = em.op('MatMul', [t(node.inputs[0]!, on('transBatchA'), on('transA')), t(node.inputs[1]!, on('transBatchB'), on('transB'))]);
      const alpha = attrFloat(node, 'alpha', 1);
      return bind(em, alpha === 1 ? y : em.mul(y, em.scalar(alpha)), out);
    }
    case 'FusedGemm': {
      const attrs = Object.fromEntries(['alpha', 'beta', 'transA', 'transB'].filter((k) => node.attrs[k]).map((k) => [k, node.attrs[k]!]));
      return bind(em, fusedActivation(em, node, em.op('Gemm', node.inputs.filter(Boolean), attrs)), out);
    }
    case 'FusedConv': {
      const attrs = Object.fromEntries(Object.entries(node.attrs).filter(([k]) => k !== 'activation' && k !== 'activation_params'));
      let y = em.op('Conv', node.inputs.slice(0, 3).filter((x, i) => i < 2 || x), attrs);
      if (inp(3)) y = em.add(y, node.inputs[3]!); // the fused residual sum Z is added before the activation
      return bind(em, fusedActivation(em, node, y), out);
    }
  }
  refuse(node, 'not a fused op refit unfuses');
}

/** com.microsoft.Attention without past state: packed QKV projection, scaled dot product, masks. */
/**
 * com.microsoft MultiHeadAttention (onnxruntime's optimizer writes it for encoder-decoder and
 * cross-attention blocks), for separate [B, S, D] query and [B, L, D] key / value: the packed bias
 * [q | k | v] added, softmax(scale · q·kᵀ + masks) · v per head; a key_padding_mask [B, L] and
 * unidirectional set masked scores to mask_filter_value's offset, as the kernel does; attention_bias
 * is added. present_key / present_value, when used, are the heads of k and v ([B, N, L, dh]).
 */
function multiHeadAttention(node: Node, em: Emitter, shapeOf: (t: string) => number[]): void {
  const [q0, k0, v0] = node.inputs as [string, string, string];
  const [B, S, Dq] = shapeOf(q0) as [number, number, number];
  const L = shapeOf(k0)[1]!, Dv = shapeOf(v0)[2]!;
  const N = attrInt(node, 'num_heads');
  if (!N || Dq % N || Dv % N) refuse(node, `num_heads ${N} does not divide the hidden sizes ${Dq} and ${Dv}`);
  const dh = Dq / N, dv = Dv / N;
  let q = q0, k = k0, v = v0;
  if (present(node, 3)) {
    const [bq, bk, bv] = split(em, node.inputs[3]!, [Dq, Dq, Dv], 0) as [string, string, string];
    q = em.add(q, bq); k = em.add(k, bk); v = em.add(v, bv);
  }
  const heads = (t: string, len: number, d: number) => em.transpose(em.reshape(t, [B, len, N, d]), [0, 2, 1, 3]);
  const qh = heads(q, S, dh), kh = heads(k, L, dh), vh = heads(v, L, dv); // [B, N, ·, d]
  let scores = em.mul(em.op('MatMul', [qh, em.transpose(kh, [0, 1, 3, 2])]), em.scalar(attrFloat(node, 'scale', 0) || 1 / Math.sqrt(dh))); // [B, N, S, L]
  const keep = present(node, 4) ? em.reshape(rawMaskKeep(em, node.inputs[4]!), [B, 1, 1, L]) : null;
  scores = masked(node, em, scores, keep, S, L);
  const ctx = em.op('MatMul', [em.op('Softmax', [scores], { axis: -1 }), vh]); // [B, N, S, dv]
  bind(em, em.reshape(em.transpose(ctx, [0, 2, 1, 3]), [B, S, Dv]), node.outputs[0]!);
  if (wanted(node, 1)) bind(em, kh, node.outputs[1]!);
  if (wanted(node, 2)) bind(em, vh, node.outputs[2]!);
}

/** A raw attention mask (nonzero: attend) as float 1/0. */
function rawMaskKeep(em: Emitter, mask: string): string {
  return em.op('Cast', [em.op('Greater', [em.op('Cast', [mask], { to: 7 }), em.constant(i64([], [0]), 'zero')])], { to: 1 });
}

/**
 * Attention scores [B, N, S, L] masked as onnxruntime's Attention and MultiHeadAttention kernels
 * mask them: where `keep` (float 1/0) or, with unidirectional, the causal triangle is 0, the score
 * is offset by mask_filter_value (not −∞: fully masked rows included); then the additive bias of
 * input 5 (relative_position_bias / attention_bias), if given.
 */
function masked(node: Node, em: Emitter, scores: string, keep: string | null, S: number, L: number): string {
  if (attrInt(node, 'unidirectional', 0) !== 0) {
    const tri = new Float32Array(S * L);
    for (let i = 0; i < S; i++) for (let j = 0; j <= i && j < L; j++) tri[i * L + j] = 1;
    const causal = em.constant(f32([S, L], tri), 'causal_keep');
    keep = keep ? em.mul(keep, causal) : causal;
  }
  if (keep) scores = em.add(scores, em.mul(em.sub(em.scalar(1), keep), em.scalar(attrFloat(node, 'mask_filter_value', -10000))));
  return present(node, 5) ? em.add(scores, node.inputs[5]!) : scores;
}

function attention(node: Node, em: Emitter, shapeOf: (t: string) => number[]): string {
  const [x, w] = node.inputs as [string, string];
  const [B, S] = shapeOf(x) as [number, number];
  const total = shapeOf(w)[1]!;
  const N = attrInt(node, 'num_heads');
  if (!N) refuse(node, 'attribute num_heads is missing');
  const sizes = attrInts(node, 'qkv_hidden_sizes') ?? [total / 3, total / 3, total / 3];
  const [hq, hk, hv] = sizes as [number, number, number];
  if (hq + hk + hv !== total || hq !== hk || hq % N || hv % N) refuse(node, `weights [${shapeOf(w)}] do not split into Q/K/V sizes [${sizes}] for ${N} heads`);
  const dh = hq / N, dv = hv / N;
  const scale = attrFloat(node, 'scale', 1 / Math.sqrt(dh));
  let qkv = em.op('MatMul', [x, w]);
  if (present(node, 2)) qkv = em.add(qkv, node.inputs[2]!);
  const [q, k, v] = split(em, qkv, [hq, hk, hv], 2) as [string, string, string];
  const heads = (t: string, d: number, perm: number[]) => em.transpose(em.reshape(t, [B, S, N, d]), perm);
  const qh = heads(q, dh, [0, 2, 1, 3]); // [B, N, S, dh]
  const kT = heads(k, dh, [0, 2, 3, 1]); // [B, N, dh, S]
  const vh = heads(v, dv, [0, 2, 1, 3]); // [B, N, S, dv]
  let scores = em.mul(em.op('MatMul', [qh, kT]), em.scalar(scale)); // [B, N, S, S]

  let keep: string | null = null; // float 1/0, broadcastable to [B, N, S, S]
  if (present(node, 3)) {
    const m = node.inputs[3]!;
    const md = shapeOf(m);
    if (md.length === 1) {
      // Right-padding lengths: key position j is kept when j < length[b].
      const pos = em.constant(i64([1, S], Array.from({ length: S }, (_, j) => j)), 'positions');
      const lens = em.unsqueeze(em.op('Cast', [m], { to: 7 }), [1]);
      keep = em.reshape(em.op('Cast', [em.op('Less', [pos, lens])], { to: 1 }), [B, 1, 1, S]);
    } else {
      keep = em.reshape(rawMaskKeep(em, m), md.length === 2 ? [B, 1, 1, md[1]!] : [B, 1, md[1]!, md[2]!]);
    }
  }
  scores = masked(node, em, scores, keep, S, S);
  const probs = em.op('Softmax', [scores], { axis: -1 });
  const ctx = em.op('MatMul', [probs, vh]); // [B, N, S, dv]
  return em.reshape(em.transpose(ctx, [0, 2, 1, 3]), [B, S, hv]);
}
