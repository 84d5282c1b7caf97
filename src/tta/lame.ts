// LAME (Boudiaf et al., CVPR 2022, "Parameter-free Online Test-time Adaptation"): output-only.
// The model is not changed. Per batch, the predictions are replaced by the solution of the
// Laplacian-adjusted maximum-likelihood objective
//   min_Y  Σ_i KL(y_i ‖ p_i) − λ Σ_ij w_ij y_iᵀ y_j
// with a kNN affinity (k = 5) on the L2-normalised penultimate features, solved by the
// concave-convex procedure, as the paper's code (fiveai/LAME) does:
//   unary = −log(p + 1e-10);  Y ← softmax(−unary);
//   repeat ≤ 100 times: Y ← softmax(−unary + λ·W·Y), stop when the energy
//   E = Σ (unary·Y − λ·(W·Y)·Y + Y·log max(Y, 1e-20)) changes by ≤ 1e-8·|E| (after iteration 2).
// W[i, j] = 1 for the k nearest neighbours j of i (Euclidean on normalised features, the
// nearest — normally i itself — dropped); not symmetrised (the code's force_symmetry = False).
// The returned logits are log Y (so argmax and softmax give LAME's assignment).
//
// The affinity and the iterations run in TypeScript: they are O(N²·D + iterations·N·k·C) on one
// batch (about 0.5 M multiply-adds at batch 64, D 128), far below one forward pass, and a
// top-k with index tie-breaking is clumsy in ONNX.
import { z } from 'zod';
import type { RefitModel } from '../model.ts';
import type { Tensor } from '../onnx/tensor.ts';
import { f32 } from '../onnx/tensor.ts';
import { parseOptions, checkBatch, softmaxRows } from './common.ts';
import { resolveOutputs, logitsAndFeatures } from './output-only.ts';
import type { Adapter, AdaptResult, AdapterState } from './types.ts';

/** Defaults of the paper's code (configs: kNN affinity, k = 5, λ = 1, 100 steps). */
export const LAME_DEFAULTS = { knn: 5, lambda: 1, maxSteps: 100 } as const;

export const lameSchema = z.object({
  knn: z.number().int().positive().default(LAME_DEFAULTS.knn),
  lambda: z.number().min(0).default(LAME_DEFAULTS.lambda),
  maxSteps: z.number().int().positive().default(LAME_DEFAULTS.maxSteps),
  logits: z.string().optional(),
  features: z.string().optional(),
  /** Accepted for a uniform interface; LAME is stateless. */
  mode: z.enum(['continual', 'episodic']).default('continual'),
  seed: z.number().int().default(0),
});
export type LameOptions = z.input<typeof lameSchema>;

/** LAME's assignment Y [N, C] for probabilities p [N, C] and features [N, D]; also returns the iteration count. */
export function lameSolve(probs: Float64Array, feats: Float32Array, n: number, C: number, D: number, o: { knn: number; lambda: number; maxSteps: number }): { Y: Float64Array; iterations: number } {
  // L2-normalise features (F.normalize: x / max(‖x‖, 1e-12)).
  const X = new Float64Array(n * D);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let d = 0; d < D; d++) s += feats[i * D + d]! ** 2;
    const inv = 1 / Math.max(Math.sqrt(s), 1e-12);
    for (let d = 0; d < D; d++) X[i * D + d] = feats[i * D + d]! * inv;
  }
  // kNN affinity: neighbours of each row, nearest dropped.
  const k = Math.min(o.knn + 1, n) - 1;
  const nbr = new Int32Array(n * Math.max(k, 0));
  const dist = new Float64Array(n);
  const order = Array.from({ length: n }, (_, j) => j);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += (X[i * D + d]! - X[j * D + d]!) ** 2;
      dist[j] = Math.sqrt(s);
    }
    order.sort((a, b) => dist[a]! - dist[b]! || (a === i ? -1 : b === i ? 1 : a - b));
    for (let t = 0; t < k; t++) nbr[i * k + t] = order[t + 1]!;
  }
  const unary = Float64Array.from(probs, (p) => -Math.log(p + 1e-10));
  const Y = new Float64Array(n * C);
  const softmaxInto = (expo: Float64Array) => {
    for (let i = 0; i < n; i++) {
      let m = -Infinity;
      for (let c = 0; c < C; c++) m = Math.max(m, expo[i * C + c]!);
      let s = 0;
      for (let c = 0; c < C; c++) s += Y[i * C + c] = Math.exp(expo[i * C + c]! - m);
      for (let c = 0; c < C; c++) Y[i * C + c]! /= s;
    }
  };
  softmaxInto(Float64Array.from(unary, (u) => -u));
  const pairwise = new Float64Array(n * C);
  const expo = new Float64Array(n * C);
  let oldE = Infinity, it = 0;
  for (; it < o.maxSteps; it++) {
    pairwise.fill(0);
    for (let i = 0; i < n; i++) for (let t = 0; t < k; t++) {
      const j = nbr[i * k + t]!;
      for (let c = 0; c < C; c++) pairwise[i * C + c]! += o.lambda * Y[j * C + c]!;
    }
    for (let q = 0; q < n * C; q++) expo[q] = -unary[q]! + pairwise[q]!;
    softmaxInto(expo);
    let E = 0;
    for (let q = 0; q < n * C; q++) E += unary[q]! * Y[q]! - o.lambda * pairwise[q]! * Y[q]! + Y[q]! * Math.log(Math.max(Y[q]!, 1e-20));
    if (it > 1 && Math.abs(E - oldE) <= 1e-8 * Math.abs(oldE)) { it++; break; }
    oldE = E;
  }
  return { Y, iterations: it };
}

export class LAME implements Adapter {
  readonly name = 'lame';
  private readonly o: z.output<typeof lameSchema>;
  private readonly names: { logits: string; features: string };

  constructor(readonly model: RefitModel, options: LameOptions = {}) {
    this.o = parseOptions('lame', lameSchema, options);
    this.names = resolveOutputs('lame', model, this.o.logits, this.o.features);
  }

  async predict(x: Tensor): Promise<AdaptResult> {
    checkBatch(this.name, this.model, x);
    const t0 = performance.now();
    const { logits, features, C, D, n } = await logitsAndFeatures(this.model, x, this.names);
    const { Y, iterations } = lameSolve(softmaxRows(logits, C), features, n, C, D, this.o);
    const out = Float32Array.from(Y, (y) => Math.log(Math.max(y, 1e-30)));
    return { logits: f32([n, C], out), info: { used: n, skipped: 0, resets: 0, ms: performance.now() - t0, extra: { iterations } } };
  }

  reset(): void { /* stateless */ }
  async save(): Promise<AdapterState> { return { method: this.name, version: 1, tensors: {}, meta: {} }; }
  async load(state: AdapterState): Promise<void> {
    if (state?.method !== this.name) throw new Error(`lame.load: state was saved by '${String(state?.method)}', not 'lame'`);
  }
  async release(): Promise<void> {}
}
