// LoRA: W x + (alpha/r)·B·A·x on MatMul, Gemm (every transpose form) and Conv (a conv r×C×kh×kw
// followed by a 1×1 conv O×r), with rsLoRA scaling, PiSSA init and LoRA+ learning rates.
// Hu et al. 2021, https://arxiv.org/abs/2106.09685
import type { AdapterMethod, AdapterPlan, PlanContext } from '../types.ts';
import type { Tensor } from '../../onnx/tensor.ts';
import { f32 } from '../../onnx/tensor.ts';
import { selectSites, oneSitePerWeight, type Site } from '../sites.ts';
import { intercept } from '../rewrite.ts';
import { kaimingUniform, lowRank, toF32 } from '../linalg.ts';
import { Rng } from '../../util/rng.ts';
import { PeftError } from '../errors.ts';
import { type LoraConfig, type ResolvedLora, resolveLora, loraScale } from './config.ts';
import { checkRank, factorShapes, fanIn, lowRankPath, deltaW, weightMat, toWeight, addMat } from './layer.ts';

export type { LoraConfig } from './config.ts';

export const LORA_OPS = ['MatMul', 'Gemm', 'Conv'] as const;

/** Tensor names of a LoRA adapter on one module. */
export const loraNames = (name: string, module: string) => ({ a: `${name}.lora_A.${module}`, b: `${name}.lora_B.${module}` });

/** HF PEFT's `adapter_config.json` for a LoRA-family adapter. */
export function loraFileConfig(c: ResolvedLora, sites: Site[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    peft_type: 'LORA', task_type: null, r: c.rank, lora_alpha: c.alpha, lora_dropout: c.dropout, use_rslora: c.rsLora, use_dora: false,
    target_modules: [...new Set(sites.map((s) => s.module))], bias: 'none', fan_in_fan_out: false, init_lora_weights: c.init === 'pissa' ? 'pissa' : true,
    modules_to_save: null, rank_pattern: {}, alpha_pattern: {}, inference_mode: false, base_model_name_or_path: null, ...extra,
  };
}

/** Initial A and B of every site, and PiSSA's residual weights. */
export function initFactors(ctx: PlanContext, c: ResolvedLora, sites: Site[], method: string) {
  const rng = new Rng(c.seed);
  const tensors = new Map<string, Tensor>(), overrides = new Map<string, Tensor>();
  const scale = loraScale(c);
  for (const s of oneSitePerWeight(sites)) {
    checkRank(method, s, c.rank, c.init === 'pissa');
    const { a, b } = factorShapes(s, c.rank);
    const n = loraNames(ctx.name, s.module);
    if (c.init === 'pissa') {
      if (s.computed) throw new PeftError(`${method}: PiSSA starts from the singular vectors of ${s.module}'s weight, which this graph computes from parameters (weight standardization or weight norm) rather than stores; use the default init on it`);
      const w = ctx.value(s.weight);
      const W = weightMat(s, w);
      const { A, B } = lowRank(W, c.rank, scale);
      tensors.set(n.a, f32(a, toF32(A)));
      tensors.set(n.b, f32(b, toF32(B)));
      const top = deltaW(s, tensors.get(n.a)!, tensors.get(n.b)!, -scale);
      overrides.set(s.weight, toWeight(s, addMat(W, top), w));
    } else {
      tensors.set(n.a, f32(a, kaimingUniform(a.reduce((x, y) => x * y, 1), fanIn(s), rng)));
      tensors.set(n.b, f32(b));
    }
  }
  return { tensors, overrides };
}

/** Fold scale·B·A into every site's weight (stored weights only: a plan with a computed site has no fold). */
export function foldLora(name: string, sites: Site[], scale: number, value: (n: string) => Tensor): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const s of oneSitePerWeight(sites)) {
    const n = loraNames(name, s.module);
    const w = out.get(s.weight) ?? value(s.weight);
    out.set(s.weight, toWeight(s, addMat(weightMat(s, w), deltaW(s, value(n.a), value(n.b), scale)), w));
  }
  return out;
}

function pissaToLora(name: string, sites: Site[], c: ResolvedLora, initial: Map<string, Tensor>, value: (n: string) => Tensor) {
  const r = c.rank, r2 = 2 * r;
  const out = new Map<string, Tensor>();
  for (const s of sites) {
    const n = loraNames(name, s.module);
    const { a, b } = factorShapes(s, r2);
    const A = new Float32Array(r2 * fanIn(s));
    A.set(value(n.a).data as Float32Array);
    A.set(initial.get(n.a)!.data as Float32Array, r * fanIn(s));
    const B = new Float32Array(s.dOut * r2), b1 = value(n.b).data as Float32Array, b0 = initial.get(n.b)!.data as Float32Array;
    for (let i = 0; i < s.dOut; i++) for (let j = 0; j < r; j++) { B[i * r2 + j] = b1[i * r + j]!; B[i * r2 + r + j] = -b0[i * r + j]!; }
    out.set(`base_model.model.${s.module}.lora_A.weight`, f32(a, A));
    out.set(`base_model.model.${s.module}.lora_B.weight`, f32(b, B));
  }
  const alpha = c.rsLora ? c.alpha * Math.SQRT2 : 2 * c.alpha; // keeps the scale alpha/r (or alpha/√r)
  return { tensors: out, config: loraFileConfig({ ...c, rank: r2, alpha, init: 'kaiming' }, sites) };
}

/**
 * LoRA on the layers chosen by `targets`.
 * @example
 * const peft = withAdapter(model, 'digits', lora({ targets: /attn\.(q|v)/, rank: 8, alpha: 16 }));
 */
export function lora(config: LoraConfig): AdapterMethod {
  const c = resolveLora(config);
  return {
    method: 'lora',
    plan(ctx: PlanContext): AdapterPlan {
      const sites = selectSites(ctx.sites, c, 'lora', LORA_OPS, true);
      const { tensors, overrides } = initFactors(ctx, c, sites, 'lora');
      const scale = loraScale(c);
      const fileKeys = new Map<string, string>();
      const lrScales = new Map<string, number>();
      for (const s of sites) {
        const n = loraNames(ctx.name, s.module);
        fileKeys.set(n.a, `base_model.model.${s.module}.lora_A.weight`);
        fileKeys.set(n.b, `base_model.model.${s.module}.lora_B.weight`);
        if (c.loraPlusRatio) lrScales.set(n.b, c.loraPlusRatio);
      }
      return {
        peftType: 'LORA', tensors, overrides, trainable: [...tensors.keys()], fileKeys, lrScales,
        fileConfig: loraFileConfig(c, sites),
        apply({ graph, em, gate }) {
          const sg = em.mul(gate, em.scalar(scale));
          for (const s of sites) {
            const n = loraNames(ctx.name, s.module);
            const d = lowRankPath(em, s, n.a, n.b, sg);
            intercept(graph, em, s.y, (old) => em.add(old, d));
          }
        },
        // A computed weight (Site.computed) has nothing stored to fold into: merging then bakes the
        // branch into the base graph, as for a new head (exact, at the branch's cost per call).
        ...(sites.some((s) => s.computed) ? {} : { fold: (value: (n: string) => Tensor) => foldLora(ctx.name, sites, scale, value) }),
        // PiSSA trains against residual weights, which a file cannot carry. As HF PEFT does
        // (`path_initial_model_for_weight_conversion`), save ΔW = s·(B·A − B₀·A₀) as a plain LoRA
        // of rank 2r — A' = [A; A₀], B' = [B, −B₀] — which applies to the original weights.
        ...(c.init === 'pissa' ? { toFiles: (value: (n: string) => Tensor) => pissaToLora(ctx.name, sites, c, tensors, value) } : {}),
      };
    },
  };
}
