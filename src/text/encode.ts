// Text to token ids as the model's own Hugging Face tokenizer gives them (@huggingface/tokenizers,
// the tokenizer transformers.js uses), with no file access: the CLI (../cli/text-tokens.ts) and the
// browser build (`text.createTextEncoder` in refit and refit/web) share it.
//
// Each text is encoded as the Python tokenizer encodes it with `truncation=True`: special tokens
// from the post-processor, a text pair as one sequence (its second segment's token_type_ids 1),
// the content cut at the end to fit the length, the longer of a pair first, padded on the right
// with the pad token.
import { Tokenizer } from '@huggingface/tokenizers';

/** The longest sequence tokenized when neither --max-length, the model nor the tokenizer says. */
export const DEFAULT_MAX_LENGTH = 512;

export interface LoadedTokenizer { tok: Tokenizer; path: string; config: Record<string, unknown> }

/** The tokenizer of parsed tokenizer.json and tokenizer_config.json; `path` names it in messages. */
export function tokenizerOf(tokenizerJson: object, config: object, path: string): LoadedTokenizer {
  try {
    return { tok: new Tokenizer(tokenizerJson, config), path, config: config as Record<string, unknown> };
  } catch (e) {
    throw new Error(`${path}: not a tokenizer @huggingface/tokenizers can read (${(e as Error).message})`);
  }
}

/** A text, or a text pair (premise and hypothesis, query and passage) encoded as one sequence. */
export type TextInput = string | readonly [string, string];

/** Texts (one sequence each) to ids [n, length], padded to the longest (or the model's fixed length). */
export interface TextEncoder {
  /** Ids [n, length]; `types` the token_type_ids in the same layout (a pair's second segment 1), null when all 0. */
  encode(texts: readonly TextInput[]): { values: Int32Array; n: number; length: number; types: Uint8Array | null };
  /** How the tokenizer marks a pair's second segment (pairSegments): what a model fed the ids alone needs to rebuild token_type_ids. */
  segments: PairSegments;
  /** The pad id the rows are padded with, which the model must mask. */
  padToken: number | undefined;
  /** How the pad was chosen, for messages. */
  padSaid: string;
  /** Ids the tokenizer can give (its vocabulary with added tokens). */
  vocabSize: number;
  /** The longest row it gives (lengthCap): a longer text is cut. */
  maxLength: number;
  /** The tokenizer.json read. */
  path: string;
}

/** Options of an encoder: the pad id (default the tokenizer's), the longest sequence, or one fixed length for every row. */
export interface TextEncoderOptions {
  padToken?: number;
  maxLength?: number;
  fixedLength?: number | null;
  /** The rows of the model's position table (positionTableRows): no row is cut longer. */
  positions?: number | null;
}

/**
 * An encoder from the contents of tokenizer.json and tokenizer_config.json (parsed JSON), as a
 * page or a program holds them: `encode(texts)` gives ids [n, length], padded to the longest text.
 *
 *   const enc = text.createTextEncoder(await (await fetch('tokenizer.json')).json(), await (await fetch('tokenizer_config.json')).json());
 *   const { values, n, length } = enc.encode(['the film was good', 'awful']);
 */
export function createTextEncoder(tokenizerJson: object, config: object = {}, o: TextEncoderOptions = {}): TextEncoder {
  return encoderOf(tokenizerOf(tokenizerJson, config, 'the tokenizer given'), o);
}

/** The encoder of a loaded tokenizer. */
export function encoderOf(t: LoadedTokenizer, o: TextEncoderOptions = {}): TextEncoder {
  const cap = lengthCap(t, o);
  const padded = padId(t, o.padToken), pad = padded.id;
  return {
    padToken: pad, padSaid: padded.said, path: t.path, vocabSize: largestId(t.tok) + 1, maxLength: cap, segments: pairSegments(t.tok),
    encode(texts) {
      const rows = texts.map((text) => (typeof text === 'string' ? encodeText(t.tok, text, null, cap) : encodeText(t.tok, text[0], text[1], cap)));
      const length = o.fixedLength ?? Math.max(...rows.map((r) => r.ids.length));
      const values = padRows(rows.map((r) => r.ids), length, pad, 'texts of different lengths need a pad token, and the tokenizer has none; send texts of one length or token ids');
      const types = new Uint8Array(rows.length * length);
      rows.forEach((r, i) => types.set(r.types, i * length));
      return { values, n: rows.length, length, types: types.some((v) => v !== 0) ? types : null };
    },
  };
}

/**
 * The longest sequence a row may take: the model's fixed length, else maxLength, else the
 * tokenizer's model_max_length, never more than the model's position table holds.
 */
export function lengthCap(t: LoadedTokenizer, o: { fixedLength?: number | null; maxLength?: number; positions?: number | null }): number {
  if (o.fixedLength != null) return o.fixedLength;
  const positions = o.positions ?? Infinity;
  if (o.maxLength !== undefined && o.maxLength > positions) throw new Error(`--max-length ${o.maxLength} is longer than the model can read: its position table has ${positions} rows`);
  return o.maxLength ?? Math.min(modelMaxLength(t), positions);
}

/** Rows of ids as [rows, length], each padded on the right with `pad`; `noPad` is the error when rows differ in length and there is no pad. */
export function padRows(rows: readonly (readonly number[])[], length: number, pad: number | undefined, noPad: string): Int32Array {
  if (pad === undefined && rows.some((r) => r.length < length)) throw new Error(noPad);
  const values = new Int32Array(rows.length * length).fill(pad ?? 0);
  rows.forEach((r, i) => values.set(r, i * length));
  return values;
}

/** The pad tokens transformers' tokenizer classes default to, by name. */
const CLASS_PAD_TOKENS = ['[PAD]', '<pad>'];

/** A special token named by tokenizer_config.json (a string, or an object with `content`), as an id. */
function configToken(t: LoadedTokenizer, key: string): number | undefined {
  const v = t.config[key];
  const content = typeof v === 'string' ? v : typeof v === 'object' && v !== null ? (v as { content?: unknown }).content : undefined;
  return typeof content === 'string' ? t.tok.token_to_id(content) : undefined;
}

/**
 * The pad id: --pad-token, the tokenizer's pad token, tokenizer.json's padding id, a token named
 * [PAD] or <pad> (the class default), else its end of sequence token (what Hugging Face users set
 * for GPT-2-style tokenizers, which have none).
 */
export function padId(t: LoadedTokenizer, given?: number): { id: number | undefined; said: string } {
  if (given !== undefined) return { id: given, said: `--pad-token ${given}` };
  const pad = configToken(t, 'pad_token');
  if (pad !== undefined) return { id: pad, said: `pad token ${pad}` };
  const padding = (t.tok as unknown as { tokenizer?: { padding?: { pad_id?: unknown } } }).tokenizer?.padding;
  if (typeof padding?.pad_id === 'number') return { id: padding.pad_id, said: `pad token ${padding.pad_id}` };
  // transformers' tokenizer classes default the pad token where tokenizer_config.json names none
  // (bert-base-uncased's names none: BertTokenizer pads with [PAD]; RoBERTa, T5, ALBERT with <pad>)
  for (const name of CLASS_PAD_TOKENS) {
    const id = t.tok.token_to_id(name);
    if (id !== undefined) return { id, said: `pad token ${id} (${name}, the default of transformers' tokenizer classes; tokenizer_config.json names none)` };
  }
  const eos = configToken(t, 'eos_token');
  if (eos !== undefined) return { id: eos, said: `no pad token: padded with the end-of-sequence token ${eos}` };
  return { id: undefined, said: 'no pad token' };
}

/**
 * One row's ids and token types: `a` (and `b`, a pair) through the tokenizer's pre-tokenizer and
 * model, the content cut longest-first to leave room for the special tokens, then its post-processor.
 */
export function encodeText(tok: Tokenizer, a: string, b: string | null, maxLength: number): { ids: number[]; types: number[]; truncated: boolean } {
  const ta = tok.tokenize(a);
  const tb = b === null ? null : tok.tokenize(b);
  const content = ta.length + (tb?.length ?? 0);
  const specials = postProcess(tok, [], tb === null ? null : []).tokens.length;
  const room = maxLength - specials;
  if (room < 1) throw new Error(`--max-length ${maxLength} leaves no room for text beside the tokenizer's ${specials} special tokens`);
  const truncated = content > room;
  if (truncated && tb === null) ta.length = room;
  else if (truncated && tb !== null) [ta.length, tb.length] = longestFirst(ta.length, tb.length, room);
  const r = postProcess(tok, ta, tb);
  return { ids: tokenIds(tok, r.tokens), types: r.types, truncated };
}

/**
 * A pair's content lengths cut to `room` as the Rust tokenizers' `longest_first` cuts them
 * (tokenizers/src/utils/truncation.rs, which transformers' fast tokenizers run): the shorter kept
 * whole where the longer can take the rest, else both cut to half with the odd token to the longer,
 * to the second on a tie. (The slow Python tokenizers' one-at-a-time loop gives a tie's odd token
 * to the first.)
 */
export function longestFirst(na: number, nb: number, room: number): [number, number] {
  const swap = na > nb;
  let n1 = Math.min(na, nb), n2: number;
  n2 = n1 > room ? n1 : Math.max(n1, room - n1);
  if (n1 + n2 > room) { n1 = Math.floor(room / 2); n2 = n1 + (room % 2); }
  return swap ? [n2, n1] : [n1, n2];
}

/**
 * How a tokenizer marks a text pair's second segment in token_type_ids: `marked` false when it does
 * not (RoBERTa's and GPT-2's models take no token types); else `separator`, the special token
 * after whose first occurrence the second segment starts (BERT's [SEP]: [CLS] a [SEP] b [SEP]), so
 * that the types can be rebuilt from the ids alone (withTokenInputs' segmentAfter), or undefined
 * where the tokenizer marks it some other way.
 */
export interface PairSegments { marked: boolean; separator?: number }

export function pairSegments(tok: Tokenizer): PairSegments {
  const afterFirst = (tokens: string[], sep: string) => { let seen = false; return tokens.map((x) => { const v = seen ? 1 : 0; if (x === sep) seen = true; return v; }); };
  const probe = postProcess(tok, ['\u0001a'], ['\u0001b']);
  const start = probe.types.indexOf(1);
  if (start < 0) return { marked: false };
  const sep = probe.tokens[start - 1];
  const id = sep === undefined || sep.startsWith('\u0001') ? undefined : tok.token_to_id(sep);
  if (id === undefined) return { marked: true };
  // The rule must give the tokenizer's own types for pairs and single texts alike.
  const probes = [postProcess(tok, ['\u0001a', '\u0001c'], ['\u0001b']), postProcess(tok, ['\u0001a'], null), probe];
  const same = probes.every((r) => afterFirst(r.tokens, sep!).every((v, i) => v === r.types[i]));
  return same ? { marked: true, separator: id } : { marked: true };
}

/** The ids of `tokens` (added tokens included), an unknown one as the tokenizer's unknown token. */
export function tokenIds(tok: Tokenizer, tokens: readonly string[]): number[] {
  const unk = (tok.model as unknown as { unk_token_id?: number } | null)?.unk_token_id;
  return tokens.map((t) => {
    const id = tok.token_to_id(t) ?? unk;
    if (id === undefined) throw new Error(`the tokenizer has no id for token ${JSON.stringify(t)} and no unknown token`);
    return id;
  });
}

/** The post-processor's tokens and types for content tokens `a` and `b` (a pair merged as one sequence). */
export function postProcess(tok: Tokenizer, a: string[], b: string[] | null): { tokens: string[]; types: number[] } {
  if (!tok.post_processor) return { tokens: [...a, ...(b ?? [])], types: [...a.map(() => 0), ...(b ?? []).map(() => 1)] };
  const r = tok.post_processor(a, b, true);
  // A post-processor that adds nothing (ByteLevel) hands a pair back unmerged.
  const tokens = r.tokens_pair ? [...r.tokens, ...r.tokens_pair] : r.tokens;
  const types = r.token_type_ids ?? [...r.tokens.map(() => 0), ...(r.tokens_pair ?? []).map(() => 1)];
  return { tokens, types };
}

/** tokenizer_config.json's model_max_length where it is a real limit (not the 1e30 of "none"), else 512. */
export function modelMaxLength(t: LoadedTokenizer): number {
  const m = t.config.model_max_length;
  return typeof m === 'number' && Number.isInteger(m) && m > 0 && m <= 1e6 ? m : DEFAULT_MAX_LENGTH;
}

/** The largest id the tokenizer gives (a loop: a 250k-token vocabulary is too many arguments to spread). */
function largestId(tok: Tokenizer): number {
  let m = -1;
  for (const id of tok.get_vocab(true).values()) if (id > m) m = id;
  return m;
}
