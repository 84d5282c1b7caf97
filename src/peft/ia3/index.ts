// (IA)^3: learned vectors that rescale activations elementwise — a layer's output (keys,
// values) or, for feed-forward layers, its input (Liu et al. 2022, https://arxiv.org/abs/2205.05638).
// Vectors start at 1, so the adapter starts as the identity. Shapes follow HF PEFT's `ia3_l`:
// [out, 1] / [1, in] for linear layers, [1, C, 1, 1] for convolutions.
import type { AdapterMethod, AdapterPlan, PlanContext } from '../types.ts';
import { type Tensor, f32, cloneTensor } from '../../onnx/tensor.ts';
import { selectSites, oneSitePerWeight, type TargetOptions, type TargetSelector } from '../sites.ts';
import { intercept } from '../rewrite.ts';
import { weightMat, toWeight, fanIn } from '../lora/layer.ts';
import { PeftError } from '../errors.ts';

export interface Ia3Config extends TargetOptions {
  /**
   * Which of the targets are feed-forward layers, whose *input* is scaled (HF PEFT
   * `feedforward_modules`); the others have their output scaled. @default none
   */
  feedforward?: TargetSelector;
}

export function ia3(config: Ia3Config): AdapterMethod {
  return {
    method: 'ia3',
    plan(ctx: PlanContext): AdapterPlan {
      const sites = selectSites(ctx.sites, config, 'ia3', ['MatMul', 'Gemm', 'Conv']);
      // An empty list means none, as HF PEFT's `feedforward_modules: []` in a saved config.
      const ffGiven = config.feedforward !== undefined && !(Array.isArray(config.feedforward) && config.feedforward.length === 0);
      const ff = new Set(ffGiven ? selectSites(sites, { targets: config.feedforward! }, 'ia3 feedforward', ['MatMul', 'Gemm', 'Conv']).map((s) => s.module) : []);
      const name = (m: string) => `${ctx.name}.ia3_l.${m}`;
      const tensors = new Map<string, Tensor>(), fileKeys = new Map<string, string>();
      for (const s of sites) {
        const isFf = ff.has(s.module);
        if (isFf && s.transA) throw new PeftError(`ia3: feed-forward target ${s.module} is a Gemm with transA=1; input scaling needs transA=0`);
        const d = isFf ? s.dIn : s.dOut;
        const dims = s.op === 'Conv' ? [1, d, ...s.kernel!.map(() => 1)] : isFf ? [1, d] : [d, 1];
        tensors.set(name(s.module), f32(dims, new Float32Array(d).fill(1)));
        fileKeys.set(name(s.module), `base_model.model.${s.module}.ia3_l`);
      }
      return {
        peftType: 'IA3', tensors, overrides: new Map(), trainable: [...tensors.keys()], fileKeys,
        fileConfig: {
          peft_type: 'IA3', task_type: null, target_modules: [...new Set(sites.map((s) => s.module))], feedforward_modules: [...ff],
          fan_in_fan_out: false, init_ia3_weights: true, modules_to_save: null, inference_mode: false, base_model_name_or_path: null,
        },
        apply({ graph, em, gate }) {
          const one = em.scalar(1);
          for (const s of sites) {
            let l = em.add(one, em.mul(gate, em.sub(name(s.module), one))); // 1 + g·(l − 1)
            if (ff.has(s.module)) {
              const node = graph.nodes.find((n) => n.name === s.node)!;
              node.inputs[0] = em.mul(node.inputs[0]!, l);
            } else {
              if (s.op !== 'Conv') l = em.reshape(l, [s.dOut]);
              intercept(graph, em, s.out, (old) => em.mul(old, l));
            }
          }
        },
        fold(value) {
          const out = new Map<string, Tensor>();
          for (const s of oneSitePerWeight(sites)) {
            const l = value(name(s.module)).data as Float32Array;
            const w = out.get(s.weight) ?? value(s.weight);
            const m = weightMat(s, w);
            if (ff.has(s.module)) {
              const per = fanIn(s) / s.dIn; // conv: kh·kw columns per input channel
              for (let i = 0; i < m.rows; i++) for (let j = 0; j < m.cols; j++) m.data[i * m.cols + j]! *= l[Math.floor(j / per)]!;
            } else {
              for (let i = 0; i < m.rows; i++) for (let j = 0; j < m.cols; j++) m.data[i * m.cols + j]! *= l[i]!;
              if (s.bias) {
                const b = cloneTensor(out.get(s.bias) ?? value(s.bias));
                for (let i = 0; i < b.data.length; i++) (b.data as Float32Array)[i]! *= l[i]!;
                out.set(s.bias, b);
              }
            }
            out.set(s.weight, toWeight(s, m, w));
          }
          return out;
        },
      };
    },
  };
}

