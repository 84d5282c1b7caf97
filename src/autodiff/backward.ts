// Reverse-mode differentiation of an ONNX graph into more ONNX nodes in the same graph.
import type { Graph } from '../onnx/ir.ts';
import type { Emitter } from '../onnx/emitter.ts';
import type { ShapeMap } from '../onnx/shapes.ts';
import { isFloat, f32 } from '../onnx/tensor.ts';
import { makeContext } from './context.ts';
import { ruleFor, NO_GRADIENT_OPS } from './rule.ts';
import { findBlockers, inputsBehind, missingRulesError } from './missing-rules.ts';
import { siluGrad, siluMuls } from './silu.ts';
import { hardSwishGrad, hardSwishMuls } from './hardswish.ts';
import './rules/index.ts';

export interface BackwardOptions {
  /** Scalar tensor to differentiate. */
  loss: string;
  /** Tensors (usually parameters) to differentiate with respect to. */
  wrt: string[];
  /**
   * Tensors no gradient flows back through, as if PyTorch had `.detach()`ed them (an ONNX export
   * keeps the values and loses the cut: torchvision's RAFT detaches its flow coordinates). A cut of
   * one use only (`{ tensor, into }`) is made a tensor of its own before (./edge-cuts.ts).
   */
  stopGradient?: Iterable<string>;
  /** Gather data inputs → the embedding row whose lookups pass no gradient (PyTorch's padding_idx; src/onnx/padding-rows.ts). */
  paddingRows?: ReadonlyMap<string, number>;
}

/**
 * Where no gradient flows back: a tensor (every use of it), or `{ tensor, into }`, its use by the
 * node named `into` only (PyTorch detached one use and kept another, and the export has one tensor
 * for both).
 */
export type StopGradient = string | { tensor: string; into: string };

/**
 * Append the backward pass of `graph` to itself; returns, per `wrt` name, the tensor holding
 * its gradient, or null when the loss does not depend on it.
 */
export function buildBackward(graph: Graph, shapes: ShapeMap, em: Emitter, opts: BackwardOptions): Map<string, string | null> {
  const forward = [...graph.nodes]; // nodes appended below are backward nodes
  const stopped = new Set<string>();
  for (const t of opts.stopGradient ?? []) {
    if (!shapes.has(t)) throw new Error(`stopGradient: '${t}' is not a tensor of the model`);
    stopped.add(t);
  }
  // Name every op without a rule at once, before emitting anything. A value the probe gave no
  // shape is not a tensor (a Loop's sequence of activations): it may carry gradient, so the ops
  // around it are blockers. Read as "not float", it cut the path in silence, and every parameter
  // before torchvision MViT's tensor_split Loops got a zero gradient.
  const mayCarryGradient = (t: string) => { if (stopped.has(t)) return false; const s = shapes.get(t); return !s || isFloat(s.dtype); };
  const blockers = findBlockers({ nodes: forward, wrt: opts.wrt, targets: [opts.loss], isFloat: mayCarryGradient });
  if (blockers.length) {
    const inputs = new Set(graph.inputs.map((i) => i.name).filter((n) => !graph.initializers.has(n)));
    const ifs = blockers.filter((b) => b.opType === 'If').flatMap((b) => b.nodes).map((name) => forward.find((n) => n.name === name)?.inputs[0]);
    const deciding = [...new Set(ifs.flatMap((c) => (c ? inputsBehind(forward, inputs, c) : [])))];
    throw missingRulesError(blockers, opts.wrt, deciding);
  }
  // Which tensors depend on a trainable (and which trainable, for error messages).
  const origin = new Map<string, string>();
  for (const w of opts.wrt) origin.set(w, w);
  for (const n of forward) {
    if (NO_GRADIENT_OPS.has(n.opType)) continue;
    const src = n.inputs.find((i) => i && origin.has(i));
    if (src === undefined) continue;
    for (const o of n.outputs) {
      const s = shapes.get(o);
      if (o && s && isFloat(s.dtype) && !stopped.has(o)) origin.set(o, origin.get(src)!);
    }
  }
  // Which tensors the loss depends on.
  const reaches = new Set<string>([opts.loss]);
  for (let k = forward.length - 1; k >= 0; k--) {
    const n = forward[k]!;
    if (n.outputs.some((o) => reaches.has(o))) for (const i of n.inputs) if (i) reaches.add(i);
  }
  if (!origin.has(opts.loss)) {
    return new Map(opts.wrt.map((w) => [w, null]));
  }

  const ctx = makeContext(graph, shapes, em, new Set(opts.wrt), opts.paddingRows);
  const contrib = new Map<string, string[]>();
  const addGrad = (name: string, g: string) => {
    const list = contrib.get(name);
    if (list) list.push(g); else contrib.set(name, [g]);
  };
  const lossShape = shapes.get(opts.loss)?.dims ?? [];
  addGrad(opts.loss, em.constant(f32(lossShape, new Float32Array(lossShape.reduce((a, b) => a * b, 1)).fill(1)), 'dloss'));

  const gradOf = (name: string): string | null => {
    const list = contrib.get(name);
    if (!list || list.length === 0) return null;
    if (list.length > 1) {
      const s = em.sum(list);
      contrib.set(name, [s]);
      return s;
    }
    return list[0]!;
  };

  const failures: { node: string; op: string; why: string; param: string }[] = [];
  const silus = siluMuls(forward, new Set([...graph.outputs.map((o) => o.name), opts.loss]));
  const hardSwishes = hardSwishMuls(forward, new Set([...graph.outputs.map((o) => o.name), opts.loss]));
  for (let k = forward.length - 1; k >= 0; k--) {
    const node = forward[k]!;
    if (!node.outputs.some((o) => origin.has(o) && reaches.has(o))) continue;
    const dOut = node.outputs.map((o) => (o ? gradOf(o) : null));
    if (dOut.every((g) => g === null)) continue;
    const needs = node.inputs.map((i) => !!i && origin.has(i) && reaches.has(i));
    if (!needs.some(Boolean)) continue;
    const rule = ruleFor(node.opType);
    if (!rule || node.domain !== '' && node.domain !== 'ai.onnx') {
      // Unreachable after findBlockers; kept so a disagreement fails loudly rather than silently.
      throw missingRulesError([{ opType: node.opType, domain: node.domain, nodes: [node.name], params: [origin.get(node.inputs.find((i) => i && origin.has(i))!)!] }], opts.wrt);
    }
    let grads: (string | null)[];
    const silu = silus.get(node);
    if (silu && dOut[0]) {
      // x·Sigmoid(x) as one (./silu.ts): the whole gradient to x, none to the Sigmoid's output.
      // The backward of y's readers is already emitted: does it read y (then y is kept anyway)?
      const y = node.outputs[0]!;
      const kept = graph.nodes.slice(forward.length).some((b) => b.inputs.includes(y));
      if (needs[node.inputs.indexOf(silu.x)]) addGrad(silu.x, siluGrad(em, dOut[0], silu.x, silu.s, y, kept));
      continue;
    }
    const hardSwish = hardSwishes.get(node);
    if (hardSwish && dOut[0]) {
      // x·HardSigmoid(x) as one (./hardswish.ts): the whole gradient to x, from h alone.
      if (needs[node.inputs.indexOf(hardSwish.x)]) addGrad(hardSwish.x, hardSwishGrad(em, dOut[0], hardSwish.h));
      continue;
    }
    try {
      grads = rule(ctx, node, dOut, needs);
    } catch (e) {
      // A rule that refuses this node's form: keep going so every refusal is reported at once.
      failures.push({ node: node.name, op: node.opType, why: (e as Error).message, param: origin.get(node.inputs.find((i) => i && origin.has(i))!)! });
      continue;
    }
    node.inputs.forEach((input, i) => {
      const g = grads[i];
      if (needs[i] && g) addGrad(input, g);
    });
  }
  if (failures.length === 1) {
    const f = failures[0]!;
    throw new Error(`gradient of ${f.op} node '${f.node}' failed: ${f.why}`);
  }
  if (failures.length > 1) {
    throw new Error(`gradient of ${failures.length} nodes failed:\n${failures.map((f) => `  - ${f.op} node '${f.node}' (trainable '${f.param}' upstream): ${f.why}`).join('\n')}\n` +
      'Freeze the parameters upstream of these nodes, or re-export them in a supported form.');
  }
  return new Map(opts.wrt.map((w) => [w, gradOf(w)]));
}
