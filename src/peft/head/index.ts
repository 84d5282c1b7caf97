// A new classification head for a task with another label set: logits = features·Wᵀ + b,
// replacing the model's old head (whose nodes and weights leave the graph).
import type { AdapterMethod, AdapterPlan, PlanContext } from '../types.ts';
import { type Tensor, f32 } from '../../onnx/tensor.ts';
import { linearT } from '../rewrite.ts';
import { dropDead } from '../../onnx/ir.ts';
import { kaimingUniform } from '../linalg.ts';
import { Rng } from '../../util/rng.ts';
import { PeftError } from '../errors.ts';

export interface HeadConfig {
  classes: number;
  /** The representation the head reads. @default 'features' */
  features?: string;
  /** The output the head replaces. @default 'logits' */
  output?: string;
  /** Width of `features`, when the graph does not declare its shape. */
  inFeatures?: number;
  /** @default 0 */
  seed?: number;
}

export function head(config: HeadConfig): AdapterMethod {
  const features = config.features ?? 'features', output = config.output ?? 'logits';
  if (!Number.isInteger(config.classes) || config.classes < 1) throw new PeftError(`head: classes must be a positive integer, got ${config.classes}`);
  return {
    method: 'head',
    plan(ctx: PlanContext): AdapterPlan {
      const g = ctx.graph;
      const outInfo = g.outputs.find((o) => o.name === output);
      if (!outInfo) throw new PeftError(`head: the model has no output '${output}'; outputs: ${g.outputs.map((o) => o.name).join(', ')}`);
      const declared = [...g.outputs, ...g.valueInfo, ...g.inputs].find((v) => v.name === features)?.shape;
      const d = config.inFeatures ?? (declared ? declared[declared.length - 1] : undefined);
      if (!g.nodes.some((n) => n.outputs.includes(features)) && !g.inputs.some((i) => i.name === features)) throw new PeftError(`head: the model has no tensor '${features}'; outputs: ${g.outputs.map((o) => o.name).join(', ')}`);
      if (typeof d !== 'number') throw new PeftError(`head: the width of '${features}' is not declared in the graph; pass inFeatures`);
      const rng = new Rng(config.seed ?? 0);
      const w = `${ctx.name}.head.weight`, b = `${ctx.name}.head.bias`;
      const tensors = new Map<string, Tensor>([
        [w, f32([config.classes, d], kaimingUniform(config.classes * d, d, rng))], // PyTorch nn.Linear's init
        [b, f32([config.classes], kaimingUniform(config.classes, d, rng))],
      ]);
      return {
        peftType: 'HEAD', tensors, overrides: new Map(), trainable: [w, b],
        fileKeys: new Map([[w, 'base_model.model.head.weight'], [b, 'base_model.model.head.bias']]),
        fileConfig: { peft_type: 'HEAD', classes: config.classes, features, output, modules_to_save: ['head'], base_model_name_or_path: null },
        apply({ graph, em }) {
          const prod = graph.nodes.find((n) => n.outputs.includes(output))!;
          prod.outputs[prod.outputs.indexOf(output)] = em.fresh(`${output}.replaced`);
          const y = em.add(linearT(em, features, w), b);
          graph.nodes.push({ name: em.fresh('head_out'), opType: 'Identity', domain: '', inputs: [y], outputs: [output], attrs: {} });
          const o = graph.outputs.find((x) => x.name === output)!;
          if (o.shape) o.shape = [...o.shape.slice(0, -1), config.classes];
          dropDead(graph); // the old head's nodes and weights (and this adapter's unused gate) leave the graph
        },
      };
    },
  };
}
