// One file for the whole continual state (src/io/model-state-file.ts: Float32Arrays as tensors,
// the rest as JSON, with the model's fingerprint). Browser-safe; checkpoint-node.ts writes files.
import type { RefitModel } from '../model.ts';
import { encodeModelState, decodeModelState, modelFingerprint, type StateFormat } from '../io/model-state-file.ts';
import type { ControllerState } from './controller.ts';

export { modelFingerprint };

const FORMAT: StateFormat = { tag: 'refit.continual.checkpoint/1', kind: 'refit continual checkpoint' };

export function encodeCheckpoint(model: RefitModel, state: ControllerState): Uint8Array {
  return encodeModelState(model, state, FORMAT, 'checkpoint');
}

export function decodeCheckpoint(model: RefitModel, bytes: Uint8Array, what = 'checkpoint'): ControllerState {
  return decodeModelState<ControllerState>(model, bytes, FORMAT, what);
}
