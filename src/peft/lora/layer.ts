// The low-rank path x → B·A·x on one site, as ONNX nodes and as a dense ΔW for folding.
import type { Emitter } from '../../onnx/emitter.ts';
import { type Tensor, f32 } from '../../onnx/tensor.ts';
import type { Site } from '../sites.ts';
import { linearT } from '../rewrite.ts';
import { type Mat, mat, matmul, transpose } from '../linalg.ts';
import { PeftError, fmt } from '../errors.ts';

/** Input width of ΔW in PyTorch's [out, in] form: in for linear layers, C·kh·kw for convolutions. */
export const fanIn = (s: Site) => s.op === 'Conv' ? s.dIn * (s.kernel ?? []).reduce((a, b) => a * b, 1) : s.dIn;

/** Shapes of A and B in HF PEFT's layout: A [r, in] / B [out, r]; convs A [r, C, kh, kw] / B [O, r, 1, 1]. */
export function factorShapes(s: Site, r: number): { a: number[]; b: number[] } {
  if (s.op === 'Conv') return { a: [r, s.dIn, ...s.kernel!], b: [s.dOut, r, ...s.kernel!.map(() => 1)] };
  return { a: [r, s.dIn], b: [s.dOut, r] };
}

/**
 * A rank above min(d_in, d_out) adds nothing a smaller one could not, but HF PEFT allows it (a
 * rank-8 adapter on Real-ESRGAN's 3-channel `conv_last`), so refit trains and loads it too; only
 * PiSSA, whose factors are the top-r singular triplets, needs r ≤ min(d_in, d_out).
 */
export function checkRank(method: string, s: Site, r: number, singular = false): void {
  if (s.op === 'Conv' && (s.group ?? 1) !== 1) throw new PeftError(`${method}: ${s.module} is a grouped convolution (group ${s.group}); LoRA on convolutions needs group 1`);
  const limit = Math.min(fanIn(s), s.dOut);
  if (singular && r > limit) throw new PeftError(`${method}: rank ${r} exceeds min(d_in, d_out) = min(${fanIn(s)}, ${s.dOut}) = ${limit} for ${s.module} (${s.op} weight '${s.weight}'), which PiSSA's singular vectors need; use rank ≤ ${limit}`);
}

/** The module's input as a row-major [.., in] operand (Gemm with transA reads Xᵀ). */
export const siteInput = (em: Emitter, s: Site) => s.transA ? em.transpose(s.x, [1, 0]) : s.x;

/** Emit scale·B·A·x for a site (scale a scalar tensor). Returns a tensor shaped like the site's output. */
export function lowRankPath(em: Emitter, s: Site, a: string, b: string, scale: string): string {
  if (s.op === 'Conv') {
    const n = s.convNode!;
    const keep: Record<string, number[] | string> = {};
    for (const k of ['strides', 'pads', 'dilations', 'auto_pad'] as const) {
      const v = n.attrs[k];
      if (v) keep[k] = v.value as number[] | string;
    }
    const h = em.op('Conv', [s.x, a], { ...keep, kernel_shape: s.kernel!, group: 1 }, 'lora_down');
    return em.op('Conv', [em.mul(h, scale), b], { kernel_shape: s.kernel!.map(() => 1) }, 'lora_up');
  }
  const h = em.mul(linearT(em, siteInput(em, s), a), scale);
  const d = linearT(em, h, b);
  return s.alpha !== undefined && s.alpha !== 1 ? em.mul(d, em.scalar(s.alpha)) : d;
}

/** scale·B·A as a dense [out, fanIn] matrix (PyTorch layout). */
export function deltaW(s: Site, a: Tensor, b: Tensor, scale: number): Mat {
  const r = a.dims[0]!;
  const d = matmul(mat(s.dOut, r, b.data as Float32Array), mat(r, fanIn(s), a.data as Float32Array));
  for (let i = 0; i < d.data.length; i++) d.data[i]! *= scale;
  return d;
}

/** The site's weight as a dense [out, fanIn] matrix. */
export function weightMat(s: Site, w: Tensor): Mat {
  const m = mat(w.dims[0]!, w.data.length / w.dims[0]!, w.data as Float32Array);
  return s.layout === 'in_out' ? transpose(m) : m;
}

/** A dense [out, fanIn] matrix back in the weight's own layout. */
export function toWeight(s: Site, m: Mat, like: Tensor): Tensor {
  const stored = s.layout === 'in_out' ? transpose(m) : m;
  if (stored.data.length !== like.data.length) throw new PeftError(`${s.module}: folded weight has ${stored.data.length} values, '${s.weight}' ${fmt(like.dims)} has ${like.data.length}`);
  return f32([...like.dims], Float32Array.from(stored.data));
}

export function addMat(a: Mat, b: Mat): Mat {
  const c = mat(a.rows, a.cols, a.data);
  for (let i = 0; i < c.data.length; i++) c.data[i]! += b.data[i]!;
  return c;
}
