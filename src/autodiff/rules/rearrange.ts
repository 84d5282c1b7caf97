// DepthToSpace, SpaceToDepth and ReverseSequence: pure permutations of elements, so each gradient
// is the inverse permutation of dY. SpaceToDepth is exactly the inverse of DepthToSpace in DCR
// mode (and vice versa); CRD mode is undone with one Reshape + Transpose + Reshape; reversing the
// first seq_lens[b] steps of each sequence is its own inverse (tf2onnx's bidirectional RNNs).
import { attrInt, attrString, type Node } from '../../onnx/ir.ts';
import { registerRules, type GradContext } from '../rule.ts';

function blocksize(ctx: GradContext, node: Node): { b: number; x: number[] } {
  const b = attrInt(node, 'blocksize');
  const x = ctx.shape(node.inputs[0]!);
  if (b === undefined || b < 1) throw new Error(`${node.opType} node '${node.name}': attribute 'blocksize' is missing or < 1`);
  if (x.length !== 4) throw new Error(`${node.opType} node '${node.name}': input '${node.inputs[0]}' has shape [${x}], expected rank 4 (N, C, H, W)`);
  return { b, x };
}

registerRules({
  DepthToSpace(ctx, node, [dY]) {
    const em = ctx.em;
    const { b, x } = blocksize(ctx, node);
    const [N, C, H, W] = x as [number, number, number, number];
    const mode = attrString(node, 'mode', 'DCR');
    if (mode === 'DCR') return [em.op('SpaceToDepth', [dY!], { blocksize: b })];
    if (mode !== 'CRD') throw new Error(`DepthToSpace node '${node.name}': unknown mode '${mode}' (expected DCR or CRD)`);
    // Forward CRD: [N, C', b, b, H, W] → perm [0, 1, 4, 2, 5, 3] → [N, C', H·b, W·b]. Undo it.
    const t = em.reshape(dY!, [N, C / (b * b), H, b, W, b]);
    return [em.reshape(em.transpose(t, [0, 1, 3, 5, 2, 4]), [N, C, H, W])];
  },
  SpaceToDepth(ctx, node, [dY]) {
    const { b } = blocksize(ctx, node);
    return [ctx.em.op('DepthToSpace', [dY!], { blocksize: b, mode: 'DCR' })];
  },
  ReverseSequence(ctx, node, [dY], needs) {
    if (!needs[0]) return [null, null];
    const batch_axis = attrInt(node, 'batch_axis', 1), time_axis = attrInt(node, 'time_axis', 0);
    return [ctx.em.op('ReverseSequence', [dY!, node.inputs[1]!], { batch_axis, time_axis }), null];
  },
});
