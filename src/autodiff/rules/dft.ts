// DFT (opset 17+; torch.stft's and torch.fft's exports, audio front-ends): a linear map, so its
// gradient is its adjoint. With the signal as complex numbers (a last axis of 1: real, 2: real and
// imaginary) the forward transform is F = [e^(−2πi·jk/n)] and the inverse conj(F)/n; over the real
// pairs the adjoint of a complex linear map is its conjugate transpose, so
//   forward: dx = F^H·g = n · IDFT(g),   inverse: dx = (conj(F)/n)^H·g = DFT(g)/n,
// where g is the output gradient. A one-sided forward output holds the first ⌊n/2⌋ + 1 bins: g is
// zero-padded to n first. dft_length pads or cuts the signal before the transform: the gradient
// is cut back or zero-padded to the input's length. A real input keeps the real part.
// Checked against finite differences (test/autodiff/spec-ops.test.ts) and the ONNX backend tests.
import { attrInt, type Node } from '../../onnx/ir.ts';
import { i64, toNumbers } from '../../onnx/tensor.ts';
import { registerRules, type GradContext } from '../rule.ts';
import type { Emitter } from '../../onnx/emitter.ts';

function signalAxis(ctx: GradContext, node: Node, rank: number): number {
  let axis = attrInt(node, 'axis', 1);
  if (ctx.opset >= 20) {
    const given = node.inputs[2] ? ctx.constant(node.inputs[2]) : undefined;
    if (node.inputs[2] && !given) throw new Error(`DFT node '${node.name}': its axis input must be a constant to differentiate`);
    axis = given ? Number(toNumbers(given)[0]) : -2;
  }
  return axis < 0 ? axis + rank : axis;
}

/** A DFT along `axis`, in the form of the emitter's opset (the axis an attribute before 20, an input from 20). */
export function emitDft(em: Emitter, x: string, axis: number, opts: { inverse?: boolean; onesided?: boolean }): string {
  const attrs = { inverse: opts.inverse ? 1 : 0, onesided: opts.onesided ? 1 : 0 };
  return em.opset >= 20 ? em.op('DFT', [x, '', em.constant(i64([], [axis]), 'dft_axis')], attrs) : em.op('DFT', [x], { axis, ...attrs });
}

registerRules({
  DFT(ctx, node, [dY], needs) {
    const out = node.inputs.map(() => null as string | null);
    if (!needs[0]) return out;
    const em = ctx.em;
    const x = node.inputs[0]!;
    const xDims = ctx.shape(x), yDims = ctx.shape(node.outputs[0]!);
    const axis = signalAxis(ctx, node, xDims.length);
    const inverse = attrInt(node, 'inverse', 0) === 1, onesided = attrInt(node, 'onesided', 0) === 1;
    if (onesided && inverse) throw new Error(`DFT node '${node.name}': a one-sided inverse transform has no gradient rule here`);
    const n = xDims[axis]!;
    // the transform's length: dft_length where given (a constant), else the input's
    const lengthInput = node.inputs[1] ? ctx.constant(node.inputs[1]) : undefined;
    if (node.inputs[1] && !lengthInput) throw new Error(`DFT node '${node.name}': dft_length must be a constant to differentiate`);
    const L = lengthInput ? Number(toNumbers(lengthInput)[0]) : n;
    const padAlong = (t: string, by: number) => {
      const pads = new Array<number>(2 * xDims.length).fill(0);
      pads[xDims.length + axis] = by;
      return em.op('Pad', [t, em.constant(i64([pads.length], pads), 'dft_pads')]);
    };
    let g = dY!;
    if (onesided) g = padAlong(g, L - yDims[axis]!);
    let dx = em.mul(emitDft(em, g, axis, { inverse: !inverse }), em.scalar(inverse ? 1 / L : L)); // [..., L, 2]
    if (L > n) dx = em.op('Slice', [dx, em.ints([0]), em.ints([n]), em.ints([axis])]);
    else if (L < n) dx = padAlong(dx, n - L);
    if (xDims[xDims.length - 1] === 1) dx = em.op('Slice', [dx, em.ints([0]), em.ints([1]), em.ints([xDims.length - 1])]);
    out[0] = dx;
    return out;
  },
});
