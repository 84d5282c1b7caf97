// Several forward passes of one model in one graph: copy k of the forward reads its own input and
// writes its own outputs, and every copy uses the same initializers (parameters). A training step
// compiled on such a graph differentiates a loss that combines the passes, and the gradients of
// the shared parameters add up over the passes, as PyTorch's autograd does when one module is
// called several times before backward(). Each copy has its own BatchNorm batch statistics,
// as separate calls have. RMT uses it for the test batch, its augmented view and the source batch.
import { RefitModel } from '../model.ts';
import type { Model, Node, ValueInfo } from '../onnx/ir.ts';

/** Name of tensor `t` in branch `suffix` ('' keeps the original names). */
export const branchName = (t: string, suffix: string) => (suffix === '' ? t : `${t}${suffix}`);

/**
 * A model whose graph holds one copy of `model`'s forward pass per suffix. The copy with suffix s
 * has inputs and outputs named `name + s` (suffix '' keeps the names); the copies share the
 * parameter tensors with `model` (no copy), so updates to `model`'s parameters are seen here.
 */
export function multiBranch(model: RefitModel, suffixes: string[]): RefitModel {
  if (new Set(suffixes).size !== suffixes.length) throw new Error(`multiBranch: suffixes must be distinct, got ${suffixes.join(', ')}`);
  const g = model.ir.graph;
  const inits = g.initializers;
  const taken = new Set<string>([...inits.keys(), ...g.inputs.map((i) => i.name), ...g.nodes.flatMap((n) => [n.name, ...n.outputs])]);
  for (const s of suffixes) {
    if (s === '') continue;
    for (const n of [...g.inputs.map((i) => i.name), ...g.nodes.flatMap((n) => n.outputs)]) {
      if (n && taken.has(n + s)) throw new Error(`multiBranch: tensor '${n + s}' (branch '${s}' of '${n}') already exists in the graph; choose another suffix`);
    }
  }
  const rename = (t: string, s: string) => (t === '' || inits.has(t) ? t : branchName(t, s));
  // Symbolic dimensions ('batch') get a per-branch name too: the branches' batch sizes may differ.
  const dims = (v: ValueInfo, s: string): ValueInfo => ({ ...v, name: rename(v.name, s), shape: v.shape ? v.shape.map((d) => (typeof d === 'string' ? branchName(d, s) : d)) : v.shape });
  for (const n of g.nodes) {
    for (const a of Object.values(n.attrs)) if (a.kind === 'opaque') throw new Error(`multiBranch: node '${n.name}' (${n.opType}) has a subgraph attribute; refit cannot copy it per branch`);
  }
  const nodes: Node[] = [];
  const initializers = new Map(inits);
  const inputs: ValueInfo[] = [];
  const outputs: ValueInfo[] = [];
  const valueInfo: ValueInfo[] = [];
  for (const s of suffixes) {
    for (const n of g.nodes) {
      const ins = n.inputs.map((t) => rename(t, s));
      if (n.opType === 'BatchNormalization' && s !== '') {
        // Each branch gets its own (shared-value) running statistics: a training step feeds and
        // updates them per BatchNorm node, and one initializer fed twice is not allowed.
        for (const k of [3, 4]) {
          const t = n.inputs[k];
          if (t && inits.has(t)) { ins[k] = branchName(t, s); initializers.set(ins[k]!, inits.get(t)!); }
        }
      }
      nodes.push({ ...n, name: branchName(n.name, s), inputs: ins, outputs: n.outputs.map((t) => rename(t, s)), attrs: n.attrs, ...(n.meta ? { meta: { ...n.meta } } : {}) });
    }
    for (const i of g.inputs) if (!inits.has(i.name)) inputs.push(dims(i, s));
    for (const o of g.outputs) outputs.push(dims(o, s));
    for (const v of g.valueInfo) valueInfo.push(dims(v, s));
  }
  const ir: Model = {
    ...model.ir,
    metadata: { ...model.ir.metadata },
    graph: { ...g, nodes, inputs, outputs, valueInfo, initializers },
  };
  return new RefitModel(ir, model.sessionOptions);
}
