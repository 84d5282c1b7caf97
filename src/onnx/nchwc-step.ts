// A training step whose convolutions are constants (Tent, EATA, SAR, norm-affine: only BatchNorm's
// scale and shift are trained) kept in onnxruntime-node's blocked NCHWc layout from one
// convolution to the next, forward and backward. A Node-only, CPU-only rewrite of the session's
// copy of the step graph (train-step.ts); the standard-op graph stays the portable reference.
//
// Why: onnxruntime's NchwcTransformer blocks each constant-weight Conv but leaves the layout at
// every node it does not know, and in a training step that is every node between two convs: the
// train-mode BatchNormalization (single-threaded, NCHW only), the activation's mask, the
// BatchNorm gradient's reductions and products. Each conv then pays a ReorderInput and a
// ReorderOutput, forward and backward (MobileNetV2's Tent step: ~150 ms of reorders in a
// ~500 ms step before the 1×1 convs became MatMuls, docs/speed.md).
//
// Here a blocked tensor is held as onnxruntime's nchwc tensor [N, Cp, H, W] (Cp: the channels
// rounded up to whole blocks of b; memory [N, Cp/b, H, W, b]) and viewed as that 5-D shape for
// standard element-wise ops, against which a per-channel [1, C, 1, 1] operand is the padded
// vector viewed as [1, Cp/b, 1, 1, b] (no Transpose: channel c is block c/b, lane c%b in both).
// Reductions over N, H, W (or over H, W: a squeeze-excitation's) are onnxruntime's keep-reduce-keep
// sums of the [N·Cp/b, H·W, b] view. The train-mode BatchNormalization becomes one-pass batch
// moments (Σx, Σx²) and a blocked depthwise 1×1 Conv a·x + (β − a·mean) into which a following
// Relu/Clip or residual Add fuses; the inference BatchNormalization of its gradient (norm.ts) the
// same Conv, with the Add after it as its Sum input. Anything else reads the NCHW form, reordered
// out at first use.
//
// The pad lanes (Cp − C of them) stay finite: convolutions write zeros there (zero-padded weights
// and biases), per-channel operands are padded with zeros (a variance with ones), and only ops
// that map finite values to finite values run on blocked tensors; the lanes never reach an NCHW
// tensor (ReorderOutput keeps C channels, reductions are sliced to C).
import { attrFloat, attrInt, attrInts, attrString, constantValue, dropDead, floatAttr, opsetVersion, type Model, type Node } from './ir.ts';
import { Emitter } from './emitter.ts';
import { NCHWC_DOMAIN, blockedChannelSums, blockedForm, blockedWeight, fuseConvTail, gateConv, readersIn, soleReader } from './nchwc.ts';
import { tensor, type DType, type Tensor } from './tensor.ts';
import type { ShapeMap } from './shapes.ts';
import { outputShapes } from './static-shapes.ts';
import { broadcast } from './constant-dims.ts';
import { lowerConvBias, shiftBlockedConv, type BlockedConvSource } from './nchwc-shift.ts';
import { pointwiseMoments } from './nchwc-pointwise-moments.ts';
import { pointwiseStats, pointwiseStatsPay } from './nchwc-batchstats.ts';

/**
 * Whether constant-weight steps run in the blocked layout, and whether strided input gradients'
 * phases are interleaved there, per-channel operands expanded over a sample's map, one 5-D view
 * shared by every reader of a blocked tensor, BN moments taken about a shift K (off: K = 0, the
 * imprecise form before session 38, kept for bench/blocked-step.ts --compare shift alone), and a
 * 1×1 conv's BN moments taken from its input where that pays (pointwiseMoments), such a conv's
 * input gradient taken through its BN's gradient from its input (pointwiseDx), SiLU's recomputed
 * gradient in five ops (quickGeluSilu), a pool's gradient broadcast by the Add that reads it
 * (broadcastExpand), a squeeze-excitation gate's product as a depthwise conv over the batch
 * (gateConv) and the pool's gradient as that conv's bias (gateBias). Tests and benches switch
 * them off to compare.
 */
export const blockedStep = { current: true, interleave: true, expandChannels: true, shareViews: true, shiftMoments: true, pointwiseMoments: true, pointwiseDx: true, quickGeluSilu: true, broadcastExpand: true, gateConv: true, gateBias: true };

/** onnxruntime's contrib domain (QuickGelu). */
const MS_DOMAIN = 'com.microsoft';

/** Element-wise ops that keep a blocked tensor blocked: finite inputs give finite outputs. */
const ELEMENTWISE = new Set(['Add', 'Sub', 'Mul', 'Neg', 'Relu', 'Clip', 'Shrink', 'Greater', 'Less', 'GreaterOrEqual', 'LessOrEqual', 'Equal', 'And', 'Or', 'Not', 'Cast', 'Where', 'Sum', 'Sigmoid', 'Tanh', 'HardSigmoid', 'Abs', 'Max', 'Min', 'Identity']);

/**
 * Whether a step of `model` is one the blocked layout serves (measured in docs/speed.md, session
 * 34): every conv's weight is a constant of the step (`frozen`), each conv is one the blocked
 * kernels take (ungrouped or depthwise), and at least one is depthwise or a stride-1 1×1 conv (a
 * MobileNet- or bottleneck-style net; where there is none, ResNet-18 and the shipped CNN, the pass
 * measured 0.97–1.07 of the standard step's time). A grouped conv (RegNet's, 8 channels a group)
 * would leave the layout twice a block (RegNetY-400MF's Tent step with its grouped convs left
 * standard inside the blocked step: 1.02 of the standard step's time, session 37). Elsewhere the
 * step keeps the standard session graph and its 1×1 convs as MatMuls (src/train/pointwise-matmul.ts).
 */
export function blockedStepFits(model: Model, frozen: (t: string) => boolean): boolean {
  if (!blockedStep.current) return false;
  const g = model.graph;
  let fits = false;
  for (const n of g.nodes) {
    if (n.opType !== 'Conv' || n.domain !== '') continue;
    const w = g.initializers.get(n.inputs[1] ?? '');
    if (!w || !frozen(n.inputs[1]!) || w.dims.length !== 4) return false;
    const group = attrInt(n, 'group', 1);
    const depthwise = group > 1 && group === w.dims[0] && w.dims[1] === 1;
    if (group !== 1 && !depthwise) return false;
    const ones = (a: string, v: number) => (attrInts(n, a) ?? []).every((x) => x === v);
    if (depthwise || (w.dims[2] === 1 && w.dims[3] === 1 && ones('strides', 1) && ones('pads', 0))) fits = true;
  }
  return fits;
}

/**
 * Rewrite, in place, `model` (a step graph whose tensors `shapes` describes) so that its
 * constant-weight convolutions and the element-wise work between them run on blocked tensors.
 * Returns the number of convolutions moved (0: the model is unchanged).
 */
export function blockStepActivations(model: Model, shapes: ShapeMap, block: number): number {
  if (!blockedStep.current) return 0;
  const g = model.graph;
  const original = g.nodes, initializersBefore = new Set(g.initializers.keys());
  const { dims: known, dtypes } = stepShapes(model, shapes);
  const em = new Emitter(g, opsetVersion(model), 'refit_nchwc_');
  g.nodes = [];
  const readers = readersIn({ ...g, nodes: original });
  const soleConsumer = soleReader(readers);
  const read = new Set([...original.flatMap((n) => n.inputs), ...g.outputs.map((o) => o.name)]);
  const producer = new Map<string, Node>();
  for (const n of original) for (const o of n.outputs) if (o) producer.set(o, n);
  /** An initializer's value, or a Constant node's wherever it stands in the original order. */
  const constantOf = (t: string): Tensor | undefined => {
    const p = producer.get(t);
    return g.initializers.get(t) ?? (p && p.opType === 'Constant' && p.domain === '' ? constantValue({ ...g, nodes: [p] }, t) : undefined);
  };
  /** NCHW name → its blocked twin [N, Cp, H, W]. */
  const blocked = new Map<string, string>();
  /** Tensors that exist in NCHW form. */
  const plain = new Set<string>([...g.inputs.map((i) => i.name), ...g.initializers.keys()]);
  const skip = new Set<Node>();
  /** Affine Convs (emitAffine) without a Sum input yet, by the tensor they stand for. */
  const open = new Map<string, Node>();
  /** Blocked Convs with nothing fused after them, by the tensor they write: a BN's shift source. */
  const convSources = new Map<string, BlockedConvSource & { node: Node; weight: Tensor; weightName: string }>();
  /** A BN input written by a 1×1 conv whose moments came from the conv's input (pointwiseMomentsOf). */
  const pointwiseBNs = new Map<string, { conv: BlockedConvSource & { weight: Tensor; weightName: string }; w2: string; meanX: string }>();
  /** A shifted BN's batch-mean output → its mean of x − K, which its gradient's centre reads. */
  const shiftedMeans = new Map<string, string>();
  /** The nodes that read a BN input x, or its mean, only as x − mean (meta.shiftInvariant), by x. */
  const tagged = new Map<string, Node[]>();
  for (const n of original) if (n.meta?.shiftInvariant) tagged.set(n.meta.shiftInvariant.x, [...tagged.get(n.meta.shiftInvariant.x) ?? [], n]);
  const padded = (c: number) => Math.ceil(c / block) * block;
  const dimsOf = (t: string): number[] | undefined => known.get(t);
  const dtypeOf = (t: string): DType | undefined => dtypes.get(t);
  /** [N, C, H, W] with H·W > 1: a tensor that can live in the blocked layout. */
  const spatial = (t: string): number[] | undefined => {
    const d = dimsOf(t);
    return d && d.length === 4 && d[2]! * d[3]! > 1 && d[1]! > 0 ? d : undefined;
  };
  const nchwcNode = (opType: string, inputs: string[], output: string, attrs: Node['attrs']) => {
    g.nodes.push({ name: em.fresh(`${output}_${opType.toLowerCase()}`), opType, domain: NCHWC_DOMAIN, inputs, outputs: [output], attrs });
  };
  const push = (n: Node) => { g.nodes.push(n); for (const o of n.outputs) if (o) plain.add(o); };

  /** The NCHW form of `t`: reordered out (float), or its producer run again on NCHW inputs (masks). */
  const ensurePlain = (t: string): void => {
    if (!t || plain.has(t)) return;
    const e = expanded.get(t);
    if (e) { expanded.delete(t); emitPlain(e); return; }
    const b = blocked.get(t);
    if (!b) return; // produced by a node not yet emitted (cannot happen in topological order) or a graph input
    if (dtypeOf(t) === 'float32') {
      nchwcNode('ReorderOutput', [b], t, { channels: { kind: 'int', value: spatial(t)![1]! }, channels_last: { kind: 'int', value: 0 } });
      plain.add(t);
      return;
    }
    const p = producer.get(t)!;
    for (const i of p.inputs) ensurePlain(i);
    push({ ...p, name: em.fresh(`${p.name}_nchw`) });
  };
  /** Whether onnxruntime's ReorderInput takes `t` (float, whole groups of 4 channels). */
  const reorderable = (t: string) => dtypeOf(t) === 'float32' && !!spatial(t) && spatial(t)![1]! % 4 === 0;
  const ensureBlocked = (t: string): string => {
    let b = blocked.get(t);
    if (!b) {
      ensurePlain(t);
      b = em.fresh(`${t}_nchwc`);
      nchwcNode('ReorderInput', [t], b, { channels_last: { kind: 'int', value: 0 } });
      blocked.set(t, b);
    }
    return b;
  };
  /** The 5-D memory view [N, Cp/b, H, W, b] of a blocked tensor of NCHW dims `d`. */
  // One view per blocked tensor, and an element-wise op's own 5-D output as the view of its result:
  // x·Sigmoid(x) then reads one name twice, the pattern onnxruntime fuses into QuickGelu.
  const views = new Map<string, string>();
  /** Expand nodes not emitted (expandToBlocked): their readers broadcast the input instead. */
  const expanded = new Map<string, Node>();
  /** Gate convs (gateToBlocked) with no activation fused, by the tensor they write: a bias may still join them. */
  const gates = new Map<string, { conv: Node; reshape: Node }>();
  const view5 = (b: string, d: number[]) => {
    const key = `${b}|${d.join()}`;
    let v = blockedStep.shareViews ? views.get(key) : undefined;
    if (!v) views.set(key, v = em.reshape(b, [d[0]!, padded(d[1]!) / block, d[2]!, d[3]!, block]));
    return v;
  };
  /** A [C] vector padded with `value` to [Cp] (constant vectors padded here, once). */
  const padVec = (t: string, c: number, value = 0): string => {
    if (padded(c) === c) return t;
    const k = constantOf(t);
    if (k && k.dtype === 'float32' && k.data.length === c) {
      const v = new Float32Array(padded(c)).fill(value);
      v.set(k.data as Float32Array);
      return em.constant(tensor('float32', [padded(c)], v), `${t}_padded`);
    }
    return em.op('Pad', [em.reshape(t, [c]), em.ints([0, padded(c) - c]), ...(value ? [em.scalar(value)] : [])]);
  };
  /** A per-channel operand ([1, C, 1, 1] or [C, 1, 1]) as [1, Cp/b, 1, 1, b]. */
  const channelOperand = (t: string, c: number) => em.reshape(padVec(t, c), [1, padded(c) / block, 1, 1, block]);
  /**
   * A [1, Cp/b, 1, 1, b] operand of an element-wise op over blocked tensors of NCHW dims `d`,
   * expanded over one sample's map ([1, Cp/b, H, W, b]) when the batch has 4 or more samples:
   * onnxruntime broadcasts an operand that varies in the innermost axis b runs at a time, and
   * one over the batch axis alone as whole rows. A Mul of a [16, 96, 112, 112] blocked tensor by a
   * channel vector took 13–20 ms broadcast against 8.5–8.8 expanded (alone, `tmp` script); the
   * expanded copy is one sample's size. Tent steps 0.90–0.96 (docs/speed.md, session 35).
   */
  const spreadOverMap = (v: string, d: number[]) => (!blockedStep.expandChannels || d[0]! < 4 || d[2]! * d[3]! === 1 ? v
    : em.op('Expand', [v, em.ints([1, padded(d[1]!) / block, d[2]!, d[3]!, block])]));
  /** Sums over N, H, W of a blocked tensor of NCHW dims `d`: [Cp]. `op` ReduceSumSquare sums squares. */
  const channelSums = (b: string, d: number[], op: 'ReduceSum' | 'ReduceSumSquare' = 'ReduceSum') =>
    blockedChannelSums(em, b, [d[0]!, padded(d[1]!), d[2]!, d[3]!], block, op);
  const firstC = (v: string, c: number, dims: number[], out?: string) => {
    const s = em.op('Slice', [v, em.ints([0]), em.ints([c]), em.ints([0])]);
    const r = em.reshape(s, dims);
    if (out) g.nodes[g.nodes.length - 1]!.outputs[0] = out;
    return out ?? r;
  };
  let moved = 0;
  /** A phase-by-phase input gradient's last Reshape → the Reshapes and Concats before it, which wait for it. */
  const interleaves = phaseInterleaves(original, producer, soleConsumer);
  const waiting = new Set([...interleaves.values()].flat());

  for (const n of original) {
    if (skip.has(n) || waiting.has(n)) continue;
    const between = interleaves.get(n);
    if (between) {
      if (blockedStep.interleave && interleaveToBlocked(n)) continue;
      for (const k of between) emitPlain(k);
    }
    if (pointwiseDxToBlocked(n)) continue;
    if (n.domain === '' && n.opType === 'Conv' && convToBlocked(n)) continue;
    if (n.domain === '' && n.opType === 'BatchNormalization' && batchNormToBlocked(n)) continue;
    if (n.domain === '' && REDUCTIONS.has(n.opType) && reduceToBlocked(n)) continue;
    if (fuseLateSum(n)) continue;
    if (shiftedCentre(n)) continue;
    if (siluGradToBlocked(n)) continue;
    if (expandToBlocked(n) || broadcastAdd(n) || gateToBlocked(n)) continue;
    if (n.domain === '' && ELEMENTWISE.has(n.opType) && elementwiseToBlocked(n)) continue;
    emitPlain(n);
  }
  for (const o of g.outputs) ensurePlain(o.name);
  if (!moved) {
    g.nodes = original;
    for (const k of [...g.initializers.keys()]) if (!initializersBefore.has(k)) g.initializers.delete(k);
    return 0;
  }
  dropDead(g);
  if (!model.opsets.some((o) => o.domain === NCHWC_DOMAIN)) model.opsets.push({ domain: NCHWC_DOMAIN, version: 1 });
  if (g.nodes.some((n) => n.domain === MS_DOMAIN) && !model.opsets.some((o) => o.domain === MS_DOMAIN)) model.opsets.push({ domain: MS_DOMAIN, version: 1 });
  return moved;

  function emitPlain(n: Node): void {
    for (const i of n.inputs) ensurePlain(i);
    push(n);
  }

  /**
   * The interleave of a strided conv's input-gradient phases (conv.ts phasesDx) on blocked
   * phases: the same two Concats on the 6-D views [N, Cp/b, Q0, Q1, 1, b] (a row's phases side by
   * side) and [N, Cp/b, Q0, 1, W, b] (the rows), so the phases are not reordered out and their
   * interleave not back in; the Concats move runs of b channels where the NCHW ones move single
   * values (MobileNetV2's Tent step: docs/speed.md, session 35).
   */
  function interleaveToBlocked(n: Node): boolean {
    const { phases, stride: s } = n.meta!.phaseInterleave!;
    const y = n.outputs[0]!, d = spatial(y);
    if (!d || d[2]! % s || d[3]! % s || phases.length !== s * s) return false;
    const [N, C, H, W] = d as [number, number, number, number];
    const fits = (p: string) => blocked.has(p) && spatial(p)?.join() === [N, C, H / s, W / s].join();
    if (!phases.every(fits)) return false;
    const Cb = padded(C) / block;
    const rows = Array.from({ length: s }, (_, ah) => {
      const cols = phases.slice(ah * s, ah * s + s).map((p) => em.reshape(blocked.get(p)!, [N, Cb, H / s, W / s, 1, block]));
      return em.reshape(em.op('Concat', cols, { axis: 4 }), [N, Cb, H / s, 1, W, block]);
    });
    blocked.set(y, em.reshape(em.op('Concat', rows, { axis: 3 }), [N, padded(C), H, W]));
    return true;
  }

  /** A Conv whose weight is a constant: the forward conv's own, or an input-gradient conv's swapped form. */
  function convToBlocked(n: Node): boolean {
    const y = n.outputs[0]!, x = n.inputs[0]!;
    const yd = spatial(y), xd = dimsOf(x);
    if (!yd || !xd || xd.length !== 4 || attrString(n, 'auto_pad', 'NOTSET') !== 'NOTSET' || (n.inputs[2] && !constantOf(n.inputs[2]))) return false;
    const w = constantWeight(n);
    if (!w || w.dtype !== 'float32' || w.dims.length !== 4) return false;
    const group = attrInt(n, 'group', 1);
    const form = blockedForm(w.dims as number[], group, block, { padChannels: true });
    if (!form || (form.reorderInput && !blocked.has(x) && !reorderable(x))) return false;
    const xb = form.reorderInput ? ensureBlocked(x) : x;
    if (!form.reorderInput) ensurePlain(x);
    const [O, I] = w.dims as [number, number];
    const depthwise = group !== 1;
    const Op = padded(O), Ip = depthwise || !form.reorderInput ? I : padded(I);
    const attrs: Node['attrs'] = { group: { kind: 'int', value: depthwise ? Op : 1 } };
    for (const a of ['dilations', 'pads', 'strides', 'kernel_shape'] as const) {
      const v = attrInts(n, a);
      if (v) attrs[a] = { kind: 'ints', value: v };
    }
    const wr = em.constant(blockedWeight(w, Op, Ip, form.filter, block), `${n.name}_weight_nchwc`);
    const bias = n.inputs[2] ? padVec(n.inputs[2], O) : undefined;
    const { out, sum } = fuseTail(y, attrs);
    const yb = em.fresh(`${out}_nchwc`);
    nchwcNode('Conv', [xb, wr, ...(bias || sum ? [bias ?? ''] : []), ...(sum ? [sum] : [])], yb, attrs);
    blocked.set(out, yb);
    if (out === y && !attrs.activation) convSources.set(y, { node: g.nodes[g.nodes.length - 1]!, x: xb, inDims: xd, inBlocked: form.reorderInput, w: wr, bias, attrs, kernel: w.dims.slice(2) as number[], weight: w, weightName: n.inputs[1]! });
    moved++;
    return true;
  }

  /** The constant weight `n` convolves with, computed here for an input-gradient conv (conv.ts annotations). */
  function constantWeight(n: Node): Tensor | undefined {
    const direct = constantOf(n.inputs[1]!);
    if (direct) return direct;
    const job = n.meta?.phaseWeightOf ?? (n.meta?.flippedWeightOf ? { weight: n.meta.flippedWeightOf, taps: undefined } : undefined);
    const w = job && g.initializers.get(job.weight);
    const k = attrInts(n, 'kernel_shape');
    if (!job || !w || w.dtype !== 'float32' || w.dims.length !== 4 || !k || k.length !== 2) return undefined;
    const K = w.dims[2]! * w.dims[3]!;
    const taps = job.taps ?? Array.from({ length: K }, (_, i) => K - 1 - i);
    if (taps.length !== k[0]! * k[1]!) return undefined;
    return swappedWeight(w, attrInt(n, 'group', 1), taps, k);
  }

  /**
   * A train-mode BatchNormalization whose batch moments its gradient reads (batchnorm-train.ts:
   * outputs 1 and 2 are the batch mean and biased variance), or an inference-mode one (the
   * gradient's a·x + c, norm.ts), on a blocked input.
   */
  function batchNormToBlocked(n: Node): boolean {
    const x = n.inputs[0]!, d = spatial(x);
    if (!d || !blocked.has(x) || dtypeOf(x) !== 'float32') return false;
    const C = d[1]!;
    const eps = attrFloat(n, 'epsilon', 1e-5);
    const attrs: Node['attrs'] = { group: { kind: 'int', value: padded(C) }, kernel_shape: { kind: 'ints', value: [1, 1] } };
    const train = n.outputs.length > 1 && n.outputs.slice(1).some(Boolean);
    if (train) {
      const conv = convSources.get(x);
      if (!n.meta?.batchStatistics || n.outputs.slice(3).some((o) => o && read.has(o)) || !conv || !shiftable(n)) return false;
      const db = blocked.get(x)!;
      const { mean, variance, meanD } = pointwiseFits(conv, d) ? pointwiseMomentsOf(x, conv, d) : shiftedMoments(conv, db, d);
      if (n.outputs[1]) firstC(mean, C, [C], n.outputs[1]);
      if (n.outputs[2]) firstC(variance, C, [C], n.outputs[2]);
      for (const o of n.outputs.slice(1, 3)) if (o) plain.add(o);
      // The gradient's centre: E[d] = mean − K, what the mean is to d.
      if (n.outputs[1]) shiftedMeans.set(n.outputs[1], meanD ? firstC(meanD, C, [C]) : em.constant(tensor('float32', [C], new Float32Array(C)), 'centred_mean'));
      // y = a·(x − mean) + β = a·d + (β − a·E[d]), a = γ / √(var + ε); the pad lanes' γ is 0.
      const a = em.div(padVec(n.inputs[1]!, C), em.op('Sqrt', [em.add(variance, em.scalar(eps))]));
      emitAffine(n.outputs[0]!, db, a, meanD ? em.sub(padVec(n.inputs[2]!, C), em.mul(a, meanD)) : padVec(n.inputs[2]!, C), attrs);
      return true;
    }
    const [, scale, bias, mu, v] = n.inputs as [string, string, string, string, string];
    if (!mu || !v) return false;
    const a = em.div(padVec(scale, C), em.op('Sqrt', [em.add(padVec(v, C, 1), em.scalar(eps))]));
    const c = em.sub(padVec(bias, C), em.mul(padVec(mu, C), a));
    emitAffine(n.outputs[0]!, blocked.get(x)!, a, c, attrs);
    return true;
  }

  /**
   * Whether the blocked conv writing a BN's input (NCHW dims `d`) is a 1×1 stride-1 ungrouped conv
   * on a blocked input whose output moments cost less from its input (nchwc-batchstats.ts
   * pointwiseStatsPay, with the steps' bound): MobileNet-style expansions, ResNet-50's.
   */
  function pointwiseFits(conv: BlockedConvSource & { weight: Tensor }, d: number[]): boolean {
    const ints = (a: string, v: number) => { const t = conv.attrs[a]; return t?.kind !== 'ints' || t.value.every((k) => k === v); };
    const [O, I] = conv.weight.dims as [number, number];
    return blockedStep.pointwiseMoments && conv.inBlocked && conv.kernel.every((k) => k === 1) && ints('strides', 1) && ints('dilations', 1) && ints('pads', 0) &&
      (conv.attrs.group?.kind !== 'int' || conv.attrs.group.value === 1) && pointwiseStatsPay(padded(I), padded(O), d[0]! * d[2]! * d[3]!, pointwiseStats.stepMaxCost);
  }

  /**
   * The batch moments [Cp] of a BN input written by a 1×1 conv (pointwiseFits), from the conv's
   * input (nchwc-pointwise-moments.ts), with the conv's bias lowered by the batch mean itself, so it
   * writes d = x − mean: E[d] is 0 (no meanD) and no pass over the wide output goes to the moments.
   */
  function pointwiseMomentsOf(x: string, conv: BlockedConvSource & { node: Node; weight: Tensor; weightName: string }, d: number[]): { mean: string; variance: string; meanD?: string } {
    const [O, I] = conv.weight.dims as [number, number];
    const w2 = em.constant(padded2d(conv.weight.data as Float32Array, O, I, padded(O), padded(I)), `${conv.node.name}_pointwise_weight`);
    const { mean, variance, meanX } = pointwiseMoments(em, conv.x, [d[0]!, padded(I), d[2]!, d[3]!], w2, padded(O), conv.bias, block);
    lowerConvBias(em, conv, mean);
    pointwiseBNs.set(x, { conv, w2, meanX });
    return { mean, variance };
  }

  /**
   * The input gradient of a 1×1 conv whose BN took its moments from the conv's input
   * (pointwiseMomentsOf), where the BN's input gradient a·g + b·d + c (norm.ts, meta.bnAffineDx)
   * feeds it alone: the conv wrote d = W·xs exactly (xs = x − mean of x), so
   *   Wᵀ(a·g + b·d + c) = Conv(g; Wᵀ·diag(a)) + Conv(xs; Wᵀ·diag(b)·W) + Wᵀc,
   * two blocked convs, the second over the narrow input (I × I per position), in place of a pass
   * over the wide g (a·g), an affine conv over the wide d (b·d + c, a·g its Sum) and this conv.
   * The passes it replaces die unread. d is still read for Σ g·d (a cross product of xs and g
   * over the batch measured slower than a Mul and a sum: batched MatMuls of 16-wide blocks).
   */
  function pointwiseDxToBlocked(n: Node): boolean {
    if (!blockedStep.pointwiseDx || n.domain !== '' || n.opType !== 'Conv') return false;
    const dX = n.inputs[0]!, job = producer.get(dX)?.meta?.bnAffineDx;
    const bn = job && pointwiseBNs.get(job.x);
    const y = n.outputs[0]!, yd = spatial(y), gd = dimsOf(job?.g ?? '');
    if (!job || !bn || !yd || !gd || soleConsumer(dX) !== n || n.meta?.flippedWeightOf !== bn.conv.weightName || !blocked.has(job.g) || n.inputs[2]) return false;
    const ones = (a: string, v: number) => (attrInts(n, a) ?? []).every((k) => k === v);
    if (attrInt(n, 'group', 1) !== 1 || !ones('kernel_shape', 1) || !ones('strides', 1) || !ones('pads', 0) || !ones('dilations', 1)) return false;
    const [O, I] = bn.conv.weight.dims as [number, number];
    const Op = padded(O), Ip = padded(I), xd = bn.conv.inDims;
    if (yd.join() !== xd.join() || gd[1] !== O) return false;
    const wT = em.transpose(bn.w2, [1, 0]); // [Ip, Op]
    // Wᵀ·diag(a) in the blocked filter layout [Ip/b, Op/b, b (input lane), b (output lane)].
    const base = em.constant(blockedWeight(swappedWeight(bn.conv.weight, 1, [0], [1, 1]), Ip, Op, 'OIHWBiBo', block), `${n.name}_weight_nchwc`);
    const wA = em.reshape(em.mul(em.reshape(base, [Ip / block, Op / block, block, block]), em.reshape(padVec(job.a, O), [1, Op / block, block, 1])), [Ip, Op, 1, 1]);
    // Wᵀ·diag(b)·W [out, in] in the same layout: [Ip/b, b, Ip/b, b] → [out block, in block, in lane, out lane].
    const m2 = em.op('MatMul', [em.mul(wT, em.reshape(padVec(job.b, O), [1, Op])), bn.w2]);
    const wB = em.reshape(em.transpose(em.reshape(m2, [Ip / block, block, Ip / block, block]), [0, 2, 3, 1]), [Ip, Ip, 1, 1]);
    const bias = em.reshape(em.op('MatMul', [wT, em.reshape(padVec(job.c, O), [Op, 1])]), [Ip]);
    const xs5 = em.sub(view5(bn.conv.x, xd), spreadOverMap(em.reshape(bn.meanX, [1, Ip / block, 1, 1, block]), xd));
    const xs = em.reshape(xs5, [xd[0]!, Ip, xd[2]!, xd[3]!]);
    const attrs: Node['attrs'] = { group: { kind: 'int', value: 1 }, kernel_shape: { kind: 'ints', value: [1, 1] } };
    const { out, sum } = fuseTail(y, attrs);
    const fromX = em.fresh(`${out}_pointwise_dx`);
    nchwcNode('Conv', [xs, wB, ...(sum ? ['', sum] : [])], fromX, { group: attrs.group!, kernel_shape: attrs.kernel_shape! });
    const yb = em.fresh(`${out}_nchwc`);
    nchwcNode('Conv', [blocked.get(job.g)!, wA, bias, fromX], yb, attrs);
    blocked.set(out, yb);
    moved++;
    return true;
  }

  /**
   * The batch moments [Cp] of a BN input x of NCHW dims `d` whose conv now writes d = x − K (`db`),
   * K the mean of its outputs on a grid over the batch (nchwc-shift.ts), from one pass each over d:
   * var = E[d²] − E[d]² (clamped at 0) keeps its digits where |mean| ≫ std, as a centred second
   * pass would, which would write x − mean and cost more than the single-threaded kernel it
   * replaces (docs/speed.md, session 34).
   */
  function shiftedMoments(conv: BlockedConvSource & { node: Node }, db: string, d: number[]): { mean: string; variance: string; meanD: string } {
    const Cp = padded(d[1]!), count = d[0]! * d[2]! * d[3]!;
    const K = blockedStep.shiftMoments ? shiftBlockedConv(em, conv, [Cp, d[2]!, d[3]!], block) : em.constant(tensor('float32', [Cp], new Float32Array(Cp)), 'no_shift');
    const meanD = em.mul(channelSums(db, d), em.scalar(1 / count));
    const variance = em.op('Relu', [em.sub(em.mul(channelSums(db, d, 'ReduceSumSquare'), em.scalar(1 / count)), em.mul(meanD, meanD))]);
    return { mean: em.add(K, meanD), variance, meanD };
  }

  /**
   * Whether train-mode BN `n`'s input x may hold x − K: every other node that reads x is a node of
   * its gradient that reads it only as x − mean (meta.shiftInvariant), the mean through the
   * gradient's centre (shiftedCentre gives that mean − K). Elsewhere the BN stays onnxruntime's.
   */
  function shiftable(n: Node): boolean {
    const x = n.inputs[0]!, r = readers(x);
    // And every node tagged for x still reads x, or the mean (its centre): activation checkpointing
    // (checkpoint.ts) copies tagged nodes onto a recomputed x. (Its Add(x, 0) reader of x already
    // keeps such BNs unshifted; this holds whatever later passes do to the graph.)
    return r.includes(n) && r.every((k) => k === n || (k.meta?.shiftInvariant?.x === x && !k.meta.shiftInvariant.centre)) &&
      (tagged.get(x) ?? []).every((k) => (k.meta!.shiftInvariant!.centre ? k.inputs[0] === n.outputs[1] : k.inputs.includes(x)));
  }

  /** A shifted BN's gradient centre (meta.shiftInvariant): the mean of x − K, as x's readers get x − K. */
  function shiftedCentre(n: Node): boolean {
    const shifted = n.meta?.shiftInvariant?.centre ? shiftedMeans.get(n.inputs[0]!) : undefined;
    if (!shifted) return false;
    push({ ...n, inputs: [shifted] });
    return true;
  }

  /**
   * SiLU's recomputed input gradient (meta.siluGradient, silu.ts: dY·(1 − t)·(x·t + 1), t =
   * Sigmoid(−x), seven ops) on blocked x and dY in five: dY·s·(1 + u) with u = x·t, onnxruntime's
   * QuickGelu(x, α = −1), and s = Sigmoid(x) of the 4-D blocked tensor, a name the forward's
   * x·Sigmoid(x) (on the 5-D view, fused into QuickGelu) does not read, so common-subexpression
   * elimination leaves the two apart and the forward keeps no s. The seven ops, already emitted,
   * die unread.
   */
  function siluGradToBlocked(n: Node): boolean {
    const job = n.meta?.siluGradient;
    const d = spatial(n.outputs[0]!);
    if (!job || !blockedStep.quickGeluSilu || !d || !blocked.has(job.x) || !blocked.has(job.dY) || dimsOf(job.x)?.join() !== d.join() || dimsOf(job.dY)?.join() !== d.join()) return false;
    const xv = view5(blocked.get(job.x)!, d);
    const u = em.op('QuickGelu', [xv], { alpha: floatAttr(-1) });
    g.nodes[g.nodes.length - 1]!.domain = MS_DOMAIN;
    const s5 = em.reshape(em.op('Sigmoid', [blocked.get(job.x)!]), [d[0]!, padded(d[1]!) / block, d[2]!, d[3]!, block]);
    const out5 = em.mul(view5(blocked.get(job.dY)!, d), em.mul(s5, em.add(u, em.scalar(1))));
    const y4 = em.reshape(out5, [d[0]!, padded(d[1]!), d[2]!, d[3]!]);
    blocked.set(n.outputs[0]!, y4);
    views.set(`${y4}|${d.join()}`, out5);
    return true;
  }

  /** y = a·x + c per channel on blocked x: one blocked depthwise 1×1 Conv, with what follows fused. */
  function emitAffine(y: string, xb: string, a: string, c: string, attrs: Node['attrs']): void {
    const { out, sum } = fuseTail(y, attrs);
    const yb = em.fresh(`${out}_nchwc`);
    nchwcNode('Conv', [xb, em.reshape(a, [-1, 1, 1, 1]), c, ...(sum ? [sum] : [])], yb, attrs);
    blocked.set(out, yb);
    if (!sum && !attrs.activation) open.set(out, g.nodes[g.nodes.length - 1]!);
  }

  /**
   * Add(A, B) where A is an affine Conv's output read only here and B is blocked: B becomes the
   * Conv's Sum input (onnxruntime accumulates into it in place), the Conv moves after B's nodes.
   */
  function fuseLateSum(n: Node): boolean {
    if (n.domain !== '' || (n.opType !== 'Add' && n.opType !== 'Sum') || n.inputs.length !== 2) return false;
    for (const [a, b] of [[n.inputs[0]!, n.inputs[1]!], [n.inputs[1]!, n.inputs[0]!]]) {
      const conv = open.get(a);
      if (!conv || a === b || soleConsumer(a) !== n || !blocked.has(b) || dimsOf(a)?.join() !== dimsOf(b)?.join() || dimsOf(n.outputs[0]!)?.join() !== dimsOf(a)?.join()) continue;
      conv.inputs[3] = blocked.get(b)!;
      g.nodes.splice(g.nodes.indexOf(conv), 1);
      g.nodes.push(conv);
      open.delete(a);
      blocked.set(n.outputs[0]!, conv.outputs[0]!);
      return true;
    }
    return false;
  }

  /**
   * Sum, mean or sum of squares of a blocked tensor over N, H, W (axes 0, 2, 3: a per-channel
   * vector), or over H, W (axes 2, 3, or a GlobalAveragePool: a squeeze-excitation's [N, C, 1, 1]).
   */
  function reduceToBlocked(n: Node): boolean {
    const x = n.inputs[0]!, d = spatial(x), outDims = dimsOf(n.outputs[0]!);
    if (!d || !blocked.has(x) || !outDims || dtypeOf(x) !== 'float32') return false;
    const axesT = n.inputs[1] ? constantOf(n.inputs[1]) : undefined;
    const axes = n.opType === 'GlobalAveragePool' ? [2, 3] : (axesT ? Array.from(axesT.data as BigInt64Array, Number) : attrInts(n, 'axes') ?? []).map((a) => (a < 0 ? a + 4 : a)).sort();
    const op = n.opType === 'ReduceSumSquare' ? 'ReduceSumSquare' : 'ReduceSum';
    const mean = n.opType === 'ReduceMean' || n.opType === 'GlobalAveragePool';
    const [N, C, H, W] = d as [number, number, number, number];
    if (axes.join() === '0,2,3') {
      let s = channelSums(blocked.get(x)!, d, op);
      if (mean) s = em.mul(s, em.scalar(1 / (N * H * W)));
      firstC(s, C, outDims, n.outputs[0]!);
    } else if (axes.join() === '2,3') {
      // Per sample and channel over the [N·C/b, H·W, b] view, then out of the layout: [N, C, 1, 1].
      let s = em.reduce(op, em.reshape(blocked.get(x)!, [N * (padded(C) / block), H * W, block]), [1], false);
      if (mean) s = em.mul(s, em.scalar(1 / (H * W)));
      const out = outDims.length === 4 ? n.outputs[0]! : em.fresh(`${n.outputs[0]}_nchw`);
      nchwcNode('ReorderOutput', [em.reshape(s, [N, padded(C), 1, 1])], out, { channels: { kind: 'int', value: C }, channels_last: { kind: 'int', value: 0 } });
      if (out !== n.outputs[0]) { em.reshape(out, outDims); g.nodes[g.nodes.length - 1]!.outputs[0] = n.outputs[0]!; }
    } else return false;
    plain.add(n.outputs[0]!);
    return true;
  }

  /** An element-wise op over at least one blocked tensor and per-channel or scalar operands. */
  function elementwiseToBlocked(n: Node): boolean {
    const y = n.outputs[0]!, d = spatial(y);
    if (!d || n.outputs.length !== 1 || !n.inputs.some((i) => blocked.has(i))) return false;
    const C = d[1]!;
    const operands: string[] = [];
    for (const i of n.inputs) {
      if (!i) { operands.push(i); continue; }
      const id = dimsOf(i);
      if (!id) return false;
      if (blocked.has(i) || (id.join() === d.join() && reorderable(i))) { operands.push(''); continue; } // filled below
      const size = id.reduce((p, q) => p * q, 1);
      if (size === 1) { operands.push(i); continue; }
      if (id.length <= 4 && size === C && id.at(-3) === C && (id.length === 3 || id[0] === 1)) { operands.push(''); continue; }
      if (id.length === 4 && id[0] === d[0] && id[1] === C && id[2] === 1 && id[3] === 1 && (blocked.has(i) || (dtypeOf(i) === 'float32' && C % 4 === 0))) { operands.push(''); continue; }
      return false;
    }
    if (n.opType === 'Clip' && n.inputs.slice(1).some((i) => i && dimsOf(i)!.reduce((p, q) => p * q, 1) !== 1)) return false;
    n.inputs.forEach((i, k) => {
      if (!i || operands[k] !== '') return;
      const id = dimsOf(i)!;
      operands[k] = id.join() === d.join() ? view5(ensureBlocked(i), d)
        : id[0] === d[0] && id.length === 4 && d[0] !== 1 ? view5(ensureBlocked(i), id) // a per-sample vector (a squeeze-excitation gate)
        : spreadOverMap(channelOperand(i, C), d);
    });
    const out5 = em.op(n.opType, operands, {});
    g.nodes[g.nodes.length - 1]!.attrs = n.attrs;
    const y4 = em.reshape(out5, [d[0]!, padded(C), d[2]!, d[3]!]);
    blocked.set(y, y4);
    views.set(`${y4}|${d.join()}`, out5);
    return true;
  }

  /**
   * A per-sample, per-channel [N, C, 1, 1] tensor v expanded over the map (a global average pool's
   * input gradient: a squeeze-excitation's) where every reader adds it to another tensor: not
   * emitted; each Add reads v's blocked [N, Cp/b, 1, 1, b] view and broadcasts it (broadcastAdd).
   * The NCHW Expand and the reorder of its output into the layout cost two passes over the map;
   * an Expand on the blocked view measured no faster than that (onnxruntime copies b floats at a
   * time), the broadcast Add 0.93 of EfficientNet-B0's Tent step (docs/speed.md, session 39).
   */
  function expandToBlocked(n: Node): boolean {
    const y = n.outputs[0]!, d = spatial(y), v = n.inputs[0]!, vd = dimsOf(v);
    if (!blockedStep.broadcastExpand || n.domain !== '' || n.opType !== 'Expand' || !d || !vd || vd.length !== 4 || dtypeOf(v) !== 'float32') return false;
    if (vd[0] !== d[0] || vd[1] !== d[1] || vd[2] !== 1 || vd[3] !== 1 || (!blocked.has(v) && d[1]! % 4 !== 0)) return false;
    if (!readers(y).every((k) => k.domain === '' && (k.opType === 'Add' || k.opType === 'Sum') && k.inputs.length === 2 && k.inputs[0] !== k.inputs[1])) return false;
    expanded.set(y, n);
    return true;
  }

  /** Add(A, Expand(v)) (expandToBlocked) with A blocked: A + v broadcast over the map, on the blocked layout. */
  function broadcastAdd(n: Node): boolean {
    const k = n.inputs.findIndex((i) => expanded.has(i));
    if (k < 0) return false;
    const [e, a] = [n.inputs[k]!, n.inputs[1 - k]!], d = spatial(n.outputs[0]!);
    if (!d || !blocked.has(a) || dimsOf(a)?.join() !== d.join()) return false;
    const v = expanded.get(e)!.inputs[0]!;
    const gate = gates.get(a);
    if (gate && blockedStep.gateBias && soleConsumer(a) === n) {
      // A squeeze-excitation's r-gradient dY·gate (gateToBlocked) plus the pool's: the pool's is
      // the gate conv's bias ([N·Cp] over the batch-folded channels), and the Add is no pass at all.
      gate.conv.inputs[2] = em.reshape(ensureBlocked(v), [-1]);
      const nodes = g.nodes;
      for (const k of [gate.conv, gate.reshape]) { nodes.splice(nodes.indexOf(k), 1); nodes.push(k); }
      blocked.set(n.outputs[0]!, blocked.get(a)!);
      return true;
    }
    const out5 = em.op('Add', [view5(blocked.get(a)!, d), view5(ensureBlocked(v), dimsOf(v)!)]);
    const y4 = em.reshape(out5, [d[0]!, padded(d[1]!), d[2]!, d[3]!]);
    blocked.set(n.outputs[0]!, y4);
    views.set(`${y4}|${d.join()}`, out5);
    return true;
  }

  /**
   * Mul(A, v) with A blocked [N, C, H, W] and v a per-sample, per-channel [N, C, 1, 1] (a
   * squeeze-excitation's gate, forward and backward) as a blocked depthwise conv over the batch
   * (nchwc.ts gateConv), with what follows fused.
   */
  function gateToBlocked(n: Node): boolean {
    if (!blockedStep.gateConv || n.domain !== '' || n.opType !== 'Mul' || n.inputs.length !== 2) return false;
    const y = n.outputs[0]!, d = spatial(y);
    if (!d || d[0]! < 2) return false;
    const [N, C, H, W] = d as [number, number, number, number];
    for (const [a, v] of [[n.inputs[0]!, n.inputs[1]!], [n.inputs[1]!, n.inputs[0]!]]) {
      const vd = dimsOf(v);
      if (!blocked.has(a) || dimsOf(a)?.join() !== d.join() || !vd || vd.join() !== [N, C, 1, 1].join() || dtypeOf(v) !== 'float32' || (!blocked.has(v) && C % 4 !== 0)) continue;
      const attrs: Node['attrs'] = {};
      const { out, sum } = fuseTail(y, attrs);
      const { y: product, conv, reshape } = gateConv(em, blocked.get(a)!, ensureBlocked(v), [N, padded(C), H, W], { attrs, sum });
      blocked.set(out, product);
      if (!attrs.activation) gates.set(out, { conv, reshape });
      return true;
    }
    return false;
  }

  /** What the blocked Conv writing `y` fuses after it (nchwc.ts fuseConvTail). */
  function fuseTail(y: string, attrs: Node['attrs']): { out: string; sum?: string } {
    return fuseConvTail(y, attrs, {
      readers,
      blockedLike: (t, like) => (blocked.has(t) && dimsOf(t)?.join() === dimsOf(like)?.join() ? blocked.get(t) : undefined),
      constant: constantOf,
      fused: (k) => skip.add(k),
    });
  }
}

/**
 * W [O, C/G, kh, kw] (G groups) → [C, O/G, ...kernel] with the taps `taps` of W's (flat indices
 * into kh·kw, in order): element [g·Cg + c, o, j] = W[g·Og + o, c, taps[j]]. An input-gradient
 * conv's weight: all taps reversed (conv.ts convDx), or one phase's (conv.ts phasesDx).
 */
export function swappedWeight(w: Tensor, group: number, taps: readonly number[], kernel: readonly number[]): Tensor {
  const [O, Cg, kh, kw] = w.dims as [number, number, number, number];
  const K = kh * kw, J = taps.length, Og = O / group, C = Cg * group;
  const src = w.data as Float32Array, out = new Float32Array(C * Og * J);
  for (let gi = 0; gi < group; gi++) for (let c = 0; c < Cg; c++) for (let o = 0; o < Og; o++) {
    const from = ((gi * Og + o) * Cg + c) * K, to = ((gi * Cg + c) * Og + o) * J;
    for (let j = 0; j < J; j++) out[to + j] = src[from + taps[j]!]!;
  }
  return tensor('float32', [C, Og, ...kernel], out);
}

/**
 * Each phase-by-phase input gradient (a Reshape marked by conv.ts phasesDx) with the Reshapes and
 * Concats between its phase Convs and it, in graph order; only where each of those is read by
 * the next one alone.
 */
function phaseInterleaves(nodes: readonly Node[], producer: ReadonlyMap<string, Node>, soleConsumer: (t: string) => Node | undefined): Map<Node, Node[]> {
  const out = new Map<Node, Node[]>();
  for (const n of nodes) {
    const meta = n.meta?.phaseInterleave;
    if (!meta || n.opType !== 'Reshape') continue;
    const phases = new Set(meta.phases), between = new Set<Node>();
    let ok = true;
    const walk = (t: string, reader: Node): void => {
      if (!ok || phases.has(t)) return;
      const p = producer.get(t);
      if (!p || (p.opType !== 'Reshape' && p.opType !== 'Concat') || soleConsumer(t) !== reader) { ok = false; return; }
      between.add(p);
      for (const i of p.opType === 'Reshape' ? [p.inputs[0]!] : p.inputs) walk(i, p);
    };
    walk(n.inputs[0]!, n);
    if (ok) out.set(n, nodes.filter((k) => between.has(k)));
  }
  return out;
}

/** Reductions the blocked layout keeps (over N, H, W or over H, W). */
const REDUCTIONS = new Set(['ReduceSum', 'ReduceMean', 'ReduceSumSquare', 'GlobalAveragePool']);

/** Comparisons and logic: their outputs are bool whatever their inputs. */
const BOOL_OUT = new Set(['Greater', 'Less', 'GreaterOrEqual', 'LessOrEqual', 'Equal', 'And', 'Or', 'Not', 'Xor', 'IsNaN', 'IsInf']);

/**
 * Static dims and dtypes of every tensor of a step graph: the probe's (`shapes`: forward and
 * loss), then node by node through the backward pass (static-shapes.ts's ops; a BatchNormalization
 * keeps its input's shape and gives [C] moments).
 */
function stepShapes(model: Model, shapes: ShapeMap): { dims: Map<string, number[]>; dtypes: Map<string, DType> } {
  const g = model.graph;
  const dims = new Map<string, number[]>(), dtypes = new Map<string, DType>();
  for (const [k, v] of shapes) if (v.dims.every((d) => Number.isInteger(d) && d >= 0)) { dims.set(k, [...v.dims]); dtypes.set(k, v.dtype); }
  for (const v of g.inputs) if (v.shape?.every((d) => typeof d === 'number')) { dims.set(v.name, v.shape as number[]); dtypes.set(v.name, v.dtype); }
  for (const [k, t] of g.initializers) { dims.set(k, [...t.dims]); dtypes.set(k, t.dtype); }
  for (const n of g.nodes) {
    const c = n.opType === 'Constant' && n.domain === '' ? constantValue(g, n.outputs[0]!) : undefined;
    if (c) { dims.set(n.outputs[0]!, [...c.dims]); dtypes.set(n.outputs[0]!, c.dtype); continue; }
    if (n.domain !== '') continue;
    if (n.outputs.every((o) => !o || dims.has(o))) continue;
    const x = n.inputs[0] ? dims.get(n.inputs[0]) : undefined;
    const shapeArg = n.opType === 'Expand' && n.inputs[1] ? g.initializers.get(n.inputs[1]) : undefined;
    const outs = n.opType === 'BatchNormalization'
      ? (x ? [x, ...n.outputs.slice(1).map(() => [x[1]!])] : undefined)
      : n.opType === 'Expand'
      ? (x && shapeArg ? [broadcast([x, Array.from(shapeArg.data as BigInt64Array, Number)])] : undefined)
      : ELEMENTWISE.has(n.opType) || BOOL_OUT.has(n.opType) || n.opType === 'Div'
      ? (n.inputs.every((i) => !i || dims.has(i)) ? [broadcast(n.inputs.filter(Boolean).map((i) => dims.get(i)!))] : undefined)
      : n.opType === 'Gemm'
      ? gemmDims(n, x, n.inputs[1] ? dims.get(n.inputs[1]) : undefined)
      : n.opType === 'ConvTranspose' && n.meta?.dxOfConv && x
      ? [[x[0]!, (n.meta.dxOfConv as { C: number }).C, ...(n.meta.dxOfConv as { inSp: number[] }).inSp]]
      : outputShapes(n, (i) => (n.inputs[i] ? dims.get(n.inputs[i]!) ?? (i === 1 ? swappedDims(g, n) : undefined) : undefined), (i) => (n.inputs[i] ? g.initializers.get(n.inputs[i]!) : undefined));
    const dtype: DType | undefined = BOOL_OUT.has(n.opType) ? 'bool' : n.opType === 'Cast' ? castTo(n) : n.inputs[0] ? dtypes.get(n.inputs[0]) : undefined;
    outs?.forEach((d, i) => {
      const o = n.outputs[i];
      if (!o || !d || dims.has(o)) return;
      dims.set(o, d);
      if (dtype) dtypes.set(o, dtype);
    });
  }
  return { dims, dtypes };
}

/** The dims of an input-gradient conv's swapped weight (conv.ts annotations): [C, O/G, ...kernel]. */
function swappedDims(g: Model['graph'], n: Node): number[] | undefined {
  const base = n.meta?.phaseWeightOf?.weight ?? n.meta?.flippedWeightOf;
  const w = base ? g.initializers.get(base) : undefined;
  const k = attrInts(n, 'kernel_shape');
  if (n.opType !== 'Conv' || !w || w.dims.length !== 4 || !k) return undefined;
  const group = attrInt(n, 'group', 1);
  return [w.dims[1]! * group, w.dims[0]! / group, ...k];
}

function gemmDims(n: Node, a: number[] | undefined, b: number[] | undefined): number[][] | undefined {
  if (!a || !b || a.length !== 2 || b.length !== 2) return undefined;
  return [[attrInt(n, 'transA', 0) ? a[1]! : a[0]!, attrInt(n, 'transB', 0) ? b[0]! : b[1]!]];
}

function castTo(n: Node): DType | undefined {
  const to = attrInt(n, 'to', 0);
  return to === 1 ? 'float32' : to === 9 ? 'bool' : to === 7 ? 'int64' : undefined;
}

/** A row-major [O, I] matrix zero-padded to [Op, Ip]. */
function padded2d(w: Float32Array, O: number, I: number, Op: number, Ip: number): Tensor {
  const out = new Float32Array(Op * Ip);
  for (let o = 0; o < O; o++) out.set(w.subarray(o * I, o * I + I), o * Ip);
  return tensor('float32', [Op, Ip], out);
}
