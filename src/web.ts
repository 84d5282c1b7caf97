// refit's browser entry (`refit/web`): the core, PEFT, TTA, drift and continual parts on
// onnxruntime-web. Nothing reachable from here imports a Node module (test/web/import-graph.test.ts);
// model, adapter and data I/O take bytes, Blobs, Responses or URLs (./web/io.ts), adapters persist
// in IndexedDB (./web/adapter-store.ts). The bundle (npm run build:web) maps the two modules that
// read files in Node to stand-ins that say what to do instead (src/web/node-only/).
import './onnx/runtime-web.ts'; // registers onnxruntime-web (wasm) as the runtime

export { useWebRuntime, type WebRuntimeOptions, type WebRuntimeInfo, type WebDevice } from './onnx/runtime-web.ts';
export { warmUp } from './web/warm.ts';
export * from './core-exports.ts';
export * as data from './web/data.ts';
export { fetchBytes, bytesOf, loadModelFrom, gunzip, downloadBytes, type ByteSource, type FetchOptions } from './web/io.ts';
export { saveAdapterToIndexedDB, readAdapterFromIndexedDB, loadAdapterFromIndexedDB, listAdaptersInIndexedDB, deleteAdapterFromIndexedDB, downloadAdapter } from './web/adapter-store.ts';
