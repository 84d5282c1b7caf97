// Choosing which initializers train: names, a regex, a predicate or 'all'.
import type { Graph } from '../onnx/ir.ts';
import type { Tensor } from '../onnx/tensor.ts';
import { isFloat } from '../onnx/tensor.ts';
import { closest } from '../util/closest.ts';

export type ParamSelector = 'all' | RegExp | string | readonly string[] | ((name: string, t: Tensor) => boolean);

/** Float initializers that can carry a gradient: not BatchNorm running statistics, not shape constants. */
export function parameterCandidates(graph: Graph): string[] {
  const stats = new Set<string>();
  for (const n of graph.nodes) if (n.opType === 'BatchNormalization') {
    if (n.inputs[3]) stats.add(n.inputs[3]);
    if (n.inputs[4]) stats.add(n.inputs[4]);
  }
  const out: string[] = [];
  for (const [name, t] of graph.initializers) if (isFloat(t.dtype) && !stats.has(name) && t.data.length > 0) out.push(name);
  return out;
}

export function selectParams(graph: Graph, sel: ParamSelector): string[] {
  const candidates = parameterCandidates(graph);
  let chosen: string[];
  if (sel === 'all') chosen = candidates;
  else if (sel instanceof RegExp) chosen = candidates.filter((n) => sel.test(n));
  else if (typeof sel === 'function') chosen = candidates.filter((n) => sel(n, graph.initializers.get(n)!));
  else {
    const names = typeof sel === 'string' ? [sel] : [...sel];
    for (const n of names) {
      const t = graph.initializers.get(n);
      if (!t) throw new Error(`trainable '${n}' is not an initializer of the model. ${closestHint(n, candidates)}`);
      if (!isFloat(t.dtype)) throw new Error(`trainable '${n}' has dtype ${t.dtype}; only float tensors can be trained`);
    }
    chosen = names;
  }
  if (chosen.length === 0) {
    throw new Error(`trainable selector ${String(sel)} matched no parameter. Candidates: ${candidates.slice(0, 40).join(', ')}${candidates.length > 40 ? ` … (${candidates.length} in all)` : ''}`);
  }
  return chosen;
}

function closestHint(name: string, candidates: string[]): string {
  const c = closest(name, candidates);
  return c.length ? `Closest candidates: ${c.join(', ')}` : 'The model has no float parameters.';
}
