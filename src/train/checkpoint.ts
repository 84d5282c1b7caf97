// Activation checkpointing of a compiled step graph: keep only some saved activations (the
// checkpoints) and recompute the others in the backward, from the checkpoints, by copies of the
// forward nodes that made them (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost").
//
// In one ONNX graph two things would undo it, and both are blocked here:
// - onnxruntime may run a node as soon as its inputs exist, so the copies could run during the
//   forward and keep their outputs alive just as long; and its common-subexpression elimination
//   would merge each copy with its original. So every float32 checkpoint a segment's copies read
//   goes through Add(checkpoint, zero), where zero = ReduceSum(g)·0 for a backward tensor g computed
//   just before the segment's first backward reader: the copies cannot start before the backward
//   reaches them, and their inputs differ from the originals'. x + 0 = x exactly for finite x (and
//   a non-finite g makes the step's gradients non-finite anyway, which Trainer refuses).
// - Random ops (Dropout, Random*) would give other values when run again: their outputs are kept.
// Checkpoints: the forward's saved values split into ⌈√n⌉ runs of about equal bytes (n saved
// values), the last value of each run kept. The segment nearest the loss is not recomputed (its
// backward starts at once). Same numbers as the plain step: test/train/memory-budget.test.ts.
import type { Node } from '../onnx/ir.ts';
import { cloneModel } from '../onnx/ir.ts';
import { Emitter } from '../onnx/emitter.ts';
import { probe, type InputSignature } from '../onnx/shapes.ts';
import { size } from '../onnx/tensor.ts';
import { bytesPerElement } from './memory-accounting.ts';
import type { StepGraph } from './step-graph.ts';

const RANDOM = /^(Dropout|RandomNormal|RandomUniform|RandomNormalLike|RandomUniformLike|Multinomial|Bernoulli)$/;

export interface CheckpointInfo {
  /** Saved values kept as checkpoints. */
  checkpoints: string[];
  /** Saved values recomputed in the backward. */
  recomputed: string[];
  /** Forward nodes copied into the backward (counted once per segment that copies them). */
  copiedNodes: number;
}

export async function checkpointStepGraph(graph: StepGraph, opts: { segments?: number } = {}): Promise<StepGraph & { checkpoint: CheckpointInfo }> {
  const model = cloneModel(graph.model);
  const g = model.graph;
  const outputs = new Set(g.outputs.map((o) => o.name));
  const isForward = (n: Node) => n.outputs.every((o) => !o || graph.shapes.has(o));
  const producer = new Map<string, number>();
  g.nodes.forEach((n, k) => { for (const o of n.outputs) if (o) producer.set(o, k); });
  const firstBackward = g.nodes.findIndex((n) => !isForward(n));
  const info: CheckpointInfo = { checkpoints: [], recomputed: [], copiedNodes: 0 };
  if (firstBackward < 0) return { ...graph, model, checkpoint: info };

  // Saved values (as in memory-accounting.ts) and their backward readers.
  const readers = new Map<string, number[]>();
  g.nodes.forEach((n, k) => {
    if (isForward(n)) return;
    if (n.opType === 'Identity' && outputs.has(n.outputs[0]!)) return;
    for (const i of n.inputs) {
      const p = i ? producer.get(i) : undefined;
      if (p !== undefined && isForward(g.nodes[p]!) && !g.initializers.has(i)) readers.set(i, [...(readers.get(i) ?? []), k]);
    }
  });
  const bytes = (t: string) => { const s = graph.shapes.get(t)!; return size(s.dims) * bytesPerElement(s.dtype); };
  const saved = [...readers.keys()].sort((a, b) => producer.get(a)! - producer.get(b)!);
  if (saved.length < 2) return { ...graph, model, checkpoint: info };
  const nSeg = opts.segments ?? Math.ceil(Math.sqrt(saved.length));
  const total = saved.reduce((a, t) => a + bytes(t), 0);
  // Runs of about total/nSeg bytes; the last value of each run is its checkpoint.
  const segOf = new Map<string, number>();
  const checkpoints = new Set<string>();
  let acc = 0, seg = 0;
  for (const t of saved) {
    segOf.set(t, seg);
    acc += bytes(t);
    const random = RANDOM.test(g.nodes[producer.get(t)!]!.opType);
    if (random) checkpoints.add(t);
    if (acc >= (total * (seg + 1)) / nSeg) { checkpoints.add(t); seg++; }
  }
  const lastSeg = Math.max(...segOf.values());
  const recompute = saved.filter((t) => !checkpoints.has(t) && segOf.get(t)! < lastSeg);
  if (recompute.length === 0) return { ...graph, model, checkpoint: { ...info, checkpoints: [...checkpoints] } };

  // Dtypes of backward values, to pick a float tensor for each segment's dependency.
  const sig: InputSignature = {};
  for (const i of g.inputs) {
    const s = graph.shapes.get(i.name);
    sig[i.name] = s ? { dtype: s.dtype, dims: [...s.dims] } : { dtype: i.dtype, dims: (i.shape ?? []).map(Number) };
  }
  const { shapes: all } = await probe(model, sig);

  const em = new Emitter(g, 0 /* only fresh names and constants */);
  const fed = new Set(graph.paramInputs); // parameters are alive all step anyway
  const bySeg = new Map<number, string[]>();
  for (const t of recompute) bySeg.set(segOf.get(t)!, [...(bySeg.get(segOf.get(t)!) ?? []), t]);
  const inserts = new Map<number, Node[]>(); // backward node index → nodes to put before it
  const rename = new Map<number, Map<string, string>>(); // backward node index → saved value → copy
  const kept = new Set(checkpoints);
  for (const [s, values] of bySeg) {
    const at = Math.min(...values.flatMap((t) => readers.get(t)!));
    // A float32 backward value computed before `at`: the dependency that holds the copies back.
    let dep: string | undefined;
    for (let k = at - 1; k >= firstBackward && !dep; k--) {
      const n = g.nodes[k]!;
      if (isForward(n)) continue;
      dep = n.outputs.find((o) => o && all.get(o)?.dtype === 'float32' && !outputs.has(o));
    }
    if (!dep) { for (const t of values) kept.add(t); continue; }
    const nodes: Node[] = [];
    const emit = (opType: string, inputs: string[], attrs: Node['attrs'] = {}): string => {
      const out = em.fresh(`ckpt${s}_${opType}`);
      nodes.push({ name: em.fresh(`ckpt${s}_${opType}_node`), opType, domain: '', inputs, outputs: [out], attrs });
      return out;
    };
    const axesFree = emit('ReduceSum', [dep], { keepdims: { kind: 'int', value: 0 } });
    const zero = emit('Mul', [axesFree, em.constant({ dtype: 'float32', dims: [], data: new Float32Array([0]) }, 'ckpt_zero')]);
    // Copy the forward nodes each value needs, back to checkpoints, inputs and initializers.
    const copy = new Map<string, string>();
    const wrapped = new Map<string, string>();
    const need = new Set<number>();
    const walk = (t: string) => {
      const p = producer.get(t);
      if (p === undefined || g.initializers.has(t) || kept.has(t) || need.has(p)) return;
      if (RANDOM.test(g.nodes[p]!.opType)) return;
      need.add(p);
      for (const i of g.nodes[p]!.inputs) if (i) walk(i);
    };
    for (const t of values) walk(t);
    const stopValue = (i: string): string => {
      if (copy.has(i)) return copy.get(i)!;
      const meta = graph.shapes.get(i);
      if (g.initializers.has(i) || fed.has(i) || !meta || meta.dtype !== 'float32') return i;
      if (!wrapped.has(i)) wrapped.set(i, emit('Add', [i, zero]));
      return wrapped.get(i)!;
    };
    for (const k of [...need].sort((a, b) => a - b)) {
      const n = g.nodes[k]!;
      const outs = n.outputs.map((o) => (o ? em.fresh(`ckpt${s}/${o}`) : ''));
      nodes.push({ ...n, name: em.fresh(`ckpt${s}/${n.name}`), inputs: n.inputs.map((i) => (i ? stopValue(i) : i)), outputs: outs });
      n.outputs.forEach((o, j) => { if (o) copy.set(o, outs[j]!); });
    }
    info.copiedNodes += need.size;
    inserts.set(at, [...(inserts.get(at) ?? []), ...nodes]);
    for (const t of values) {
      info.recomputed.push(t);
      for (const r of readers.get(t)!) {
        if (!rename.has(r)) rename.set(r, new Map());
        rename.get(r)!.set(t, copy.get(t)!);
      }
    }
  }
  const nodes: Node[] = [];
  g.nodes.forEach((n, k) => {
    nodes.push(...(inserts.get(k) ?? []));
    const r = rename.get(k);
    nodes.push(r ? { ...n, inputs: n.inputs.map((i) => r.get(i) ?? i) } : n);
  });
  g.nodes = nodes;
  info.checkpoints = [...kept].filter((t) => !info.recomputed.includes(t));
  return { ...graph, model, checkpoint: info };
}
