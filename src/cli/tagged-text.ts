// Word-tagged text for `--task tag` (named entities, parts of speech): sentences as words with a
// label per word, from a .jsonl file as Hugging Face datasets write them ({"tokens": [...],
// "ner_tags": [...]}) or a CoNLL file (.conll: a word per line, its label in the last column, a
// blank line between sentences, -DOCSTART- lines skipped). Each word is tokenized on its own, as
// transformers' `is_split_into_words=True` does (a byte-level tokenizer sees it after a space, its
// add_prefix_space), and labelled as HF's token-classification examples label
// it: the word's first sub-word token carries its label, the others and the special tokens -100.
import { existsSync, readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { loadTokenizer, type TextSource } from './text-tokens.ts';
import { lengthCap, padId, padRows, postProcess, tokenIds } from '../text/encode.ts';
import { classIds } from './text-labels.ts';
import { IGNORE } from './token-task.ts';

export const TAGGED_EXTENSIONS = ['.jsonl', '.conll'] as const;
const WORD_KEYS = ['tokens', 'words'];
const TAG_KEYS = ['ner_tags', 'tags', 'labels', 'pos_tags', 'label'];

export interface TaggedText {
  values: Int32Array;
  /** A class per position, IGNORE where none (special tokens, later sub-words, padding). */
  labels: Float64Array;
  n: number;
  length: number;
  padToken: number | undefined;
  format: string;
}

interface Sentence { words: string[]; tags: string[]; where: string }

export function readTaggedText(path: string, src: TextSource): TaggedText {
  if (!existsSync(path)) throw new Error(`data not found: ${path}`);
  const ext = extname(path).toLowerCase();
  if (!(TAGGED_EXTENSIONS as readonly string[]).includes(ext)) throw new Error(`${path}: --task tag reads words with a label each from .jsonl ({"tokens": [...], "ner_tags": [...]}) or .conll (a word and its label a line, a blank line between sentences), or token ids from a .npy with --labels`);
  if (ext === '.conll' && src.labelColumn !== undefined) throw new Error(`--label-column ${src.labelColumn}: a CoNLL file's label is its last column`);
  const sentences = ext === '.jsonl' ? jsonlSentences(path, src.labelColumn) : conllSentences(path);
  if (!sentences.length) throw new Error(`${path}: no sentences`);
  const t = loadTokenizer(src);
  const ids = classIds(sentences.flatMap((s) => s.tags), path, src.modelPath);
  const spaced = prefixesSpace(t.tok);
  const cap = lengthCap(t, src);
  let k = 0, truncated = 0;
  const rows = sentences.map((s) => {
    const tags = ids.ids.subarray(k, k + s.words.length);
    k += s.words.length;
    const r = encodeWords(t.tok, s.words, tags, cap, spaced);
    if (r.truncated) truncated++;
    return r;
  });
  const length = src.fixedLength ?? Math.max(...rows.map((r) => r.ids.length));
  const pad = padId(t, src.padToken);
  const values = padRows(rows.map((r) => r.ids), length, pad.id, `${t.path}: the tokenizer has no pad token (nor an end-of-sequence token) to pad the sentences of ${path} to one length; give --pad-token`);
  const labels = new Float64Array(rows.length * length).fill(IGNORE);
  rows.forEach((r, i) => labels.set(r.labels, i * length));
  return {
    values, labels, n: rows.length, length, padToken: pad.id,
    format: `words with a label each, tokenized word by word by ${t.path}; ${pad.said}; labels on each word's first token${ids.mapping ? ` by ${ids.mapping}` : ''}${truncated ? `; ${truncated} of ${rows.length} cut to ${length} tokens` : ''}`,
  };
}

/**
 * Whether a word must be given a leading space to be tokenized as inside a sentence: a byte-level
 * pre-tokenizer (GPT-2, RoBERTa) that does not add one itself, as HF's add_prefix_space=True does
 * for pre-split words. SentencePiece's Metaspace marks every piece it is handed with ▁ already.
 */
function prefixesSpace(tok: Tokenizer): boolean {
  let needs = false;
  const walk = (c: unknown) => {
    if (!c || typeof c !== 'object') return;
    const o = c as { type?: unknown; add_prefix_space?: unknown; pretokenizers?: unknown[] };
    if (o.type === 'ByteLevel' && o.add_prefix_space !== true) needs = true;
    o.pretokenizers?.forEach(walk);
  };
  walk((tok as unknown as { tokenizer?: { pre_tokenizer?: unknown } }).tokenizer?.pre_tokenizer);
  return needs;
}

/** One sentence's ids and labels: each word's tokens (the first labelled), cut to fit, then the special tokens. */
function encodeWords(tok: Tokenizer, words: string[], tags: Int32Array, cap: number, spaced: boolean): { ids: number[]; labels: number[]; truncated: boolean } {
  const tokens: string[] = [], labels: number[] = [];
  words.forEach((w, i) => {
    const pieces = tok.tokenize(spaced ? ` ${w}` : w);
    pieces.forEach((p: string, j: number) => { tokens.push(p); labels.push(j === 0 ? tags[i]! : IGNORE); });
  });
  const specials = postProcess(tok, [], null).tokens.length;
  const room = cap - specials;
  if (room < 1) throw new Error(`--max-length ${cap} leaves no room for words beside the tokenizer's ${specials} special tokens`);
  const truncated = tokens.length > room;
  tokens.length = Math.min(tokens.length, room);
  labels.length = tokens.length;
  // The post-processor places the special tokens around the content: find where the content went.
  const all = postProcess(tok, tokens, null).tokens;
  const start = specials === 0 ? 0 : all.indexOf(tokens[0]!);
  const ids = tokenIds(tok, all);
  const out = new Array<number>(all.length).fill(IGNORE);
  labels.forEach((y, i) => (out[start + i] = y));
  return { ids, labels: out, truncated };
}

function jsonlSentences(path: string, labelColumn?: string): Sentence[] {
  const out: Sentence[] = [];
  readFileSync(path, 'utf8').split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === '') return;
    const where = `${path}:${i + 1}`;
    let v: unknown;
    try { v = JSON.parse(line); } catch (e) { throw new Error(`${where}: not JSON (${(e as Error).message})`); }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${where}: each line must be a JSON object with the words and their labels`);
    const o = v as Record<string, unknown>;
    const wordKey = WORD_KEYS.find((k) => k in o);
    const tagKey = labelColumn ?? TAG_KEYS.find((k) => k in o);
    if (!wordKey || !tagKey || !(tagKey in o)) throw new Error(`${where}: needs the words (${WORD_KEYS.join(' or ')}) and a label per word (${labelColumn ? `'${labelColumn}'` : TAG_KEYS.join(', ')}, or name it with --label-column); keys: ${Object.keys(o).join(', ')}`);
    const words = o[wordKey], tags = o[tagKey];
    if (!Array.isArray(words) || !words.every((w) => typeof w === 'string' && w.trim() !== '')) throw new Error(`${where}: '${wordKey}' must be an array of non-empty strings`);
    if (!Array.isArray(tags) || tags.length !== words.length || !tags.every((t) => typeof t === 'string' || (Number.isInteger(t) && t >= 0))) throw new Error(`${where}: '${tagKey}' must hold one label (a class index or name) per word: ${words.length} words, ${Array.isArray(tags) ? tags.length : 'no'} labels`);
    if (words.length) out.push({ words, tags: tags.map(String), where });
  });
  return out;
}

function conllSentences(path: string): Sentence[] {
  const out: Sentence[] = [];
  let cur: Sentence | null = null;
  readFileSync(path, 'utf8').split(/\r?\n/).forEach((line, i) => {
    const cells = line.trim().split(/\s+/);
    if (line.trim() === '' || cells[0] === '-DOCSTART-') { if (cur?.words.length) out.push(cur); cur = null; return; }
    if (cells.length < 2) throw new Error(`${path}:${i + 1}: a CoNLL line is a word and its label (the last column), got ${JSON.stringify(line.trim())}`);
    cur ??= { words: [], tags: [], where: `${path}:${i + 1}` };
    cur.words.push(cells[0]!);
    cur.tags.push(cells.at(-1)!);
  });
  if (cur && (cur as Sentence).words.length) out.push(cur);
  return out;
}
