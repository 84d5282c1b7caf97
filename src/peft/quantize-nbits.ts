// A 4-bit copy of a float model in com.microsoft's MatMulNBits form, as onnxruntime's 4-bit
// quantizer writes it (transformers.js's `model_q4.onnx`), so a user can make a 4-bit base without
// Python, and benchmarks can compare adapters on it with its float twin. Every MatMul whose second
// input is a 2-D float32 initializer [K, N] becomes MatMulNBits(A, <weight>_Q4, <weight>_scales,
// <weight>_zero_points) with attributes K, N, bits 4 and block_size: per block of `blockSize` along
// K an asymmetric scale (max − min over 15, the range widened to hold 0) and zero point, packed two
// per byte, low bits first (src/onnx/nbits.ts reads them back).
import type { Model, Node } from '../onnx/ir.ts';
import { cloneModel } from '../onnx/ir.ts';
import { f32, tensor, type Tensor } from '../onnx/tensor.ts';
import { moduleOfLayer } from './sites.ts';

export interface QuantizeNBitsOptions {
  /** Values per block along K: a power of 2, at least 16 (onnxruntime's default is 32). @default 32 */
  blockSize?: number;
  /** Quantize only MatMuls whose module (as adapter sites name it: ./sites.ts, moduleOfLayer) passes. @default all */
  filter?: (module: string) => boolean;
}

/** The 4-bit packing of a [K, N] float weight: B [N, blocks, blockSize / 2], scales [N · blocks], zero points [N · ⌈blocks / 2⌉]. */
export function packNBits(w: Tensor, blockSize: number): { B: Tensor; scales: Tensor; zeroPoints: Tensor } {
  const [K, N] = w.dims as [number, number];
  const blocks = Math.ceil(K / blockSize), blob = blockSize / 2, zpBytes = Math.ceil(blocks / 2);
  const B = new Uint8Array(N * blocks * blob), scales = new Float32Array(N * blocks), zps = new Uint8Array(N * zpBytes);
  const d = w.data as Float32Array;
  for (let n = 0; n < N; n++) {
    for (let j = 0; j < blocks; j++) {
      const end = Math.min(K, (j + 1) * blockSize);
      let lo = 0, hi = 0;
      for (let k = j * blockSize; k < end; k++) { lo = Math.min(lo, d[k * N + n]!); hi = Math.max(hi, d[k * N + n]!); }
      const scale = (hi - lo) / 15 || 1;
      const zp = Math.min(15, Math.max(0, Math.round(-lo / scale)));
      scales[n * blocks + j] = scale;
      zps[n * zpBytes + (j >> 1)]! |= zp << (4 * (j & 1));
      for (let k = j * blockSize; k < end; k++) {
        const q = Math.min(15, Math.max(0, Math.round(d[k * N + n]! / scale) + zp));
        const i = k - j * blockSize;
        B[(n * blocks + j) * blob + (i >> 1)]! |= q << (4 * (i & 1));
      }
    }
  }
  return { B: tensor('uint8', [N, blocks, blob], B), scales: f32([N * blocks], scales), zeroPoints: tensor('uint8', [N * zpBytes], zps) };
}

/** A 4-bit MatMulNBits copy of `model` (the source is not changed). */
export function quantizeNBits(model: Model, opts: QuantizeNBitsOptions = {}): Model {
  const blockSize = opts.blockSize ?? 32;
  if (!(blockSize >= 16 && (blockSize & (blockSize - 1)) === 0)) throw new Error(`quantizeNBits: blockSize must be a power of 2 of at least 16, got ${blockSize}`);
  const m = cloneModel(model);
  const g = m.graph;
  const replaced = new Set<string>();
  g.nodes = g.nodes.map((n): Node => {
    const w = n.opType === 'MatMul' ? g.initializers.get(n.inputs[1]!) : undefined;
    if (!w || w.dtype !== 'float32' || w.dims.length !== 2 || (opts.filter && !opts.filter(moduleOfLayer(n.inputs[1]!, n.name)))) return n;
    const wn = n.inputs[1]!;
    const [K, N] = w.dims as [number, number];
    const { B, scales, zeroPoints } = packNBits(w, blockSize);
    g.initializers.set(`${wn}_Q4`, B);
    g.initializers.set(`${wn}_scales`, scales);
    g.initializers.set(`${wn}_zero_points`, zeroPoints);
    replaced.add(wn);
    return {
      name: `${n.name}_Q4`, opType: 'MatMulNBits', domain: 'com.microsoft', inputs: [n.inputs[0]!, `${wn}_Q4`, `${wn}_scales`, `${wn}_zero_points`], outputs: n.outputs,
      attrs: { K: { kind: 'int', value: K }, N: { kind: 'int', value: N }, bits: { kind: 'int', value: 4 }, block_size: { kind: 'int', value: blockSize } },
    };
  });
  // A weight another node still reads (a tied embedding) stays.
  const read = new Set(g.nodes.flatMap((n) => n.inputs));
  for (const wn of replaced) if (!read.has(wn)) g.initializers.delete(wn);
  if (!m.opsets.some((o) => o.domain === 'com.microsoft')) m.opsets.push({ domain: 'com.microsoft', version: 1 });
  return m;
}
