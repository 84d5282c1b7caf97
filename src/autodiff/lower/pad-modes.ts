// Pad in 'reflect', 'edge' or 'wrap' mode (PyTorch's ReflectionPad2d, ReplicationPad2d and
// Conv2d(padding_mode='reflect'|'replicate'), as in CycleGAN and fast-neural-style generators and
// HiFi-GAN's discriminators) written as one Gather per padded axis, whose gradient rule adds each
// copied element's gradient back to its source. Each output index along an axis of length n with
// pads (b, e) reads input index
//   reflect: |i| mirrored at 0 and n − 1 (i = −b … n + e − 1; b, e ≤ n − 1, as the spec requires)
//   edge:    i clamped to [0, n − 1]
//   wrap:    i mod n
// and the modes are separable across axes, so padding the axes one after another gives the same
// tensor (corners included). Checked against onnxruntime's Pad in test/autodiff/pad-modes.test.ts.
import type { Graph, Node } from '../../onnx/ir.ts';
import { attrInts, attrString, isDefaultDomain } from '../../onnx/ir.ts';
import type { Emitter } from '../../onnx/emitter.ts';
import { i64, toNumbers } from '../../onnx/tensor.ts';
import { bind, constantValue } from './util.ts';

const MODES = new Set(['reflect', 'edge', 'wrap']);

export const isModePad = (node: Node) => isDefaultDomain(node) && node.opType === 'Pad' && MODES.has(attrString(node, 'mode', 'constant'));

/** Per-axis [begin, end] pads of the node, or a reason they cannot be read. */
function padsOf(node: Node, graph: Graph, rank: number): { begin: number[]; end: number[] } | string {
  let pads: number[] | undefined, axes: number[] | undefined;
  if (node.inputs.length > 1 && node.inputs[1]) {
    const p = constantValue(graph, node.inputs[1]!);
    if (!p) return 'its pads are computed at run time; refit needs them constant to differentiate this mode';
    pads = toNumbers(p);
    const a = node.inputs[3] ? constantValue(graph, node.inputs[3]!) : undefined;
    if (node.inputs[3] && !a) return 'its axes are computed at run time';
    axes = a ? toNumbers(a).map((v) => (v < 0 ? v + rank : v)) : undefined;
  } else pads = attrInts(node, 'pads', []);
  axes ??= Array.from({ length: rank }, (_, i) => i);
  if (pads.length !== 2 * axes.length) return `it has ${pads.length} pads for ${axes.length} axes`;
  const begin = new Array<number>(rank).fill(0), end = new Array<number>(rank).fill(0);
  axes.forEach((a, k) => { begin[a] = pads![k]!; end[a] = pads![k + axes!.length]!; });
  return { begin, end };
}

export function modePadRefusal(node: Node, graph: Graph, shapeOf?: (t: string) => number[]): string | undefined {
  if (!shapeOf) return undefined;
  const dims = shapeOf(node.inputs[0]!);
  const p = padsOf(node, graph, dims.length);
  if (typeof p === 'string') return p;
  if ([...p.begin, ...p.end].some((v) => v < 0)) return `negative pads (a crop) in mode '${attrString(node, 'mode', 'constant')}' are not supported`;
  if (attrString(node, 'mode', 'constant') === 'reflect') {
    const a = dims.findIndex((n, i) => p.begin[i]! > n - 1 || p.end[i]! > n - 1);
    if (a >= 0) return `reflect pads of ${p.begin[a]}/${p.end[a]} on an axis of ${dims[a]} (each must be ≤ ${dims[a]! - 1})`;
  }
  return undefined;
}

const source: Record<string, (i: number, n: number) => number> = {
  reflect: (i, n) => (i < 0 ? -i : i >= n ? 2 * (n - 1) - i : i),
  edge: (i, n) => Math.min(Math.max(i, 0), n - 1),
  wrap: (i, n) => ((i % n) + n) % n,
};

export function lowerModePad(node: Node, graph: Graph, em: Emitter, shapeOf: (t: string) => number[]): void {
  const dims = shapeOf(node.inputs[0]!);
  const { begin, end } = padsOf(node, graph, dims.length) as { begin: number[]; end: number[] };
  const from = source[attrString(node, 'mode', 'constant')]!;
  let y = node.inputs[0]!;
  dims.forEach((n, a) => {
    if (!begin[a] && !end[a]) return;
    const idx = Array.from({ length: n + begin[a]! + end[a]! }, (_, k) => from(k - begin[a]!, n));
    y = em.op('Gather', [y, em.constant(i64([idx.length], idx), 'pad_index')], { axis: a });
  });
  bind(em, y, node.outputs[0]!);
}
