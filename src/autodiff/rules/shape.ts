// Ops that only move or relabel elements: the gradient is the inverse movement.
import { attrInts } from '../../onnx/ir.ts';
import { registerRules, type GradRule } from '../rule.ts';

/** Gradient reshaped back to the input's shape (Reshape, Flatten, Squeeze, Unsqueeze). */
const reshapeBack: GradRule = (ctx, node, [dY]) => [ctx.em.reshape(dY!, ctx.shape(node.inputs[0]!)), null];
const passThrough: GradRule = (_ctx, _node, [dY]) => [dY!];

registerRules({
  Identity: passThrough,
  Reshape: reshapeBack,
  Flatten: reshapeBack,
  Squeeze: reshapeBack,
  Unsqueeze: reshapeBack,
  /** Dropout at inference is the identity; refit compiles training steps with dropout off. */
  Dropout: passThrough,
  Transpose(ctx, node, [dY]) {
    const rank = ctx.shape(node.inputs[0]!).length;
    const perm = attrInts(node, 'perm', Array.from({ length: rank }, (_, i) => rank - 1 - i));
    const inv = new Array<number>(rank);
    perm.forEach((p, i) => { inv[p] = i; });
    return [ctx.em.transpose(dY!, inv)];
  },
  Cast(ctx, node, [dY]) {
    // Gradient flows only between float types; cast it back to the input's type.
    const from = ctx.dtype(node.inputs[0]!);
    const code = { float32: 1, float64: 11, float16: 10 }[from as 'float32'];
    if (!code) return [null];
    return [from === ctx.dtype(node.outputs[0]!) ? dY! : ctx.em.op('Cast', [dY!], { to: code })];
  },
  Expand(ctx, node, [dY]) {
    return [ctx.unbroadcast(dY!, ctx.shape(node.outputs[0]!), ctx.shape(node.inputs[0]!)), null];
  },
});
