// Finite-difference checking of compiled gradients. Used by the tests of every rule.
import { RefitModel } from '../model.ts';
import type { Model } from '../onnx/ir.ts';
import type { Tensor } from '../onnx/tensor.ts';
import type { LossSpec } from '../train/loss-spec.ts';
import { Rng } from '../util/rng.ts';

export interface GradCheckOptions {
  /** Parameters (initializers) to check; default all float initializers. */
  params?: string[];
  /** Tensors to project onto a random direction for the loss; default the graph outputs. */
  outputs?: string[];
  eps?: number;
  /** Max relative error per tensor: ‖analytic − numeric‖ / max(‖numeric‖, floor). */
  tol?: number;
  floor?: number;
  /** Elements checked per tensor (a seeded random subset for larger ones). */
  maxElements?: number;
  seed?: number;
  batchNorm?: 'eval' | 'train';
  loss?: LossSpec;
}

export interface GradCheckReport {
  param: string;
  relError: number;
  checked: number;
  analyticNorm: number;
}

/** loss = Σ_o Σ_i R_o[i] · o[i] with fixed random R: every output element matters. */
export function randomProjectionLoss(outputs: string[], seed: number): LossSpec {
  return {
    describe: `randomProjection(${outputs.join(', ')})`,
    reads: outputs,
    inputs: [],
    build(ctx) {
      const em = ctx.em;
      const rng = new Rng(seed);
      const terms = outputs.map((o) => {
        const dims = ctx.shape(o);
        const r = new Float32Array(dims.reduce((a, b) => a * b, 1));
        for (let i = 0; i < r.length; i++) r[i] = rng.normal();
        const R = em.constant({ dtype: 'float32', dims, data: r }, 'proj');
        return em.reduce('ReduceSum', em.mul(o, R), dims.map((_, i) => i), false);
      });
      return em.sum(terms);
    },
  };
}

export async function gradCheck(ir: Model, feeds: Record<string, Tensor>, opts: GradCheckOptions = {}): Promise<GradCheckReport[]> {
  const model = new RefitModel(ir, { threads: 1 });
  const params = opts.params ?? model.parameterNames();
  const outputs = opts.outputs ?? ir.graph.outputs.map((o) => o.name);
  const loss = opts.loss ?? randomProjectionLoss(outputs, opts.seed ?? 1);
  const step = model.compileTrainStep({ trainable: params, loss, batchNorm: opts.batchNorm });
  const base = await step.run(feeds);
  const eps = opts.eps ?? 1e-3, floor = opts.floor ?? 1e-3, maxEl = opts.maxElements ?? 64;
  const rng = new Rng(opts.seed ?? 7);
  const reports: GradCheckReport[] = [];
  for (const p of params) {
    const w = model.param(p).data as Float32Array;
    const g = base.grads.get(p)!;
    const idx = w.length <= maxEl ? [...w.keys()] : Array.from({ length: maxEl }, () => Math.floor(rng.uniform() * w.length));
    let num2 = 0, diff2 = 0, an2 = 0;
    for (const i of idx) {
      const orig = w[i]!;
      w[i] = orig + eps;
      const lp = (await step.run(feeds)).loss;
      w[i] = orig - eps;
      const lm = (await step.run(feeds)).loss;
      w[i] = orig;
      const numeric = (lp - lm) / (2 * eps);
      num2 += numeric * numeric;
      an2 += g[i]! * g[i]!;
      diff2 += (numeric - g[i]!) ** 2;
    }
    reports.push({ param: p, relError: Math.sqrt(diff2) / Math.max(Math.sqrt(num2), floor), checked: idx.length, analyticNorm: Math.sqrt(an2) });
  }
  await step.release();
  return reports;
}
