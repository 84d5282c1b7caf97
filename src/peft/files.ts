// Adapters as files in HF PEFT's layout: `adapter_model.safetensors` (keys such as
// `base_model.model.<module>.lora_A.weight`, PyTorch's [out, in] convention) and
// `adapter_config.json`. Bytes in, bytes out: the Node file helpers live in ./files-node.ts.
import { parseSafetensors, serializeSafetensors } from '../io/safetensors.ts';
import { type Tensor, formatShape } from '../onnx/tensor.ts';
import type { RefitModel } from '../model.ts';
import { PeftModel } from './peft-model.ts';
import type { AdapterMethod } from './types.ts';
import type { Site } from './sites.ts';
import { lora } from './lora/index.ts';
import { dora } from './dora/index.ts';
import { ia3 } from './ia3/index.ts';
import { vera } from './vera/index.ts';
import { bitfit, normAffine } from './selection/index.ts';
import { head } from './head/index.ts';
import { bottleneck } from './bottleneck/index.ts';
import { PeftError, closest } from './errors.ts';

export const WEIGHTS_FILE = 'adapter_model.safetensors';
/** Where refit records an adapter's name and method: the weights file's __metadata__ map. */
export const REFIT_ADAPTER_KEY = 'refit.adapter';
export const REFIT_METHOD_KEY = 'refit.method';

/** The name an adapter was saved under by refit: the weights' metadata, or (files from before 2026-12) the config's `refit` key. */
export function savedAdapterName(f: AdapterFiles): string | undefined {
  try {
    const meta = parseSafetensors(f.weights, WEIGHTS_FILE).metadata;
    if (meta[REFIT_ADAPTER_KEY]) return meta[REFIT_ADAPTER_KEY];
  } catch { /* reported when the adapter is applied */ }
  try {
    const old = JSON.parse(f.config)?.refit?.adapter;
    return typeof old === 'string' ? old : undefined;
  } catch { return undefined; }
}
export const CONFIG_FILE = 'adapter_config.json';

export interface AdapterFiles {
  /** `adapter_model.safetensors` */
  weights: Uint8Array;
  /** `adapter_config.json` */
  config: string;
}

/** Serialise one adapter (its current values) in HF PEFT's layout. */
export function adapterFiles(model: PeftModel, name: string): AdapterFiles {
  const plan = model.planOf(name);
  const values = model.adapterValues(name);
  const custom = plan.toFiles?.((n) => values.get(n)!);
  const tensors = custom?.tensors ?? new Map<string, Tensor>();
  if (!custom) for (const [ir, key] of plan.fileKeys) tensors.set(key, values.get(ir)!);
  const info = model.adapter(name);
  // refit's own metadata goes where PEFT looks for nothing (the safetensors __metadata__ map):
  // PEFT versions before its forward-compatibility change refuse unknown config keys.
  const config = custom?.config ?? plan.fileConfig;
  return {
    weights: serializeSafetensors(tensors, { format: 'pt', [REFIT_ADAPTER_KEY]: name, [REFIT_METHOD_KEY]: info.method }),
    config: `${JSON.stringify(config, null, 2)}\n`,
  };
}

const MODULE_KEY = /^base_model\.model\.(.+)\.(lora_A\.weight|lora_B\.weight|lora_magnitude_vector(?:\.weight)?|ia3_l|vera_lambda_[bd]|adapter_(?:down|up)\.(?:weight|bias))$/;

/** HF PEFT's target_modules rule: a list matches a name or a dotted suffix; a string is a full-match regex. */
function targetMatches(targets: unknown, module: string): boolean {
  if (typeof targets === 'string') return new RegExp(`^(?:${targets})$`).test(module);
  if (Array.isArray(targets)) return targets.some((t) => t === module || module.endsWith(`.${t}`));
  return false;
}

const num = (cfg: Record<string, unknown>, k: string, fallback?: number): number => {
  const v = cfg[k] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new PeftError(`${CONFIG_FILE}: '${k}' must be a number, got ${JSON.stringify(cfg[k])}`);
  return v;
};

const unset = (v: unknown) => v === undefined || v === null || v === false || v === '' || (Array.isArray(v) && v.length === 0) || (typeof v === 'object' && v !== null && !Array.isArray(v) && Object.keys(v).length === 0);

/**
 * Config settings that change what the files mean in ways refit cannot apply: with any of them set,
 * loading would either fail later on tensors refit does not expect (a less helpful message) or,
 * worse, load and compute something else than PEFT. Keys that only steer initialisation or
 * creation (init_lora_weights, loftq/eva/corda configs, layers_to_transform, exclude_modules) are
 * fine: refit applies exactly the modules the weights file holds. Keys refit does not know at all
 * are ignored, because every PEFT release adds some whose default keeps the old behaviour.
 */
const UNSUPPORTED_SETTINGS: { key: string; isDefault: (v: unknown) => boolean; why: string }[] = [
  { key: 'modules_to_save', isDefault: unset, why: 'PEFT saves whole trained copies of those modules (e.g. a new classifier head), which refit does not apply; fold them into the base model first, or train the head with refit\'s head adapter' },
  { key: 'bias', isDefault: (v) => v === undefined || v === null || v === 'none', why: 'PEFT then trains and saves base-layer biases, which refit does not apply' },
  { key: 'lora_bias', isDefault: unset, why: 'refit\'s LoRA has no bias on lora_B' },
  { key: 'trainable_token_indices', isDefault: unset, why: 'refit does not apply trainable token embeddings' },
  { key: 'layer_replication', isDefault: unset, why: 'refit does not replicate layers' },
  { key: 'target_parameters', isDefault: unset, why: 'refit applies LoRA to layers (target_modules), not to bare parameters' },
  { key: 'alora_invocation_tokens', isDefault: unset, why: 'refit has no activated LoRA' },
  { key: 'use_qalora', isDefault: unset, why: 'refit has no QALoRA' },
  { key: 'megatron_config', isDefault: unset, why: 'refit does not load Megatron parallel layers' },
  { key: 'arrow_config', isDefault: unset, why: 'refit has no Arrow routing' },
];

/** The PEFT types whose configs come from HF PEFT; refit's own types (BITFIT, NORM_AFFINE, HEAD, BOTTLENECK) use some of these keys themselves. */
const PEFT_TYPES = new Set(['LORA', 'IA3', 'VERA']);

/** Refuse a config with a setting refit cannot apply, naming the key and its value. */
export function checkAdapterConfig(cfg: Record<string, unknown>): void {
  if (!PEFT_TYPES.has(String(cfg.peft_type))) return;
  for (const u of UNSUPPORTED_SETTINGS) {
    if (u.key in cfg && !u.isDefault(cfg[u.key])) {
      throw new PeftError(`${CONFIG_FILE}: '${u.key}' is set (${JSON.stringify(cfg[u.key])}), which refit does not support: ${u.why}`);
    }
  }
}

/** adapter_config.json's text → its object, refused when it is not a JSON object or sets what refit cannot apply. */
export function parseAdapterConfig(text: string): Record<string, unknown> {
  let cfg: unknown;
  try {
    cfg = JSON.parse(text);
  } catch (e) {
    throw new PeftError(`${CONFIG_FILE}: not valid JSON (${(e as Error).message})`);
  }
  if (!cfg || typeof cfg !== 'object' || Array.isArray(cfg)) throw new PeftError(`${CONFIG_FILE}: expected a JSON object`);
  checkAdapterConfig(cfg as Record<string, unknown>);
  return cfg as Record<string, unknown>;
}

/** The method a saved config describes, targeting exactly the modules the file holds tensors for. */
function methodFromConfig(cfg: Record<string, unknown>, modules: string[], keys: string[]): AdapterMethod {
  const type = cfg.peft_type;
  const targets = modules.length ? modules : ['(none)'];
  switch (type) {
    case 'LORA': {
      for (const k of ['rank_pattern', 'alpha_pattern'] as const) {
        if (cfg[k] && Object.keys(cfg[k] as object).length) throw new PeftError(`${CONFIG_FILE}: '${k}' (per-module ranks) is not supported by refit yet`);
      }
      if (cfg.fan_in_fan_out) throw new PeftError(`${CONFIG_FILE}: fan_in_fan_out=true (Conv1D weights) is not supported`);
      const c = { targets, rank: num(cfg, 'r'), alpha: num(cfg, 'lora_alpha', 8), rsLora: cfg.use_rslora === true, dropout: num(cfg, 'lora_dropout', 0) };
      return cfg.use_dora === true ? dora(c) : lora(c);
    }
    case 'IA3': return ia3({ targets, feedforward: (cfg.feedforward_modules as string[] | undefined)?.filter((f) => modules.some((m) => targetMatches([f], m))) ?? [] });
    case 'VERA': return vera({ targets, rank: num(cfg, 'r'), dInitial: num(cfg, 'd_initial', 0.1), seed: num(cfg, 'projection_prng_key', 0) });
    case 'BITFIT': case 'NORM_AFFINE': {
      const names = keys.map((k) => k.replace(/^base_model\.model\./, ''));
      const set = new Set(names);
      return (type === 'BITFIT' ? bitfit : normAffine)({ filter: (n) => set.has(n) });
    }
    case 'HEAD': return head({ classes: num(cfg, 'classes'), features: cfg.features as string | undefined, output: cfg.output as string | undefined });
    case 'BOTTLENECK': return bottleneck({
      targets, form: cfg.form as 'houlsby', reductionFactor: num(cfg, 'reduction_factor'), activation: cfg.non_linearity as 'relu', scaling: num(cfg, 'scaling'),
    });
    default: throw new PeftError(`${CONFIG_FILE}: peft_type ${JSON.stringify(type)} is not supported (supported: LORA (with use_dora), IA3, VERA, BITFIT, NORM_AFFINE, HEAD, BOTTLENECK)`);
  }
}

/**
 * Add an adapter read from files to a model. Every tensor is checked (names, dtypes, shapes,
 * finite values) before anything is applied; on any error the model is unchanged and the
 * message names the tensor and its expected versus actual shape.
 */
export function withAdapterFiles(model: RefitModel, name: string, files: AdapterFiles): PeftModel {
  // The config first: an unsupported setting is named as such, not as the unexpected tensors it brings.
  const cfg = parseAdapterConfig(files.config);
  const peft = PeftModel.from(model);
  const tensors = byCurrentNames(parseSafetensors(files.weights, WEIGHTS_FILE).tensors, cfg, peft.sites());
  const keys = [...tensors.keys()];
  const siteModules = [...new Set(peft.sites().map((s) => s.module))];
  const modules: string[] = [];
  for (const k of keys) {
    const m = MODULE_KEY.exec(k)?.[1];
    if (!m) continue;
    if (!siteModules.includes(m)) throw new PeftError(`${WEIGHTS_FILE}: tensor '${k}' is for module '${m}', which the model does not have. Closest modules: ${closest(m, siteModules).join(', ')}`);
    if (cfg.target_modules !== undefined && cfg.peft_type !== 'BOTTLENECK' && !targetMatches(cfg.target_modules, m)) {
      throw new PeftError(`${WEIGHTS_FILE}: tensor '${k}' is for module '${m}', which ${CONFIG_FILE}'s target_modules ${JSON.stringify(cfg.target_modules)} does not cover`);
    }
    if (!modules.includes(m)) modules.push(m);
  }
  const next = peft.withAdapter(name, methodFromConfig(cfg, modules, keys));
  const plan = next.planOf(name);
  const values = next.adapterValues(name);
  const byKey = new Map([...plan.fileKeys].map(([ir, key]) => [key, ir]));
  const alias = (k: string) => (byKey.has(k) ? k : k.endsWith('.lora_magnitude_vector') ? `${k}.weight` : k);
  for (const k of keys) {
    if (!byKey.has(alias(k))) throw new PeftError(`${WEIGHTS_FILE}: unexpected tensor '${k}'; the adapter expects ${[...byKey.keys()].slice(0, 8).join(', ')}${byKey.size > 8 ? ` … (${byKey.size} in all)` : ''}`);
  }
  for (const [key, ir] of byKey) {
    const want = values.get(ir)!;
    const t = tensors.get(key) ?? tensors.get(key.replace(/\.weight$/, ''));
    if (!t) throw new PeftError(`${WEIGHTS_FILE}: missing tensor '${key}' (expected float32 ${formatShape(want.dims)})`);
    if (t.dtype !== 'float32') throw new PeftError(`${WEIGHTS_FILE}: tensor '${key}' is ${t.dtype}, expected float32`);
    if (t.dims.join() !== want.dims.join()) throw new PeftError(`${WEIGHTS_FILE}: tensor '${key}' has shape ${formatShape(t.dims)}, expected ${formatShape(want.dims)}`);
    const d = t.data as Float32Array;
    for (let i = 0; i < d.length; i++) if (!Number.isFinite(d[i]!)) throw new PeftError(`${WEIGHTS_FILE}: tensor '${key}' has a non-finite value (${d[i]}) at index ${i}`);
  }
  for (const [key, ir] of byKey) (values.get(ir)!.data as Float32Array).set((tensors.get(key) ?? tensors.get(key.replace(/\.weight$/, '')))!.data as Float32Array);
  next.touch(values.keys());
  return next;
}

/**
 * A file written before a module was named from its node (`onnx::MatMul_880`, now
 * `layers.0.self_attn.q_proj`; ./sites.ts) names it by its weight: its keys and target_modules
 * are read under the current names.
 */
function byCurrentNames<T>(tensors: Map<string, T>, cfg: Record<string, unknown>, sites: readonly Site[]): Map<string, T> {
  const current = new Map(sites.filter((x) => x.alias).map((x) => [x.alias!, x.module]));
  if (current.size === 0) return tensors;
  if (Array.isArray(cfg.target_modules)) cfg.target_modules = cfg.target_modules.map((t) => current.get(t as string) ?? t);
  return new Map([...tensors].map(([k, t]) => {
    const m = MODULE_KEY.exec(k)?.[1];
    const to = m !== undefined ? current.get(m) : undefined;
    return [to ? `base_model.model.${to}.${k.slice(`base_model.model.${m}.`.length)}` : k, t];
  }));
}
