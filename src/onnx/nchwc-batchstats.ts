// BN-adapt on onnxruntime-node's blocked NCHWc kernels: a Node-only, CPU-only rewrite of a
// batch-statistics inference graph (src/tta/bn-adapt.ts) so that the activations stay in the
// blocked layout from one convolution to the next.
//
// Why: with the standard lowering (src/train/batchnorm-train.ts) onnxruntime blocks every conv
// (constant weights) but must leave the blocked layout for each training-mode BatchNormalization,
// whose kernel is single-threaded and NCHW-only: Conv → ReorderOutput → BN (three passes, one
// thread) → Clip → ReorderInput → next Conv. On MobileNetV2 at 224×224 the BN kernel, the two
// reorders and the unfused Clip took 70% of the BN-adapt call (docs/speed.md, second pass).
//
// Here each BN whose input a blocked conv wrote becomes, on the blocked tensor viewed as [N·C/b,
// H·W, b]: per-channel sums of d and d² (onnxruntime's fast keep-reduce-keep reduction, then over
// N), where d = y − K is what the conv writes when its bias is lowered by K, the mean of its
// outputs on a sparse grid over every sample (nchwc-shift.ts: the same conv with larger strides,
// about 1/k² of its work). The shift costs no pass over the activation and keeps var = E[d²] −
// E[d]² free of cancellation when |mean| ≫ std (K is near the batch mean). Then the normalisation
// a·d + β' as a blocked depthwise 1×1 Conv (a = scale/√(var + eps)), into which the following
// Relu/Clip and a residual Add (the NCHWc Conv's Sum input) fuse, as onnxruntime's own
// NchwcTransformer does for inference BatchNorm. A 1×1 expansion conv (pointwiseBatchNorm) instead
// takes its output moments from its narrower input's mean and covariance and folds the BN into
// itself. Everything is multi-threaded, and no reorder is left between two blocked convs. Channel
// counts that are not a multiple of the block (MobileNetV2's 24) are padded with zero lanes, as
// onnxruntime's transformer pads them. Relu, Clip, HardSwish (x·HardSigmoid(x)) and residual Adds
// fuse or stay in the layout; so do SiLU, global average pooling and a squeeze-excitation gate's
// Mul where the channels fill whole blocks (squeezeExciteToBlocked). Tensors leave the layout
// (ReorderOutput) only where a node the pass does not know reads them (MaxPool, a Concat, …).
//
// The same numbers as the standard lowering (test/onnx/nchwc-batchstats.test.ts: ≤ 1e-5 relative,
// and as close to float64 as the two-pass kernel at mean/std = 1000); the block size comes from
// onnxruntime (nchwc.ts nchwcBlockSize). Weights are reordered (and padded) by graph ops on the
// shared initializers, which onnxruntime constant-folds. Running statistics that no node reads
// any more (prior 0) are dropped from the rewritten graph.
import { attrInt, attrInts, attrFloat, attrString, opsetVersion, type Model, type Node } from './ir.ts';
import { Emitter } from './emitter.ts';
import { NCHWC_DOMAIN, blockedChannelSums, blockedForm, fuseConvTail, gateConv, readersIn, soleReader } from './nchwc.ts';
import type { Tensor } from './tensor.ts';
import { checkRunningStats, mixWithPrior } from '../train/batchnorm-train.ts';
import { shiftBlockedConv, type BlockedConvSource } from './nchwc-shift.ts';
import { pointwiseMoments } from './nchwc-pointwise-moments.ts';

/**
 * Whether 1×1 convs take their BN statistics from the input's moments (tests and benches switch it),
 * and where: `maxCost` bounds the Gram route's multiply-adds per element of the conv's output,
 * I²·(rows + O) / (rows·O), against the direct statistics' passes over that output (see
 * pointwiseStatsPay). Infinity takes every conv that widens (the rule before session 37).
 * `stepMaxCost` is the bound in Tent-style steps (nchwc-step.ts), where the route also spares the
 * conv's input gradient two passes over its output (pointwiseDx): 40 against 16 there, in one
 * process, ResNet-50 0.974 and 0.979, EfficientNet-B0 0.979 and 0.981, MobileNetV2 0.986 and 1.001,
 * MobileNetV3-Large 1.010 (session 39; at 1000: 0.97–1.04).
 */
export const pointwiseStats = { current: true, maxCost: 16, stepMaxCost: 40 };

/**
 * Whether a 1×1 conv from I to O channels over `rows` output positions (N·H·W) should take its BN
 * statistics from its input: the Gram product costs rows·I² and W·Σ·Wᵀ O·I² multiply-adds, the
 * direct route about four passes over the rows·O output. A Gram product costs as much as the conv
 * itself where I = O (RegNetY's 1×1 convs: BN-adapt 249 → 184 ms without it), and late layers,
 * with few rows and wide channels, pay the O·I² term for little output.
 */
export function pointwiseStatsPay(I: number, O: number, rows: number, maxCost: number = pointwiseStats.maxCost): boolean {
  return I <= O && (I * I * (rows + O)) / (rows * O) <= maxCost;
}

/** Whether SiLU and squeeze-excitation ops keep the blocked layout (benches switch it off to compare). */
export const squeezeExciteBlocked = { current: true };

/** Whether the gate's Mul is a depthwise conv over the batch (nchwc.ts gateConv; benches switch it off). */
export const gateAsConv = { current: true };

export interface BlockedBatchStatsResult {
  /** Convolutions and BatchNorm layers moved onto the blocked kernels. */
  convs: number;
  batchNorms: number;
}

/**
 * Rewrite, in place, the convs (constant weights) and inference BatchNormalization nodes of
 * `model` that fit the blocked kernels into their blocked, batch-statistics form. BatchNorm nodes
 * left alone stay as they were: the caller lowers them with lowerBatchNormTrain afterwards.
 * `shapeOf` gives the dims of the model's tensors (from probeShapes). `prior` as in
 * BatchStatOptions; `pointwiseMaxCost` overrides pointwiseStats.maxCost.
 */
export function blockBatchStats(model: Model, shapeOf: (t: string) => number[] | undefined, block: number, opts: { prior?: number; pointwiseMaxCost?: number } = {}): BlockedBatchStatsResult {
  const g = model.graph;
  const prior = opts.prior ?? 0;
  const original = g.nodes;
  const em = new Emitter(g, opsetVersion(model));
  g.nodes = [];
  const readers = readersIn({ ...g, nodes: original });
  const soleConsumer = soleReader(readers);
  /** NCHW name → its blocked twin (logical shape [N, C, H, W], memory [N, C/b, H, W, b]). */
  const blocked = new Map<string, string>();
  /** Channels of each blocked tensor without the pad lanes (what ReorderOutput keeps). */
  const channels = new Map<string, number>();
  const setBlocked = (t: string, b: string, c: number) => { blocked.set(t, b); channels.set(t, c); };
  /** NCHW names that exist (graph inputs, initializers, outputs of standard nodes). */
  const plain = new Set<string>([...g.inputs.map((i) => i.name), ...g.initializers.keys()]);
  const skip = new Set<Node>();
  /** Outputs of the convs moved here: their node, blocked (or stem) input, reordered weight, bias, attributes. */
  const convs = new Map<string, BlockedConvSource & { node: Node }>();
  const result: BlockedBatchStatsResult = { convs: 0, batchNorms: 0 };

  const push = (n: Node) => { g.nodes.push(n); for (const o of n.outputs) if (o) plain.add(o); };
  const nchwcNode = (opType: string, inputs: string[], output: string, attrs: Node['attrs']) => {
    g.nodes.push({ name: em.fresh(`${output}_nchwc_${opType.toLowerCase()}`), opType, domain: NCHWC_DOMAIN, inputs, outputs: [output], attrs });
  };
  /** The NCHW form of `t`, reordered out of the blocked layout at first use. */
  const ensurePlain = (t: string) => {
    if (!t || plain.has(t) || !blocked.has(t)) return;
    const C = channels.get(t);
    if (C === undefined) throw new Error(`blocked BN-adapt: tensor '${t}' left the NCHWc layout with an unknown channel count`);
    nchwcNode('ReorderOutput', [blocked.get(t)!], t, { channels: { kind: 'int', value: C }, channels_last: { kind: 'int', value: 0 } });
    plain.add(t);
  };
  /** The blocked form of `t`, reordered into the layout at first use. */
  const ensureBlocked = (t: string) => {
    let b = blocked.get(t);
    if (!b) {
      b = em.fresh(`${t}_nchwc`);
      nchwcNode('ReorderInput', [t], b, { channels_last: { kind: 'int', value: 0 } });
      blocked.set(t, b);
      const c = shapeOf(t)?.[1];
      if (c !== undefined) channels.set(t, c);
    }
    return b;
  };
  const rowsOf = ([N, , H, W]: number[]) => N! * H! * W!;
  const isBlockedDims = (d: number[] | undefined): d is number[] => !!d && d.length === 4 && d.every((v) => Number.isInteger(v) && v > 0);
  /** Channels as the blocked layout holds them: rounded up to whole blocks (the pad lanes are zeros). */
  const padded = (c: number) => Math.ceil(c / block) * block;
  /** A [c] vector padded to [padded(c)] with `value`. */
  const padVec = (t: string, c: number, value = 0) => (padded(c) === c ? t : em.op('Pad', [t, em.ints([0, padded(c) - c]), ...(value ? [em.scalar(value)] : [])]));

  for (const n of original) {
    if (skip.has(n)) continue;
    if (n.domain === '' && n.opType === 'Conv') {
      const w = n.inputs[1]!, wt = g.initializers.get(w);
      const dims = shapeOf(n.outputs[0]!);
      const group = attrInt(n, 'group', 1);
      const candidate = wt && wt.dtype === 'float32' && wt.dims.length === 4 && isBlockedDims(dims) && attrString(n, 'auto_pad', 'NOTSET') === 'NOTSET'
        ? blockedForm(wt.dims as number[], group, block, { padChannels: true }) : null;
      // onnxruntime's ReorderInput takes whole groups of 4 channels only (a Concat of 16 + 8 + 3 in
      // MODNet has 27): such a conv stays in the standard form unless its input is blocked already.
      const x0 = n.inputs[0]!;
      const form = candidate && candidate.reorderInput && !blocked.has(x0) && (shapeOf(x0)?.[1] ?? 0) % 4 !== 0 ? null : candidate;
      const bn = form ? soleConsumer(n.outputs[0]!) : undefined;
      if (form && bn && isBatchNorm(bn) && form.filter === 'OIHWBiBo' && isPointwise(n) && isBlockedDims(shapeOf(n.inputs[0]!)) && pointwiseStats.current && pointwiseStatsPay(padded(wt!.dims[1]!), padded(wt!.dims[0]!), rowsOf(dims!), opts.pointwiseMaxCost)) {
        checkRunningStats(g, bn);
        pointwiseBatchNorm(n, bn, ensureBlocked(n.inputs[0]!), wt!.dims as number[]);
        skip.add(bn);
        result.convs++;
        result.batchNorms++;
        continue;
      }
      if (form) {
        const x = form.reorderInput ? ensureBlocked(n.inputs[0]!) : n.inputs[0]!;
        if (!form.reorderInput) ensurePlain(x);
        // Output channels (and a blocked input's) padded to whole blocks with zero weights.
        const [O, I, kh, kw] = wt!.dims as number[];
        const depthwise = group !== 1;
        const Op = padded(O!), Ip = depthwise || !form.reorderInput ? I! : padded(I!);
        const attrs: Node['attrs'] = { group: { kind: 'int', value: depthwise ? Op : 1 } };
        for (const a of ['dilations', 'pads', 'strides', 'kernel_shape'] as const) {
          const v = attrInts(n, a);
          if (v) attrs[a] = { kind: 'ints', value: v };
        }
        const y = em.fresh(`${n.outputs[0]}_nchwc`);
        const wp = Op === O && Ip === I ? w : em.op('Pad', [w, em.ints([0, 0, 0, 0, Op - O!, Ip - I!, 0, 0])]);
        const wr = reorderConstantWeight(em, wp, [Op, Ip, kh!, kw!], form.filter, block);
        const bias = n.inputs[2] ? padVec(n.inputs[2], O!) : undefined;
        nchwcNode('Conv', [x, wr, ...(bias ? [bias] : [])], y, attrs);
        convs.set(n.outputs[0]!, { node: g.nodes[g.nodes.length - 1]!, x, w: wr, bias, attrs, inDims: shapeOf(n.inputs[0]!) ?? [], inBlocked: form.reorderInput, kernel: [kh!, kw!] });
        setBlocked(n.outputs[0]!, y, O!);
        result.convs++;
        continue;
      }
    }
    if (isBatchNorm(n) && convs.has(n.inputs[0]!) && soleConsumer(n.inputs[0]!) === n) {
      checkRunningStats(g, n);
      blockedBatchNorm(n);
      result.batchNorms++;
      continue;
    }
    // Elementwise activations keep the layout (channels are whole blocks: no padding to protect).
    if (n.domain === '' && (n.opType === 'Relu' || n.opType === 'Clip') && channels.has(n.inputs[0]!)) {
      const y = em.fresh(`${n.outputs[0]}_nchwc`);
      g.nodes.push({ ...n, inputs: [blocked.get(n.inputs[0]!)!, ...n.inputs.slice(1)], outputs: [y] });
      setBlocked(n.outputs[0]!, y, channels.get(n.inputs[0]!)!);
      continue;
    }
    if (n.domain === '' && n.opType === 'Add' && n.inputs.every((i) => channels.has(i)) && sameDims(shapeOf(n.inputs[0]!), shapeOf(n.inputs[1]!))) {
      const y = em.fresh(`${n.outputs[0]}_nchwc`);
      g.nodes.push({ ...n, inputs: n.inputs.map((i) => blocked.get(i)!), outputs: [y] });
      setBlocked(n.outputs[0]!, y, channels.get(n.inputs[0]!)!);
      continue;
    }
    if (squeezeExciteToBlocked(n)) continue;
    for (const i of n.inputs) ensurePlain(i);
    push(n);
  }
  for (const o of g.outputs) ensurePlain(o.name);
  // Constants and initializers no node reads any more leave the graph (onnxruntime warns of each
  // at session creation): running statistics (prior 0) and the bounds of Clips fused into a conv
  // (MobileNet's ReLU6, exported as Constant nodes).
  const read = new Set([...g.nodes.flatMap((n) => n.inputs), ...g.outputs.map((o) => o.name), ...g.inputs.map((i) => i.name)]);
  g.nodes = g.nodes.filter((n) => !(n.opType === 'Constant' && n.domain === '' && !n.outputs.some((o) => read.has(o))));
  for (const t of [...g.initializers.keys()]) if (!read.has(t)) g.initializers.delete(t);
  if (result.convs && !model.opsets.some((o) => o.domain === NCHWC_DOMAIN)) model.opsets.push({ domain: NCHWC_DOMAIN, version: 1 });
  return result;

  /**
   * SiLU's Sigmoid and Mul (EfficientNet), a squeeze-excitation's pooling and its gate's Mul
   * (EfficientNet, MobileNetV3) on a blocked tensor whose channels fill whole blocks, so that they
   * keep the layout instead of reordering every activation out and back in around them (a quarter
   * of EfficientNet-B0's BN-adapt time, session 37). The pooled [N, C, 1, 1] and the gate are the
   * same memory in either layout when C fills whole blocks. onnxruntime fuses x·Sigmoid(x) on the
   * blocked tensor into one QuickGelu as it does on the plain one.
   */
  function squeezeExciteToBlocked(n: Node): boolean {
    if (n.domain !== '' || !squeezeExciteBlocked.current) return false;
    const whole = (t: string) => channels.has(t) && channels.get(t)! % block === 0 && shapeOf(t)?.length === 4;
    const y = n.outputs[0]!, x = n.inputs[0]!;
    if (n.opType === 'Sigmoid' && whole(x)) {
      const b = em.op('Sigmoid', [blocked.get(x)!]);
      setBlocked(y, b, channels.get(x)!);
      return true;
    }
    if (n.opType === 'GlobalAveragePool' && whole(x)) {
      const [N, C, H, W] = shapeOf(x)! as [number, number, number, number];
      const pooled = em.reduce('ReduceMean', em.reshape(blocked.get(x)!, [N, C / block, H * W, block]), [2], true);
      push({ name: em.fresh(`${n.name}_nchwc`), opType: 'Reshape', domain: '', inputs: [pooled, em.ints([N, C, 1, 1])], outputs: [y], attrs: {} });
      return true;
    }
    if (n.opType !== 'Mul' || n.inputs.length !== 2) return false;
    const [a, b] = n.inputs as [string, string];
    if (whole(a) && whole(b) && sameDims(shapeOf(a), shapeOf(b))) {
      setBlocked(y, em.mul(blocked.get(a)!, blocked.get(b)!), channels.get(a)!);
      return true;
    }
    // y·gate, the gate [N, C, 1, 1] (blocked or plain: the same memory) viewed as [N, C/b, 1, b].
    for (const [big, gate] of [[a, b], [b, a]] as const) {
      const d = shapeOf(big), gd = shapeOf(gate);
      if (!whole(big) || !d || !gd || gd.join() !== [d[0], d[1], 1, 1].join() || d[2]! * d[3]! === 1) continue;
      const [N, C, H, W] = d as [number, number, number, number];
      if (gateAsConv.current) {
        setBlocked(y, gateConv(em, blocked.get(big)!, blocked.get(gate) ?? gate, [N, C, H, W]).y, C);
        return true;
      }
      const gv = em.reshape(blocked.get(gate) ?? gate, [N, C / block, 1, block]);
      const out = em.mul(em.reshape(blocked.get(big)!, [N, C / block, H * W, block]), gv);
      setBlocked(y, em.reshape(out, [N, C, H, W]), C);
      return true;
    }
    return false;
  }

  function blockedBatchNorm(n: Node): void {
    const [x, C0] = [n.inputs[0]!, shapeOf(n.inputs[0]!)![1]!];
    const [scale, bias, runMean, runVar] = [padVec(n.inputs[1]!, C0), padVec(n.inputs[2]!, C0), padVec(n.inputs[3]!, C0), padVec(n.inputs[4]!, C0, 1)];
    const [N, , H, W] = shapeOf(x)! as [number, number, number, number];
    const C = padded(C0);
    const dims = [N, C, H, W];
    const count = N * H * W;
    const eps = attrFloat(n, 'epsilon', 1e-5);
    // The shift K: the mean of the conv's own outputs on a sparse grid over every sample, computed
    // apart (nchwc-shift.ts). The conv then writes d = y − K (its bias minus K), and the moments
    // come from one-pass sums of d and d²: var = E[d²] − E[d]² loses only about
    // (1 + (mean − K)²/var) × float32 rounding, and K is a mean of real outputs, so a large common
    // mean (|mean| ≫ std) cancels in d, not in the sums.
    const conv = convs.get(x)!;
    const K = shiftBlockedConv(em, conv, [C, H, W], block); // only this BN reads the conv's output
    // Sums over N, H, W of the blocked [N·C/b, H·W, b] view (channel c = block index · b + lane):
    // onnxruntime's fast keep-reduce-keep reduction over H·W, then over N.
    const d = blocked.get(x)!;
    const sumOver = (op: 'ReduceSum' | 'ReduceSumSquare') => blockedChannelSums(em, d, [N, C, H, W], block, op);
    const meanD = em.mul(sumOver('ReduceSum'), em.scalar(1 / count));
    const batchMean = em.add(K, meanD);
    const batchVar = em.op('Relu', [em.sub(em.mul(sumOver('ReduceSumSquare'), em.scalar(1 / count)), em.mul(meanD, meanD))]);
    const { useMean, useVar } = mixWithPrior(em, prior, N, { mean: runMean, variance: runVar }, { mean: batchMean, variance: batchVar });
    const a = em.div(scale, em.op('Sqrt', [em.add(useVar, em.scalar(eps))]));
    // y = a·(x − useMean) + β = a·d + β + a·(K − useMean), with d = x − K.
    const shift = em.add(bias, em.mul(a, em.sub(K, useMean)));
    const attrs: Node['attrs'] = { group: { kind: 'int', value: C }, kernel_shape: { kind: 'ints', value: [1, 1] } };
    const { out, sum } = fuseTail(n, attrs);
    const y = em.fresh(`${out}_nchwc`);
    nchwcNode('Conv', [em.reshape(d, dims), em.reshape(a, [C, 1, 1, 1]), shift, ...(sum ? [sum] : [])], y, attrs);
    setBlocked(out, y, C0);
  }

  /**
   * A 1×1 stride-1 conv y = W·x + B followed by a BN: the output moments from the input's
   * (nchwc-pointwise-moments.ts); the BN then folds into the conv (a·W, a·(B − mean_y) + β) and the
   * activation fuses with it, so the wide output is written once and never read for its statistics.
   */
  function pointwiseBatchNorm(conv: Node, n: Node, xb: string, [O0, I0]: number[]): void {
    const [scale, bias, runMean, runVar] = [padVec(n.inputs[1]!, O0!), padVec(n.inputs[2]!, O0!), padVec(n.inputs[3]!, O0!), padVec(n.inputs[4]!, O0!, 1)];
    const [N, , H, W] = shapeOf(conv.inputs[0]!)! as [number, number, number, number];
    const O = padded(O0!), I = padded(I0!);
    const convBias = conv.inputs[2] ? padVec(conv.inputs[2], O0!) : undefined;
    const eps = attrFloat(n, 'epsilon', 1e-5);
    const wp = O === O0 && I === I0 ? conv.inputs[1]! : em.op('Pad', [conv.inputs[1]!, em.ints([0, 0, 0, 0, O - O0!, I - I0!, 0, 0])]);
    const w2 = em.reshape(wp, [O, I]);
    const { mean: batchMean, variance: batchVar } = pointwiseMoments(em, xb, [N, I, H, W], w2, O, convBias, block);
    const { useMean, useVar } = mixWithPrior(em, prior, N, { mean: runMean, variance: runVar }, { mean: batchMean, variance: batchVar });
    const a = em.div(scale, em.op('Sqrt', [em.add(useVar, em.scalar(eps))]));
    // a·(W·x + B − useMean) + β = (a·W)·x + a·(B − useMean) + β.
    const wa = em.reshape(em.mul(w2, em.reshape(a, [O!, 1])), [O!, I!, 1, 1]);
    const shift = em.add(bias, em.mul(a, convBias ? em.sub(convBias, useMean) : em.neg(useMean)));
    const attrs: Node['attrs'] = { group: { kind: 'int', value: 1 }, kernel_shape: { kind: 'ints', value: [1, 1] } };
    const { out, sum } = fuseTail(n, attrs);
    const y = em.fresh(`${out}_nchwc`);
    nchwcNode('Conv', [xb, reorderWeight(em, wa, [O!, I!, 1, 1], 'OIHWBiBo', block), shift, ...(sum ? [sum] : [])], y, attrs);
    setBlocked(out, y, O0!);
  }

  function isBatchNorm(n: Node): boolean {
    return n.domain === '' && n.opType === 'BatchNormalization' && !n.outputs.slice(1).some(Boolean) && attrInt(n, 'training_mode', 0) === 0 &&
      g.initializers.get(n.inputs[1]!)?.dtype === 'float32' && !!n.inputs[3] && !!n.inputs[4];
  }

  function isPointwise(n: Node): boolean {
    const ones = (a: string) => (attrInts(n, a) ?? [1, 1]).every((v) => v === 1);
    return attrInt(n, 'group', 1) === 1 && (attrInts(n, 'kernel_shape') ?? g.initializers.get(n.inputs[1]!)!.dims.slice(2)).every((v) => v === 1) &&
      ones('strides') && ones('dilations') && (attrInts(n, 'pads') ?? [0, 0, 0, 0]).every((v) => v === 0);
  }

  /** What the blocked conv standing for BN node `n` fuses after it (nchwc.ts fuseConvTail). */
  function fuseTail(n: Node, attrs: Node['attrs']): { out: string; sum?: string } {
    return fuseConvTail(n.outputs[0]!, attrs, {
      readers,
      blockedLike: (t, like) => (blocked.has(t) && sameDims(shapeOf(t), shapeOf(like) ?? shapeOf(n.inputs[0]!)) ? blocked.get(t) : undefined),
      constant: constantValue,
      fused: (k) => skip.add(k),
    });
  }

  function constantValue(t: string): Tensor | undefined {
    const init = g.initializers.get(t);
    if (init) return init;
    const c = original.find((n) => n.opType === 'Constant' && n.outputs[0] === t);
    const a = c?.attrs.value;
    return a && a.kind === 'tensor' ? a.value : undefined;
  }
}

function sameDims(a: number[] | undefined, b: number[] | undefined): boolean {
  return !!a && !!b && a.length === b.length && a.every((v, i) => v === b[i]);
}

/**
 * A constant W [O, I, kh, kw] reordered by one Transpose between two Reshapes, which onnxruntime
 * folds when it creates the session. Each folded op leaves a copy of every weight alive until the
 * folding pass ends, so fewer ops is less memory there: ResNet-18 64's BN-adapt session creation
 * peaked about 90 MB lower than with reorderWeight's two transposes (memory pass 2, docs/speed.md).
 * The same layout, element for element (test/onnx/nchwc-batchstats.test.ts).
 */
export function reorderConstantWeight(em: Emitter, w: string, [O, I, kh, kw]: number[], filter: 'OIHWBiBo' | 'OIHWBo', b: number): string {
  if (filter === 'OIHWBo') return reorderWeight(em, w, [O!, I!, kh!, kw!], filter, b); // already one Transpose
  // (ob, bo, ib, bi, K) → (ob, ib, K, bi, bo) = [O/b][I/b][kh][kw][b_in][b_out].
  const t = em.transpose(em.reshape(w, [O! / b, b, I! / b, b, kh! * kw!]), [0, 2, 4, 3, 1]);
  return em.reshape(t, [O!, I!, kh!, kw!]);
}

/**
 * W [O, I, kh, kw] reordered by Reshape/Transpose ops, for a weight computed in every run (a
 * 1×1 conv's BN-folded weight): two 3-/4-D transposes, faster there than one 5-D one (nchwc.ts).
 */
export function reorderWeight(em: Emitter, w: string, [O, I, kh, kw]: number[], filter: 'OIHWBiBo' | 'OIHWBo', b: number): string {
  const K = kh! * kw!;
  // (ob, bo, I·K) → (ob, I·K, bo): OIHWBo [O/b][I][kh][kw][b_out].
  let t = em.transpose(em.reshape(w, [O! / b, b, I! * K]), [0, 2, 1]);
  // OIHWBiBo: (ob·ib, bi, K, bo) → (ob·ib, K, bi, bo) = [O/b][I/b][kh][kw][b_in][b_out].
  if (filter === 'OIHWBiBo') t = em.transpose(em.reshape(t, [(O! / b) * (I! / b), b, K, b]), [0, 2, 1, 3]);
  return em.reshape(t, [O!, I!, kh!, kw!]);
}
