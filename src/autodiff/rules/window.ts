// Sliding-window geometry shared by Conv and pooling rules.
import { attrInts, attrString, type Node } from '../../onnx/ir.ts';

/** Static geometry of one sliding-window node (Conv, pooling) for one input signature. */
export interface WindowGeom {
  /** Number of spatial dims. */
  nd: number;
  N: number;
  C: number;
  inSp: number[];
  outSp: number[];
  k: number[];
  strides: number[];
  dil: number[];
  padB: number[];
  padE: number[];
}

/** Resolve strides, dilations and pads (auto_pad made explicit) for input x, output y and kernel k. */
export function windowGeom(node: Pick<Node, 'name' | 'opType' | 'attrs'>, x: number[], y: number[], k: number[]): WindowGeom {
  const nd = x.length - 2;
  const ones = new Array<number>(nd).fill(1);
  const strides = attrInts(node as Node, 'strides', ones);
  const dil = attrInts(node as Node, 'dilations', ones);
  const inSp = x.slice(2), outSp = y.slice(2);
  const { padB, padE } = resolvePads(node, inSp, outSp, k, strides, dil);
  return { nd, N: x[0]!, C: x[1]!, inSp, outSp, k, strides, dil, padB, padE };
}

/** Explicit begin/end pads per spatial axis, resolving auto_pad against the static shapes. */
export function resolvePads(node: Pick<Node, 'name' | 'opType' | 'attrs'>, inSp: number[], outSp: number[], k: number[], strides: number[], dil: number[]): { padB: number[]; padE: number[] } {
  const nd = inSp.length;
  const autoPad = attrString(node as Node, 'auto_pad', 'NOTSET');
  if (autoPad === 'NOTSET') {
    const pads = attrInts(node as Node, 'pads', new Array<number>(2 * nd).fill(0));
    return { padB: pads.slice(0, nd), padE: pads.slice(nd) };
  }
  if (autoPad === 'VALID') return { padB: new Array<number>(nd).fill(0), padE: new Array<number>(nd).fill(0) };
  if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') {
    const padB: number[] = [], padE: number[] = [];
    for (let i = 0; i < nd; i++) {
      const total = Math.max(0, (outSp[i]! - 1) * strides[i]! + (k[i]! - 1) * dil[i]! + 1 - inSp[i]!);
      const small = Math.floor(total / 2);
      padB.push(autoPad === 'SAME_UPPER' ? small : total - small);
      padE.push(total - padB[i]!);
    }
    return { padB, padE };
  }
  throw new Error(`unknown auto_pad '${autoPad}'`);
}

/** Effective (dilated) kernel extent per spatial dim. */
export const kext = (g: WindowGeom) => g.k.map((k, i) => (k - 1) * g.dil[i]! + 1);
/**
 * Input rows left over after the last window (floor semantics of the forward output size):
 * H + pB + pE = (OH - 1)·s + kext + rest, with 0 ≤ rest < s.
 */
export const rest = (g: WindowGeom) => kext(g).map((e, i) => g.inSp[i]! + g.padB[i]! + g.padE[i]! - (g.outSp[i]! - 1) * g.strides[i]! - e);

/**
 * The end pads and output_padding per spatial dim of a ConvTranspose that scatters [.., outSp]
 * back onto the input (a conv's dX, a pool's col2im). `sym` raises an end pad below its begin pad
 * to it and output_padding by as much (for backends where ConvTranspose is wrong with unequal pads:
 * onnx/webgpu-faults.ts): the extra output row gets no contribution (it is past the last tap) and
 * the larger end pad crops it again, so the output is the same; null where that needs
 * output_padding ≥ stride, or an end pad is above its begin pad.
 */
export function transposePads(g: WindowGeom, sym: boolean): { padE: number[]; outPad: number[] } | null {
  const r = rest(g);
  const padE = g.padE.map((p, i) => Math.max(0, p - r[i]!));
  const outPad = g.padE.map((p, i) => Math.max(0, r[i]! - p));
  if (!sym) return { padE, outPad };
  const lift = g.padB.map((p, i) => p - padE[i]!);
  if (lift.some((l, i) => l < 0 || outPad[i]! + l >= g.strides[i]!)) return null;
  return { padE: g.padB.slice(), outPad: outPad.map((o, i) => o + lift[i]!) };
}
