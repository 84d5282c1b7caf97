// TensorFlow.js with every gradient registered and the wasm backend, one module for esbuild to
// bundle (for the page, and for Node: tfjs-core's ESM dist uses directory imports Node cannot load,
// and its Node build registers no gradients).
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-core/dist/register_all_gradients';
export { setWasmPaths, setThreadsCount, getThreadsCount } from '@tensorflow/tfjs-backend-wasm';
export { tf };
