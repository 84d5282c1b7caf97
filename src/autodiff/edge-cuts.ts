// A stopGradient on one edge ({ tensor, into }: the tensor as node `into` reads it) made into a cut
// of a tensor of its own, before anything rewrites the graph: lowering replaces some nodes (an LSTM,
// a RoiAlign, a GridSample) by others, and the cut must outlive the name of the node it named.
import type { Model } from '../onnx/ir.ts';
import { cloneModel } from '../onnx/ir.ts';
import type { StopGradient } from './backward.ts';

/**
 * The model with an Identity in front of each cut edge, and the stops as whole-tensor cuts; the
 * model as given when no stop names an edge. `made` names the cut tensors: one the fold removes
 * (an edge into a Shape) carried no gradient, and is no error.
 */
export function edgeCutsAsTensors(model: Model, stops: readonly StopGradient[] | undefined): { model: Model; stops: string[] | undefined; made: ReadonlySet<string> } {
  if (!stops?.some((s) => typeof s !== 'string')) return { model, stops: stops?.filter((s): s is string => typeof s === 'string'), made: new Set() };
  const m = cloneModel(model);
  const g = m.graph;
  const taken = new Set(g.nodes.flatMap((n) => [n.name, ...n.inputs, ...n.outputs]));
  const fresh = (hint: string) => { let name = hint; for (let i = 1; taken.has(name); i++) name = `${hint}_${i}`; taken.add(name); return name; };
  const known = new Set([...g.inputs.map((i) => i.name), ...g.initializers.keys(), ...g.nodes.flatMap((n) => n.outputs)]);
  const out: string[] = [];
  const made = new Set<string>();
  for (const stop of stops) {
    if (typeof stop === 'string') { out.push(stop); continue; }
    if (!known.has(stop.tensor)) throw new Error(`stopGradient: '${stop.tensor}' is not a tensor of the model`);
    const at = g.nodes.findIndex((n) => n.name === stop.into);
    if (at < 0) throw new Error(`stopGradient: no node of the model is named '${stop.into}'`);
    const into = g.nodes[at]!;
    if (!into.inputs.includes(stop.tensor)) throw new Error(`stopGradient: node '${stop.into}' does not read '${stop.tensor}' (its inputs: ${into.inputs.filter(Boolean).join(', ')})`);
    const cut = fresh(`${stop.tensor}__cut_for_${stop.into}`);
    g.nodes.splice(at, 0, { name: fresh(`${cut}_node`), opType: 'Identity', domain: '', inputs: [stop.tensor], outputs: [cut], attrs: {} });
    g.nodes[at + 1] = { ...into, inputs: into.inputs.map((i) => (i === stop.tensor ? cut : i)) };
    out.push(cut);
    made.add(cut);
  }
  return { model: m, stops: out, made };
}
