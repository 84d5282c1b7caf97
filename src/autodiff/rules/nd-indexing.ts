// GatherND and ScatterND (reduction none, add, mul): index tuples into the leading dims of the data;
// Compress, a GatherND of the positions its condition selects.
//
// GatherND's gradient adds dY back at the gathered positions (tuples may repeat): ScatterND
// with reduction 'add' from opset 16, before that a one-hot MatMul over the flattened
// positions. batch_dims > 0 is turned into batch_dims 0 by prepending each row's batch
// coordinates to its index tuples.
import { attrInt, attrString, type Node } from '../../onnx/ir.ts';
import { ONNX_DTYPE, i64, tensor, toNumbers, type DType } from '../../onnx/tensor.ts';
import { registerRules, type GradContext } from '../rule.ts';
import { scatterAddRows } from './indexing.ts';

const prod = (xs: readonly number[]) => xs.reduce((p, d) => p * d, 1);

function zeros(ctx: GradContext, dims: number[], dtype: DType): string {
  return ctx.em.op('ConstantOfShape', [ctx.em.ints(dims)], { value: tensor(dtype, [1], [0]) });
}

/**
 * Full index tuples (batch coordinates first, then the node's own, negatives wrapped) as int64
 * of shape idxDims[:-1] ++ [batch + k], so that batch_dims can be treated as 0.
 */
function fullIndices(ctx: GradContext, node: Node, x: string, idx: string, batch: number): { ind: string; depth: number; n: number } {
  const em = ctx.em;
  const xDims = ctx.shape(x), iDims = ctx.shape(idx);
  const k = iDims[iDims.length - 1]!;
  if (k + batch > xDims.length) throw new Error(`${node.opType} node '${node.name}': index tuples of length ${k} with batch_dims ${batch} exceed the rank ${xDims.length} of '${x}'`);
  const asI64 = ctx.dtype(idx) === 'int64' ? idx : em.op('Cast', [idx], { to: ONNX_DTYPE.int64 });
  // Mod with a positive divisor (fmod 0) wraps negative indices into [0, D).
  const dims = xDims.slice(batch, batch + k);
  const wrapped = em.op('Mod', [asI64, em.constant(i64([k], dims), 'index_dims')], { fmod: 0 });
  const n = prod(iDims.slice(0, -1));
  if (batch === 0) return { ind: wrapped, depth: k, n };
  // Batch coordinates: a constant [B1..Bb, 1.., b] grid expanded over the index dims in between.
  const B = xDims.slice(0, batch);
  const grid = new Array<number>(prod(B) * batch);
  for (let f = 0; f < prod(B); f++) {
    let r = f;
    for (let a = batch - 1; a >= 0; a--) { grid[f * batch + a] = r % B[a]!; r = Math.floor(r / B[a]!); }
  }
  const mid = iDims.length - 1 - batch;
  const coords = em.constant(i64([...B, ...Array(mid).fill(1), batch], grid), 'batch_coords');
  const expanded = em.op('Expand', [coords, em.ints([...iDims.slice(0, -1), batch])]);
  return { ind: em.op('Concat', [expanded, wrapped], { axis: -1 }), depth: batch + k, n };
}

/** zeros(xDims) with `upd` added at the `n` index tuples `ind` of length `depth` (tuples may repeat). */
function scatterAdd(ctx: GradContext, { ind, depth, n }: { ind: string; depth: number; n: number }, upd: string, xDims: number[], dtype: DType): string {
  const em = ctx.em;
  // Flat position p = Σ ind_j·stride_j into x viewed as [N, rest].
  const lead = xDims.slice(0, depth), rest = xDims.slice(depth);
  const strides = lead.map((_, j) => prod(lead.slice(j + 1)));
  const pos = em.reduce('ReduceSum', em.mul(em.reshape(ind, [n, depth]), em.constant(i64([depth], strides), 'strides')), [1], false);
  // Not one ScatterND with reduction 'add': onnxruntime loses sums over threads where tuples repeat (rules/indexing.ts).
  if (ctx.opset >= 16) {
    const rows = scatterAddRows(ctx, prod(lead), prod(rest), pos, em.reshape(upd, [n, prod(rest)]), dtype);
    return lead.length === 1 && rest.length === 1 ? rows : em.reshape(rows, xDims); // a Reshape at a graph output is a copy
  }
  // Before opset 16: dX = onehot(p)ᵀ · upd.
  const oh = em.op('OneHot', [pos, em.ints([prod(lead)]), em.constant(tensor(dtype, [2], [0, 1]), 'onehot_values')], { axis: 0 });
  return em.reshape(em.op('MatMul', [oh, em.reshape(upd, [n, prod(rest)])]), xDims);
}

registerRules({
  GatherND(ctx, node, [dY], needs) {
    if (!needs[0]) return [null, null];
    const [x, idx] = node.inputs as [string, string];
    const batch = attrInt(node, 'batch_dims', 0);
    return [scatterAdd(ctx, fullIndices(ctx, node, x, idx, batch), dY!, ctx.shape(x), ctx.dtype(x)), null];
  },

  /**
   * ScatterND(data, indices, updates), reduction 'none', 'add' or 'mul' (opset 16 attribute).
   * none: data's gradient is dY with the written positions zeroed, the updates' is dY gathered
   * there (with repeated index tuples the forward keeps an unspecified one; not modelled).
   * add: data's gradient is dY, the updates' is dY gathered.
   * mul, for constant index tuples that never repeat: data's gradient is dY times the scattered
   * factors, the updates' is dY·data gathered. 'max' and 'min' are refused.
   */
  ScatterND(ctx, node, [dY], needs) {
    const em = ctx.em;
    const [x, idx, upd] = node.inputs as [string, string, string];
    const reduction = attrString(node, 'reduction', 'none');
    const where = `ScatterND node '${node.name}'`;
    if (reduction !== 'none' && reduction !== 'add' && reduction !== 'mul') throw new Error(`${where}: reduction '${reduction}' has no gradient rule (only 'none', 'add' and 'mul')`);
    if (reduction === 'mul') {
      const c = ctx.constant(idx);
      if (!c) throw new Error(`${where}: reduction 'mul' is differentiated only for constant indices ('${idx}' is computed at run time)`);
      const k = c.dims[c.dims.length - 1]!, v = toNumbers(c), dims = ctx.shape(x);
      const seen = new Set<string>();
      for (let t = 0; t < v.length; t += k) {
        const key = v.slice(t, t + k).map((e, j) => (e < 0 ? e + dims[j]! : e)).join(',');
        if (seen.has(key)) throw new Error(`${where}: reduction 'mul' with the repeated index tuple [${key}] has no gradient rule`);
        seen.add(key);
      }
    }
    const out: (string | null)[] = [null, null, null];
    // ScatterND itself does not promise negative indices: wrap them for the gradient's ops.
    const ind = needs[0] || needs[2] ? fullIndices(ctx, node, x, idx, 0).ind : '';
    if (needs[0]) {
      if (reduction === 'add') out[0] = dY!;
      else if (reduction === 'none') out[0] = em.op('ScatterND', [dY!, ind, zeros(ctx, ctx.shape(upd), ctx.dtype(upd))]);
      else {
        const ones = em.op('ConstantOfShape', [em.ints(ctx.shape(x))], { value: tensor(ctx.dtype(x), [1], [1]) });
        out[0] = em.mul(dY!, em.op('ScatterND', [ones, ind, upd], { reduction: 'mul' }));
      }
    }
    if (needs[2]) out[2] = em.op('GatherND', [reduction === 'mul' ? em.mul(dY!, x) : dY!, ind]);
    return out;
  },
  Compress(ctx, node, [dY], needs) {
    // y = the slices of x (along `axis`, or of x flattened) where cond is true; each position is
    // taken at most once, so dX is dY scattered back into zeros at NonZero(cond).
    if (!needs[0]) return [null, null];
    const em = ctx.em;
    const [x, cond] = node.inputs as [string, string];
    const xDims = ctx.shape(x), dtype = ctx.dtype(x);
    const taken = em.transpose(em.op('NonZero', [cond]), [1, 0]); // [K, 1]
    const axisAttr = attrInt(node, 'axis');
    if (axisAttr === undefined) {
      const flat = em.op('ScatterND', [zeros(ctx, [prod(xDims)], dtype), taken, dY!]);
      return [em.reshape(flat, xDims), null];
    }
    const axis = axisAttr < 0 ? axisAttr + xDims.length : axisAttr;
    // the axis first, so the taken positions index the leading dim; then back
    const perm = [axis, ...xDims.keys()].filter((d, i) => i === 0 || d !== axis);
    const inv = perm.map((_, i) => perm.indexOf(i));
    const moved = em.op('ScatterND', [zeros(ctx, perm.map((d) => xDims[d]!), dtype), taken, em.transpose(dY!, perm)]);
    return [em.transpose(moved, inv), null];
  },
});
