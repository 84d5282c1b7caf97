// Ops that only move or relabel elements: the gradient is the inverse movement.
import { attrInts, type Node } from '../../onnx/ir.ts';
import { registerRules, type GradRule, type GradContext } from '../rule.ts';

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
    return [castBack(ctx, node, dY!)];
  },
  // CastLike(x, like): x cast to like's type (PyTorch's dynamo exporter writes it for scalars);
  // like gives only a type, so no gradient reaches it.
  CastLike(ctx, node, [dY]) {
    return [castBack(ctx, node, dY!), null];
  },
  Expand(ctx, node, [dY]) {
    return [ctx.unbroadcast(dY!, ctx.shape(node.outputs[0]!), ctx.shape(node.inputs[0]!)), null];
  },
});

/** A cast's gradient: it flows only between float types, cast back to the input's type. */
function castBack(ctx: GradContext, node: Node, dY: string): string | null {
  const from = ctx.dtype(node.inputs[0]!);
  const code = { float32: 1, float64: 11, float16: 10 }[from as 'float32'];
  if (!code) return null;
  return from === ctx.dtype(node.outputs[0]!) ? dY : ctx.em.op('Cast', [dY], { to: code });
}
