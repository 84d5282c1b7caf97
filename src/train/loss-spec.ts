// What a loss is: a piece of graph appended after the model's forward pass.
import type { Emitter } from '../onnx/emitter.ts';
import type { DType } from '../onnx/tensor.ts';

/** An extra graph input a loss reads (labels, targets, per-sample weights). */
export interface LossInput {
  name: string;
  dtype: DType;
  /** Shape as a function of the model output shapes it refers to (e.g. labels: [N]). */
  shape: (shapeOf: (tensor: string) => number[]) => number[];
}

export interface LossContext {
  em: Emitter;
  /** Shape of a forward tensor; available because losses are built after probing the forward. */
  shape(name: string): number[];
  /** The tensor names of the extra inputs, keyed by the names the loss declared. */
  input(name: string): string;
}

export interface LossSpec {
  /** Short description for errors and reports, e.g. "crossEntropy(logits, y)". */
  describe: string;
  /** Forward tensors the loss reads; each must exist in the model. */
  reads: string[];
  inputs: LossInput[];
  /** Emit the loss; returns the name of a scalar tensor. */
  build(ctx: LossContext): string;
}

