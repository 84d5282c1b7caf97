// Weights that live inside control flow: what an If's branches hold (initializers and Constant
// nodes, nested subgraphs included). Silero VAD v5's file keeps its whole 16 kHz model inside an
// If on its sample-rate input, so the top graph shows no parameter at all until that input is
// fixed (withFixedInputs): `refit inspect` names the If, the input and what its branches hold.
import type onnxProto from 'onnx-proto';
import type { Node } from './ir.ts';
import { tensorFromProto } from './proto.ts';
import { subgraphsOf } from './subgraphs.ts';
import { isWeightConstant } from './exporter-quirks.ts';

/** Weight tensors (as loadModel counts Constant weights: float, 2+ values, not all equal) in a node's subgraphs, at any depth. */
export function branchWeights(n: Node): { tensors: number; values: number } {
  const out = { tensors: 0, values: 0 };
  const count = (p: onnxProto.onnx.ITensorProto | null | undefined) => {
    if (!p) return;
    let t;
    try { t = tensorFromProto(p); } catch { return; } // stored outside the file, or a type refit does not read: not counted
    if (isWeightConstant(t)) { out.tensors++; out.values += t.data.length; }
  };
  const visit = (g: onnxProto.onnx.IGraphProto) => {
    for (const t of g.initializer ?? []) count(t);
    for (const m of g.node ?? []) {
      if (m.opType === 'Constant') count(m.attribute?.find((a) => a.name === 'value')?.t);
      for (const a of m.attribute ?? []) {
        if (a.g) visit(a.g);
        for (const s of a.graphs ?? []) visit(s);
      }
    }
  };
  for (const g of subgraphsOf(n)) visit(g);
  return out;
}
