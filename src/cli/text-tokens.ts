// Text files for token models, tokenized by the model's own Hugging Face tokenizer (tokenizer.json and
// tokenizer_config.json, read by @huggingface/tokenizers, the tokenizer transformers.js uses), so a
// user can point `refit train|eval|adapt` at a .txt, .csv, .tsv or .jsonl file instead of a .npy of
// ids. The tokenizer is --tokenizer (the file or its folder) or, when not given, the tokenizer.json
// beside the model or one folder up (transformers.js keeps onnx/model.onnx under the model folder).
//
// Rows are encoded as the Python tokenizer encodes them with `truncation=True`: special tokens from
// the tokenizer's post-processor ([CLS] … [SEP], <s> … </s>), a text pair as one sequence (its
// second segment's token_type_ids 1), the content cut at the end to fit --max-length, the longer of
// a pair first (`longest_first`, as the Rust tokenizers cut it), and padded on the right with the pad token to one length: the
// model's own where its export fixes one, else the longest row. The encoding itself, which the
// browser build shares, is ../text/encode.ts; this module finds and reads the files.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, extname, join } from 'node:path';
import { parse } from 'csv-parse/sync';
import { encodeText, encoderOf, lengthCap, padId, padRows, pairSegments, tokenizerOf, type LoadedTokenizer, type PairSegments, type TextEncoder } from '../text/encode.ts';
import { LABEL_NAMES } from './data-files.ts';

export const TEXT_EXTENSIONS = ['.txt', '.csv', '.tsv', '.jsonl'] as const;

/** What the CLI was told about text data: where the model is (to find its tokenizer) and the options. */
export interface TextSource {
  modelPath: string;
  /** tokenizer.json, or the folder holding it (its tokenizer_config.json read too). */
  tokenizer?: string;
  maxLength?: number;
  /** CSV/TSV/JSONL: the columns holding text, in order (default: every column but the label's). */
  textColumns?: string[];
  /** CSV/TSV/JSONL: the label column (a name, a 0-based index, 'last' or 'none'). */
  labelColumn?: string;
  /** The sequence length the model's export fixes, if any: every row is padded or cut to it. */
  fixedLength?: number | null;
  /** The rows of the model's position table, if it has one: rows are cut to fit it. */
  positions?: number | null;
  /** Pad id given by --pad-token (else the tokenizer's). */
  padToken?: number;
}

export interface TextTokens {
  /** Token ids [n · columns, length], row-major. */
  values: Int32Array;
  /** token_type_ids in the same layout (a pair's second segment 1), or null when all 0. */
  types: Uint8Array | null;
  n: number;
  columns: number;
  length: number;
  padToken: number | undefined;
  /** The label column's cells, one per row, when one was read. */
  labels: string[] | null;
  /** Rows cut to fit the length. */
  truncated: number;
  /** Where the tokenizer came from and which columns were read: for the report. */
  format: string;
  /** The tokenizer.json read, and how it marks a pair's second segment (pairSegments). */
  tokenizer: { path: string; segments: PairSegments };
}

/** The CLI's options for text data, as commander gives them. */
export interface TextOptions {
  /** tokenizer.json or its folder (default: beside the model or one folder up). */
  tokenizer?: string;
  maxLength?: string | number;
  /** Comma-separated text columns of a .csv, .tsv or .jsonl file. */
  textColumn?: string;
}

/** The CLI's text options (--tokenizer, --max-length, --text-column), checked before anything loads. */
export function textSource(modelPath: string, o: TextOptions, padToken?: number): TextSource {
  let maxLength: number | undefined;
  if (o.maxLength !== undefined) {
    maxLength = Number(o.maxLength);
    if (!Number.isInteger(maxLength) || maxLength < 2) throw new Error(`--max-length must be an integer ≥ 2 (tokens a sequence), got ${o.maxLength}`);
  }
  const textColumns = o.textColumn?.split(',').map((c) => c.trim()).filter((c) => c !== '');
  return { modelPath, ...(o.tokenizer !== undefined ? { tokenizer: o.tokenizer } : {}), ...(maxLength !== undefined ? { maxLength } : {}),
    ...(textColumns?.length ? { textColumns } : {}), ...(padToken !== undefined ? { padToken } : {}) };
}

export const isTextFile = (path: string): boolean => (TEXT_EXTENSIONS as readonly string[]).includes(extname(path).toLowerCase());

/** The tokenizer.json beside the model or one folder up (transformers.js's layout), if any. */
const besideModel = (modelPath: string): string | undefined =>
  [join(dirname(modelPath), 'tokenizer.json'), join(dirname(dirname(modelPath)), 'tokenizer.json')].find((f) => existsSync(f));

/** The tokenizer for `src`: --tokenizer, else tokenizer.json beside the model or one folder up. */
export function loadTokenizer(src: TextSource): LoadedTokenizer {
  let file: string | undefined;
  if (src.tokenizer !== undefined) {
    if (!existsSync(src.tokenizer)) throw new Error(`--tokenizer ${src.tokenizer}: not found`);
    file = statSync(src.tokenizer).isDirectory() ? join(src.tokenizer, 'tokenizer.json') : src.tokenizer;
    if (!existsSync(file)) throw new Error(`--tokenizer ${src.tokenizer}: the folder has no tokenizer.json`);
  } else {
    file = besideModel(src.modelPath);
    if (!file) throw new Error(`text data needs the model's tokenizer: no tokenizer.json beside ${src.modelPath} or one folder up; give --tokenizer <tokenizer.json or its folder> (or tokenize first and pass a .npy of ids)`);
  }
  const cfgFile = join(dirname(file), 'tokenizer_config.json');
  return tokenizerOf(readJson(file, 'tokenizer.json'), existsSync(cfgFile) ? readJson(cfgFile, 'tokenizer_config.json') : {}, file);
}

function readJson(file: string, what: string): Record<string, unknown> {
  try {
    const v = JSON.parse(readFileSync(file, 'utf8')) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not a JSON object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw new Error(`${file}: unreadable ${what} (${(e as Error).message})`);
  }
}

/** Rows of text columns (and the label column's cells) from a .txt, .csv, .tsv or .jsonl file. */
export function readTextRows(path: string, o: { textColumns?: string[]; labelColumn?: string; wantLabels: boolean }): { rows: string[][]; labels: string[] | null; columns: string[] } {
  if (!existsSync(path)) throw new Error(`data not found: ${path}`);
  const ext = extname(path).toLowerCase();
  const content = readFileSync(path, 'utf8');
  if (ext === '.txt') {
    if (o.textColumns || (o.labelColumn !== undefined && o.labelColumn !== 'none')) throw new Error(`${path}: a .txt file is one text a line, with no columns; put texts and labels in a .csv, .tsv or .jsonl file, or labels in --labels`);
    const rows = content.split(/\r?\n/).filter((l) => l.trim() !== '').map((l) => [l]);
    if (!rows.length) throw new Error(`${path}: no text (every line is empty)`);
    return { rows, labels: null, columns: ['text'] };
  }
  let records: Record<string, unknown>[];
  if (ext === '.jsonl') {
    records = content.split(/\r?\n/).map((l, i) => ({ l, i })).filter(({ l }) => l.trim() !== '').map(({ l, i }) => {
      let v: unknown;
      try { v = JSON.parse(l); } catch (e) { throw new Error(`${path}:${i + 1}: not JSON (${(e as Error).message})`); }
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${path}:${i + 1}: each line must be a JSON object of columns`);
      return v as Record<string, unknown>;
    });
  } else {
    try {
      // TSV as GLUE and most corpora write it: no quoting, a quote in a sentence is a character
      records = parse(content, { columns: true, skip_empty_lines: true, bom: true, delimiter: ext === '.tsv' ? '\t' : ',', quote: ext === '.tsv' ? false : '"' }) as Record<string, unknown>[];
    } catch (e) {
      throw new Error(`${path}: ${(e as Error).message} (text data as CSV needs a header row naming its columns, and quotes around cells with commas or line breaks)`);
    }
  }
  if (!records.length) throw new Error(`${path}: no rows`);
  const columns = Object.keys(records[0]!);
  const label = labelColumnOf(path, columns, o.labelColumn, o.wantLabels);
  // Where no label is read (a source set, a corpus), a column named like one is still not text.
  const unread = !o.wantLabels ? columns.find((c) => LABEL_NAMES.has(c.toLowerCase())) : undefined;
  const text = o.textColumns ?? columns.filter((c) => c !== label && c !== unread);
  for (const c of text) if (!columns.includes(c)) throw new Error(`${path}: no column '${c}' (columns: ${columns.join(', ')})`);
  if (!text.length) throw new Error(`${path}: no text column (columns: ${columns.join(', ')})`);
  const rows = records.map((r, i) => text.map((c) => {
    const v = r[c];
    if (typeof v !== 'string' && typeof v !== 'number') throw new Error(`${path}: row ${i + 1} has no text in column '${c}'`);
    return String(v);
  }));
  const labels = label === null ? null : records.map((r, i) => {
    const v = r[label];
    if (v === undefined || v === null || String(v).trim() === '') throw new Error(`${path}: row ${i + 1} has no label in column '${label}'`);
    return String(v).trim();
  });
  return { rows, labels, columns: text };
}

function labelColumnOf(path: string, columns: string[], given: string | undefined, want: boolean): string | null {
  if (given === 'none' || (!want && given === undefined)) return null;
  if (!want) throw new Error(`--label-column: this task reads no label column from ${path}`);
  if (given === undefined) return columns.find((c) => LABEL_NAMES.has(c.toLowerCase())) ?? (columns.length > 1 ? columns.at(-1)! : null);
  if (given === 'last') return columns.at(-1)!;
  if (/^\d+$/.test(given)) {
    const c = columns[Number(given)];
    if (c === undefined) throw new Error(`${path}: label column ${given} is past the ${columns.length} columns`);
    return c;
  }
  if (!columns.includes(given)) throw new Error(`${path}: no column named '${given}' (columns: ${columns.join(', ')}); give --label-column a name, a 0-based index, 'last' or 'none'`);
  return given;
}

/**
 * Text rows of `path` as token ids [n · columns, length]: each row one sequence (two text columns: a
 * pair), or with `grouped` each column its own sequence (--task pairs: anchor, positive, negatives).
 */
export function readTextTokens(path: string, src: TextSource, o: { grouped?: boolean; wantLabels?: boolean; minLength?: number } = {}): TextTokens {
  const t = loadTokenizer(src);
  const { rows, labels, columns } = readTextRows(path, { ...(src.textColumns ? { textColumns: src.textColumns } : {}), ...(src.labelColumn !== undefined ? { labelColumn: src.labelColumn } : {}), wantLabels: o.wantLabels ?? false });
  if (o.grouped && columns.length < 2) throw new Error(`${path}: --task pairs needs at least two text columns (anchor, positive, then any hard negatives); found ${columns.join(', ')}`);
  if (!o.grouped && columns.length > 2) throw new Error(`${path}: ${columns.length} text columns (${columns.join(', ')}); a sequence is one text or a pair of two: choose with --text-column`);
  const cap = lengthCap(t, src);
  const seqs = o.grouped ? rows.flatMap((r) => r.map((text) => [text, null] as const)) : rows.map((r) => [r[0]!, r[1] ?? null] as const);
  const encoded = seqs.map(([a, b]) => encodeText(t.tok, a, b, cap));
  const length = src.fixedLength ?? Math.max(o.minLength ?? 1, ...encoded.map((e) => e.ids.length));
  const pad = padId(t, src.padToken);
  const values = padRows(encoded.map((e) => e.ids), length, pad.id, `${t.path}: the tokenizer has no pad token (nor an end-of-sequence token) to pad the rows of ${path} to one length; give --pad-token`);
  const types = new Uint8Array(seqs.length * length);
  encoded.forEach((e, s) => types.set(e.types, s * length));
  const truncated = encoded.filter((e) => e.truncated).length;
  const pairNote = !o.grouped && columns.length === 2 ? ' as pairs' : '';
  return {
    values, types: types.some((v) => v !== 0) ? types : null, n: rows.length, columns: o.grouped ? columns.length : 1, length,
    padToken: pad.id, labels, truncated, tokenizer: { path: t.path, segments: pairSegments(t.tok) },
    format: `text (${columns.join(', ')}${pairNote}) tokenized by ${t.path}; ${pad.said}${truncated ? `; ${truncated} of ${seqs.length} cut to ${length} tokens` : ''}`,
  };
}

/** Text data's one line on stderr, outside --json: which tokenizer, pad, cut and label names it went through (train, eval). */
export function sayTextData(data: string, format: string, json?: boolean): void {
  if (!json && /tokeniz/.test(format)) process.stderr.write(`refit: ${data}: ${format}\n`);
}

/**
 * An encoder for requests (refit serve): the tokenizer of `src`, or null when none was given and
 * none lies beside the model (the service then takes token ids only).
 */
export function textEncoder(src: TextSource): TextEncoder | null {
  if (src.tokenizer === undefined && !besideModel(src.modelPath)) return null;
  return encoderOf(loadTokenizer(src), src);
}

