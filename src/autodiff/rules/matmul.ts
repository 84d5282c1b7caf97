// MatMul (with batch broadcasting and 1-D operands) and Gemm (all transA/transB/alpha/beta forms).
import { attrFloat, attrInt } from '../../onnx/ir.ts';
import { registerRules, type GradContext } from '../rule.ts';
import { f32 } from '../../onnx/tensor.ts';

function swapLast2(rank: number): number[] {
  const p = Array.from({ length: rank }, (_, i) => i);
  [p[rank - 2], p[rank - 1]] = [p[rank - 1]!, p[rank - 2]!];
  return p;
}

function scaled(ctx: GradContext, x: string, s: number): string {
  return s === 1 ? x : ctx.em.mul(x, ctx.em.scalar(s));
}

registerRules({
  MatMul(ctx, node, [dY], needs) {
    const em = ctx.em;
    const [a, b] = node.inputs as [string, string];
    const sa = ctx.shape(a), sb = ctx.shape(b), sy = ctx.shape(node.outputs[0]!);
    // Promote 1-D operands to matrices as MatMul does, then undo at the end.
    let A = a, B = b, G = dY!, shA = sa, shB = sb, shY = sy;
    if (sa.length === 1) { A = em.unsqueeze(a, [0]); shA = [1, sa[0]!]; G = em.unsqueeze(G, [shY.length - (sb.length === 1 ? 0 : 1)]); shY = [...sy.slice(0, sy.length - (sb.length === 1 ? 0 : 1)), 1, ...(sb.length === 1 ? [] : [sy[sy.length - 1]!])]; }
    if (sb.length === 1) { B = em.unsqueeze(b, [1]); shB = [sb[0]!, 1]; G = em.unsqueeze(G, [shY.length]); shY = [...shY, 1]; }
    const K = shA[shA.length - 1]!, N = shB[shB.length - 1]!, M = shA[shA.length - 2]!;
    let dA: string | null = null, dB: string | null = null;
    if (needs[0]) {
      if (shB.length === 2) {
        // dA = dY @ B^T as one 2-D Gemm over all leading dims.
        const g2 = em.reshape(G, [-1, N]);
        dA = em.reshape(em.op('Gemm', [g2, B], { transB: 1 }), [...shY.slice(0, -1), K]);
        dA = ctx.unbroadcast(dA, [...shY.slice(0, -1), K], shA);
      } else {
        dA = em.op('MatMul', [G, em.transpose(B, swapLast2(shB.length))]);
        dA = ctx.unbroadcast(dA, [...shY.slice(0, -2), M, K], shA);
      }
      if (sa.length === 1) dA = em.reshape(dA, sa);
    }
    if (needs[1]) {
      if (shB.length === 2 && shY.slice(0, -1).includes(0)) {
        // No rows (an expert that got no token): a sum over nothing, which Gemm refuses to contract.
        dB = em.constant(f32([K, N], new Float32Array(K * N)), 'zero_grad');
      } else if (shB.length === 2) {
        // dB = sum over leading dims of A^T @ dY: one Gemm on the flattened rows.
        const a2 = em.reshape(A, [-1, K]);
        const g2 = em.reshape(G, [-1, N]);
        dB = em.op('Gemm', [a2, g2], { transA: 1 });
      } else {
        dB = em.op('MatMul', [em.transpose(A, swapLast2(shA.length)), G]);
        dB = ctx.unbroadcast(dB, [...shY.slice(0, -2), K, N], shB);
      }
      if (sb.length === 1) dB = em.reshape(dB, sb);
    }
    return [dA, dB];
  },

  Gemm(ctx, node, [dY], needs) {
    const em = ctx.em;
    const [a, b, c] = node.inputs as [string, string, string | undefined];
    const alpha = attrFloat(node, 'alpha', 1), beta = attrFloat(node, 'beta', 1);
    const tA = attrInt(node, 'transA', 0), tB = attrInt(node, 'transB', 0);
    const g = dY!;
    let dA: string | null = null, dB: string | null = null, dC: string | null = null;
    if (needs[0]) {
      dA = tA
        ? em.op('Gemm', [b, g], { transA: tB, transB: 1 })   // dA = B' dY^T
        : em.op('Gemm', [g, b], { transB: tB ? 0 : 1 });     // dA = dY B'^T
      dA = scaled(ctx, dA, alpha);
    }
    if (needs[1]) {
      dB = tB
        ? em.op('Gemm', [g, a], { transA: 1, transB: tA })   // dB = dY^T A'
        : em.op('Gemm', [a, g], { transA: tA ? 0 : 1 });     // dB = A'^T dY
      dB = scaled(ctx, dB, alpha);
    }
    if (c && needs[2]) dC = ctx.unbroadcast(scaled(ctx, g, beta), ctx.shape(node.outputs[0]!), ctx.shape(c));
    return [dA, dB, dC];
  },
});
