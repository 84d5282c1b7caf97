// Models saved by onnxruntime at optimization level 'all' (its default) carry its CPU-specific
// blocked layout: com.microsoft.nchwc Conv and pools between ReorderInput / ReorderOutput, with
// the conv weights stored pre-reordered ('reorder*' initializers). Nothing differentiates those
// ops, so each one on the gradient path is lowered here to standard ops on the same memory.
//
// A blocked tensor keeps an NCHW shape [N, Cp, H, W] (Cp: the channels padded to whole blocks of
// b) while its memory is [N][Cp/b][H][W][b]; default-domain ops between nchwc nodes (Add, Relu,
// Concat…) act on that memory exactly as onnxruntime runs them. A lowered node unblocks its input
// (Reshape, Transpose, Reshape), applies the standard op, and blocks the result again, so the
// lowered graph computes what onnxruntime's kernels computed. The weight stays the stored,
// reordered tensor: it is unreordered by a Transpose inside the step, and its gradient comes back
// in the stored layout. The block b is onnxruntime's own on this CPU (src/onnx/nchwc.ts,
// nchwcBlockSize): the kernels that ran the saved model here read it with that block.
import type { Node } from '../../onnx/ir.ts';
import { attrInt, attrInts } from '../../onnx/ir.ts';
import type { Emitter } from '../../onnx/emitter.ts';
import { NCHWC_DOMAIN } from '../../onnx/nchwc.ts';
import { f32 } from '../../onnx/tensor.ts';
import { bind, refuse } from './util.ts';
import { fusedActivation, FUSED_ACTIVATIONS } from './contrib.ts';

export const NCHWC_OPS = new Set(['ReorderInput', 'ReorderOutput', 'Conv', 'MaxPool', 'AveragePool', 'GlobalMaxPool', 'GlobalAveragePool', 'Upsample']);

export function isNchwcLowerable(node: Node): boolean {
  return node.domain === NCHWC_DOMAIN && NCHWC_OPS.has(node.opType);
}

/** Why this blocked node cannot be lowered, or undefined when it can (`block` unknown: not judged on it). */
export function nchwcRefusal(node: Node, block?: number | null, shapeOf?: (t: string) => number[]): string | undefined {
  if (block === null) return "it is in onnxruntime's blocked NCHWc layout (a model saved at optimization level 'all'), and onnxruntime reports no block size on this CPU. Save the model at level 'extended' instead";
  if (node.opType === 'Conv') {
    const act = node.attrs.activation?.value as string | undefined;
    if (act !== undefined && !(act in FUSED_ACTIVATIONS)) return `fused activation '${act}' is not supported (only ${Object.keys(FUSED_ACTIVATIONS).join(', ')})`;
  }
  const pad = node.attrs.auto_pad?.value as string | undefined;
  if (pad !== undefined && pad !== 'NOTSET') return `auto_pad '${pad}' is not supported (explicit pads only)`;
  if (shapeOf) {
    const x = node.inputs[0]!;
    const r = shapeOf(x).length;
    if (r !== 4) return `input '${x}' has rank ${r}; only 2-D (rank-4) blocked tensors are supported`;
  }
  return undefined;
}

export function lowerNchwc(node: Node, em: Emitter, shapeOf: (t: string) => number[], block: number | null | undefined): void {
  const why = nchwcRefusal(node, block ?? null, shapeOf);
  if (why) refuse(node, why);
  const b = block!;
  const x = node.inputs[0]!, out = node.outputs[0]!;
  const [N, C, H, W] = shapeOf(x) as [number, number, number, number];
  const [, Co, Ho, Wo] = shapeOf(out) as [number, number, number, number];
  if (node.opType !== 'ReorderInput' && (C % b !== 0 && node.opType !== 'Conv')) refuse(node, `input '${x}' has ${C} channels, not whole blocks of ${b}`);
  const unblock = (t: string, [n, c, h, w]: number[]) => em.reshape(em.transpose(em.reshape(t, [n!, c! / b, h!, w!, b]), [0, 1, 4, 2, 3]), [n!, c!, h!, w!]);
  const blockOf = (t: string, [n, c, h, w]: number[]) => em.reshape(em.transpose(em.reshape(t, [n!, c! / b, b, h!, w!]), [0, 1, 3, 4, 2]), [n!, c!, h!, w!]);
  const stdAttrs = (drop: string[]) => Object.fromEntries(Object.entries(node.attrs).filter(([k]) => !drop.includes(k)));
  switch (node.opType) {
    case 'ReorderInput': {
      // channels_last: NHWC in; channels padded with zeros to Co (whole blocks).
      const last = attrInt(node, 'channels_last', 0) !== 0;
      const nchw = last ? em.transpose(x, [0, 3, 1, 2]) : x;
      const c = last ? W : C;
      const padded = Co > c ? em.op('Pad', [nchw, em.ints([0, 0, 0, 0, 0, Co - c, 0, 0])]) : nchw;
      return bind(em, blockOf(padded, [N, Co, Ho, Wo]), out);
    }
    case 'ReorderOutput': {
      // The first `channels` of the padded blocks, NCHW (or NHWC with channels_last).
      const channels = attrInt(node, 'channels', C);
      let y = unblock(x, [N, C, H, W]);
      if (channels < C) y = em.op('Slice', [y, em.ints([0]), em.ints([channels]), em.ints([1])]);
      if (attrInt(node, 'channels_last', 0) !== 0) y = em.transpose(y, [0, 2, 3, 1]);
      return bind(em, y, out);
    }
    case 'Conv': {
      const w = node.inputs[1]!;
      const [Op, Iw, kh, kw] = shapeOf(w) as [number, number, number, number];
      const group = attrInt(node, 'group', 1);
      // onnxruntime's forms (nchwc.ts blockedForm): a grouped conv is depthwise with a blocked
      // input and an OIHWBo filter; an ungrouped one with fewer input channels than a block reads
      // the plain NCHW input with an OIHWBo filter; otherwise a blocked input and OIHWBiBo.
      const blockedIn = group > 1 || Iw >= b;
      if (group > 1 && (Iw !== 1 || group !== Op)) refuse(node, `grouped conv with ${Iw} channels per group is not a depthwise conv (onnxruntime blocks only those)`);
      if (Op % b !== 0 || (group === 1 && blockedIn && Iw % b !== 0)) refuse(node, `weight '${w}' [${Op}, ${Iw}, ${kh}, ${kw}] is not in whole blocks of ${b}`);
      const wStd = group === 1 && blockedIn
        // [O/b][I/b][kh][kw][b_in][b_out] → [O/b][b_out][I/b][b_in][kh][kw]
        ? em.reshape(em.transpose(em.reshape(w, [Op / b, Iw / b, kh, kw, b, b]), [0, 5, 1, 4, 2, 3]), [Op, Iw, kh, kw])
        // [O/b][I][kh][kw][b_out] → [O/b][b_out][I][kh][kw]
        : em.reshape(em.transpose(em.reshape(w, [Op / b, Iw, kh, kw, b]), [0, 4, 1, 2, 3]), [Op, Iw, kh, kw]);
      const xStd = blockedIn ? unblock(x, [N, C, H, W]) : x;
      const bias = node.inputs[2] ? [node.inputs[2]] : [];
      let y = blockOf(em.op('Conv', [xStd, wStd, ...bias], stdAttrs(['activation', 'activation_params'])), [N, Co, Ho, Wo]);
      if (node.inputs[3]) y = em.add(y, node.inputs[3]); // the fused residual Sum, before the activation
      return bind(em, fusedActivation(em, node, y), out);
    }
    case 'Upsample': {
      // Integer scales; nearest reads floor(x / s) (asymmetric), linear keeps its coordinate mode.
      if (em.opset < 11) refuse(node, 'the model\'s opset is below 11, where Resize has no coordinate_transformation_mode');
      const mode = (node.attrs.mode?.value as string | undefined) ?? 'nearest';
      const coords = (node.attrs.coordinate_transformation_mode?.value as string | undefined) ?? 'asymmetric';
      const scales = em.constant(f32([4], attrInts(node, 'scales') ?? [1, 1, 1, 1]), 'scales');
      const y = em.op('Resize', [unblock(x, [N, C, H, W]), em.constant(f32([0], []), 'roi'), scales],
        { mode, coordinate_transformation_mode: coords, ...(mode === 'nearest' ? { nearest_mode: 'floor' } : {}) });
      return bind(em, blockOf(y, [N, Co, Ho, Wo]), out);
    }
    default: {
      // Pools: the standard op of the same name and attributes, between unblock and block.
      const y = em.op(node.opType, [unblock(x, [N, C, H, W])], stdAttrs([]));
      return bind(em, blockOf(y, [N, Co, Ho, Wo]), out);
    }
  }
}
