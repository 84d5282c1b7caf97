// A TTA adapter's state (AdapterState: Float32Arrays, optimizer buffers, scalars) as one
// safetensors blob for the registry's tenant-state table, in the same container as the
// continual controller's checkpoints (src/io/model-state-file.ts) under its own format tag.
import type { RefitModel } from '../model.ts';
import type { AdapterState } from '../tta/types.ts';
import { encodeModelState, decodeModelState, type StateFormat } from '../io/model-state-file.ts';

const FORMAT: StateFormat = { tag: 'refit.tta.state/1', kind: 'refit TTA state' };

export function encodeAdapterState(model: RefitModel, state: AdapterState): Uint8Array {
  return encodeModelState(model, state, FORMAT, 'tenant state');
}

export function decodeAdapterState(model: RefitModel, bytes: Uint8Array, what = 'tenant state'): AdapterState {
  return decodeModelState<AdapterState>(model, bytes, FORMAT, what);
}
