// Small emission helpers shared by the lowering passes (opset-aware Split, binding a result to
// an existing tensor name, reading compile-time constants).
import type { Node } from '../../onnx/ir.ts';
import type { Emitter } from '../../onnx/emitter.ts';

/** Split `x` along `axis` into pieces of the given sizes (Split's sizes moved to an input at opset 13). */
export function split(em: Emitter, x: string, sizes: number[], axis: number): string[] {
  if (sizes.length === 1) return [x];
  return em.opset >= 13
    ? em.emit('Split', [x, em.ints(sizes)], { axis }, sizes.length, 'split')
    : em.emit('Split', [x], { axis, split: sizes }, sizes.length, 'split');
}

/**
 * Key or value heads [B, kvHeads, L, d] for `heads` query heads (grouped-query attention): key-value
 * head j serves query heads j·G … j·G + G − 1, G = heads / kvHeads. Unchanged when they are equal.
 */
export function repeatKvHeads(em: Emitter, x: string, B: number, kvHeads: number, heads: number, L: number, d: number): string {
  if (heads === kvHeads) return x;
  return em.reshape(em.op('Expand', [em.unsqueeze(x, [2]), em.ints([B, kvHeads, heads / kvHeads, L, d])]), [B, heads, L, d]);
}

/** Make the lowered value `src` available under the original output name `dst`. */
export function bind(em: Emitter, src: string, dst: string): void {
  em.graph.nodes.push({ name: em.fresh(`${dst}_lowered`), opType: 'Identity', domain: '', inputs: [src], outputs: [dst], attrs: {} });
}

export { constantValue } from '../../onnx/ir.ts';

export const present = (node: Node, i: number) => !!node.inputs[i];
export const wanted = (node: Node, i: number) => !!node.outputs[i];

export class LoweringError extends Error {}

/** Refusal with the op, node and reason, raised before anything is emitted. */
export function refuse(node: Node, why: string): never {
  throw new LoweringError(`cannot differentiate ${node.opType} node '${node.name}': ${why}`);
}
