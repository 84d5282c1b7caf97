// Token models from the CLI: which input takes the token ids, and the inputs that Hugging Face
// exports (optimum, transformers.js) put beside it, made from the ids as the tokenizer would (in
// JavaScript here; ../onnx/token-companions.ts makes the same inside the graph):
//   attention_mask  1 for a token, 0 for --pad-token (all 1 without one)
//   token_type_ids  0 (one segment), or the tokenizer's segments of a text pair
//   position_ids    0 … length−1
//   a lengths input the count of tokens that are not --pad-token per row (pack_padded_sequence's)
// A model with any other input is refused with the list, before any data is read.
import type { RefitModel } from '../model.ts';
import { tensorOf, type DType, type Tensor } from '../onnx/tensor.ts';
import { parseNpy } from './data-files.ts';
import { readBytes } from '../data/idx-node.ts';
import { existsSync } from 'node:fs';
import { kvCacheOf } from '../onnx/kv-cache.ts';
import { isTextFile, readTextTokens, TEXT_EXTENSIONS, type TextSource, type TextTokens } from './text-tokens.ts';
import { COMPANIONS_SAID, TOKEN_DTYPES, isCompanion, isLengthsInput, positionTableRows, tokenIdsInput, vocabularySize } from '../onnx/token-companions.ts';

export interface TokenInputs {
  /** The input that takes the token ids. */
  ids: { name: string; dtype: 'int64' | 'int32' };
  /** The inputs made from the ids (Hugging Face's, a lengths input), with their dtypes. */
  companions: { name: string; dtype: DType; lengths: boolean }[];
  /** The vocabulary size, when the ids feed an embedding table directly (a Gather on an initializer). */
  vocab: number | null;
  /** The sequence length where the export fixes it (text data is padded or cut to it). */
  length: number | null;
  /** The rows of the model's learned position table, if it has one (text data is cut to fit it). */
  positions: number | null;
}

/** Whether the model takes integer inputs (token ids) rather than float32 samples. */
export function isTokenModel(model: RefitModel): boolean {
  return model.inputs.some((i) => TOKEN_DTYPES.has(i.dtype));
}

/**
 * The token-id input and its companions; throws, naming every input, when the CLI cannot feed the
 * model. `fedElsewhere`: inputs the caller feeds itself (a joined decoder's ids), left out.
 */
export function tokenInputs(model: RefitModel, what: string, fedElsewhere: readonly string[] = []): TokenInputs {
  const names = model.inputs.map((i) => `${i.name} (${i.dtype})`).join(', ');
  const others = model.inputs.filter((i) => !isCompanion(i) && !fedElsewhere.includes(i.name));
  const ids = tokenIdsInput(model);
  if (!ids) {
    throw new Error(`${what} feeds one input of token ids; this model has ${names} (it needs int64 or int32 ids, e.g. input_ids, and makes ${COMPANIONS_SAID} from them); use the library for other inputs`);
  }
  const unknown = others.filter((i) => i.name !== ids.name);
  const kv = kvCacheOf(model);
  if (kv) throw new Error(`${what}: the model has a KV cache (inputs ${[...kv.past.map((v) => v.name).slice(0, 2), ...(kv.useCacheBranch ? [kv.useCacheBranch] : [])].map((n) => `'${n}'`).join(', ')}…), the export of a text decoder for generation; refit train runs such a model without it, and the library's withoutKvCache(model) does so for other uses`);
  if (unknown.length) throw new Error(`${what}: the CLI cannot make the model's input${unknown.length > 1 ? 's' : ''} ${unknown.map((i) => `'${i.name}'`).join(', ')} (it makes ${COMPANIONS_SAID} from the token ids); model inputs: ${names}; use the library for other inputs`);
  const companions = model.inputs.filter((i) => i.name !== ids.name && !fedElsewhere.includes(i.name)).map((i) => ({ name: i.name, dtype: i.dtype, lengths: isLengthsInput(i) }));
  for (const c of companions) {
    if (!TOKEN_DTYPES.has(c.dtype) && c.dtype !== 'float32') throw new Error(`${what}: the model's input '${c.name}' is ${c.dtype}; the CLI makes it as int64, int32 or float32`);
  }
  return { ids, companions, vocab: vocabularySize(model, ids.name), length: fixedSequenceLength(model), positions: positionTableRows(model) };
}

/** The sequence length a token model's export fixes (its ids input's second axis), if any. */
export function fixedSequenceLength(model: RefitModel): number | null {
  const ids = tokenIdsInput(model);
  const d = ids ? model.inputs.find((i) => i.name === ids.name)?.shape?.[1] : undefined;
  return typeof d === 'number' && d > 0 ? d : null;
}

/** Token ids as a file gives them, with what text data adds (./text-tokens.ts). */
export interface TokenIds {
  values: ArrayLike<number>;
  n: number;
  length: number;
  columns: number;
  /** token_type_ids per position (a text pair's second segment 1); null: all 0. */
  types: Uint8Array | null;
  /** The tokenizer's pad id (text data), when --pad-token gave none. */
  padToken: number | undefined;
  /** Text data's label column, one cell a row. */
  labels: string[] | null;
  format: string;
  /** Text data's tokenizer (its file and how it marks a pair's second segment); null for ids. */
  tokenizer: TextTokens['tokenizer'] | null;
}

/**
 * Token ids [sequences, length] from a .npy file of integers, or text (.txt, .csv, .tsv, .jsonl)
 * tokenized by the model's tokenizer (`text`; ./text-tokens.ts), checked against the vocabulary;
 * with `grouped`, [examples, columns, length] (columns ≥ 2: --task pairs), returned as
 * examples · columns sequences, example-major.
 */
export function readTokenIds(path: string, vocab: number | null, minLength = 1, grouped = false, text?: TextSource & { wantLabels?: boolean }): TokenIds {
  if (!existsSync(path)) throw new Error(`data not found: ${path}`);
  const form = grouped ? '[examples, columns, length]' : '[sequences, length]';
  let ids: TokenIds;
  if (isTextFile(path)) {
    if (!text) throw new Error(`${path}: text data is read by the CLI (refit train, eval, adapt) with the model's tokenizer; here give a .npy of token ids ${form}`);
    const t = readTextTokens(path, text, { grouped, minLength, wantLabels: text.wantLabels ?? false });
    ids = { values: t.values, n: t.n, length: t.length, columns: t.columns, types: t.types, padToken: t.padToken, labels: t.labels, format: t.format, tokenizer: t.tokenizer };
  } else {
    if (!path.toLowerCase().endsWith('.npy')) throw new Error(`${path}: token models read a .npy file of token ids ${form}, or text (${TEXT_EXTENSIONS.join(', ')}) that the model's tokenizer turns into ids`);
    const a = parseNpy(readBytes(path, 'NPY file'), path);
    if (a.dtype !== 'int32' && a.dtype !== 'int64') throw new Error(`${path}: token ids must be int32 or int64, got ${a.dtype} (np.asarray(ids, dtype=np.int64))`);
    const length = a.shape[a.shape.length - 1]!;
    if (grouped) {
      if (a.shape.length !== 3 || a.shape[1]! < 2 || length < minLength) throw new Error(`${path}: token ids must have shape [examples, columns, length] with columns ≥ 2 (anchor, positive, then any hard negatives) and length ≥ ${minLength}, got [${a.shape.join(', ')}]`);
    } else if (a.shape.length !== 2 || length < minLength) throw new Error(`${path}: token ids must have shape [sequences, length] with length ≥ ${minLength}, got [${a.shape.join(', ')}]`);
    ids = { values: a.values, n: a.shape[0]!, length, columns: grouped ? a.shape[1]! : 1, types: null, padToken: undefined, labels: null, format: 'npy token ids', tokenizer: null };
  }
  const { values, length } = ids;
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (v < 0 || (vocab !== null && v >= vocab)) throw new Error(`${path}: token ${v} (sequence ${Math.floor(i / length)}, position ${i % length}) is outside the model's vocabulary [0, ${vocab ?? '?'})${isTextFile(path) ? ': is the tokenizer the model\'s own?' : ''}`);
  }
  return ids;
}

/** The model's feeds for sequences `idx` of `values` ([n, length]): the ids and their companions. */
export function tokenFeeds(t: TokenInputs, values: ArrayLike<number>, length: number, idx: readonly number[], padToken?: number, types?: Uint8Array | null): Record<string, Tensor> {
  const b = idx.length;
  const ids = new Float64Array(b * length);
  idx.forEach((s, k) => { for (let p = 0; p < length; p++) ids[k * length + p] = values[s * length + p]!; });
  const make = (dtype: DType, f: (i: number) => number): Tensor => tensorOf(dtype, [b, length], f);
  const feeds: Record<string, Tensor> = { [t.ids.name]: make(t.ids.dtype, (i) => ids[i]!) };
  const tokensIn = (k: number) => { let n = 0; for (let p = 0; p < length; p++) if (ids[k * length + p] !== padToken) n++; return n; };
  for (const c of t.companions) {
    feeds[c.name] = c.lengths ? tensorOf(c.dtype, [b], tokensIn)
      : make(c.dtype, c.name === 'attention_mask' ? (i) => (ids[i] === padToken ? 0 : 1) : c.name === 'position_ids' ? (i) => i % length
        : types ? (i) => types[idx[Math.floor(i / length)]! * length + (i % length)]! : () => 0);
  }
  return feeds;
}
