// A dynamically quantized copy of a float model, in exactly the form onnxruntime's
// quantize_dynamic writes (and transformers.js's `model_quantized.onnx` files carry), so a user can
// make an int8 base without Python, and benchmarks can compare LoRA on an int8 base with its float twin:
//   DynamicQuantizeLinear(x) → MatMulInteger(x_q, W_q, x_zp, W_zp) → Cast(float) → Mul(·, x_scale·W_scale)
// for every MatMul whose second input is a 2-D float32 initializer, and with `convs` every Conv
// with a float32 weight initializer as DynamicQuantizeLinear(x) → ConvInteger(x_q, W_q, x_zp, W_zp)
// → Cast(float) → Mul(·, x_scale·W_scale) → Add(bias as [1, O, 1…]) (the form of the int8 models
// @imgly/background-removal ships, written by onnxruntime's quantizer). Weights: int8, symmetric
// (zero point 0), one scale per tensor (max|W|/127), as quantize_dynamic's defaults. Activations:
// uint8 with a range computed per call from the tensor's min and max (DynamicQuantizeLinear).
import type { Model, Node } from '../onnx/ir.ts';
import { cloneModel } from '../onnx/ir.ts';
import { type Tensor, f32, i64 } from '../onnx/tensor.ts';
import { moduleOfLayer } from './sites.ts';

export interface QuantizeDynamicOptions {
  /** Quantize only MatMuls whose module (as adapter sites name it: ./sites.ts, moduleOfLayer) passes. @default all */
  filter?: (module: string) => boolean;
  /** Quantize convolutions too (ConvInteger), as quantize_dynamic does when Conv is among its op types. @default false */
  convs?: boolean;
}

/** An int8 dynamically quantized copy of `model` (the source is not changed). */
export function quantizeDynamic(model: Model, opts: QuantizeDynamicOptions = {}): Model {
  const m = cloneModel(model);
  const g = m.graph;
  const nodes: Node[] = [];
  const quantized = new Map<string, string[]>(); // activation → [x_q, x_scale, x_zp]
  const replaced = new Set<string>();
  for (const n of g.nodes) {
    const conv = n.opType === 'Conv' && opts.convs === true && (n.domain === '' || n.domain === 'ai.onnx');
    const w = n.opType === 'MatMul' || conv ? g.initializers.get(n.inputs[1]!) : undefined;
    const rank = conv ? (w?.dims.length ?? 0) >= 3 : w?.dims.length === 2;
    if (!w || w.dtype !== 'float32' || !rank || (opts.filter && !opts.filter(moduleOfLayer(n.inputs[1]!, n.name)))) { nodes.push(n); continue; }
    const [x, wn, bias] = n.inputs as [string, string, string | undefined];
    const y = n.outputs[0]!;
    const { q, scale } = symmetricInt8(w);
    g.initializers.set(`${wn}_quantized`, q);
    g.initializers.set(`${wn}_scale`, f32([], [scale]));
    g.initializers.set(`${wn}_zero_point`, { dtype: 'int8', dims: [], data: new Int8Array(1) });
    replaced.add(wn);
    let xq = quantized.get(x);
    if (!xq) {
      xq = [`${x}_quantized`, `${x}_scale`, `${x}_zero_point`];
      quantized.set(x, xq);
      nodes.push(node('DynamicQuantizeLinear', `${x}_QuantizeLinear`, [x], xq));
    }
    const scaled = conv && bias ? `${y}_quant_scaled` : y;
    nodes.push(
      conv
        ? { ...node('ConvInteger', `${n.name}_quant`, [xq[0]!, `${wn}_quantized`, xq[2]!, `${wn}_zero_point`], [`${y}_output_quantized`]), attrs: n.attrs }
        : node('MatMulInteger', `${n.name}_quant`, [xq[0]!, `${wn}_quantized`, xq[2]!, `${wn}_zero_point`], [`${y}_output_quantized`]),
      node('Mul', `${n.name}_scales_mul`, [xq[1]!, `${wn}_scale`], [`${y}_scales_mul`]),
      { ...node('Cast', `${n.name}_cast`, [`${y}_output_quantized`], [`${y}_output_quantized_cast`]), attrs: { to: { kind: 'int', value: 1 } } },
      node('Mul', `${n.name}_output_scale_mul`, [`${y}_output_quantized_cast`, `${y}_scales_mul`], [scaled]),
    );
    if (conv && bias) {
      // The bias as a [1, O, 1…] addend, reshaped by a graph op as the quantizer writes it.
      const shape = `${y}_bias_reshape_shape`;
      g.initializers.set(shape, i64([w.dims.length], [1, w.dims[0]!, ...w.dims.slice(2).map(() => 1)]));
      nodes.push(node('Reshape', `${n.name}_bias_reshape`, [bias, shape], [`${y}_bias_reshape_output`]), node('Add', `${n.name}_bias_add`, [scaled, `${y}_bias_reshape_output`], [y]));
    }
  }
  g.nodes = nodes;
  const used = new Set(nodes.flatMap((n) => n.inputs));
  for (const k of replaced) if (!used.has(k)) g.initializers.delete(k);
  return m;
}

function node(opType: string, name: string, inputs: string[], outputs: string[]): Node {
  return { name, opType, domain: '', inputs, outputs, attrs: {} };
}

function symmetricInt8(w: Tensor): { q: Tensor; scale: number } {
  const d = w.data as Float32Array;
  let max = 0;
  for (const v of d) max = Math.max(max, Math.abs(v));
  const scale = Math.fround(max > 0 ? max / 127 : 1);
  const q = new Int8Array(d.length);
  for (let i = 0; i < d.length; i++) q[i] = Math.max(-127, Math.min(127, roundEven(d[i]! / scale)));
  return { q: { dtype: 'int8', dims: [...w.dims], data: q }, scale };
}

/** Round half to even, as numpy and onnxruntime do. */
function roundEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}
