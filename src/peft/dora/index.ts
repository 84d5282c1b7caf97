// DoRA: W' = m ⊙ (W + s·B·A) / ‖W + s·B·A‖_c, a trainable magnitude per output times the
// normalised direction (Liu et al. 2024, https://arxiv.org/abs/2402.09353, eq. 5).
// The column norm keeps its gradient (the paper's §4.3 memory saving, which HF PEFT uses,
// treats it as a constant); the forward values are identical either way.
import type { AdapterMethod, AdapterPlan, PlanContext } from '../types.ts';
import { type Tensor, f32 } from '../../onnx/tensor.ts';
import { selectSites } from '../sites.ts';
import { intercept, linearT } from '../rewrite.ts';
import { mat } from '../linalg.ts';
import { type LoraConfig, resolveLora, loraScale } from '../lora/config.ts';
import { loraFileConfig, loraNames, initFactors } from '../lora/index.ts';
import { siteInput, deltaW, weightMat, toWeight, addMat } from '../lora/layer.ts';

export type DoraConfig = Omit<LoraConfig, 'init'>;

export const magnitudeName = (name: string, module: string) => `${name}.lora_magnitude_vector.${module}`;

/** Norm of each output row of a [out, in] matrix. */
function rowNorms(m: ReturnType<typeof mat>): Float32Array {
  const out = new Float32Array(m.rows);
  for (let i = 0; i < m.rows; i++) { let s = 0; for (let j = 0; j < m.cols; j++) s += m.data[i * m.cols + j]! ** 2; out[i] = Math.sqrt(s); }
  return out;
}

export function dora(config: DoraConfig): AdapterMethod {
  const c = resolveLora({ ...config, init: 'kaiming' }, 'dora');
  return {
    method: 'dora',
    plan(ctx: PlanContext): AdapterPlan {
      const sites = selectSites(ctx.sites, c, 'dora', ['MatMul', 'Gemm']);
      const { tensors } = initFactors(ctx, c, sites, 'dora');
      const scale = loraScale(c);
      const fileKeys = new Map<string, string>();
      const lrScales = new Map<string, number>();
      for (const s of sites) {
        const n = loraNames(ctx.name, s.module);
        // m starts at ‖W‖_c so that the adapter starts as the identity (B = 0).
        tensors.set(magnitudeName(ctx.name, s.module), f32([s.dOut], rowNorms(weightMat(s, ctx.value(s.weight)))));
        fileKeys.set(n.a, `base_model.model.${s.module}.lora_A.weight`);
        fileKeys.set(n.b, `base_model.model.${s.module}.lora_B.weight`);
        fileKeys.set(magnitudeName(ctx.name, s.module), `base_model.model.${s.module}.lora_magnitude_vector.weight`);
        if (c.loraPlusRatio) lrScales.set(n.b, c.loraPlusRatio);
      }
      return {
        peftType: 'LORA', tensors, overrides: new Map(), trainable: [...tensors.keys()], fileKeys, lrScales,
        fileConfig: loraFileConfig(c, sites, { use_dora: true }),
        apply({ graph, em, gate }) {
          const s0 = em.scalar(scale);
          for (const s of sites) {
            const n = loraNames(ctx.name, s.module);
            // V = W + s·ΔW in [in, out] form; its norm over `in` gives one value per output.
            const wIO = s.layout === 'in_out' ? s.weight : em.transpose(s.weight, [1, 0]);
            const dIO = em.op('MatMul', [em.transpose(n.a, [1, 0]), em.transpose(n.b, [1, 0])]);
            const v = em.add(wIO, em.mul(dIO, s0));
            const norm = em.op('Sqrt', [em.reduce('ReduceSum', em.mul(v, v), [0], false)]);
            const factor = em.div(magnitudeName(ctx.name, s.module), norm);
            let lr = linearT(em, linearT(em, siteInput(em, s), n.a), n.b);
            lr = em.mul(lr, s.alpha !== undefined && s.alpha !== 1 ? em.scalar(scale * s.alpha) : s0);
            const blend = (base: string) => em.add(base, em.mul(gate, em.sub(em.mul(em.add(base, lr), factor), base)));
            if (s.op === 'Gemm' && s.bias) {
              // DoRA rescales W·x only: split Gemm's bias C off, adapt, then add β·C back.
              const node = graph.nodes.find((x) => x.name === s.node)!;
              const c = node.inputs[2]!;
              node.inputs = node.inputs.slice(0, 2);
              const beta = node.attrs.beta ? (node.attrs.beta.value as number) : 1;
              delete node.attrs.beta;
              intercept(graph, em, s.y, (old) => em.add(blend(old), beta === 1 ? c : em.mul(c, em.scalar(beta))));
            } else {
              intercept(graph, em, s.y, blend);
            }
          }
        },
        fold(value) {
          const out = new Map<string, Tensor>();
          for (const s of sites) {
            const n = loraNames(ctx.name, s.module);
            const w = value(s.weight);
            const v = addMat(weightMat(s, w), deltaW(s, value(n.a), value(n.b), scale));
            const norms = rowNorms(v), m = value(magnitudeName(ctx.name, s.module)).data as Float32Array;
            for (let i = 0; i < v.rows; i++) for (let j = 0; j < v.cols; j++) v.data[i * v.cols + j]! *= m[i]! / norms[i]!;
            out.set(s.weight, toWeight(s, v, w));
          }
          return out;
        },
      };
    },
  };
}

