// Reductions: ReduceSum and ReduceMean (axes as attribute before their opset change, as input after).
import { attrInt, attrInts, type Node } from '../../onnx/ir.ts';
import { toNumbers } from '../../onnx/tensor.ts';
import { registerRules, type GradContext } from '../rule.ts';

/** The reduced axes, normalised to non-negative; empty axes mean all (unless noop_with_empty_axes). */
export function reducedAxes(ctx: GradContext, node: Node): number[] {
  const rank = ctx.shape(node.inputs[0]!).length;
  let axes = attrInts(node, 'axes');
  if (!axes && node.inputs[1]) {
    const t = ctx.constant(node.inputs[1]);
    if (!t) throw new Error(`axes input '${node.inputs[1]}' must be a constant for differentiation`);
    axes = toNumbers(t);
  }
  if (!axes || axes.length === 0) return attrInt(node, 'noop_with_empty_axes', 0) ? [] : Array.from({ length: rank }, (_, i) => i);
  return axes.map((a) => (a < 0 ? a + rank : a));
}

/** Broadcast a reduced gradient back over the input's shape. */
function expandBack(ctx: GradContext, node: Node, dY: string): string {
  const em = ctx.em;
  const xShape = ctx.shape(node.inputs[0]!);
  const axes = reducedAxes(ctx, node);
  const keep = xShape.map((d, i) => (axes.includes(i) ? 1 : d));
  const g = em.reshape(dY, keep);
  return em.op('Expand', [g, em.ints(xShape)]);
}

registerRules({
  ReduceSum(ctx, node, [dY]) {
    return [expandBack(ctx, node, dY!)];
  },
  ReduceMean(ctx, node, [dY]) {
    const xShape = ctx.shape(node.inputs[0]!);
    const count = reducedAxes(ctx, node).reduce((p, a) => p * xShape[a]!, 1);
    return [expandBack(ctx, node, ctx.em.mul(dY!, ctx.em.scalar(1 / count)))];
  },
});
