// RoTTA's robust batch normalization (RBN; BIT-DA/RoTTA core/utils/bn_layers.py RobustBN1d/2d)
// as a graph rewrite: every BatchNormalization node becomes
//   μ_b, σ²_b = mean and biased variance of x over every axis but the channel axis
//   μ = (1 − α)·μ_g + α·μ_b,  σ² = (1 − α)·σ²_g + α·σ²_b
//   y = (x − μ)/sqrt(σ² + ε)·γ + β
// with the global statistics μ_g, σ²_g fed as graph inputs (`rbn.mean.k`, `rbn.var.k`) and α as
// the scalar input `rbn.alpha`, and μ, σ² as outputs (`rbn.mean_out.k`, `rbn.var_out.k`): the
// caller stores them as the new global statistics (the module's in-place buffer update). Train
// mode is α = 0.05 (gradients flow through the batch statistics, scaled by α, as torch's);
// eval mode is α = 0, which normalises with the global statistics alone (exactly: 1·μ_g + 0·μ_b).
// The statistics live outside the graph, so one compiled session serves every update.
import { RefitModel } from '../model.ts';
import { cloneModel, opsetVersion, attrFloat } from '../onnx/ir.ts';
import { Emitter } from '../onnx/emitter.ts';
import { probeShapes } from '../onnx/shapes.ts';
import type { Tensor } from '../onnx/tensor.ts';

export const RBN_ALPHA = 'rbn.alpha';
export const rbnName = (kind: 'mean' | 'var' | 'mean_out' | 'var_out', k: number) => `rbn.${kind}.${k}`;

export interface RbnLayer {
  node: string;
  channels: number;
  /** The node's running-statistic initializers: the source statistics. */
  mean: string;
  variance: string;
}

/** The model's BatchNorm layers in graph order (the order of the rbn.* inputs). */
export function rbnLayers(model: RefitModel): RbnLayer[] {
  return model.ir.graph.nodes.filter((n) => n.opType === 'BatchNormalization').map((n) => {
    const [, scale, , mean, variance] = n.inputs;
    if (!mean || !variance || !model.ir.graph.initializers.has(mean) || !model.ir.graph.initializers.has(variance)) {
      throw new Error(`rotta: BatchNormalization node '${n.name}' has no running statistics stored as initializers; robust BN starts from them`);
    }
    const channels = model.ir.graph.initializers.get(scale!)?.data.length ?? model.ir.graph.initializers.get(mean)!.data.length;
    return { node: n.name, channels, mean, variance };
  });
}

/** A model (sharing `model`'s parameter tensors) whose BatchNorm layers are RBN, as above. */
export async function robustBnModel(model: RefitModel, example: Record<string, Tensor>): Promise<RefitModel> {
  const shapes = await probeShapes(model.ir, Object.fromEntries(Object.entries(example).map(([k, t]) => [k, { dtype: t.dtype, dims: t.dims }])));
  const ir = cloneModel(model.ir);
  const g = ir.graph;
  const em = new Emitter(g, opsetVersion(ir));
  em.reserve(RBN_ALPHA);
  g.inputs.push({ name: RBN_ALPHA, dtype: 'float32', shape: [] });
  const oneMinus = em.sub(em.scalar(1), RBN_ALPHA);
  const original = g.nodes;
  g.nodes = [];
  let k = 0;
  for (const node of original) {
    if (node.opType !== 'BatchNormalization') { g.nodes.push(node); continue; }
    const [x, scale, bias] = node.inputs as [string, string, string];
    const dims = shapes.get(x)?.dims;
    if (!dims || dims.length < 2) throw new Error(`rotta: BatchNormalization node '${node.name}' input '${x}' has shape [${dims ?? '?'}]; robust BN needs [N, C, ...]`);
    const C = dims[1]!;
    const eps = attrFloat(node, 'epsilon', 1e-5);
    const axes = dims.map((_, i) => i).filter((i) => i !== 1);
    const bm = em.reduce('ReduceMean', x, axes, true);
    const c = em.sub(x, bm);
    const bv = em.reduce('ReduceMean', em.mul(c, c), axes, true);
    const gm = rbnName('mean', k), gv = rbnName('var', k);
    for (const t of [gm, gv]) { em.reserve(t); g.inputs.push({ name: t, dtype: 'float32', shape: [C] }); }
    const mix = (gl: string, b: string) => em.add(em.mul(gl, oneMinus), em.mul(em.reshape(b, [C]), RBN_ALPHA));
    const mean = mix(gm, bm), variance = mix(gv, bv);
    const bshape = [1, C, ...dims.slice(2).map(() => 1)];
    const inv = em.div(em.sub(x, em.reshape(mean, bshape)), em.op('Sqrt', [em.add(em.reshape(variance, bshape), em.scalar(eps))]));
    const y = em.add(em.mul(inv, em.reshape(scale, bshape)), em.reshape(bias, bshape));
    g.nodes.push({ name: em.fresh(`${node.name}_rbn`), opType: 'Identity', domain: '', inputs: [y], outputs: [node.outputs[0]!], attrs: {} });
    for (const [src, name] of [[mean, rbnName('mean_out', k)], [variance, rbnName('var_out', k)]] as const) {
      em.reserve(name);
      g.nodes.push({ name: em.fresh(`${name}_id`), opType: 'Identity', domain: '', inputs: [src], outputs: [name], attrs: {} });
      g.outputs.push({ name, dtype: 'float32', shape: [C] });
    }
    k++;
  }
  // The running-statistic initializers are no longer read (the graph is a clone: the source keeps them).
  const used = new Set(g.nodes.flatMap((n) => n.inputs));
  for (const l of rbnLayers(model)) for (const t of [l.mean, l.variance]) if (!used.has(t)) g.initializers.delete(t);
  return new RefitModel(ir, model.sessionOptions);
}
