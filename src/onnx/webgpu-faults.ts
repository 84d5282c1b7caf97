// What onnxruntime-web's WebGPU provider gets wrong, as RuntimeBackend.faults: runtime-web.ts sets it
// on its WebGPU backend. A module of its own, with no onnxruntime import and no side effect, so that
// Node tests can build step graphs with the WebGPU forms (test/autodiff/backend-faults.test.ts).
import type { BackendFaults } from './runtime.ts';

/**
 * What onnxruntime-web 1.30's WebGPU provider gets wrong, so that the gradient rules build training
 * steps that run and are right on it (test/web/webgpu-gradients.test.ts; Node and wasm have none).
 * Each entry was found on SwiftShader's adapter in headless Chromium, one op at a time against
 * onnxruntime-node: bench/webgpu-faults.ts (bench/results/webgpu-faults.md).
 *
 * Grouped Conv: wrong (errors of the size of the outputs) when a group has more than 4 output
 * channels and not a multiple of 4 — 5, 6, 7, 9, 10, 25 with 2, 4, 8 and 16 groups (and 11, 13, 18
 * with 2, 6 with 6 and 32 in a first probe); 1, 3, 4, 8, 12, 16 right, and 1, 3 and 5 groups right
 * with any count. The one-hot im2col of refit's Conv weight gradient is such a Conv (C groups of
 * K = 9 outputs for 3×3), so on WebGPU the rules take another im2col (conv.ts pickDw). Whether a
 * hardware adapter has the fault is not known (no GPU here), so it is assumed on every WebGPU
 * adapter: the forms it rules out are only slower, never wrong, and odd group counts are ruled
 * out too.
 */
export const WEBGPU_FAULTS: BackendFaults = {
  groupedConv: (group, outputsPerGroup) => group > 1 && outputsPerGroup > 4 && outputsPerGroup % 4 !== 0,
  // "BatchNormalization trainingMode is not supported yet" (onnxruntime-web 1.30's WebGPU kernel, at
  // run time): train-mode BatchNorm takes the decomposed batch statistics (train/batchnorm-train.ts).
  batchNormTrainingMode: true,
  // MaxPool with its Indices output fails at run time ("Trying to get a Tensor, but got: (null)"):
  // its gradient recomputes the argmax instead of scattering at the Indices (autodiff/rules/pool.ts).
  maxPoolIndices: true,
  // A Concat binds each input and its output as a storage buffer, and the device onnxruntime-web
  // requests allows 8 per shader stage (WebGPU's default limit; SwiftShader's adapter offers 10):
  // with 8 or 9 inputs the pipeline is invalid ("The number of storage buffers (10) in the Compute
  // stage exceeds the maximum per-stage limit (8)"), and the failure poisons the other kernels submitted
  // with it (outputs of unrelated nodes came back as zeros or stale data). Conv dW's per-tap forms
  // concatenate K = 9 taps for 3×3, so on WebGPU the rules take the Gather im2col (conv.ts pickDw).
  maxConcatInputs: 7,
  // ConvTranspose with pads [1, 1, 0, 0] (the input gradient of a 3×3 stride-2 pad-1 Conv on an even
  // size) was wrong (16→16, 16→8 and 16→4 channels, 2×2 → 4×4); [1, 1, 1, 1] with output_padding 1,
  // the same result, was right: the rule takes that form (conv.ts 'convtranspose-sympads').
  convTransposeUnequalPads: true,
};
