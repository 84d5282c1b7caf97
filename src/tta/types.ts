// The one interface every test-time adaptation method implements.
import type { Tensor } from '../onnx/tensor.ts';
import type { OptimizerState } from '../train/optim/index.ts';

export interface AdaptInfo {
  /** Number of samples the method used for its update (all, for methods without selection; 0 for Source). */
  used: number;
  /** Which samples (batch indices) the update used, where the method selects samples. */
  usedIndices?: Int32Array;
  /** The adaptation loss of this batch (before the update), where the method has one. */
  loss?: number;
  /** Steps refused because the loss or a gradient was not finite, since the adapter was created. */
  skipped: number;
  /** Times the adapter went back to the source state (reset(), episodic mode, SAR's model recovery), since creation. */
  resets: number;
  /** Wall time of predict + adapt for this batch, ms. */
  ms: number;
  /** Of `ms`, one-time set-up met after the first batch (the continual controller's deep learner, built when level 3 first needs it). */
  setupMs?: number;
  /** Method-specific numbers (e.g. EATA's filter counts, SAR's loss EMA, CoTTA's anchor confidence). */
  extra?: Record<string, number>;
}

export interface AdaptResult {
  /** Class scores for the batch, predicted before (or, for output-only methods, by) the adaptation. */
  logits: Tensor;
  info: AdaptInfo;
}

/** A serialisable snapshot of an adapter's whole state (parameters, optimizer, method state). */
export interface AdapterState {
  method: string;
  version: 1;
  /** Float tensors: adapted parameters, teacher parameters, moving averages, supports… */
  tensors: Record<string, Float32Array>;
  optimizer?: OptimizerState;
  /** Scalars and small JSON values (counters, EMA values). */
  meta: Record<string, number | string | boolean | null>;
}

export interface Adapter {
  readonly name: string;
  /** Predict the batch, then adapt on it. */
  predict(x: Tensor): Promise<AdaptResult>;
  /** Back to the source state. */
  reset(): void;
  /** Snapshot of the adaptation state; `load` restores it exactly. */
  save?(): Promise<AdapterState>;
  load?(state: AdapterState): Promise<void>;
  release(): Promise<void>;
}

export { defaultLogits } from '../onnx/default-logits.ts';
