// Rewrites inside If, Loop and Scan bodies (kept as onnx-proto by the IR): the changes between
// opsets 7 and 13 that move an attribute to an int64 input and need nothing else to know
// (Squeeze, Unsqueeze, ReduceSum and Split at 13; Slice and TopK at 10). torchvision's detection
// models exported at opset 11, as its documentation does it, hold Squeeze and Unsqueeze in Ifs.
// A rewrite that needs a tensor's rank or type (Softmax's 2-D coercion, Clip's bounds) is not
// made here: the body's tensors are not among the values the verification run exposes, so such
// a node stays refused by name (opset-upgrade.ts).
import onnxProto from 'onnx-proto';
import type { Attr } from '../ir.ts';
import { tensorToProto } from '../proto.ts';
import { i64 } from '../tensor.ts';
import { mapSubgraphs } from '../subgraphs.ts';

type NodeProto = onnxProto.onnx.INodeProto;
type GraphProto = onnxProto.onnx.IGraphProto;
type Long = { toNumber(): number };

/** Per op: the attribute that became an input, that input's position, and the opset it moved at. */
const MOVED: Record<string, { attr: string; input: number; below: number }> = {
  Squeeze: { attr: 'axes', input: 1, below: 13 },
  Unsqueeze: { attr: 'axes', input: 1, below: 13 },
  ReduceSum: { attr: 'axes', input: 1, below: 13 },
  Split: { attr: 'split', input: 1, below: 13 },
  TopK: { attr: 'k', input: 1, below: 10 },
};

/** Whether a node of this op, at this opset, inside a body is rewritten here. */
export function rewritesInBody(op: string, from: number): boolean {
  return (MOVED[op] !== undefined && from < MOVED[op].below) || (op === 'Slice' && from < 10);
}

const isDefault = (n: NodeProto) => !n.domain || n.domain === 'ai.onnx';
const num = (v: number | Long) => (typeof v === 'number' ? v : v.toNumber());

/**
 * Rewrite every such node in the subgraphs of `attrs` (nested bodies too), in place on copies of
 * the protos; returns the rewritten attributes and counts per op. `fresh` names new tensors.
 */
export function rewriteBodies(attrs: Record<string, Attr>, from: number, fresh: (hint: string) => string, counts: Record<string, number>): Record<string, Attr> {
  const rewrite = (g: GraphProto) => rewriteGraph(g, from, fresh, counts);
  return Object.fromEntries(Object.entries(attrs).map(([k, a]) => [k, a.kind === 'opaque' ? { kind: 'opaque', value: mapSubgraphs(a.value as onnxProto.onnx.IAttributeProto, rewrite) } : a]));
}

function rewriteGraph(g: GraphProto, from: number, fresh: (hint: string) => string, counts: Record<string, number>): GraphProto {
  const nodes: NodeProto[] = [];
  for (const n0 of g.node ?? []) {
    // nested bodies first
    const n: NodeProto = { ...n0, attribute: (n0.attribute ?? []).map((a) => mapSubgraphs(a, (s) => rewriteGraph(s, from, fresh, counts))) };
    const op = n.opType ?? '';
    if (!isDefault(n) || !rewritesInBody(op, from)) { nodes.push(n); continue; }
    const moves = op === 'Slice' ? [{ attr: 'starts', input: 1 }, { attr: 'ends', input: 2 }, { attr: 'axes', input: 3 }] : [MOVED[op]!];
    const inputs = [...(n.input ?? [])];
    let attributes = [...(n.attribute ?? [])];
    for (const m of moves) {
      const a = attributes.find((x) => x.name === m.attr);
      if (!a) continue;
      const values = a.ints?.length ? a.ints.map(num) : a.i != null ? [num(a.i)] : [];
      const name = fresh(`${n.name || op}__${m.attr}`);
      nodes.push({ name: fresh(`${name}_node`), opType: 'Constant', domain: '', input: [], output: [name], attribute: [{ name: 'value', type: onnxProto.onnx.AttributeProto.AttributeType.TENSOR, t: tensorToProto(name, i64([values.length], values)) }] });
      while (inputs.length < m.input) inputs.push('');
      inputs[m.input] = name;
      attributes = attributes.filter((x) => x.name !== m.attr);
    }
    nodes.push({ ...n, input: inputs, attribute: attributes });
    counts[op] = (counts[op] ?? 0) + 1;
  }
  return { ...g, node: nodes };
}
