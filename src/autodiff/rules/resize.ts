// Resize (opsets 10, 11, 13, 18, 19) and Upsample (opsets 7, 9) in nearest, linear and cubic modes.
//
// For one input signature a Resize is a fixed linear map of X, separable per axis:
// Y = X ×₀ A₀ ×₁ A₁ …, each A_d an [out_d, in_d] interpolation matrix. So dX = dY ×_d A_dᵀ,
// with the matrices built here in TypeScript from the spec, as onnxruntime computes them
// (float32 coordinate arithmetic; onnxruntime/core/providers/cpu/tensor/upsamplebase.h), and
// applied with MatMul. Axes whose matrix is a block of ones per input row (nearest with an
// integer factor and a coordinate mode that lines up, e.g. PyTorch's nearest upsampling)
// become one Reshape + ReduceSum instead. test/autodiff/resize.test.ts checks that these
// matrices reproduce onnxruntime's forward Resize.
//
// Refused with a message: tf_crop_and_resize (roi-dependent, extrapolates), antialias ≠ 0.
import { attrFloat, attrInt, attrInts, attrString, type Node } from '../../onnx/ir.ts';
import { f32, toNumbers } from '../../onnx/tensor.ts';
import { registerRules, type GradContext } from '../rule.ts';

export type ResizeMode = 'nearest' | 'linear' | 'cubic';
export type CoordMode = 'half_pixel' | 'half_pixel_symmetric' | 'pytorch_half_pixel' | 'align_corners' | 'asymmetric' | 'tf_half_pixel_for_nn';
/** 'simple' is the rule before opset 11 (no nearest_mode attribute): truncate, or ceil when downsampling. */
export type NearestMode = 'round_prefer_floor' | 'round_prefer_ceil' | 'floor' | 'ceil' | 'simple';

export interface AxisResize {
  mode: ResizeMode;
  coord: CoordMode;
  nearest: NearestMode;
  cubicA: number;
  excludeOutside: boolean;
  /** The float32 scale onnxruntime uses for this axis (given, or out/in when sizes are given). */
  scale: number;
  inLen: number;
  outLen: number;
}

const fr = Math.fround;

/** Source coordinate of output index x, in float32 as onnxruntime computes it. */
function originalCoord(a: AxisResize, x: number): number {
  const s = a.scale;
  switch (a.coord) {
    case 'asymmetric': return fr(x / s);
    case 'half_pixel': return fr(fr(fr(x + 0.5) / s) - 0.5);
    case 'pytorch_half_pixel': return a.outLen > 1 ? fr(fr(fr(x + 0.5) / s) - 0.5) : 0;
    case 'tf_half_pixel_for_nn': return fr(fr(x + 0.5) / s);
    case 'align_corners': return a.outLen === 1 ? 0 : fr(fr(x * (a.inLen - 1)) / (a.outLen - 1));
    case 'half_pixel_symmetric': {
      const outputWidth = fr(s * a.inLen);
      const adjustment = fr(a.outLen / outputWidth);
      const center = fr(a.inLen / 2);
      const offset = fr(center * fr(1 - adjustment));
      return fr(offset + (x + 0.5) / s - 0.5);
    }
  }
}

/** C's std::round: halves away from zero. */
const cround = (v: number) => Math.sign(v) * Math.round(Math.abs(v));

function nearestIndex(a: AxisResize, x: number): number {
  switch (a.nearest) {
    case 'round_prefer_floor': return x === Math.trunc(x) + 0.5 ? Math.floor(x) : cround(x);
    case 'round_prefer_ceil': return cround(x);
    case 'floor': return Math.floor(x);
    case 'ceil': return Math.ceil(x);
    case 'simple': return a.scale < 1 ? Math.ceil(x) : Math.trunc(x);
  }
}

/** Cubic convolution weights of the taps floor(x) − 1 … floor(x) + 2 for fraction r (Keys, coefficient A). */
function cubicCoeffs(r: number, A: number): number[] {
  const far = (t: number) => ((A * t - 5 * A) * t + 8 * A) * t - 4 * A; // 1 ≤ |t| < 2
  const near = (t: number) => ((A + 2) * t - (A + 3)) * t * t + 1; // |t| < 1
  return [far(r + 1), near(r), near(1 - r), far(2 - r)];
}

/** The [outLen, inLen] interpolation matrix of one axis, row-major. */
export function axisMatrix(a: AxisResize): Float64Array {
  const { inLen: n, outLen: m } = a;
  const A = new Float64Array(m * n);
  const clampI = (i: number) => Math.min(Math.max(i, 0), n - 1);
  for (let o = 0; o < m; o++) {
    const x = originalCoord(a, o);
    if (a.mode === 'nearest') {
      A[o * n + clampI(nearestIndex(a, x))] = 1;
    } else if (a.mode === 'linear') {
      // onnxruntime clamps the coordinate into [0, n−1] first; at the last row both taps coincide.
      const xc = Math.max(0, Math.min(x, n - 1));
      const i1 = Math.min(Math.trunc(xc), n - 1), i2 = Math.min(i1 + 1, n - 1);
      let d1 = fr(Math.abs(xc - i1)), d2 = fr(Math.abs(xc - i2));
      if (i1 === i2) d1 = d2 = 0.5;
      A[o * n + i1] += d2;
      A[o * n + i2] += d1;
    } else {
      const xi = Math.floor(x), r = fr(x - xi);
      const c = cubicCoeffs(r, a.cubicA);
      let sum = 0;
      for (let t = 0; t < 4; t++) {
        const idx = xi - 1 + t;
        if (a.excludeOutside && (idx < 0 || idx >= n)) c[t] = 0;
        sum += c[t]!;
      }
      for (let t = 0; t < 4; t++) A[o * n + clampI(xi - 1 + t)] += a.excludeOutside ? c[t]! / sum : c[t]!;
    }
  }
  return A;
}

function isIdentity(A: Float64Array, n: number, m: number): boolean {
  if (n !== m) return false;
  for (let o = 0; o < m; o++) for (let i = 0; i < n; i++) if (A[o * n + i] !== (o === i ? 1 : 0)) return false;
  return true;
}

/** Whether output row o reads exactly input row ⌊o/f⌋ with weight 1 (an integer factor f = out/in). */
function blockFactor(A: Float64Array, n: number, m: number): number {
  if (m % n !== 0 || m === n) return 0;
  const f = m / n;
  for (let o = 0; o < m; o++) for (let i = 0; i < n; i++) if (A[o * n + i] !== (i === Math.floor(o / f) ? 1 : 0)) return 0;
  return f;
}

/** Read a Resize/Upsample node's per-axis interpolation parameters for static shapes x → y. */
export function resizeAxes(node: Node, opset: number, x: number[], y: number[], constant: (name: string) => number[] | undefined): AxisResize[] {
  const where = `${node.opType} node '${node.name}'`;
  const rank = x.length;
  if (y.length !== rank) throw new Error(`${where}: output has shape [${y}], expected rank ${rank} like the input [${x}]`);
  const mode = attrString(node, 'mode', 'nearest') as ResizeMode;
  if (mode !== 'nearest' && mode !== 'linear' && mode !== 'cubic') throw new Error(`${where}: unknown mode '${mode}' (expected nearest, linear or cubic)`);
  // Upsample and Resize-10 have neither a coordinate mode nor a nearest mode.
  const modern = node.opType === 'Resize' && opset >= 11;
  const coord = (modern ? attrString(node, 'coordinate_transformation_mode', 'half_pixel') : 'asymmetric') as CoordMode | 'tf_crop_and_resize';
  if (coord === 'tf_crop_and_resize') {
    throw new Error(`${where}: coordinate_transformation_mode 'tf_crop_and_resize' is not differentiable here (it depends on roi and extrapolates); export with half_pixel, pytorch_half_pixel, align_corners or asymmetric`);
  }
  const known: string[] = ['half_pixel', 'half_pixel_symmetric', 'pytorch_half_pixel', 'align_corners', 'asymmetric', 'tf_half_pixel_for_nn'];
  if (!known.includes(coord)) throw new Error(`${where}: unknown coordinate_transformation_mode '${coord}'`);
  const nearest = (modern ? attrString(node, 'nearest_mode', 'round_prefer_floor') : 'simple') as NearestMode;
  if (!['round_prefer_floor', 'round_prefer_ceil', 'floor', 'ceil', 'simple'].includes(nearest)) throw new Error(`${where}: unknown nearest_mode '${nearest}'`);
  if (attrInt(node, 'antialias', 0) !== 0) throw new Error(`${where}: antialias=1 is not supported by the gradient (its kernel widens with the downscale factor); export with antialias=0`);
  const axesAttr = attrInts(node, 'axes', []).map((a) => (a < 0 ? a + rank : a));
  const axes = axesAttr.length > 0 ? axesAttr : Array.from({ length: rank }, (_, i) => i);

  // The per-axis scales onnxruntime uses.
  const scales = new Array<number>(rank).fill(1);
  const readInput = (idx: number, what: string): number[] | undefined => {
    const name = node.inputs[idx];
    if (!name) return undefined;
    const v = constant(name);
    if (v === undefined) {
      throw new Error(`${where}: ${what} input '${name}' must be a constant (initializer or Constant) to differentiate; it is computed at run time (fold the shape subgraph that computes it first)`);
    }
    return v;
  };
  let given: number[] | undefined;
  let sizes: number[] | undefined;
  if (node.opType === 'Upsample' && opset < 9) {
    const a = node.attrs.scales;
    given = a && a.kind === 'floats' ? a.value : undefined;
    if (!given) throw new Error(`${where}: attribute 'scales' is missing`);
  } else if (!modern) {
    given = readInput(1, 'scales');
  } else {
    given = readInput(2, 'scales');
    if (given && given.length === 0) given = undefined;
    // Sizes the data decide (torchvision resizes each mask to its box) are the output's dims in a
    // compiled step, whose shapes are fixed; stretched, they alone give the scales.
    const stretched = attrString(node, 'keep_aspect_ratio_policy', 'stretch') === 'stretch';
    if (!given && node.inputs[3] && !constant(node.inputs[3]) && stretched) sizes = axes.map((ax) => y[ax]!);
    else if (!given) sizes = readInput(3, 'sizes');
    if (!given && !sizes) throw new Error(`${where}: neither scales nor sizes is given`);
  }
  if (given) {
    if (given.length !== axes.length) throw new Error(`${where}: scales has ${given.length} values, expected ${axes.length} (one per ${axesAttr.length ? 'listed axis' : 'input dim'} of [${x}])`);
    axes.forEach((ax, i) => { scales[ax] = fr(given![i]!); });
  } else {
    if (sizes!.length !== axes.length) throw new Error(`${where}: sizes has ${sizes!.length} values, expected ${axes.length} (one per ${axesAttr.length ? 'listed axis' : 'input dim'} of [${x}])`);
    axes.forEach((ax, i) => { scales[ax] = x[ax] === 0 ? 1 : fr(sizes![i]! / x[ax]!); });
    const policy = attrString(node, 'keep_aspect_ratio_policy', 'stretch');
    if (policy !== 'stretch') {
      const ss = axes.map((ax) => scales[ax]!);
      const s = policy === 'not_larger' ? Math.min(...ss) : policy === 'not_smaller' ? Math.max(...ss) : NaN;
      if (Number.isNaN(s)) throw new Error(`${where}: unknown keep_aspect_ratio_policy '${policy}'`);
      for (const ax of axes) scales[ax] = s;
    }
  }
  const cubicA = attrFloat(node, 'cubic_coeff_a', -0.75);
  const excludeOutside = attrInt(node, 'exclude_outside', 0) !== 0;
  return x.map((inLen, d) => ({ mode, coord, nearest, cubicA, excludeOutside, scale: scales[d]!, inLen, outLen: y[d]! }));
}

/** dX = dY ×_d A_dᵀ over the axes whose matrix is not the identity. */
export function resizeBackward(ctx: GradContext, axes: AxisResize[], dY: string): string {
  const em = ctx.em;
  const rank = axes.length;
  const mats = axes.map((a) => axisMatrix(a));
  const shape = axes.map((a) => a.outLen);
  let g = dY;
  // Nearest with an integer factor: sum each block of f output rows, all such axes in one ReduceSum.
  const factors = axes.map((a, d) => (a.mode === 'nearest' ? blockFactor(mats[d]!, a.inLen, a.outLen) : 0));
  if (factors.some((f) => f > 0)) {
    const split: number[] = [], sumAxes: number[] = [];
    axes.forEach((a, d) => {
      if (factors[d]! > 0) { split.push(a.inLen, factors[d]!); sumAxes.push(split.length - 1); shape[d] = a.inLen; }
      else split.push(shape[d]!);
    });
    g = em.reshape(em.reduce('ReduceSum', em.reshape(g, split), sumAxes, false), shape);
  }
  for (let d = rank - 1; d >= 0; d--) {
    const a = axes[d]!;
    if (factors[d]! > 0 || isIdentity(mats[d]!, a.inLen, a.outLen)) continue;
    const A = mats[d]!, m = a.outLen, n = a.inLen;
    const pre = shape.slice(0, d).reduce((p, q) => p * q, 1), post = shape.slice(d + 1).reduce((p, q) => p * q, 1);
    if (post === 1) {
      // [.., m] · A [m, n]
      const At = em.constant(f32([m, n], Float32Array.from(A)), 'resize_matrix');
      g = em.op('MatMul', [d === rank - 1 ? g : em.reshape(g, [pre, m]), At]);
    } else {
      // Aᵀ [n, m] · [pre, m, post] (a 2-D left operand broadcasts over pre).
      const T = new Float32Array(n * m);
      for (let o = 0; o < m; o++) for (let i = 0; i < n; i++) T[i * m + o] = A[o * n + i]!;
      const AT = em.constant(f32([n, m], T), 'resize_matrix_t');
      g = em.op('MatMul', [AT, d === rank - 2 ? g : em.reshape(g, [pre, m, post])]);
    }
    shape[d] = n;
    if (!(d === rank - 1 || (post !== 1 && d === rank - 2))) g = em.reshape(g, shape);
  }
  return g === dY ? em.op('Identity', [dY]) : g;
}

function rule(ctx: GradContext, node: Node, [dY]: (string | null)[], needs: boolean[]): (string | null)[] {
  if (!needs[0]) return node.inputs.map(() => null);
  const x = node.inputs[0]!;
  const constant = (name: string) => {
    const t = ctx.constant(name);
    return t ? toNumbers(t) : undefined;
  };
  const axes = resizeAxes(node, ctx.opset, ctx.shape(x), ctx.shape(node.outputs[0]!), constant);
  const dX = resizeBackward(ctx, axes, dY!);
  return [dX, ...node.inputs.slice(1).map(() => null)];
}

registerRules({ Resize: rule, Upsample: rule });
