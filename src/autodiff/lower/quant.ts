// Quantized layers made differentiable: before the backward pass, every int8 layer on the gradient
// path is rewritten into float ops with the same forward numbers and a straight-through gradient.
//
// Why a rewrite rather than rules: backward.ts carries gradients only through float tensors, and a
// quantized layer's path always crosses an integer one (QuantizeLinear's uint8 output, MatMulInteger's
// int32 output). So the integer hop is bridged in float:
//
//   x_ste = DequantizeLinear(QuantizeLinear(x))  +  E(x)        (QDQ pairs, and DynamicQuantizeLinear)
//   E(x)  = ((x·2⁻⁴⁰ + M) − M)·2⁴⁰,  M = 1.5·2²³
//
// E is exactly 0 in value for |x| < 2³⁸ (x·2⁻⁴⁰ < ¼ rounds away against M, whose float32 spacing is 1),
// and its derivative through the Mul/Add/Sub rules is exactly 2⁻⁴⁰·2⁴⁰ = 1 (powers of two). So the
// forward value is onnxruntime's own quantize/dequantize, bit for bit, and dx_ste/dx = 1: the
// straight-through estimator (Bengio et al. 2013) without any op outside the standard set.
//
// Straight-through choices (docs/peft.md, "Quantized and float16 models"):
// - Rounding: identity gradient.
// - Saturation of a QDQ pair with constant per-tensor scale s and zero point z: the gradient is
//   masked to the representable float range lo ≤ x ≤ hi, lo = s·(qmin − z), hi = s·(qmax − z):
//   outside it the forward really is constant. PyTorch's fake_quantize masks on round(x/s) + z
//   instead, so the two differ for x/s within half a step of the edge (the zoo's int8 references
//   use refit's rule; test/fixtures/zoo/make_zoo.py). Per-axis or computed scales: unmasked.
// - DynamicQuantizeLinear (→ MatMulInteger, or → DequantizeLinear as a merged layer has it): unmasked (its range is the tensor's own min/max, so nothing saturates);
//   its scale and zero point are treated as constants (rules/quant.ts gives them no gradient).
//
// MatMulInteger (onnxruntime's quantize_dynamic: DynamicQuantizeLinear + MatMulInteger + Cast + Mul by
// x_scale·w_scale) becomes MatMul(x_ste, W) with W = (W_q − W_zp)·w_scale dequantized here once, so
// the gradient to x is dY·Wᵀ. Its forward differs from the integer kernel only by float32 summation
// order (≈1e-7 relative). ConvInteger in the same pattern (quantize_dynamic with Conv among its op
// types; @imgly/background-removal's int8 models) becomes Conv(x_ste, W) with the node's
// attributes: its padding with x's zero point is a padding with 0 in float. com.microsoft's
// DynamicQuantizeMatMul and MatMulIntegerToFloat are the same layer fused, and are lowered the same
// way; a MatMulIntegerToFloat fed by a static QuantizeLinear (onnxruntime's fusion of a QDQ MatMul,
// in a model it saved) takes the QDQ pair's straight-through.
import type { Graph, Node } from '../../onnx/ir.ts';
import { attrInt, producers, consumers } from '../../onnx/ir.ts';
import type { Emitter } from '../../onnx/emitter.ts';
import { type Tensor, f32, toNumbers } from '../../onnx/tensor.ts';
import { dependents } from '../missing-rules.ts';
import { constantValue } from './util.ts';
import { lowerFloat16 } from './float16.ts';

const M = 12582912; // 1.5·2^23
const DOWN = 2 ** -40, UP = 2 ** 40;
const MS = 'com.microsoft';

/** Ops that only move elements: onnxruntime's QDQ propagation carries integer tensors across them. */
const INT_MOVEMENT = new Set(['Transpose', 'Reshape', 'Squeeze', 'Unsqueeze', 'Flatten', 'Identity', 'Slice', 'Gather']);

/** ONNX's TensorProto codes of the integer types QuantizeLinear writes. */
const DTYPE_CODE: Record<string, number> = { uint8: 2, int8: 3, uint16: 4, int16: 5 };
/** A Cast to an integer type QuantizeLinear writes: data movement when it is to the type it already has (checked where a path is traced). */
const isIntCast = (n: Node) => n.opType === 'Cast' && Object.values(DTYPE_CODE).includes(attrInt(n, 'to') ?? -1);

const QUANT_RANGE: Record<string, [number, number]> = { uint8: [0, 255], int8: [-128, 127], uint16: [0, 65535], int16: [-32768, 32767] };

export interface QuantLowerReport {
  /** Lowered layers and pairs: op type and node name. */
  lowered: { opType: string; node: string }[];
}

/** A zero-valued tensor shaped like x whose derivative w.r.t. x is exactly 1 (masked where `mask` is false). */
export function straightThrough(em: Emitter, x: string, mask?: string): string {
  const e = em.mul(em.sub(em.add(em.mul(x, em.scalar(DOWN)), em.scalar(M)), em.scalar(M)), em.scalar(UP));
  return mask ? em.op('Where', [mask, e, em.scalar(0)]) : e;
}

/**
 * Dequantize a constant integer weight [K, N] (per-tensor, or per column: scale/zero point of size
 * N), or, with `blockSize` (DequantizeLinear's block_size, opset 21), per block of that many values
 * along `axis`: the scale and zero point have the weight's shape with that axis ⌈dim / blockSize⌉.
 */
export function dequantizeWeight(q: Tensor, scale: Tensor, zp: Tensor | undefined, axis = 1, what = 'weight', blockSize = 0): Tensor {
  const s = toNumbers(scale), z = zp ? toNumbers(zp) : [0];
  const dims = q.dims;
  const ax = axis < 0 ? axis + dims.length : axis;
  if (blockSize > 0) {
    const blocks = Math.ceil(dims[ax]! / blockSize);
    const sdims = dims.map((d, k) => (k === ax ? blocks : d));
    if (scale.dims.join() !== sdims.join() || (zp && zp.dims.join() !== sdims.join())) {
      throw new Error(`${what}: blocked scale${zp ? ' and zero point' : ''} of shape [${scale.dims}]${zp ? ` / [${zp.dims}]` : ''}; expected [${sdims}] (block_size ${blockSize} on axis ${ax} of [${dims}])`);
    }
    const inner = dims.slice(ax + 1).reduce((a, b) => a * b, 1), d = dims[ax]!;
    const src = q.data as Int8Array | Uint8Array;
    const out = new Float32Array(src.length);
    for (let i = 0; i < src.length; i++) {
      const outer = Math.floor(i / (inner * d)), along = Math.floor(i / inner) % d, rest = i % inner;
      const j = (outer * blocks + Math.floor(along / blockSize)) * inner + rest;
      out[i] = (src[i]! - (zp ? z[j]! : 0)) * s[j]!;
    }
    return f32([...dims], out);
  }
  const n = s.length > 1 ? dims[ax]! : 1;
  if ((s.length !== 1 && s.length !== n) || (z.length !== 1 && z.length !== s.length && z.length !== n)) {
    throw new Error(`${what}: scale has ${s.length} values and zero point ${z.length}; expected 1 or ${dims[ax]} (axis ${ax} of [${dims}])`);
  }
  const inner = dims.slice(ax + 1).reduce((a, b) => a * b, 1);
  const src = q.data as Int8Array | Uint8Array;
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const c = n > 1 ? Math.floor(i / inner) % n : 0;
    out[i] = (src[i]! - z[z.length > 1 ? c : 0]!) * s[s.length > 1 ? c : 0]!;
  }
  return f32([...dims], out);
}

/**
 * Rewrite quantized layers whose input depends on a trainable (and float16 tensors, see
 * float16.ts) so that gradients flow; in place, keeping topological order.
 */
export function lowerQuantized(g: Graph, em: Emitter, trainable: readonly string[]): QuantLowerReport {
  lowerFloat16(g);
  const report: QuantLowerReport = { lowered: [] };
  const isQuantOp = (n: Node) => ['QuantizeLinear', 'DynamicQuantizeLinear', 'MatMulInteger', 'ConvInteger', 'DynamicQuantizeMatMul', 'MatMulIntegerToFloat'].includes(n.opType);
  if (!g.nodes.some(isQuantOp)) return report;
  const dep = dependents({ nodes: g.nodes, wrt: trainable, isFloat: () => true });
  const prod = producers(g), cons = consumers(g);
  const constant = (t: string | undefined) => (t ? constantValue(g, t) : undefined);
  const only = (t: string) => { const c = cons.get(t) ?? []; return c.length === 1 ? c[0]! : undefined; };
  // The QuantizeLinear behind an integer tensor, through the data-movement ops onnxruntime's QDQ
  // propagation moves it across (a model it saved: QuantizeLinear → Transpose/Reshape (int8) →
  // DequantizeLinear or MatMulIntegerToFloat). Per-tensor scales only: movement keeps them valid.
  const traceQuantize = (t: string): { q: Node; path: Node[] } | undefined => {
    const path: Node[] = [];
    let p = prod.get(t);
    while (p && (INT_MOVEMENT.has(p.opType) || isIntCast(p)) && (p.domain === '' || p.domain === 'ai.onnx')) { path.unshift(p); p = prod.get(p.inputs[0]!); }
    if (!p || p.opType !== 'QuantizeLinear' || !dep.has(p.inputs[0]!)) return undefined;
    if (path.length && (constant(p.inputs[1])?.data.length ?? 0) !== 1) return undefined;
    // A Cast on the way must be to the type QuantizeLinear gives (torch's quantized exports write
    // QuantizeLinear → Cast(uint8) → DequantizeLinear): a cast to another integer type changes values.
    const qType = DTYPE_CODE[constant(p.inputs[2])?.dtype ?? 'uint8'];
    if (path.some((m) => m.opType === 'Cast' && attrInt(m, 'to') !== qType)) return undefined;
    return { q: p, path };
  };
  // x_ste − DequantizeLinear(…) for a traced QuantizeLinear: its straight-through term E(x) (saturation-
  // masked), moved by float copies of the path's ops so it lines up with the integer tensor.
  const movedSte = ({ q, path }: { q: Node; path: Node[] }): string => {
    const x = q.inputs[0]!;
    let e = straightThrough(em, x, rangeMask(em, x, constant(q.inputs[1]), constant(q.inputs[2]) ?? { dtype: 'uint8', dims: [], data: new Uint8Array(1) }));
    for (const m of path) if (m.opType !== 'Cast') e = em.emit(m.opType, [e, ...m.inputs.slice(1)], m.attrs as never, 1, `${m.outputs[0]}.ste`)[0]!; // a same-type Cast moves nothing
    return e;
  };

  // Plan: which nodes are replaced, and what to emit in place of the last one.
  const skip = new Set<Node>();
  const emitAt = new Map<Node, () => void>();
  const steOf = new Map<string, string>(); // integer activation tensor → its float straight-through value

  // x_ste for an activation quantized by DynamicQuantizeLinear `dql` (one per DQL, shared by its layers).
  const dynamicSte = (dql: Node): string => {
    const key = dql.outputs[0]!;
    let t = steOf.get(key);
    if (!t) {
      const fq = em.op('DequantizeLinear', [dql.outputs[0]!, dql.outputs[1]!, dql.outputs[2]!], {}, `${key}.dequantized`);
      t = em.add(fq, straightThrough(em, dql.inputs[0]!));
      steOf.set(key, t);
    }
    return t;
  };
  const weightOf = (node: Node, q: string, scale: string | undefined, zp: string | undefined, axis: number): string => {
    const qt = constant(q), st = constant(scale);
    if (!qt || !st) throw new Error(`${node.opType} node '${node.name}': the weight '${q}' and its scale '${scale}' must be constants (initializers) to train through this layer`);
    return em.constant(dequantizeWeight(qt, st, constant(zp), axis, `${node.opType} node '${node.name}' weight '${q}'`), `${q}.dequantized`);
  };

  for (const node of g.nodes) {
    if (node.domain !== '' && node.domain !== 'ai.onnx' && node.domain !== MS) continue;
    if (node.opType === 'DequantizeLinear' && node.domain !== MS) {
      // A QDQ pair on an activation: QuantizeLinear(x, s, z) → DequantizeLinear(·, s, z).
      const q = prod.get(node.inputs[0]!);
      if (q && q.opType === 'DynamicQuantizeLinear' && dep.has(q.inputs[0]!)) {
        // A dynamically quantized activation dequantized in float (a merged layer, ../../peft/quantized.ts).
        if (node.inputs[1] !== q.outputs[1] || (node.inputs[2] || '') !== q.outputs[2]) continue;
        const out = node.outputs[0]!;
        emitAt.set(node, () => {
          const fq = em.fresh(`${out}.fq`);
          g.nodes.push({ ...node, outputs: [fq, ...node.outputs.slice(1)] });
          bindTo(em, em.add(fq, straightThrough(em, q.inputs[0]!)), out);
        });
        continue;
      }
      const traced = traceQuantize(node.inputs[0]!);
      if (!traced) continue;
      const tq = traced.q;
      if (!sameParam(g, tq.inputs[1], node.inputs[1]) || !sameParam(g, tq.inputs[2], node.inputs[2]) || attrInt(tq, 'axis', 1) !== attrInt(node, 'axis', 1)) continue;
      const out = node.outputs[0]!;
      emitAt.set(node, () => {
        const fq = em.fresh(`${out}.fq`);
        g.nodes.push({ ...node, outputs: [fq, ...node.outputs.slice(1)] });
        bindTo(em, em.add(fq, movedSte(traced)), out);
      });
    } else if (node.opType === 'MatMulInteger' || node.opType === 'ConvInteger') {
      const dql = prod.get(node.inputs[0]!);
      if (!dql || dql.opType !== 'DynamicQuantizeLinear' || !dep.has(dql.inputs[0]!)) continue;
      const conv = node.opType === 'ConvInteger';
      const cast = only(node.outputs[0]!);
      const mul = cast && cast.opType === 'Cast' && attrInt(cast, 'to') === 1 ? only(cast.outputs[0]!) : undefined;
      const scales = mul && mul.opType === 'Mul' ? prod.get(mul.inputs.find((i) => i !== cast!.outputs[0])!) : undefined;
      const wScale = scales && scales.opType === 'Mul' && scales.inputs.includes(dql.outputs[1]!) ? scales.inputs.find((i) => i !== dql.outputs[1]) ?? scales.inputs[0] : undefined;
      if (!mul || !wScale) {
        throw new Error(`${node.opType} node '${node.name}': expected onnxruntime's dynamic quantization pattern (${node.opType} → Cast(float) → Mul by x_scale·w_scale) to train through it; found ${cast ? `${cast.opType} '${cast.name}'` : 'no single consumer'}`);
      }
      if ((node.inputs[2] || '') !== dql.outputs[2]) {
        throw new Error(`${node.opType} node '${node.name}': its input zero point must be DynamicQuantizeLinear '${dql.name}'s to train through it`);
      }
      skip.add(node); skip.add(cast!);
      emitAt.set(mul, () => {
        // A conv weight's per-channel scale runs along its output channels (axis 0), a MatMul's along its columns.
        const w = weightOf(node, node.inputs[1]!, wScale, node.inputs[3], conv ? 0 : 1);
        // ConvInteger's attributes are Conv's.
        const y = conv ? em.op('Conv', [dynamicSte(dql), w], { ...node.attrs }) : em.op('MatMul', [dynamicSte(dql), w]);
        bindTo(em, y, mul.outputs[0]!);
        report.lowered.push({ opType: node.opType, node: node.name });
      });
    } else if (node.domain === MS && node.opType === 'DynamicQuantizeMatMul') {
      const [a, b, bScale, bZp, bias] = node.inputs;
      if (!dep.has(a!)) continue;
      emitAt.set(node, () => {
        const dql = { name: em.fresh(`${node.name}.quantize`), opType: 'DynamicQuantizeLinear', domain: '', inputs: [a!], outputs: [em.fresh(`${a}_quantized`), em.fresh(`${a}_scale`), em.fresh(`${a}_zero_point`)], attrs: {} } as Node;
        g.nodes.push(dql);
        let y = em.op('MatMul', [dynamicSte(dql), weightOf(node, b!, bScale, bZp || undefined, 1)]);
        if (bias) y = em.add(y, bias);
        bindTo(em, y, node.outputs[0]!);
        report.lowered.push({ opType: node.opType, node: node.name });
      });
    } else if (node.domain === MS && node.opType === 'MatMulIntegerToFloat' && prod.get(node.inputs[0]!)?.opType !== 'DynamicQuantizeLinear') {
      // onnxruntime's fusion of a static QDQ MatMul (a QDQ model saved at level 'extended' or 'all'):
      // QuantizeLinear(x, s, z) [→ Reshape/Transpose…] → MatMulIntegerToFloat(x_q, W_q, s, w_scale, z,
      // w_zp[, bias]). The activation is the QDQ pair's x_ste (saturation-masked), the weight
      // dequantized once.
      const [a, b, aScale, bScale, aZp, bZp, bias] = node.inputs;
      const traced = traceQuantize(a!);
      if (!traced) continue;
      const q = traced.q;
      if (!sameParam(g, q.inputs[1], aScale) || !sameParam(g, q.inputs[2], aZp)) {
        throw new Error(`MatMulIntegerToFloat node '${node.name}': its activation scale and zero point must be those of QuantizeLinear '${q.name}' to train through it`);
      }
      emitAt.set(node, () => {
        const fq = em.op('DequantizeLinear', [a!, aScale!, ...(aZp ? [aZp] : [])], {}, `${a}.dequantized`);
        let y = em.op('MatMul', [em.add(fq, movedSte(traced)), weightOf(node, b!, bScale, bZp || undefined, 1)]);
        if (bias) y = em.add(y, bias);
        bindTo(em, y, node.outputs[0]!);
        report.lowered.push({ opType: node.opType, node: node.name });
      });
    } else if (node.domain === MS && node.opType === 'MatMulIntegerToFloat') {
      const [a, b, aScale, bScale, aZp, bZp, bias] = node.inputs;
      const dql = prod.get(a!);
      if (!dql || dql.opType !== 'DynamicQuantizeLinear' || !dep.has(dql.inputs[0]!)) continue;
      if (aScale !== dql.outputs[1] || (aZp || '') !== dql.outputs[2]) {
        throw new Error(`MatMulIntegerToFloat node '${node.name}': its activation scale and zero point must be DynamicQuantizeLinear '${dql.name}'s outputs to train through it`);
      }
      emitAt.set(node, () => {
        let y = em.op('MatMul', [dynamicSte(dql), weightOf(node, b!, bScale, bZp || undefined, 1)]);
        if (bias) y = em.add(y, bias);
        bindTo(em, y, node.outputs[0]!);
        report.lowered.push({ opType: node.opType, node: node.name });
      });
    }
  }

  // An integer hop left on the gradient path would silently stop the gradient: refuse it instead.
  // Through integer data movement (Transpose, Reshape…) to the nodes that read the value.
  const readers = (t: string): Node[] => (cons.get(t) ?? []).flatMap((c) => ((INT_MOVEMENT.has(c.opType) || isIntCast(c)) && c.inputs[0] === t && !emitAt.has(c) ? readers(c.outputs[0]!) : [c]));
  for (const n of g.nodes) {
    if ((n.opType !== 'QuantizeLinear' && n.opType !== 'DynamicQuantizeLinear') || !dep.has(n.inputs[0]!)) continue;
    for (const c of n.opType === 'QuantizeLinear' ? readers(n.outputs[0]!) : cons.get(n.outputs[0]!) ?? []) {
      if (!emitAt.has(c) && !skip.has(c)) {
        throw new Error(`${n.opType} node '${n.name}' quantizes '${n.inputs[0]}', which depends on a trainable parameter, and its integer output feeds ${c.opType} node '${c.name}', ` +
          'a form refit cannot differentiate (it handles QuantizeLinear → DequantizeLinear with the same scale and zero point, and DynamicQuantizeLinear → MatMulInteger or ConvInteger → Cast → Mul). ' +
          'Freeze the parameters upstream of it, or dequantize that layer.');
      }
    }
  }

  const original = g.nodes;
  g.nodes = []; // the emitter appends here: lowered nodes land where the original stood
  for (const node of original) {
    if (skip.has(node)) continue;
    const f = emitAt.get(node);
    if (f) {
      f();
      if (node.opType === 'DequantizeLinear') report.lowered.push({ opType: 'QuantizeLinear→DequantizeLinear', node: node.name });
    } else g.nodes.push(node);
  }
  // The integer weights (and their scales) of the layers replaced above are read by nothing now:
  // drop them, or onnxruntime warns about each one when the step's session loads.
  const replaced = original.filter((n) => skip.has(n) || (emitAt.has(n) && n.opType !== 'DequantizeLinear'));
  const read = new Set([...g.nodes.flatMap((n) => n.inputs), ...g.outputs.map((o) => o.name)]);
  for (const n of replaced) for (const i of n.inputs) if (i && !read.has(i) && g.initializers.has(i) && !trainable.includes(i)) g.initializers.delete(i);
  return report;
}

/** Two optional scale / zero-point inputs hold the same value (same name, or equal constants). */
function sameParam(g: Graph, a: string | undefined, b: string | undefined): boolean {
  if ((a || '') === (b || '')) return true;
  const ta = a ? constantValue(g, a) : undefined, tb = b ? constantValue(g, b) : undefined;
  if (!ta || !tb || ta.dtype !== tb.dtype || ta.data.length !== tb.data.length) return false;
  const x = toNumbers(ta), y = toNumbers(tb);
  return x.every((v, i) => v === y[i]);
}

/** lo ≤ x ≤ hi for a constant per-tensor scale and zero point; undefined (no mask) otherwise. */
function rangeMask(em: Emitter, x: string, scale: Tensor | undefined, zp: Tensor): string | undefined {
  const range = QUANT_RANGE[zp.dtype];
  if (!scale || scale.data.length !== 1 || zp.data.length !== 1 || !range) return undefined;
  const s = toNumbers(scale)[0]!, z = toNumbers(zp)[0]!;
  const lo = Math.fround(s * (range[0] - z)), hi = Math.fround(s * (range[1] - z));
  return em.op('And', [em.op('Not', [em.op('Less', [x, em.scalar(lo)])]), em.op('Not', [em.op('Greater', [x, em.scalar(hi)])])]);
}

function bindTo(em: Emitter, src: string, dst: string): void {
  em.graph.nodes.push({ name: em.fresh(`${dst}_lowered`), opType: 'Identity', domain: '', inputs: [src], outputs: [dst], attrs: {} });
}
