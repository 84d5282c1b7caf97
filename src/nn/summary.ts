// Parameter counts for model cards and tests.
import type { Model } from '../onnx/ir.ts';
import { parameterCandidates } from '../train/params.ts';

/** Trainable parameters (PyTorch's `sum(p.numel() for p in model.parameters())`): BatchNorm running statistics excluded. */
export function countParameters(model: Model): number {
  const g = model.graph;
  return parameterCandidates(g).reduce((n, name) => n + g.initializers.get(name)!.data.length, 0);
}

/** One row per initializer: name, shape and element count, in graph order. */
export function parameterTable(model: Model): { name: string; dims: number[]; size: number }[] {
  return [...model.graph.initializers].map(([name, t]) => ({ name, dims: [...t.dims], size: t.data.length }));
}
