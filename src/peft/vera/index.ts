// VeRA: ΔW = Λ_b·B·Λ_d·A with A [r, in] and B [out, r] frozen, random, seeded and shared by every
// layer; only the vectors d [r] and b [out] train (Kopiczko et al. 2024, https://arxiv.org/abs/2310.11454).
// Layers narrower than the largest take the leading slice of A and B, as HF PEFT does.
import type { AdapterMethod, AdapterPlan, PlanContext } from '../types.ts';
import { type Tensor, f32 } from '../../onnx/tensor.ts';
import { selectSites, oneSitePerWeight, type TargetOptions } from '../sites.ts';
import { intercept, linearT } from '../rewrite.ts';
import { kaimingUniform, mat, matmul } from '../linalg.ts';
import { siteInput, weightMat, toWeight, addMat } from '../lora/layer.ts';
import { Rng } from '../../util/rng.ts';
import { PeftError } from '../errors.ts';

export interface VeraConfig extends TargetOptions {
  /** Rank of the shared projections; VeRA uses a much larger r than LoRA at the same cost. @default 256 (HF PEFT) */
  rank?: number;
  /** Initial value of every d. @default 0.1 (HF PEFT `d_initial`) */
  dInitial?: number;
  /** Seed of the shared projections (HF PEFT `projection_prng_key`). @default 0 */
  seed?: number;
}

export function vera(config: VeraConfig): AdapterMethod {
  const rank = config.rank ?? 256, dInitial = config.dInitial ?? 0.1, seed = config.seed ?? 0;
  if (!Number.isInteger(rank) || rank < 1) throw new PeftError(`vera: rank must be a positive integer, got ${rank}`);
  return {
    method: 'vera',
    plan(ctx: PlanContext): AdapterPlan {
      const sites = selectSites(ctx.sites, config, 'vera', ['MatMul', 'Gemm']);
      const maxIn = Math.max(...sites.map((s) => s.dIn)), maxOut = Math.max(...sites.map((s) => s.dOut));
      const rng = new Rng(seed);
      const A = `${ctx.name}.vera_A`, B = `${ctx.name}.vera_B`;
      const tensors = new Map<string, Tensor>([
        [A, f32([rank, maxIn], kaimingUniform(rank * maxIn, maxIn, rng))],
        [B, f32([maxOut, rank], kaimingUniform(maxOut * rank, rank, rng))],
      ]);
      const names = (m: string) => ({ d: `${ctx.name}.vera_lambda_d.${m}`, b: `${ctx.name}.vera_lambda_b.${m}` });
      const fileKeys = new Map<string, string>([[A, 'base_model.vera_A'], [B, 'base_model.vera_B']]);
      const trainable: string[] = [];
      for (const s of sites) {
        const n = names(s.module);
        tensors.set(n.d, f32([rank], new Float32Array(rank).fill(dInitial)));
        tensors.set(n.b, f32([s.dOut]));
        fileKeys.set(n.d, `base_model.model.${s.module}.vera_lambda_d`);
        fileKeys.set(n.b, `base_model.model.${s.module}.vera_lambda_b`);
        trainable.push(n.d, n.b);
      }
      const sliceOf = (v: (n: string) => Tensor, s: (typeof sites)[number]) => {
        const a = v(A), b = v(B);
        const As = mat(rank, s.dIn), Bs = mat(s.dOut, rank);
        for (let i = 0; i < rank; i++) for (let j = 0; j < s.dIn; j++) As.data[i * s.dIn + j] = a.data[i * maxIn + j] as number;
        for (let i = 0; i < s.dOut; i++) for (let j = 0; j < rank; j++) Bs.data[i * rank + j] = b.data[i * rank + j] as number;
        return { As, Bs };
      };
      return {
        peftType: 'VERA', tensors, overrides: new Map(), trainable, fileKeys,
        fileConfig: {
          peft_type: 'VERA', task_type: null, r: rank, target_modules: [...new Set(sites.map((s) => s.module))], projection_prng_key: seed,
          save_projection: true, vera_dropout: 0, d_initial: dInitial, bias: 'none', fan_in_fan_out: false, modules_to_save: null,
          inference_mode: false, base_model_name_or_path: null,
        },
        apply({ graph, em, gate }) {
          for (const s of sites) {
            const n = names(s.module);
            const a = s.dIn === maxIn ? A : em.op('Slice', [A, em.ints([0]), em.ints([s.dIn]), em.ints([1])]);
            const b = s.dOut === maxOut ? B : em.op('Slice', [B, em.ints([0]), em.ints([s.dOut]), em.ints([0])]);
            const h = em.mul(linearT(em, siteInput(em, s), a), n.d);
            let d = em.mul(linearT(em, h, b), em.mul(n.b, gate));
            if (s.alpha !== undefined && s.alpha !== 1) d = em.mul(d, em.scalar(s.alpha));
            intercept(graph, em, s.y, (old) => em.add(old, d));
          }
        },
        fold(value) {
          const out = new Map<string, Tensor>();
          for (const s of oneSitePerWeight(sites)) {
            const n = names(s.module);
            const { As, Bs } = sliceOf(value, s);
            const d = value(n.d).data as Float32Array, bv = value(n.b).data as Float32Array;
            for (let i = 0; i < rank; i++) for (let j = 0; j < s.dIn; j++) As.data[i * s.dIn + j]! *= d[i]!;
            const delta = matmul(Bs, As);
            for (let i = 0; i < s.dOut; i++) for (let j = 0; j < s.dIn; j++) delta.data[i * s.dIn + j]! *= bv[i]!;
            const w = out.get(s.weight) ?? value(s.weight);
            out.set(s.weight, toWeight(s, addMat(weightMat(s, w), delta), w));
          }
          return out;
        },
      };
    },
  };
}
