// Two exported models as one graph, so that one training step reaches both: an encoder-decoder
// exported as two files (optimum's encoder_model.onnx and decoder_model.onnx for Whisper, Marian,
// T5, BART: the decoder reads the encoder's last_hidden_state as its encoder_hidden_states input).
//
//   const { model } = joinModels(encoder.ir, withoutKvCache(decoder).ir, {
//     links: { encoder_hidden_states: 'last_hidden_state', encoder_attention_mask: 'attention_mask' },
//   });
//
// The second model's linked inputs read the first model's tensors of those names. Every other
// name of the second model that the first also uses gets `prefix` (its input input_ids becomes
// decoder_input_ids), except an initializer both hold with the same values: that is one tensor
// (the embedding Marian and T5 share between encoder and decoder), so it trains as one parameter
// with the gradients of both uses, as in PyTorch. The outputs are the second model's.
import type { Graph, Model, Node } from './ir.ts';
import { cloneModel } from './ir.ts';
import type { Tensor } from './tensor.ts';
import type { RefitModel } from '../model.ts';

export interface JoinOptions {
  /** Second model's input → the first model's output (or input) it reads. */
  links: Record<string, string>;
  /** Prepended to the second model's names that clash with the first's (default 'decoder_'). */
  prefix?: string;
}

export interface JoinResult {
  model: Model;
  /** The second model's names that were renamed: its name → the name in the joined model. */
  renamed: Map<string, string>;
  /** Initializers both models held with equal values, now one tensor. */
  shared: string[];
}

export function joinModels(first: Model, second: Model, opts: JoinOptions): JoinResult {
  const prefix = opts.prefix ?? 'decoder_';
  for (const [m, which] of [[first, 'first'], [second, 'second']] as const) {
    const sub = m.graph.nodes.find((n) => Object.values(n.attrs).some((a) => a.kind === 'opaque'));
    if (sub) throw new Error(`joinModels: the ${which} model has a node with a subgraph ('${sub.name}', ${sub.opType}); for a decoder with a KV cache, join withoutKvCache(decoder)`);
  }
  for (const o of first.opsets) {
    const p = second.opsets.find((q) => q.domain === o.domain);
    if (p && p.version !== o.version) throw new Error(`joinModels: the models import opset ${o.domain || 'ai.onnx'} ${o.version} and ${p.version}; upgrade one (loadModel upgrades opsets below 13)`);
  }
  const a = cloneModel(first), b = cloneModel(second);
  const ga = a.graph, gb = b.graph;
  const inputsB = new Set(gb.inputs.map((i) => i.name));
  const namesA = namesOf(ga);
  for (const [input, source] of Object.entries(opts.links)) {
    if (!inputsB.has(input)) throw new Error(`joinModels: the second model has no input '${input}' (its inputs: ${gb.inputs.map((i) => i.name).join(', ')})`);
    if (!namesA.has(source)) throw new Error(`joinModels: the first model has no tensor '${source}' to feed '${input}' (its outputs: ${ga.outputs.map((o) => o.name).join(', ')})`);
  }
  // Which of the second model's names become what.
  const rename = new Map<string, string>(Object.entries(opts.links));
  const shared: string[] = [];
  const taken = new Set([...namesA, ...namesOf(gb)]);
  const fresh = (name: string) => {
    let n = `${prefix}${name}`;
    for (let k = 1; taken.has(n); k++) n = `${prefix}${name}_${k}`;
    taken.add(n);
    return n;
  };
  for (const name of namesOf(gb)) {
    if (rename.has(name) || !namesA.has(name)) continue;
    const ta = ga.initializers.get(name), tb = gb.initializers.get(name);
    if (ta && tb && sameTensor(ta, tb)) { shared.push(name); continue; }
    rename.set(name, fresh(name));
  }
  const to = (x: string) => (x ? rename.get(x) ?? x : x);
  const nodeNames = new Set(ga.nodes.map((n) => n.name));
  const nodesB: Node[] = gb.nodes.map((n) => ({
    ...n,
    name: nodeNames.has(n.name) ? fresh(n.name) : n.name,
    inputs: n.inputs.map(to),
    outputs: n.outputs.map(to),
  }));
  const initializers = new Map(ga.initializers);
  for (const [k, t] of gb.initializers) if (!shared.includes(k)) initializers.set(to(k), t);
  const linked = new Set(Object.keys(opts.links));
  const graph: Graph = {
    name: `${ga.name}+${gb.name}`,
    nodes: [...ga.nodes, ...nodesB],
    inputs: [...ga.inputs, ...gb.inputs.filter((i) => !linked.has(i.name)).map((i) => ({ ...i, name: to(i.name) }))],
    outputs: gb.outputs.map((o) => ({ ...o, name: to(o.name) })),
    initializers,
    // the first model's value_info wins for a name both describe (a linked tensor)
    valueInfo: [...ga.valueInfo, ...gb.valueInfo.map((v) => ({ ...v, name: to(v.name) })).filter((v) => !ga.valueInfo.some((w) => w.name === v.name))],
  };
  const opsets = [...a.opsets, ...b.opsets.filter((o) => !a.opsets.some((p) => p.domain === o.domain))];
  const renamed = new Map([...rename].filter(([k]) => !linked.has(k)));
  return { model: { ...a, irVersion: Math.max(a.irVersion, b.irVersion), opsets, graph }, renamed, shared };
}

/** Every tensor name a graph defines or reads: inputs, outputs, initializers, node inputs and outputs. */
function namesOf(g: Graph): Set<string> {
  const s = new Set<string>([...g.inputs.map((i) => i.name), ...g.outputs.map((o) => o.name), ...g.initializers.keys()]);
  for (const n of g.nodes) for (const x of [...n.inputs, ...n.outputs]) if (x) s.add(x);
  return s;
}

function sameTensor(x: Tensor, y: Tensor): boolean {
  if (x.dtype !== y.dtype || x.dims.join() !== y.dims.join() || x.data.length !== y.data.length) return false;
  for (let i = 0; i < x.data.length; i++) if (x.data[i] !== y.data[i]) return false;
  return true;
}

/**
 * Write the joined model's float32 weights back into the two models it was joined from (after
 * training it), each under its own names. Returns the names each received.
 */
export function splitWeights(joined: RefitModel, first: RefitModel, second: RefitModel, join: Pick<JoinResult, 'renamed'>): { first: string[]; second: string[] } {
  const take = (m: RefitModel, nameIn: (n: string) => string) => {
    const values = new Map<string, Float32Array>();
    for (const [name, t] of m.ir.graph.initializers) {
      const from = joined.ir.graph.initializers.get(nameIn(name));
      if (t.dtype === 'float32' && from?.dtype === 'float32' && from.dims.join() === t.dims.join()) values.set(name, from.data as Float32Array);
    }
    m.setParams(values);
    return [...values.keys()];
  };
  return { first: take(first, (n) => n), second: take(second, (n) => join.renamed.get(n) ?? n) };
}
