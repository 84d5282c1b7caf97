// Small dense linear algebra for adapter initialisation, merging and combination. These run
// once per layer at setup time on matrices of a few hundred rows, never on a hot path, so a
// plain implementation is enough. No maintained npm package offers an SVD without pulling in
// a large numeric stack (ml-matrix is ~200 kB for this one routine).
import { Rng } from '../util/rng.ts';

/** A row-major matrix. */
export interface Mat { rows: number; cols: number; data: Float64Array }

export const mat = (rows: number, cols: number, data?: ArrayLike<number>): Mat =>
  ({ rows, cols, data: data ? Float64Array.from(data) : new Float64Array(rows * cols) });

export function transpose(a: Mat): Mat {
  const t = mat(a.cols, a.rows);
  for (let i = 0; i < a.rows; i++) for (let j = 0; j < a.cols; j++) t.data[j * a.rows + i] = a.data[i * a.cols + j]!;
  return t;
}

export function matmul(a: Mat, b: Mat): Mat {
  if (a.cols !== b.rows) throw new Error(`matmul: [${a.rows}, ${a.cols}] × [${b.rows}, ${b.cols}]`);
  const c = mat(a.rows, b.cols);
  for (let i = 0; i < a.rows; i++) for (let k = 0; k < a.cols; k++) {
    const v = a.data[i * a.cols + k]!;
    if (v === 0) continue;
    for (let j = 0; j < b.cols; j++) c.data[i * b.cols + j] += v * b.data[k * b.cols + j]!;
  }
  return c;
}

export const toF32 = (m: Mat) => Float32Array.from(m.data);

/**
 * Thin SVD A = U·diag(S)·Vᵀ by one-sided Jacobi rotations (Hestenes 1958): orthogonalise the
 * columns of A pairwise until all are mutually orthogonal; their norms are the singular
 * values. Chosen over power iteration because it yields every singular pair at full float64
 * accuracy, including nearly equal ones, in O(n²m) per sweep (a handful of sweeps).
 * Returns singular values sorted in decreasing order; U is [m, k], V is [n, k], k = min(m, n).
 */
export function svd(a: Mat): { U: Mat; S: Float64Array; V: Mat } {
  if (a.rows < a.cols) {
    const t = svd(transpose(a));
    return { U: t.V, S: t.S, V: t.U };
  }
  const m = a.rows, n = a.cols;
  const u = Float64Array.from(a.data); // columns get rotated in place
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  for (let sweep = 0; sweep < 60; sweep++) {
    let off = 0;
    for (let p = 0; p < n - 1; p++) for (let q = p + 1; q < n; q++) {
      let alpha = 0, beta = 0, gamma = 0;
      for (let i = 0; i < m; i++) {
        const up = u[i * n + p]!, uq = u[i * n + q]!;
        alpha += up * up; beta += uq * uq; gamma += up * uq;
      }
      if (gamma === 0 || Math.abs(gamma) <= 1e-15 * Math.sqrt(alpha * beta)) continue;
      off = Math.max(off, Math.abs(gamma) / Math.sqrt(alpha * beta));
      const zeta = (beta - alpha) / (2 * gamma);
      const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
      const c = 1 / Math.sqrt(1 + t * t), s = c * t;
      for (let i = 0; i < m; i++) {
        const up = u[i * n + p]!, uq = u[i * n + q]!;
        u[i * n + p] = c * up - s * uq; u[i * n + q] = s * up + c * uq;
      }
      for (let i = 0; i < n; i++) {
        const vp = v[i * n + p]!, vq = v[i * n + q]!;
        v[i * n + p] = c * vp - s * vq; v[i * n + q] = s * vp + c * vq;
      }
    }
    if (off < 1e-13) break;
  }
  const norms = Array.from({ length: n }, (_, j) => { let s = 0; for (let i = 0; i < m; i++) s += u[i * n + j]! ** 2; return Math.sqrt(s); });
  const order = norms.map((_, j) => j).sort((x, y) => norms[y]! - norms[x]!);
  const U = mat(m, n), V = mat(n, n), S = new Float64Array(n);
  order.forEach((j, k) => {
    S[k] = norms[j]!;
    for (let i = 0; i < m; i++) U.data[i * n + k] = norms[j]! > 0 ? u[i * n + j]! / norms[j]! : 0;
    for (let i = 0; i < n; i++) V.data[i * n + k] = v[i * n + j]!;
  });
  return { U, S, V };
}

/**
 * Best rank-r factorisation M ≈ B·A (Eckart–Young) with the singular values split evenly:
 * B = U_r·√S_r [m, r], A = √S_r·V_rᵀ [r, n], each scaled so that `scale`·B·A = the top-r part.
 */
export function lowRank(m: Mat, r: number, scale = 1): { A: Mat; B: Mat } {
  const { U, S, V } = svd(m);
  const k = U.cols;
  const A = mat(r, m.cols), B = mat(m.rows, r);
  for (let j = 0; j < r && j < k; j++) {
    const s = Math.sqrt(S[j]! / scale);
    for (let i = 0; i < m.rows; i++) B.data[i * r + j] = U.data[i * k + j]! * s;
    for (let i = 0; i < m.cols; i++) A.data[j * m.cols + i] = V.data[i * V.cols + j]! * s;
  }
  return { A, B };
}

/** kaiming_uniform_(a=√5), PyTorch's default Linear/Conv init and HF PEFT's lora_A init: U(±1/√fan_in). */
export function kaimingUniform(n: number, fanIn: number, rng: Rng): Float32Array {
  const bound = 1 / Math.sqrt(fanIn);
  return rng.fill(new Float32Array(n), bound, 'uniform');
}
