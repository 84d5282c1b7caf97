// com.microsoft's MatMulNBits (what onnxruntime's 4-bit quantizers write, and transformers.js's
// q4 / q4f16 models hold): Y = A · dequant(B)ᵀ (+ bias), with B [N, blocks, blob] of `bits`-bit
// values packed low bits first along K, one scale (and zero point) per block of `block_size` along K.
// The dequantization follows the ONNX reference implementation of the op:
//   w[n, k] = (q[n, k] − zp[n, k / block]) · scale[n · blocks + k / block]
// with zp 2^(bits−1) when absent, zero points either packed `bits`-bit bytes per row or floats.
import type { Node } from './ir.ts';
import { attrInt } from './ir.ts';
import type { Tensor } from './tensor.ts';

export interface NBitsLayout { K: number; N: number; bits: number; blockSize: number; blocks: number }

/** The node's K, N, bits and block size, or why they are not usable. */
export function nbitsLayout(node: Node): NBitsLayout | string {
  const K = attrInt(node, 'K'), N = attrInt(node, 'N');
  const bits = attrInt(node, 'bits', 4), blockSize = attrInt(node, 'block_size', 0);
  if (!K || !N) return 'attributes K and N are required';
  if (bits < 2 || bits > 8) return `bits=${bits} is not supported (2–8)`;
  if (blockSize < 16 || (blockSize & (blockSize - 1)) !== 0) return `block_size=${blockSize} is not a power of 2 of at least 16`;
  return { K, N, bits, blockSize, blocks: Math.ceil(K / blockSize) };
}

/** Unsigned `bits`-bit value number `i` of a row packed low bits first. */
function unpack(row: Uint8Array, i: number, bits: number): number {
  const pos = i * bits, byte = pos >> 3, off = pos & 7;
  const v = (row[byte]! >> off) | (off + bits > 8 ? row[byte + 1]! << (8 - off) : 0);
  return v & ((1 << bits) - 1);
}

/** The float weight that B, its scales and zero points stand for, as [K, N]: what a MatMul's B reads (Y = A · W). */
export function dequantizeNBits(l: NBitsLayout, B: Tensor, scales: Tensor, zeroPoints?: Tensor): Float32Array {
  const { K, N, bits, blockSize, blocks } = l;
  const blob = Math.ceil((blockSize * bits) / 8);
  if (B.dtype !== 'uint8' || B.data.length !== N * blocks * blob) throw new Error(`B must be uint8 [${N}, ${blocks}, ${blob}], got ${B.dtype} [${B.dims}]`);
  if (scales.dtype !== 'float32' || scales.data.length !== N * blocks) throw new Error(`scales must be float32 [${N * blocks}], got ${scales.dtype} [${scales.dims}]`);
  const zpBytes = Math.ceil((blocks * bits) / 8);
  if (zeroPoints && !((zeroPoints.dtype === 'uint8' && zeroPoints.data.length === N * zpBytes) || (zeroPoints.dtype === 'float32' && zeroPoints.data.length === N * blocks))) {
    throw new Error(`zero_points must be uint8 [${N * zpBytes}] or float32 [${N * blocks}], got ${zeroPoints.dtype} [${zeroPoints.dims}]`);
  }
  const q = B.data as Uint8Array, s = scales.data as Float32Array;
  const w = new Float32Array(N * K);
  for (let n = 0; n < N; n++) {
    for (let j = 0; j < blocks; j++) {
      const zp = !zeroPoints ? 2 ** (bits - 1)
        : zeroPoints.dtype === 'float32' ? (zeroPoints.data as Float32Array)[n * blocks + j]!
        : unpack((zeroPoints.data as Uint8Array).subarray(n * zpBytes, (n + 1) * zpBytes), j, bits);
      const scale = s[n * blocks + j]!;
      const block = q.subarray((n * blocks + j) * blob, (n * blocks + j + 1) * blob);
      for (let i = 0; i < blockSize && j * blockSize + i < K; i++) w[(j * blockSize + i) * N + n] = (unpack(block, i, bits) - zp) * scale;
    }
  }
  return w;
}
