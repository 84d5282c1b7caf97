// Stands in for src/onnx/io.ts (model files through node:fs) in the web bundle (scripts/build-web.ts
// maps it here): in a page a model comes as bytes, so these say what to do instead.
import type { Model } from '../../onnx/ir.ts';

function nodeOnly(what: string, instead: string): never {
  throw new Error(`${what} reads or writes a file path, which only Node can do; in a browser ${instead}`);
}

export function readModelFile(path: string): Model {
  return nodeOnly(`loadModel('${path}')`, "pass the model's bytes: loadModel(await fetchBytes(url)) or modelFrom(blob)");
}

export function writeFileAtomic(path: string, _bytes: Uint8Array | readonly Uint8Array[]): void {
  nodeOnly(`saving to '${path}'`, 'take model.toBytes() and download or store it (downloadBytes, saveAdapterToIndexedDB)');
}

export type WriteOptions = Record<string, unknown>;

export function writeModelFile(path: string, _model: Model, _opts?: WriteOptions): void {
  nodeOnly(`writeModelFile('${path}')`, 'encode it with encodeModel(model) and download or store the bytes');
}
