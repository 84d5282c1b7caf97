// `refit adapter info` and `refit adapter merge`: inspect adapter folders (adapter_model.safetensors
// + adapter_config.json, HF PEFT's layout) and fold them into a model for deployment.
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { loadModel, type RefitModel } from '../model.ts';
import { parseSafetensors } from '../io/safetensors.ts';
import { readAdapterFolder, inFolder } from '../peft/files-node.ts';
import { withAdapterFiles, WEIGHTS_FILE, CONFIG_FILE } from '../peft/files.ts';
import { accounting } from '../peft/accounting.ts';
import type { PeftModel } from '../peft/peft-model.ts';
import { kvCacheOf, withoutKvCache, writeWeightsBack } from '../onnx/kv-cache.ts';
import { sameGraph } from './common.ts';

export interface AdapterInfo {
  dir: string;
  /** HF PEFT's `peft_type`; a DoRA adapter is LORA with `use_dora`. */
  peftType: string;
  dora: boolean;
  rank?: number;
  alpha?: number;
  targetModules: string[];
  tensors: number;
  parameters: number;
  fileBytes: number;
  /** With a base model: the adapter's share of it, and AdamW state to train it. */
  trainablePercent?: number;
  optimizerStateBytes?: number;
}

/** What an adapter folder holds; with `base`, also checked against that model and accounted. */
export function adapterInfo(dir: string, base?: RefitModel): AdapterInfo {
  const folder = readAdapterFolder(dir);
  let config: Record<string, unknown>;
  try {
    config = JSON.parse(folder.config);
  } catch (e) {
    throw new Error(`${join(dir, CONFIG_FILE)}: not valid JSON (${(e as Error).message})`);
  }
  const { tensors } = parseSafetensors(folder.weights, join(dir, WEIGHTS_FILE));
  const info: AdapterInfo = {
    dir,
    peftType: String(config.peft_type ?? '?'),
    dora: config.use_dora === true,
    rank: typeof config.r === 'number' ? config.r : undefined,
    alpha: typeof config.lora_alpha === 'number' ? config.lora_alpha : undefined,
    targetModules: Array.isArray(config.target_modules) ? config.target_modules.map(String) : config.target_modules ? [String(config.target_modules)] : [],
    tensors: tensors.size,
    parameters: [...tensors.values()].reduce((a, t) => a + t.data.length, 0),
    fileBytes: statSync(join(dir, WEIGHTS_FILE)).size + statSync(join(dir, CONFIG_FILE)).size,
  };
  if (base) {
    let applied;
    try {
      applied = withAdapterFiles(base, 'adapter', folder);
    } catch (e) {
      throw inFolder(dir, e); // tensor errors name the folder too
    }
    const a = accounting(applied, 'adapter');
    info.trainablePercent = a.trainablePercent;
    info.optimizerStateBytes = a.optimizerStateBytes;
  }
  return info;
}

export function formatInfo(i: AdapterInfo): string {
  const kib = (b: number) => `${(b / 1024).toFixed(1)} KiB`;
  return [
    `${i.dir}: ${i.peftType}${i.dora ? ' (DoRA)' : ''}${i.rank !== undefined ? ` r=${i.rank}` : ''}${i.alpha !== undefined ? ` alpha=${i.alpha}` : ''}`,
    ...(i.targetModules.length ? [`  target modules (${i.targetModules.length}): ${i.targetModules.slice(0, 12).join(', ')}${i.targetModules.length > 12 ? ', …' : ''}`] : []),
    `  ${i.tensors} tensors, ${i.parameters.toLocaleString('en-US')} values, ${kib(i.fileBytes)} on disk`,
    ...(i.trainablePercent !== undefined ? [`  against the model: ${i.trainablePercent.toFixed(2)}% of its parameters, AdamW state ${kib(i.optimizerStateBytes!)}`] : []),
  ].join('\n');
}

/**
 * Load every adapter folder onto the model, fold them all into its weights (or bake those that
 * cannot fold), and save a plain ONNX model. Nothing is written unless every folder loads.
 * A model with a KV cache gets the adapters on its cache-free form (../onnx/kv-cache.ts) and the
 * folded weights written back, so the merged file keeps its cache; adapters that cannot fold are
 * refused there.
 */
export async function mergeAdapters(modelPath: string, dirs: string[], out: string): Promise<{ adapters: string[]; out: string }> {
  if (dirs.length === 0) throw new Error('merge: give at least one adapter folder');
  const given = await loadModel(modelPath);
  const kv = kvCacheOf(given);
  const base = kv ? withoutKvCache(given) : given;
  let model: PeftModel | undefined;
  const names: string[] = [];
  for (const [i, dir] of dirs.entries()) {
    const folder = readAdapterFolder(dir);
    const name = folder.savedName && !names.includes(folder.savedName) ? folder.savedName : `adapter${i}`;
    try {
      model = withAdapterFiles(model ?? base, name, folder);
    } catch (e) {
      throw inFolder(dir, e);
    }
    names.push(name);
  }
  const merged = model!.mergeAll();
  if (kv) {
    if (!sameGraph(merged, base)) {
      throw new Error(`merge: ${modelPath} has a KV cache, so its adapters must fold into its weights as they are stored; ${names.join(', ')} changed the graph instead (an adapter that adds layers, or a merge into a quantized weight, which becomes a float layer); nothing written`);
    }
    writeWeightsBack(given, merged);
  }
  await (kv ? given : merged).save(out);
  await Promise.all([merged.release(), model!.release(), base.release(), given.release()]);
  return { adapters: names, out };
}
