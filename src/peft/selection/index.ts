// Methods that add no nodes: they choose which base parameters train, and own trained copies.
// BitFit trains only biases (Ben Zaken et al. 2022, https://arxiv.org/abs/2106.10199);
// norm-affine trains only normalisation scales and shifts (BatchNorm γ/β, LayerNorm, Group/InstanceNorm).
import type { Graph } from '../../onnx/ir.ts';
import type { AdapterMethod, AdapterPlan, PlanContext } from '../types.ts';
import { type Tensor, cloneTensor, isFloat } from '../../onnx/tensor.ts';
import { PeftError } from '../errors.ts';
import { findNormLayers } from '../../onnx/norm-layers.ts';
import { noNormLayerMessage, NORM_KINDS } from '../../onnx/norm-folding.ts';

export interface SelectionConfig {
  /** Keep only parameters whose name matches. @default every candidate */
  filter?: RegExp | ((name: string) => boolean);
}

function selection(kind: string, peftType: string, candidates: (g: Graph, ctx: PlanContext) => string[], config: SelectionConfig): AdapterMethod {
  return {
    method: kind,
    plan(ctx): AdapterPlan {
      const all = [...new Set(candidates(ctx.graph, ctx))].filter((n) => ctx.graph.initializers.has(n));
      const f = config.filter;
      const chosen = f ? all.filter((n) => (typeof f === 'function' ? f(n) : (f.lastIndex = 0, f.test(n)))) : all;
      if (chosen.length === 0) throw new PeftError(`${kind}: no parameter selected${f ? ` by filter ${String(f)}` : ''}. Candidates: ${all.slice(0, 40).join(', ') || '(the model has none)'}`);
      const overrides = new Map<string, Tensor>(chosen.map((n) => [n, cloneTensor(ctx.value(n))]));
      return {
        peftType, tensors: new Map(), overrides, trainable: chosen,
        fileKeys: new Map(chosen.map((n) => [n, `base_model.model.${n}`])),
        fileConfig: { peft_type: peftType, target_parameters: chosen, base_model_name_or_path: null },
        apply() { /* no rewrite: the trained copies replace the base values */ },
        fold: (value) => new Map(chosen.map((n) => [n, value(n)])),
      };
    },
  };
}

/**
 * BitFit: biases of linear, conv and normalisation layers, and 1-D tensors named as PyTorch names
 * a bias that an Add reads elsewhere (a graph convolution adds its bias after the aggregation).
 */
export function bitfit(config: SelectionConfig = {}): AdapterMethod {
  return selection('bitfit', 'BITFIT', (g, ctx) => {
    const out = ctx.sites.flatMap((s) => (s.bias ? [s.bias] : []));
    for (const l of findNormLayers(g)) if (l.bias) out.push(l.bias);
    for (const n of g.nodes) {
      if (n.opType !== 'Add') continue;
      for (const i of n.inputs) {
        const t = i ? g.initializers.get(i) : undefined;
        if (t && t.dims.length === 1 && isFloat(t.dtype) && /(^|\.)bias$/.test(i!)) out.push(i!);
      }
    }
    return out;
  }, config);
}

/**
 * Norm-affine: the scale and shift of every normalisation layer (not BatchNorm's running
 * statistics), fused or decomposed into primitive ops (LayerNorm below opset 17, GroupNorm below 18:
 * see src/onnx/norm-layers.ts).
 */
export function normAffine(config: SelectionConfig = {}): AdapterMethod {
  return selection('norm-affine', 'NORM_AFFINE', (g, ctx) => {
    const layers = findNormLayers(g);
    if (layers.length === 0) {
      throw new PeftError(noNormLayerMessage(`norm-affine trains the scale and shift of normalization layers (${NORM_KINDS}), and this model has none.`, { graph: g, ...ctx.source },
        'train another parameter group: lora(), bitfit(), or every parameter (trainable: \'all\')'));
    }
    return layers.flatMap((l) => [l.scale, l.bias].filter((p): p is string => !!p));
  }, config);
}
