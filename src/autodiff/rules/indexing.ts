// Ops that select, join or repeat elements: Concat, Split, Slice, Gather, GatherElements,
// ScatterElements, TopK, Pad (constant mode) and Tile. (Expand lives in shape.ts; GatherND and
// ScatterND in nd-indexing.ts.)
//
// Every gradient is a dense formulation: Slice/Pad/Reshape where the selection is regular,
// and an accumulating scatter (or a one-hot MatMul before opset 16) where indices may repeat.
import { attrInt, attrInts, attrString, type Node } from '../../onnx/ir.ts';
import { ONNX_DTYPE, toNumbers, tensor, i64, type DType } from '../../onnx/tensor.ts';
import { registerRules, type GradContext } from '../rule.ts';

const prod = (xs: readonly number[]) => xs.reduce((p, d) => p * d, 1);
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

function normAxis(node: Node, axis: number, rank: number, what = 'axis'): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new Error(`${node.opType} ${what} ${axis} is out of range for rank ${rank}`);
  return a;
}

/** The value of a constant input, or a precise error naming the op, node and tensor. */
function constInts(ctx: GradContext, node: Node, index: number, what: string): number[] | undefined {
  const name = node.inputs[index];
  if (!name) return undefined;
  const t = ctx.constant(name);
  if (!t) throw new Error(`${node.opType} input ${what} ('${name}') must be a constant (initializer or Constant) to differentiate`);
  return toNumbers(t);
}

/** Zeros of a static shape in the given dtype, built at run time (no large initializer). */
function zeros(ctx: GradContext, dims: number[], dtype: DType): string {
  return ctx.em.op('ConstantOfShape', [ctx.em.ints(dims)], { value: tensor(dtype, [1], [0]) });
}

/** Slice with static per-axis parameters (opset ≥ 10 input form). */
function slice(ctx: GradContext, x: string, starts: number[], ends: number[], axes: number[], steps?: number[]): string {
  const em = ctx.em;
  const ins = [x, em.ints(starts), em.ints(ends), em.ints(axes)];
  if (steps) ins.push(em.ints(steps));
  return em.op('Slice', ins);
}

/** Constant-mode Pad with per-axis begin/end pads (all non-negative), opset-aware. */
function padZeros(ctx: GradContext, x: string, begin: number[], end: number[]): string {
  if (begin.every((p) => p === 0) && end.every((p) => p === 0)) return x;
  const em = ctx.em;
  const pads = [...begin, ...end];
  return ctx.opset >= 11 ? em.op('Pad', [x, em.ints(pads)], { mode: 'constant' }) : em.op('Pad', [x], { mode: 'constant', pads });
}

/**
 * Gradient of "select along each axis the arithmetic sequence first + k·step, k < count"
 * (step > 0): spread each axis of g back with step−1 zeros between elements, then zero-pad
 * to the input's shape. Only Reshape, Pad and Slice: no scatter.
 */
function unslice(ctx: GradContext, g: string, gDims: number[], xDims: number[], first: number[], step: number[]): string {
  const em = ctx.em;
  const rank = xDims.length;
  let cur = g, dims = [...gDims];
  const strided = range(rank).filter((a) => step[a]! > 1 && gDims[a]! > 1);
  if (strided.length) {
    // [.., m, ..] → [.., m, 1, ..] → pad to [.., m, s, ..] → [.., m·s, ..]
    const split: number[] = [], padEnd: number[] = [];
    for (let a = 0; a < rank; a++) {
      split.push(dims[a]!); padEnd.push(0);
      if (strided.includes(a)) { split.push(1); padEnd.push(step[a]! - 1); }
    }
    cur = padZeros(ctx, em.reshape(cur, split), split.map(() => 0), padEnd);
    dims = dims.map((d, a) => (strided.includes(a) ? d * step[a]! : d));
    cur = em.reshape(cur, dims);
  }
  // The spread tail can run past the input's end by up to step−1: trim it.
  const over = range(rank).filter((a) => first[a]! + dims[a]! > xDims[a]!);
  if (over.length) {
    cur = slice(ctx, cur, over.map(() => 0), over.map((a) => xDims[a]! - first[a]!), over);
    for (const a of over) dims[a] = xDims[a]! - first[a]!;
  }
  return padZeros(ctx, cur, first, dims.map((d, a) => xDims[a]! - first[a]! - d));
}

/**
 * Accumulate rows of `g` (shape pre ++ idxDims ++ post) into zeros of shape pre ++ [D] ++ post
 * at the positions `idx` along `axis` (repeats add up). Opset ≥ 16: ScatterND with
 * reduction='add' (on an axis-first transpose when axis > 0); before: a one-hot MatMul.
 */
function scatterAddAlongAxis(ctx: GradContext, g: string, idx: string, xDims: number[], axis: number, dtype: DType): string {
  const em = ctx.em;
  const idxDims = ctx.shape(idx);
  const D = xDims[axis]!;
  const pre = xDims.slice(0, axis), post = xDims.slice(axis + 1);
  const K = prod(idxDims);
  // No index (an EmbeddingBag's empty bag): nothing to add, and onnxruntime's MatMul refuses to contract an empty axis.
  if (K === 0) return zeros(ctx, xDims, dtype);
  if (ctx.opset >= 16) {
    const gi = validIndices(ctx, idx, D, 'int64');
    const [P, Q] = [prod(pre), prod(post)];
    if (P === 1) {
      // no Reshape after it where the table is already [D, Q]: a graph output computed by a
      // Reshape is a copy in onnxruntime (154 MB more at peak for GPT-2's table)
      const rows = scatterAddRows(ctx, D, Q, idxDims.length === 1 ? gi : em.reshape(gi, [K]), idxDims.length === 1 && xDims.length === 2 ? g : em.reshape(g, [K, Q]), dtype);
      return xDims.length === 2 ? rows : em.reshape(rows, xDims);
    }
    const ind = em.op('Expand', [em.reshape(gi, [1, K, 1]), em.ints([P, K, Q])]);
    const s = em.op('ScatterElements', [zeros(ctx, [P, D, Q], dtype), ind, em.reshape(g, [P, K, Q])], { axis: 1, reduction: 'add' });
    return em.reshape(s, xDims);
  }
  // OneHot(idx) built transposed, [D, K] (it wraps negative indices itself); dX = onehot · g.
  // (Measured 2× faster than a [K, D] one-hot through Gemm transA=1.)
  const oh = em.op('OneHot', [em.reshape(asInt64(ctx, idx), [K]), em.ints([D]), em.constant(tensor(dtype, [2], [0, 1]), 'onehot_values')], { axis: 0 });
  const g3 = axis === 0 ? em.reshape(g, [K, prod(post)]) : em.reshape(g, [prod(pre), K, prod(post)]);
  return em.reshape(em.op('MatMul', [oh, g3]), xDims);
}

/**
 * A Slice whose starts the data decide (torchvision pastes each mask at its box): the output's
 * size is fixed for a compiled step (its shapes are), its place is not, so dX is dY padded by
 * pads computed at run time: before = the clamped start on each sliced axis, after = what is left.
 * Axes and steps must be constants, the steps 1.
 */
function sliceDxAtRunTime(ctx: GradContext, node: Node, dY: string, xDims: number[], yDims: number[]): string {
  const em = ctx.em, rank = xDims.length;
  const given = node.inputs[3] ? constInts(ctx, node, 3, 'axes')! : undefined;
  const steps = node.inputs[4] ? constInts(ctx, node, 4, 'steps')! : undefined;
  if (steps?.some((st) => st !== 1)) throw new Error(`Slice node '${node.name}': starts computed at run time with steps [${steps}]: only steps of 1 have a gradient rule`);
  const k = given?.length ?? ctx.shape(node.inputs[1]!)[0]!;
  const axes = (given ?? range(k)).map((a) => normAxis(node, a, rank));
  const dims = em.constant(i64([k], axes.map((a) => xDims[a]!)), 'slice_dims');
  let s = ctx.dtype(node.inputs[1]!) === 'int64' ? node.inputs[1]! : em.op('Cast', [node.inputs[1]!], { to: ONNX_DTYPE.int64 });
  s = em.op('Where', [em.op('Less', [s, em.constant(i64([], [0]), 'zero')]), em.add(s, dims), s]);
  s = em.op('Min', [em.op('Max', [s, em.constant(i64([], [0]), 'zero')]), dims]);
  const before = em.op('ScatterElements', [em.constant(i64([rank], range(rank).map(() => 0)), 'no_pads'), em.constant(i64([k], axes), 'slice_axes'), s], { axis: 0 });
  const after = em.sub(em.constant(i64([rank], xDims.map((d, a) => d - yDims[a]!)), 'slice_room'), before);
  return em.op('Pad', [dY, em.op('Concat', [before, after], { axis: 0 })]);
}

/**
 * zeros([D, R]) with row `upd[k]` added at row `idx[k]` (int64 in [0, D), repeats allowed).
 * Not one ScatterND with reduction 'add': onnxruntime's kernel splits the updates over threads and
 * loses sums where indices repeat (a token read twice; 2 threads, from about 2,000 rows of 768;
 * onnxruntime issue 18048; test/autodiff/scatter-add-threads.test.ts). The repeats are summed
 * first, into one row per distinct index (Unique, then ScatterElements, which adds in one pass, on
 * a table the size of the lookup), and those rows written once by a ScatterND without reduction.
 * GPT-2's table (50257 × 768, 1,024 tokens, bench/embedding-grad.ts): 370–383 ms a step and 937–941
 * MB at peak, against 360–371 ms and 920 MB for the single ScatterND add; one ScatterElements over
 * the whole table instead held a second table (1,085–1,097 MB).
 */
export function scatterAddRows(ctx: GradContext, D: number, R: number, idx: string, upd: string, dtype: DType): string {
  const em = ctx.em;
  const [distinct, , inverse] = em.emit('Unique', [idx], { sorted: 0 }, 4, 'rows'); // [U], the first index of each, [K]
  const sums = em.op('ScatterElements', [
    em.op('ConstantOfShape', [em.op('Concat', [em.op('Shape', [distinct!]), em.ints([R])], { axis: 0 })], { value: tensor(dtype, [1], [0]) }),
    em.op('Expand', [em.unsqueeze(inverse!, [1]), em.op('Shape', [upd])]),
    upd,
  ], { axis: 0, reduction: 'add' }); // [U, R]
  return em.op('ScatterND', [zeros(ctx, [D, R], dtype), em.unsqueeze(distinct!, [1]), sums]);
}

/**
 * Indices as int64 (int32 ones cast). Also before a OneHot with an int64 depth: onnxruntime's CPU
 * OneHot has no kernel for int32 indices beside an int64 depth and float values, and int32 ids are
 * what its EmbedLayerNormalization takes (an optimizer-fused BERT's embedding lookups).
 */
function asInt64(ctx: GradContext, idx: string): string {
  return ctx.dtype(idx) === 'int64' ? idx : ctx.em.op('Cast', [idx], { to: ONNX_DTYPE.int64 });
}

/**
 * Indices as `to` with negatives wrapped into [0, D): folded at compile time for constants,
 * else one Mod (fmod=0 takes the divisor's sign) — ScatterND does not promise negative indices.
 */
function validIndices(ctx: GradContext, idx: string, D: number, to: 'int64'): string {
  const em = ctx.em;
  const c = ctx.constant(idx);
  if (c) {
    const v = toNumbers(c);
    if (v.every((k) => k >= 0) && c.dtype === to) return idx;
    return em.constant(i64(c.dims, v.map((k) => (k < 0 ? k + D : k))), 'indices');
  }
  return em.op('Mod', [asInt64(ctx, idx), em.constant(i64([], [D]), 'dim')], { fmod: 0 });
}

registerRules({
  Concat(ctx, node, [dY], needs) {
    const em = ctx.em;
    const y = node.outputs[0]!;
    const yDims = ctx.shape(y);
    const axis = normAxis(node, attrInt(node, 'axis', 0), yDims.length);
    const sizes = node.inputs.map((x) => ctx.shape(x)[axis]!);
    const wanted = needs.filter(Boolean).length;
    if (wanted >= 2) {
      // One Split does all the copying.
      const parts = ctx.opset >= 13
        ? em.emit('Split', [dY!, em.ints(sizes)], { axis }, sizes.length, 'dConcat')
        : em.emit('Split', [dY!], { axis, split: sizes }, sizes.length, 'dConcat');
      return parts.map((p, i) => (needs[i] ? p : null));
    }
    let offset = 0;
    return node.inputs.map((_, i) => {
      const start = offset;
      offset += sizes[i]!;
      return needs[i] ? slice(ctx, dY!, [start], [start + sizes[i]!], [axis]) : null;
    });
  },

  /** Concatenate the output gradients, with zeros for outputs no gradient reached. */
  Split(ctx, node, dOut, needs) {
    if (!needs[0]) return [null];
    const x = node.inputs[0]!;
    const rank = ctx.shape(x).length;
    const axis = normAxis(node, attrInt(node, 'axis', 0), rank);
    const dtype = ctx.dtype(x);
    const parts = node.outputs.map((o, i) => dOut[i] ?? zeros(ctx, ctx.shape(o), dtype));
    const grad = parts.length === 1 ? parts[0]! : ctx.em.op('Concat', parts, { axis });
    return [grad, ...node.inputs.slice(1).map(() => null)];
  },

  /**
   * Any Slice: negative and clamped starts/ends, omitted axes, steps > 1 and negative
   * steps. Negative-step axes are reversed back first; then unslice() spreads and pads.
   */
  Slice(ctx, node, [dY], needs) {
    if (!needs[0]) return node.inputs.map(() => null);
    const x = node.inputs[0]!;
    const xDims = ctx.shape(x), yDims = ctx.shape(node.outputs[0]!);
    const rank = xDims.length;
    let starts: number[], axes: number[] | undefined, steps: number[] | undefined;
    if (ctx.opset >= 10 && !ctx.constant(node.inputs[1]!)) return [sliceDxAtRunTime(ctx, node, dY!, xDims, yDims), ...node.inputs.slice(1).map(() => null)];
    if (ctx.opset >= 10) {
      starts = constInts(ctx, node, 1, 'starts')!;
      axes = constInts(ctx, node, 3, 'axes');
      steps = constInts(ctx, node, 4, 'steps');
    } else {
      starts = attrInts(node, 'starts', []);
      axes = attrInts(node, 'axes');
    }
    axes ??= range(starts.length);
    steps ??= axes.map(() => 1);
    const dtype = ctx.dtype(x);
    if (prod(yDims) === 0) return [zeros(ctx, xDims, dtype), ...node.inputs.slice(1).map(() => null)];
    const first = range(rank).map(() => 0), step = range(rank).map(() => 1);
    const reversed: number[] = [];
    axes.forEach((rawAxis, k) => {
      const a = normAxis(node, rawAxis, rank);
      const D = xDims[a]!, st = steps![k]!;
      if (st === 0) throw new Error(`Slice node '${node.name}': step 0 on axis ${rawAxis}`);
      let s = starts[k]!;
      if (s < 0) s += D;
      s = st > 0 ? Math.min(Math.max(s, 0), D) : Math.min(Math.max(s, 0), D - 1);
      const m = yDims[a]!;
      if (st > 0) { first[a] = s; step[a] = st; } else { first[a] = s + (m - 1) * st; step[a] = -st; reversed.push(a); }
    });
    let g = dY!;
    if (reversed.length) g = slice(ctx, g, reversed.map((a) => yDims[a]! - 1), reversed.map((a) => -yDims[a]! - 1), reversed, reversed.map(() => -1));
    return [unslice(ctx, g, yDims, xDims, first, step), ...node.inputs.slice(1).map(() => null)];
  },

  OneHot(ctx, node, [dY], needs) {
    // y = off + (on − off)·hot: d/d(off) = Σ dY·(1 − hot), d/d(on) = Σ dY·hot; the indices and depth carry none.
    if (!needs[2]) return [null, null, null];
    const em = ctx.em;
    const [indices, depth, values] = node.inputs as [string, string, string];
    const dtype = ctx.dtype(values);
    const hot = em.op('OneHot', [indices, depth, em.constant(tensor(dtype, [2], [0, 1]), 'onehot_01')], node.attrs);
    const all = ctx.shape(node.outputs[0]!).map((_, i) => i);
    const on = em.reduce('ReduceSum', em.mul(dY!, hot), all, false);
    const off = em.sub(em.reduce('ReduceSum', dY!, all, false), on);
    return [null, null, em.op('Concat', [em.unsqueeze(off, [0]), em.unsqueeze(on, [0])], { axis: 0 })];
  },

  /** Embedding-style gradient: indices may repeat, so contributions are added, never overwritten. */
  Gather(ctx, node, [dY], needs) {
    if (!needs[0]) return [null, null];
    const [x, idx] = node.inputs as [string, string];
    const xDims = ctx.shape(x);
    const axis = normAxis(node, attrInt(node, 'axis', 0), xDims.length);
    const pad = axis === 0 ? ctx.paddingRow?.(x) : undefined;
    if (pad === undefined) return [scatterAddAlongAxis(ctx, dY!, idx, xDims, axis, ctx.dtype(x)), null];
    // PyTorch's padding_idx: the lookups of the padding row pass nothing back to it.
    const em = ctx.em, iDims = ctx.shape(idx);
    const isPad = em.op('Equal', [idx, em.constant(tensor(ctx.dtype(idx), [], [pad]), 'padding_row')]);
    const mask = em.unsqueeze(isPad, range(xDims.length - 1).map((i) => iDims.length + i));
    const kept = em.op('Where', [mask, em.constant(tensor(ctx.dtype(x), [], [0]), 'zero'), dY!]);
    return [scatterAddAlongAxis(ctx, kept, idx, xDims, axis, ctx.dtype(x)), null];
  },

  GatherElements(ctx, node, [dY], needs) {
    if (!needs[0]) return [null, null];
    const em = ctx.em;
    const [x, idx] = node.inputs as [string, string];
    const xDims = ctx.shape(x), iDims = ctx.shape(idx);
    const rank = xDims.length;
    const axis = normAxis(node, attrInt(node, 'axis', 0), rank);
    const dtype = ctx.dtype(x);
    if (ctx.opset >= 16) {
      // ScatterElements accepts negative indices in [−D, D) and any index shape ≤ data's.
      return [em.op('ScatterElements', [zeros(ctx, xDims, dtype), idx, dY!], { axis, reduction: 'add' }), null];
    }
    // One-hot along a new axis after `axis`: [.., n, D, ..] · dY[.., n, 1, ..], summed over n.
    const oh = em.op('OneHot', [asInt64(ctx, idx), em.ints([xDims[axis]!]), em.constant(tensor(dtype, [2], [0, 1]), 'onehot_values')], { axis: axis + 1 });
    const summed = em.reduce('ReduceSum', em.mul(oh, em.unsqueeze(dY!, [axis + 1])), [axis], false);
    // The index tensor may be smaller than the data on the other axes: pad those with zeros.
    const got = iDims.map((d, a) => (a === axis ? xDims[a]! : d));
    return [padZeros(ctx, summed, range(rank).map(() => 0), got.map((d, a) => xDims[a]! - d)), null];
  },

  /**
   * ScatterElements(data, indices, updates), reduction 'none' or 'add'. none: data's gradient
   * is dY with the written positions zeroed, the updates' is dY gathered there (with repeated
   * indices the forward keeps an unspecified one; not modelled). add: data's gradient is dY.
   */
  ScatterElements(ctx, node, [dY], needs) {
    const em = ctx.em;
    const [x, idx, upd] = node.inputs as [string, string, string];
    const axis = normAxis(node, attrInt(node, 'axis', 0), ctx.shape(x).length);
    const reduction = attrString(node, 'reduction', 'none');
    if (reduction !== 'none' && reduction !== 'add') throw new Error(`ScatterElements node '${node.name}': reduction '${reduction}' has no gradient rule (only 'none' and 'add')`);
    const out: (string | null)[] = [null, null, null];
    if (needs[0]) out[0] = reduction === 'add' ? dY! : em.op('ScatterElements', [dY!, idx, zeros(ctx, ctx.shape(upd), ctx.dtype(upd))], { axis });
    if (needs[2]) out[2] = em.op('GatherElements', [dY!, idx], { axis });
    return out;
  },

  /** TopK values: dY goes back to where each value came from (indices never repeat within a slice). */
  TopK(ctx, node, [dValues], needs) {
    if (!needs[0] || !dValues) return [null, null];
    const x = node.inputs[0]!;
    const xDims = ctx.shape(x);
    const axis = normAxis(node, attrInt(node, 'axis', -1), xDims.length);
    return [ctx.em.op('ScatterElements', [zeros(ctx, xDims, ctx.dtype(x)), node.outputs[1]!, dValues], { axis }), null];
  },

  /**
   * Constant-mode Pad, positive (grow) and negative (crop) pads, optional axes (opset 18).
   * dX slices the grown border off and zero-fills what was cropped; the constant value's
   * gradient is the sum of dY over the padded border.
   */
  Pad(ctx, node, [dY], needs) {
    const em = ctx.em;
    const mode = attrString(node, 'mode', 'constant');
    if (mode !== 'constant') throw new Error(`Pad mode '${mode}' has no gradient rule (mode 'constant' has; reflect, edge and wrap are written as Gathers before differentiation: src/autodiff/lower/pad-modes.ts)`);
    const x = node.inputs[0]!;
    const xDims = ctx.shape(x), yDims = ctx.shape(node.outputs[0]!);
    const rank = xDims.length;
    let pads: number[], axes: number[];
    if (ctx.opset >= 11) {
      pads = constInts(ctx, node, 1, 'pads')!;
      axes = (constInts(ctx, node, 3, 'axes') ?? range(rank)).map((a) => normAxis(node, a, rank, 'axes entry'));
    } else {
      pads = attrInts(node, 'pads', []);
      axes = range(rank);
    }
    const begin = range(rank).map(() => 0), end = range(rank).map(() => 0);
    axes.forEach((a, k) => { begin[a] = pads[k]!; end[a] = pads[k + axes.length]!; });
    // The part of Y that came from X.
    const grow = range(rank).filter((a) => begin[a]! > 0 || end[a]! > 0);
    const inner = grow.length
      ? slice(ctx, dY!, grow.map((a) => Math.max(begin[a]!, 0)), grow.map((a) => yDims[a]! - Math.max(end[a]!, 0)), grow)
      : dY!;
    const out: (string | null)[] = node.inputs.map(() => null);
    if (needs[0]) out[0] = padZeros(ctx, inner, begin.map((p) => Math.max(-p, 0)), end.map((p) => Math.max(-p, 0)));
    if (needs[2] && node.inputs[2]) {
      const all = range(rank);
      const border = em.sub(em.reduce('ReduceSum', dY!, all, false), em.reduce('ReduceSum', inner, all, false));
      out[2] = em.reshape(border, ctx.shape(node.inputs[2]));
    }
    return out;
  },

  /** Y = X repeated r_a times per axis: view dY as [r0, d0, r1, d1, …] and sum the r axes. */
  Tile(ctx, node, [dY], needs) {
    if (!needs[0]) return [null, null];
    const em = ctx.em;
    const x = node.inputs[0]!;
    const xDims = ctx.shape(x);
    const reps = constInts(ctx, node, 1, 'repeats')!;
    const view: number[] = [], sumAxes: number[] = [];
    xDims.forEach((d, a) => {
      if (reps[a]! !== 1) { sumAxes.push(view.length); view.push(reps[a]!); }
      view.push(d);
    });
    if (!sumAxes.length) return [dY!, null];
    return [em.reshape(em.reduce('ReduceSum', em.reshape(dY!, view), sumAxes, false), xDims), null];
  },
});
