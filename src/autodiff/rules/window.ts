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
