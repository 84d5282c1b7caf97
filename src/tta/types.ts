// The one interface every test-time adaptation method implements.
import type { Tensor } from '../onnx/tensor.ts';

export interface AdaptInfo {
  /** Samples the method used for its update (all, for methods without selection). */
  used: number;
  loss?: number;
  /** Steps refused because the loss was not finite, since creation or the last reset. */
  skipped: number;
  resets: number;
  ms: number;
}

export interface AdaptResult {
  /** Class scores for the batch, predicted before (or, for output-only methods, by) the adaptation. */
  logits: Tensor;
  info: AdaptInfo;
}

export interface Adapter {
  readonly name: string;
  /** Predict the batch, then adapt on it. */
  predict(x: Tensor): Promise<AdaptResult>;
  /** Back to the source state. */
  reset(): void;
  release(): Promise<void>;
}

/** The output holding class scores: the one named 'logits' if there is one, else the first. */
export function defaultLogits(outputs: readonly { name: string }[]): string {
  return outputs.find((o) => o.name === 'logits')?.name ?? outputs[0]!.name;
}
