// Bottleneck adapters: h ← h + s·W_up·f(W_down·x + b_down) + b_up, with W_up and b_up zero so a
// new adapter is the identity.
// - 'houlsby': in series after a sublayer's output projection (attention out, FFN out), swish,
//   reduction 16 (Houlsby et al. 2019, https://arxiv.org/abs/1902.00751)
// - 'pfeiffer': in series after the FFN output only, ReLU, reduction 16 (Pfeiffer et al. 2021,
//   https://arxiv.org/abs/2005.00247); target the FFN output layers
// - 'parallel': reads the layer's input and adds to its output, ReLU, reduction 2, scaling 4
//   (He et al. 2022, https://arxiv.org/abs/2110.04366)
import type { AdapterMethod, AdapterPlan, PlanContext } from '../types.ts';
import { type Tensor, f32 } from '../../onnx/tensor.ts';
import { selectSites, type TargetOptions } from '../sites.ts';
import { intercept, linearT, activation, type Activation } from '../rewrite.ts';
import { kaimingUniform } from '../linalg.ts';
import { siteInput } from '../lora/layer.ts';
import { Rng } from '../../util/rng.ts';
import { PeftError } from '../errors.ts';

export interface BottleneckConfig extends TargetOptions {
  form: 'houlsby' | 'pfeiffer' | 'parallel';
  /** Hidden width = layer width / reductionFactor (at least 1). @default 16, or 2 for 'parallel' */
  reductionFactor?: number;
  /** @default 'swish' for houlsby, 'relu' otherwise */
  activation?: Activation;
  /** @default 1, or 4 for 'parallel' */
  scaling?: number;
  /** @default 0 */
  seed?: number;
}

export function bottleneck(config: BottleneckConfig): AdapterMethod {
  const par = config.form === 'parallel';
  const rf = config.reductionFactor ?? (par ? 2 : 16), act = config.activation ?? (config.form === 'houlsby' ? 'swish' : 'relu');
  const scaling = config.scaling ?? (par ? 4 : 1);
  if (!['houlsby', 'pfeiffer', 'parallel'].includes(config.form)) throw new PeftError(`bottleneck: form must be 'houlsby', 'pfeiffer' or 'parallel', got '${config.form}'`);
  if (!(rf > 0)) throw new PeftError(`bottleneck: reductionFactor must be positive, got ${rf}`);
  return {
    method: `bottleneck-${config.form}`,
    plan(ctx: PlanContext): AdapterPlan {
      const sites = selectSites(ctx.sites, config, `bottleneck (${config.form})`, ['MatMul', 'Gemm']);
      const rng = new Rng(config.seed ?? 0);
      const tensors = new Map<string, Tensor>(), fileKeys = new Map<string, string>();
      const names = (m: string) => ({
        dw: `${ctx.name}.adapter_down.${m}.weight`, db: `${ctx.name}.adapter_down.${m}.bias`,
        uw: `${ctx.name}.adapter_up.${m}.weight`, ub: `${ctx.name}.adapter_up.${m}.bias`,
      });
      for (const s of sites) {
        const dIn = par ? s.dIn : s.dOut, hidden = Math.max(1, Math.floor(s.dOut / rf));
        const n = names(s.module);
        tensors.set(n.dw, f32([hidden, dIn], kaimingUniform(hidden * dIn, dIn, rng)));
        tensors.set(n.db, f32([hidden]));
        tensors.set(n.uw, f32([s.dOut, hidden]));
        tensors.set(n.ub, f32([s.dOut]));
        for (const k of Object.values(n)) fileKeys.set(k, `base_model.model.${s.module}.${k.slice(ctx.name.length + 1).replace(`.${s.module}.`, '.')}`);
      }
      return {
        peftType: 'BOTTLENECK', tensors, overrides: new Map(), trainable: [...tensors.keys()], fileKeys,
        fileConfig: {
          peft_type: 'BOTTLENECK', form: config.form, reduction_factor: rf, non_linearity: act, scaling,
          target_modules: [...new Set(sites.map((s) => s.module))], base_model_name_or_path: null,
        },
        apply({ graph, em, gate }) {
          const sg = em.mul(gate, em.scalar(scaling));
          for (const s of sites) {
            const n = names(s.module);
            const path = (x: string) => em.mul(em.add(linearT(em, activation(em, em.add(linearT(em, x, n.dw), n.db), act), n.uw), n.ub), sg);
            if (par) {
              const d = path(siteInput(em, s));
              intercept(graph, em, s.out, (old) => em.add(old, d));
            } else {
              intercept(graph, em, s.out, (old) => em.add(old, path(old)));
            }
          }
        },
      };
    },
  };
}
