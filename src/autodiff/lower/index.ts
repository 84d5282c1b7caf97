// Rewrites before differentiation: nodes without a gradient rule that equal a composition of
// ops with rules (recurrent layers unrolled, onnxruntime's fused ops unfused, its blocked NCHWc
// ops of a model saved at level 'all' written as standard ops on the same memory). Only nodes on the
// gradient path are rewritten, so frozen parts keep their fast fused kernels.
import type { Graph, Node } from '../../onnx/ir.ts';
import type { Emitter } from '../../onnx/emitter.ts';
import { dependents } from '../missing-rules.ts';
import { RECURRENT_OPS, lowerRecurrent, recurrentRefusal } from './recurrent.ts';
import { isContribLowerable, lowerContrib, contribRefusal } from './contrib.ts';
import { isNchwcLowerable, lowerNchwc, nchwcRefusal } from './nchwc.ts';
import { isOnnxAttentionLowerable, lowerOnnxAttention, onnxAttentionRefusal } from './onnx-attention.ts';
import { isLrn, lowerLrn } from './lrn.ts';
import { isGridSample, lowerGridSample, gridSampleRefusal } from './grid-sample.ts';
import { isModePad, lowerModePad, modePadRefusal } from './pad-modes.ts';
import { isNllLoss, lowerNllLoss, nllLossRefusal } from './nll-loss.ts';
import { isMvn, lowerMvn } from './mvn.ts';
import { isLpNormalization, lowerLpNormalization, lpNormalizationRefusal } from './lp-normalization.ts';
import { isRoiAlign, lowerRoiAlign, roiAlignRefusal } from './roi-align.ts';
import { isStft, lowerStft } from './stft.ts';
import { isLpPool, lowerLpPool, lpPoolRefusal } from './lp-pool.ts';
import type { DType } from '../../onnx/tensor.ts';

export interface LowerOptions {
  /** Parameters the step differentiates: a node is lowered when an input depends on one. */
  trainable: readonly string[];
  /** onnxruntime's NCHWc block size on this CPU (nchwcBlockSize), for com.microsoft.nchwc nodes; null: none. */
  nchwcBlock?: number | null;
  /** Element types of the forward tensors (a bool attention mask is read differently from a float one). */
  dtypeOf?: (t: string) => DType | undefined;
}

export interface LowerReport {
  /** Lowered nodes: op type and node name. */
  lowered: { opType: string; node: string }[];
}

const isRecurrent = (n: Node) => RECURRENT_OPS.has(n.opType) && (n.domain === '' || n.domain === 'ai.onnx');

/** What a lowering needs beyond the node; `graph` is the graph as it was before any node was rewritten. */
interface Context { graph: Graph; shapeOf: (t: string) => number[]; opts: LowerOptions }

/**
 * One kind of rewrite: which nodes it takes, why it would refuse one (undefined: it will not;
 * `ctx` undefined for a diagnosis before any shape is known), and the rewrite itself.
 */
interface Lowering {
  takes(n: Node): boolean;
  refusal(n: Node, graph: Graph, shapeOf?: (t: string) => number[], ctx?: Context): string | undefined;
  lower(n: Node, em: Emitter, ctx: Context): void;
}

const LOWERINGS: Lowering[] = [
  {
    takes: isRecurrent,
    refusal: (n) => recurrentRefusal(n),
    lower: (n, em, ctx) => lowerRecurrent(n, ctx.graph, em, ctx.shapeOf),
  },
  {
    takes: isNchwcLowerable,
    // the block size is known only once a step compiles (undefined: not judged on it)
    refusal: (n, _g, shapeOf, ctx) => nchwcRefusal(n, ctx ? ctx.opts.nchwcBlock ?? null : undefined, shapeOf),
    lower: (n, em, ctx) => lowerNchwc(n, em, ctx.shapeOf, ctx.opts.nchwcBlock),
  },
  {
    takes: isOnnxAttentionLowerable,
    refusal: (n, _g, shapeOf) => onnxAttentionRefusal(n, shapeOf),
    lower: (n, em, ctx) => lowerOnnxAttention(n, em, ctx.shapeOf, ctx.opts.dtypeOf ?? (() => undefined)),
  },
  { takes: isLrn, refusal: () => undefined, lower: (n, em, ctx) => lowerLrn(n, em, ctx.shapeOf) },
  { takes: isGridSample, refusal: (n, _g, shapeOf) => gridSampleRefusal(n, shapeOf), lower: (n, em, ctx) => lowerGridSample(n, em, ctx.shapeOf) },
  { takes: isModePad, refusal: (n, g, shapeOf) => modePadRefusal(n, g, shapeOf), lower: (n, em, ctx) => lowerModePad(n, ctx.graph, em, ctx.shapeOf) },
  { takes: isNllLoss, refusal: (n) => nllLossRefusal(n), lower: (n, em, ctx) => lowerNllLoss(n, em, ctx.shapeOf) },
  { takes: isMvn, refusal: () => undefined, lower: (n, em) => lowerMvn(n, em) },
  { takes: isLpNormalization, refusal: (n) => lpNormalizationRefusal(n), lower: (n, em, ctx) => lowerLpNormalization(n, em, ctx.shapeOf) },
  { takes: isRoiAlign, refusal: (n, _g, shapeOf) => roiAlignRefusal(n, shapeOf), lower: (n, em, ctx) => lowerRoiAlign(n, em, ctx.shapeOf, em.opset) },
  { takes: isStft, refusal: () => undefined, lower: (n, em, ctx) => lowerStft(n, em, ctx.shapeOf) },
  { takes: isLpPool, refusal: (n) => lpPoolRefusal(n), lower: (n, em, ctx) => lowerLpPool(n, em, ctx.shapeOf) },
  {
    takes: isContribLowerable,
    refusal: (n, _g, shapeOf) => contribRefusal(n, shapeOf),
    lower: (n, em, ctx) => lowerContrib(n, ctx.graph, em, ctx.shapeOf),
  },
];

const loweringOf = (node: Node) => LOWERINGS.find((l) => l.takes(node));

/** Whether this pass rewrites nodes of this kind (whatever their attributes). */
export function isLowerable(node: Node): boolean {
  return loweringOf(node) !== undefined;
}

/**
 * For a diagnosis: null when the node will be lowered into ops with rules, the reason when it is
 * of a lowerable kind but this form is refused, undefined when the pass does not handle it.
 */
export function loweringVerdict(node: Node, graph: Graph, shapeOf?: (t: string) => number[]): string | null | undefined {
  const l = loweringOf(node);
  return l ? l.refusal(node, graph, shapeOf) ?? null : undefined;
}

/** Lower every lowerable node whose inputs depend on a trainable, in place, keeping topological order. */
export function lowerForGradient(graph: Graph, shapeOf: (t: string) => number[], em: Emitter, opts: LowerOptions): LowerReport {
  const report: LowerReport = { lowered: [] };
  if (!graph.nodes.some(isLowerable)) return report;
  // Every tensor kind counts as dependent here (no dtypes yet): at worst a node is lowered needlessly.
  const dep = dependents({ nodes: graph.nodes, wrt: opts.trainable, isFloat: () => true });
  const todo = graph.nodes.filter((n) => isLowerable(n) && n.inputs.some((i) => i && dep.has(i)));
  const ctx: Context = { graph: { ...graph, nodes: graph.nodes }, shapeOf, opts };
  // Refuse every unsupported form at once, before anything is rewritten.
  const refusals = todo.flatMap((n) => {
    const why = loweringOf(n)!.refusal(n, graph, shapeOf, ctx);
    return why ? [`  - ${n.opType} node '${n.name}': ${why}`] : [];
  });
  if (refusals.length) {
    throw new Error(`cannot differentiate ${refusals.length} node${refusals.length > 1 ? 's' : ''} on the gradient path:\n${refusals.join('\n')}\n` +
      'Freeze the parameters upstream of these nodes, or re-export the model in the supported form.');
  }
  const lower = new Set(todo);
  const original = graph.nodes;
  graph.nodes = []; // the emitter appends to graph.nodes: lowered nodes land where the original stood
  for (const node of original) {
    if (!lower.has(node)) {
      graph.nodes.push(node);
      continue;
    }
    loweringOf(node)!.lower(node, em, ctx);
    report.lowered.push({ opType: node.opType, node: node.name });
  }
  // Initializers only the lowered nodes read (a 4-bit weight dequantized into a constant, its scales):
  // dropped, so the session neither holds them nor warns about them.
  const read = new Set(graph.nodes.flatMap((n) => n.inputs));
  for (const n of lower) for (const i of n.inputs) if (i && !read.has(i) && !graph.outputs.some((o) => o.name === i)) graph.initializers.delete(i);
  return report;
}
