// Node file helpers for adapters: a folder holding adapter_model.safetensors + adapter_config.json.
import { mkdirSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../onnx/io.ts';
import type { RefitModel } from '../model.ts';
import type { PeftModel } from './peft-model.ts';
import { adapterFiles, withAdapterFiles, savedAdapterName, parseAdapterConfig, WEIGHTS_FILE, CONFIG_FILE, type AdapterFiles } from './files.ts';
import { PeftError } from './errors.ts';

/** Write one adapter to `dir` (created if needed); each file is replaced atomically. */
export async function saveAdapter(model: PeftModel, name: string, dir: string): Promise<void> {
  const f = adapterFiles(model, name);
  mkdirSync(dir, { recursive: true });
  writeFileAtomic(join(dir, WEIGHTS_FILE), f.weights);
  writeFileAtomic(join(dir, CONFIG_FILE), new TextEncoder().encode(f.config));
}

/** An adapter folder's two files, and the name the adapter was saved under (refit's own files). */
export interface AdapterFolder extends AdapterFiles {
  savedName?: string;
}

/** An error from a folder's files (a PeftError, or a truncated safetensors file), prefixed with the folder so that the user knows which one. */
export function inFolder(dir: string, e: unknown): unknown {
  if (!(e instanceof Error) || e.message.startsWith('adapter folder ')) return e;
  const message = `adapter folder ${dir}: ${e.message}`;
  return e instanceof PeftError ? new PeftError(message) : new Error(message);
}

/**
 * Read an adapter folder (adapter_model.safetensors + adapter_config.json) without applying it.
 * The config is checked here (valid JSON, no setting refit cannot apply), so every command that
 * reads a folder refuses it with the folder's name.
 */
export function readAdapterFolder(dir: string): AdapterFolder {
  for (const f of [WEIGHTS_FILE, CONFIG_FILE]) if (!existsSync(join(dir, f))) throw new PeftError(`adapter folder ${dir} has no ${f}`);
  const config = readFileSync(join(dir, CONFIG_FILE), 'utf8');
  try {
    parseAdapterConfig(config);
  } catch (e) {
    throw inFolder(dir, e);
  }
  const w = readFileSync(join(dir, WEIGHTS_FILE));
  const files = { weights: new Uint8Array(w.buffer, w.byteOffset, w.byteLength), config };
  return { ...files, savedName: savedAdapterName(files) };
}

/** Read an adapter folder and add it to a model as `name` (default: the name it was saved under, else 'default'). */
export async function loadAdapter(model: RefitModel, dir: string, name?: string): Promise<PeftModel> {
  const f = readAdapterFolder(dir);
  try {
    return withAdapterFiles(model, name ?? f.savedName ?? 'default', f);
  } catch (e) {
    throw inFolder(dir, e);
  }
}
