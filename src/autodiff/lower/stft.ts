// STFT (opset 17; torch.stft's export) written as ops with rules: the frames gathered from the
// signal by one constant index table [frames, frame_length] (Gather's gradient adds back where
// frames overlap), times the window, then a DFT along the frame axis (its rule: rules/dft.ts).
//   signal [batch, length, 1 | 2] → frames [batch, F, L, 1 | 2], F = ⌊(length − L) / step⌋ + 1
// L is the window's length, or frame_length; frame_step and frame_length must be constants.
// Checked against onnxruntime's kernel by the ONNX backend tests (test/real/onnx-backend-node.test.ts).
import type { Node } from '../../onnx/ir.ts';
import { attrInt, constantValue, isDefaultDomain } from '../../onnx/ir.ts';
import type { Emitter } from '../../onnx/emitter.ts';
import { i64, toNumbers } from '../../onnx/tensor.ts';
import { bind, refuse } from './util.ts';
import { emitDft } from '../rules/dft.ts';

export const isStft = (node: Node) => isDefaultDomain(node) && node.opType === 'STFT';

export function lowerStft(node: Node, em: Emitter, shapeOf: (t: string) => number[]): void {
  const [signal, stepInput, window, lengthInput] = node.inputs as [string, string, string | undefined, string | undefined];
  const scalar = (name: string | undefined, what: string) => {
    const t = name ? constantValue(em.graph, name) : undefined;
    if (name && !t) refuse(node, `its ${what} must be a constant`);
    return t ? Number(toNumbers(t)[0]) : undefined;
  };
  const step = scalar(stepInput, 'frame_step')!;
  const L = window ? shapeOf(window)[0]! : scalar(lengthInput, 'frame_length');
  if (L === undefined) refuse(node, 'neither a window nor a frame_length gives the frame length');
  const [, length] = shapeOf(signal) as [number, number, number];
  const F = Math.floor((length - L) / step) + 1;
  if (F < 1) refuse(node, `a frame of ${L} does not fit a signal of ${length}`);
  const table = Array.from({ length: F * L }, (_, k) => Math.floor(k / L) * step + (k % L));
  let frames = em.op('Gather', [signal, em.constant(i64([F, L], table), 'stft_frames')], { axis: 1 }); // [batch, F, L, c]
  if (window) frames = em.mul(frames, em.reshape(window, [1, 1, L, 1]));
  bind(em, emitDft(em, frames, 2, { onesided: attrInt(node, 'onesided', 1) === 1 }), node.outputs[0]!);
}
