// Reductions: ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceL1, ReduceL2, ReduceSumSquare,
// ReduceLogSum, ReduceLogSumExp and ReduceProd, in both axes forms (attribute before the op's opset change,
// input after: ReduceSum at 13, the others at 18), keepdims 0/1 and noop_with_empty_axes.
import { attrInt, attrInts, type Node } from '../../onnx/ir.ts';
import { ONNX_DTYPE, toNumbers } from '../../onnx/tensor.ts';
import { registerRules, type GradContext } from '../rule.ts';

/** The reduced axes, normalised to non-negative; empty axes mean all (unless noop_with_empty_axes). */
export function reducedAxes(ctx: GradContext, node: Node): number[] {
  const rank = ctx.shape(node.inputs[0]!).length;
  let axes = attrInts(node, 'axes');
  if (!axes && node.inputs[1]) {
    const t = ctx.constant(node.inputs[1]);
    if (!t) throw new Error(`${node.opType} node '${node.name}': axes input '${node.inputs[1]}' must be a constant (initializer or Constant) to differentiate`);
    axes = toNumbers(t);
  }
  if (!axes || axes.length === 0) return attrInt(node, 'noop_with_empty_axes', 0) ? [] : Array.from({ length: rank }, (_, i) => i);
  return axes.map((a) => {
    const n = a < 0 ? a + rank : a;
    if (n < 0 || n >= rank) throw new Error(`${node.opType} node '${node.name}': axis ${a} is out of range for input '${node.inputs[0]}' of rank ${rank}`);
    return n;
  });
}

/** The input's shape with the reduced axes set to 1 (the keepdims=1 output shape). */
function keptShape(ctx: GradContext, node: Node): number[] {
  const axes = reducedAxes(ctx, node);
  return ctx.shape(node.inputs[0]!).map((d, i) => (axes.includes(i) ? 1 : d));
}

/** A tensor of the output's shape (dY or Y) viewed with the reduced axes kept as 1, so it broadcasts over X. */
function kept(ctx: GradContext, node: Node, t: string): string {
  const keep = keptShape(ctx, node);
  const have = ctx.shape(node.outputs[0]!);
  return have.length === keep.length ? t : ctx.em.reshape(t, keep);
}

/** Broadcast a reduced gradient back over the input's shape. */
function expandBack(ctx: GradContext, node: Node, dY: string): string {
  return ctx.em.op('Expand', [kept(ctx, node, dY), ctx.em.ints(ctx.shape(node.inputs[0]!))]);
}

/** Any reduction op with keepdims=1 over `axes`, in the form the graph's opset expects. */
function reduceKeep(ctx: GradContext, op: string, x: string, axes: number[]): string {
  const em = ctx.em;
  if (axes.length === 0) return x;
  const asInput = op === 'ReduceSum' ? ctx.opset >= 13 : ctx.opset >= 18;
  return asInput ? em.op(op, [x, em.ints(axes)], { keepdims: 1 }) : em.op(op, [x], { axes, keepdims: 1 });
}

const floatCode = (ctx: GradContext, name: string) => ONNX_DTYPE[ctx.dtype(name)];

/**
 * ReduceMax / ReduceMin: the gradient goes to the elements equal to the result. Ties split it
 * evenly (each of k tied extrema gets dY/k), as torch.amax/amin do, so the gradients of a slice
 * always sum to dY. (torch.max(dim) with indices instead picks one element; ONNX has no index.)
 */
function extremumGrad(ctx: GradContext, node: Node, dY: string): string {
  const em = ctx.em;
  const x = node.inputs[0]!;
  const hit = em.op('Cast', [em.op('Equal', [x, kept(ctx, node, node.outputs[0]!)])], { to: floatCode(ctx, x) });
  const count = reduceKeep(ctx, 'ReduceSum', hit, reducedAxes(ctx, node));
  return em.mul(hit, em.div(kept(ctx, node, dY), count));
}

registerRules({
  ReduceSum(ctx, node, [dY]) {
    return [expandBack(ctx, node, dY!), null];
  },
  ReduceMean(ctx, node, [dY]) {
    const xShape = ctx.shape(node.inputs[0]!);
    const count = reducedAxes(ctx, node).reduce((p, a) => p * xShape[a]!, 1);
    return [expandBack(ctx, node, ctx.em.mul(dY!, ctx.em.scalar(1 / count))), null];
  },
  ReduceMax(ctx, node, [dY]) {
    return [extremumGrad(ctx, node, dY!), null];
  },
  ReduceMin(ctx, node, [dY]) {
    return [extremumGrad(ctx, node, dY!), null];
  },
  ReduceSumSquare(ctx, node, [dY]) {
    // d Σx² = 2x
    const em = ctx.em;
    return [em.mul(kept(ctx, node, dY!), em.mul(node.inputs[0]!, em.scalar(2))), null];
  },
  ReduceL2(ctx, node, [dY]) {
    // d √(Σx²) = x / y; where y = 0 (an all-zero slice) the gradient is 0, as in torch.norm.
    const em = ctx.em;
    const y = kept(ctx, node, node.outputs[0]!);
    const zero = em.op('Equal', [y, em.scalar(0)]);
    const safe = em.op('Where', [zero, em.scalar(1), y]);
    const g = em.op('Where', [zero, em.scalar(0), em.div(kept(ctx, node, dY!), safe)]);
    return [em.mul(g, node.inputs[0]!), null];
  },
  ReduceL1(ctx, node, [dY]) {
    // d Σ|x| = sign(x) (0 at 0, as torch)
    const em = ctx.em;
    return [em.mul(kept(ctx, node, dY!), em.op('Sign', [node.inputs[0]!])), null];
  },
  ReduceLogSum(ctx, node, [dY]) {
    // d log Σx = 1/Σx = e^(−y)
    const em = ctx.em;
    const g = em.mul(kept(ctx, node, dY!), em.op('Exp', [em.neg(kept(ctx, node, node.outputs[0]!))]));
    return [em.op('Expand', [g, em.ints(ctx.shape(node.inputs[0]!))]), null];
  },
  ReduceLogSumExp(ctx, node, [dY]) {
    // d log Σ eˣ = softmax over the reduced axes = exp(x − y)
    const em = ctx.em;
    const p = em.op('Exp', [em.sub(node.inputs[0]!, kept(ctx, node, node.outputs[0]!))]);
    return [em.mul(p, kept(ctx, node, dY!)), null];
  },
  ReduceProd(ctx, node, [dY]) {
    // d Πx / dx_i = product of the others, computed exactly even where x has zeros (no y/x):
    // with P = product of the slice's non-zero elements and z = its number of zeros,
    //   z = 0: P / x_i;   z = 1: P at the zero, 0 elsewhere;   z ≥ 2: 0 everywhere.
    const em = ctx.em;
    const x = node.inputs[0]!;
    const axes = reducedAxes(ctx, node);
    const isZero = em.op('Equal', [x, em.scalar(0)]);
    const nonZero = em.op('Where', [isZero, em.scalar(1), x]);
    const P = reduceKeep(ctx, 'ReduceProd', nonZero, axes);
    const z = reduceKeep(ctx, 'ReduceSum', em.op('Cast', [isZero], { to: floatCode(ctx, x) }), axes);
    const atZero = em.op('Where', [em.op('Equal', [z, em.scalar(1)]), P, em.scalar(0)]);
    const elsewhere = em.op('Where', [em.op('Equal', [z, em.scalar(0)]), em.div(P, nonZero), em.scalar(0)]);
    const local = em.op('Where', [isZero, atZero, elsewhere]);
    return [em.mul(local, kept(ctx, node, dY!)), null];
  },
});
