// Adapters on frozen quantized layers (QLoRA's idea on onnxruntime's int8 graphs): what an adapter
// reads as a quantized layer's weight, and how a merge writes one back.
//
// - Reading: an adapter (PiSSA's SVD, a fold) asks for a site's weight by the integer initializer's
//   name and gets it dequantized, (W_q − zero_point)·scale, per tensor or per channel.
// - Merging: a fold returns a float weight under that name, and `floatizeQuantized` turns the
//   layer into a float layer on it: DequantizeLinear(W) → MatMul reads the float weight directly;
//   MatMulInteger + Cast + Mul becomes MatMul(DequantizeLinear(x_q, x_scale, x_zp), W), and
//   ConvInteger + Cast + Mul the Conv of the same attributes. The input
//   quantization stays, so the merged layer computes x_fq·(W + ΔW) while the adapter computed
//   x_fq·W + ΔW·x: they differ by (x_fq − x)·ΔW, small since ΔW is (test/peft/quantized.test.ts
//   measures it). The merged weight is not re-quantized: re-quantizing to int8 would add up to half
//   a quantization step (scale/2) per weight, usually more than the adapter changed it.
import type { Graph, Node } from '../onnx/ir.ts';
import { attrInt, producers, consumers } from '../onnx/ir.ts';
import type { Emitter } from '../onnx/emitter.ts';
import type { Tensor } from '../onnx/tensor.ts';
import { dequantizeWeight } from '../autodiff/lower/quant.ts';
import { graphToFloat32, halfTensorToFloat, floatTensorToHalf } from '../autodiff/lower/float16.ts';
import { PeftError } from './errors.ts';
import { dequantizeNBits, nbitsLayout } from '../onnx/nbits.ts';
import { f32 } from '../onnx/tensor.ts';

const isInt = (t: Tensor) => t.dtype === 'int8' || t.dtype === 'uint8';

/**
 * `t` (the current value of `name`) as float32: dequantized when it is a quantized layer's integer
 * weight, upcast when float16 (adapters keep float32 values; a merge writes float16 back, `asStored`).
 */
export function floatValue(g: Graph, name: string, t: Tensor): Tensor {
  if (t.dtype === 'float16') return halfTensorToFloat(t);
  if (!isInt(t)) return t;
  const init = (n: string | undefined) => (n ? g.initializers.get(n) : undefined);
  for (const n of g.nodes) {
    if (n.opType === 'DequantizeLinear' && n.inputs[0] === name) {
      const scale = init(n.inputs[1]);
      if (!scale) throw new PeftError(`DequantizeLinear node '${n.name}': the scale of weight '${name}' is not an initializer; cannot dequantize it`);
      return dequantizeWeight(t, scale, init(n.inputs[2]), attrInt(n, 'axis', 1), `weight '${name}'`, attrInt(n, 'block_size', 0));
    }
    if (n.opType === 'MatMulNBits' && n.inputs[1] === name) {
      const l = nbitsLayout(n);
      const scales = init(n.inputs[2]);
      if (typeof l === 'string' || !scales) throw new PeftError(`MatMulNBits node '${n.name}': cannot dequantize weight '${name}' (${typeof l === 'string' ? l : 'its scales are not an initializer'})`);
      return f32([l.K, l.N], dequantizeNBits(l, t, scales, init(n.inputs[3]))); // 'in_out', as the site says
    }
    if ((n.opType === 'MatMulInteger' || n.opType === 'ConvInteger') && n.inputs[1] === name) {
      const ws = weightScale(g, n);
      if (!ws) throw new PeftError(`${n.opType} node '${n.name}': cannot find the weight scale of '${name}' (expected ${n.opType} → Cast → Mul by x_scale·w_scale)`);
      // per channel: along a MatMul weight's columns, a conv weight's output channels
      return dequantizeWeight(t, init(ws)!, init(n.inputs[3]), n.opType === 'ConvInteger' ? 0 : 1, `weight '${name}'`);
    }
  }
  return t;
}

/**
 * A folded (merged) value as the base stores it: float16 weights are rounded back to float16 (the
 * merged model stays a float16 model); a merged int8 weight stays float (see floatizeQuantized).
 */
export function asStored(prev: Tensor | undefined, t: Tensor): Tensor {
  return prev?.dtype === 'float16' && t.dtype === 'float32' ? floatTensorToHalf(t) : t;
}

/**
 * Float16 bases with adapter rewrites (which emit float32 nodes and tensors): the whole graph is
 * upcast to float32, inputs stay float16 and are cast on entry, outputs become float32.
 */
export function upcastAdapted(g: Graph): void {
  const half = [...g.initializers.values()].some((t) => t.dtype === 'float16') || g.inputs.some((v) => v.dtype === 'float16');
  if (half) graphToFloat32(g, true);
}

/**
 * Refuse what cannot run on a quantized layer: replacing its integer weight (PiSSA's residual, a
 * trained copy), rewrites that read the weight inside the graph (DoRA's column norms) and (IA)^3's
 * input scaling of a MatMulInteger (whose input is the integer x_q).
 */
export function checkQuantizedPlan(g: Graph, method: string, name: string, overrides: Iterable<string>, config: Record<string, unknown>, sites: { module: string; weight: string; quant?: string }[]): void {
  const targets = config.target_modules, feedforward = config.feedforward_modules;
  for (const k of overrides) {
    const t = g.initializers.get(k);
    if (t && isInt(t)) throw new PeftError(`${method} '${name}': would replace '${k}', the ${t.dtype} weight of a quantized layer, with float values; on a quantized base use an adapter that leaves the base weight alone (LoRA with the default init, (IA)^3, bottleneck) or merge first`);
  }
  if (method === 'ia3' && Array.isArray(feedforward)) {
    const q = sites.filter((s) => s.quant === 'dynamic' && (feedforward as string[]).includes(s.module));
    if (q.length) throw new PeftError(`ia3 '${name}': feed-forward (input) scaling on ${q.map((s) => s.module).join(', ')}, dynamically quantized layers whose MatMulInteger reads an integer input; scale their outputs instead (leave them out of 'feedforward')`);
  }
  if (method === 'dora' && Array.isArray(targets)) {
    const q = sites.filter((s) => s.quant && (targets as string[]).includes(s.module));
    if (q.length) throw new PeftError(`dora '${name}': ${q.map((s) => s.module).join(', ')} ${q.length > 1 ? 'are' : 'is a'} quantized layer${q.length > 1 ? 's' : ''}; DoRA reads the weight inside the graph, which is ${g.initializers.get(q[0]!.weight)?.dtype} there. Use LoRA on quantized layers`);
  }
}

/** The pattern after a MatMulInteger: its Cast, the Mul by the scales, and the weight-scale initializer. */
function dynamicTail(g: Graph, mi: Node, cons = consumers(g), prod = producers(g)) {
  const cast = cons.get(mi.outputs[0]!);
  if (cast?.length !== 1 || cast[0]!.opType !== 'Cast') return undefined;
  const mul = cons.get(cast[0]!.outputs[0]!);
  if (mul?.length !== 1 || mul[0]!.opType !== 'Mul') return undefined;
  const scales = prod.get(mul[0]!.inputs.find((i) => i !== cast[0]!.outputs[0])!);
  const ws = scales && scales.opType === 'Mul' ? scales.inputs.find((i) => g.initializers.has(i)) : undefined;
  return { cast: cast[0]!, mul: mul[0]!, scales, ws };
}

function weightScale(g: Graph, mi: Node): string | undefined {
  return dynamicTail(g, mi)?.ws;
}

/** Turn every quantized layer whose integer weight initializer now holds a float (merged) weight into a float layer. */
export function floatizeQuantized(g: Graph, em: Emitter): void {
  const floatInit = (n: string | undefined) => !!n && g.initializers.get(n)?.dtype === 'float32';
  // A merged MatMulNBits reads its folded float [K, N] weight as a plain MatMul (its bias, input 5, added after).
  g.nodes = g.nodes.flatMap((n) => {
    if (n.opType !== 'MatMulNBits' || !floatInit(n.inputs[1])) return [n];
    for (const i of n.inputs.slice(2, 5)) if (i && g.nodes.filter((m) => m.inputs.includes(i)).length === 1) g.initializers.delete(i);
    const bias = n.inputs[5];
    const y = bias ? em.fresh(`${n.name}.merged`) : n.outputs[0]!;
    const mm: Node = { name: em.fresh(`${n.name}.merged`), opType: 'MatMul', domain: '', inputs: [n.inputs[0]!, n.inputs[1]!], outputs: [y], attrs: {} };
    return bias ? [mm, { name: em.fresh(`${n.name}.bias`), opType: 'Add', domain: '', inputs: [y, bias], outputs: [n.outputs[0]!], attrs: {} }] : [mm];
  });
  const isDynamic = (n: Node) => n.opType === 'MatMulInteger' || n.opType === 'ConvInteger';
  if (!g.nodes.some((n) => (n.opType === 'DequantizeLinear' || isDynamic(n)) && floatInit(isDynamic(n) ? n.inputs[1] : n.inputs[0]))) return;
  const prod = producers(g), cons = consumers(g);
  const drop = new Set<Node>();
  const rename = new Map<string, string>();
  const added: Node[] = [];
  for (const n of g.nodes) {
    if (n.opType === 'DequantizeLinear' && floatInit(n.inputs[0])) {
      rename.set(n.outputs[0]!, n.inputs[0]!);
      drop.add(n);
    } else if (isDynamic(n) && floatInit(n.inputs[1])) {
      const tail = dynamicTail(g, n, cons, prod);
      const dql = prod.get(n.inputs[0]!);
      if (!tail || !dql || dql.opType !== 'DynamicQuantizeLinear') throw new PeftError(`cannot merge into ${n.opType} node '${n.name}': expected DynamicQuantizeLinear → ${n.opType} → Cast → Mul`);
      const fq = em.fresh(`${dql.outputs[0]}.dequantized`);
      added.push({ name: em.fresh(`${n.name}.dequantize_input`), opType: 'DequantizeLinear', domain: '', inputs: dql.outputs.slice(0, 3), outputs: [fq], attrs: {} });
      // A ConvInteger's attributes are a Conv's.
      added.push({ name: em.fresh(`${n.name}.merged`), opType: n.opType === 'ConvInteger' ? 'Conv' : 'MatMul', domain: '', inputs: [fq, n.inputs[1]!], outputs: [tail.mul.outputs[0]!], attrs: n.opType === 'ConvInteger' ? n.attrs : {} });
      drop.add(n); drop.add(tail.cast); drop.add(tail.mul);
      if (tail.scales && (cons.get(tail.scales.outputs[0]!) ?? []).length === 1) drop.add(tail.scales);
    }
  }
  g.nodes = [...g.nodes.filter((n) => !drop.has(n)), ...added];
  for (const n of g.nodes) n.inputs = n.inputs.map((i) => rename.get(i) ?? i);
  for (const o of g.outputs) if (rename.has(o.name)) throw new PeftError(`cannot merge: graph output '${o.name}' is a dequantized weight`);
  // Scales and zero points that only the removed nodes read.
  const used = new Set(g.nodes.flatMap((n) => n.inputs));
  for (const n of drop) for (const i of n.inputs) if (i && !used.has(i) && g.initializers.has(i)) g.initializers.delete(i);
}
