// Transcripts as CTC label ids, as Hugging Face's Wav2Vec2CTCTokenizer reads them: a vocab.json
// (character → id, beside the model on the Hub), spaces as the word delimiter token ('|' unless
// tokenizer_config.json says otherwise), lower-cased first when the tokenizer does so. A character
// the vocabulary lacks is refused by name rather than read as <unk>: a transcript of lowercase
// letters against wav2vec2-base-960h's uppercase vocabulary would otherwise train on <unk> alone.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';

export interface CtcVocab {
  ids: Map<string, number>;
  /** The blank: the tokenizer's pad token (<pad>, id 0 in HF's wav2vec 2.0 vocabularies). */
  blank: number;
  delimiter: string;
  lowerCase: boolean;
  file: string;
}

/** Read a vocab.json (or a folder holding one, with its tokenizer_config.json when present). */
export function readCtcVocab(path: string): CtcVocab {
  const file = existsSync(path) && statSync(path).isDirectory() ? join(path, 'vocab.json') : path;
  if (!existsSync(file)) throw new Error(`--vocab: ${file} not found (give a vocab.json, or the model folder holding it)`);
  let raw: unknown;
  try { raw = JSON.parse(readFileSync(file, 'utf8')); } catch (e) { throw new Error(`--vocab ${file}: not JSON (${(e as Error).message})`); }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new Error(`--vocab ${file}: expected an object of token → id, as Hugging Face's vocab.json`);
  const ids = new Map<string, number>();
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    if (!Number.isInteger(v) || (v as number) < 0) throw new Error(`--vocab ${file}: token ${JSON.stringify(k)} has id ${JSON.stringify(v)}, not a non-negative integer`);
    ids.set(k, v as number);
  }
  const cfgFile = join(dirname(file), 'tokenizer_config.json');
  let cfg: Record<string, unknown> = {};
  if (existsSync(cfgFile)) {
    try { cfg = JSON.parse(readFileSync(cfgFile, 'utf8')) as Record<string, unknown>; } catch (e) { throw new Error(`--vocab: ${cfgFile} is not JSON (${(e as Error).message})`); }
  }
  const token = (v: unknown, d: string) => (typeof v === 'string' ? v : typeof v === 'object' && v && typeof (v as { content?: unknown }).content === 'string' ? (v as { content: string }).content : d);
  const pad = token(cfg.pad_token, '<pad>');
  const blank = ids.get(pad);
  if (blank === undefined) throw new Error(`--vocab ${file}: no pad token ${JSON.stringify(pad)}, the CTC blank; give it in the vocabulary, or the ids with --labels <.npy> and the blank with --pad-token`);
  return { ids, blank, delimiter: token(cfg.word_delimiter_token, '|'), lowerCase: cfg.do_lower_case === true, file };
}

/** One transcript's label ids; throws naming a character the vocabulary lacks. */
export function encodeTranscript(v: CtcVocab, text: string, where: string): number[] {
  const t = (v.lowerCase ? text.toLowerCase() : text).trim().split(/\s+/).filter(Boolean).join(v.delimiter);
  const out: number[] = [];
  for (const ch of t) {
    const id = v.ids.get(ch);
    if (id === undefined) {
      const other = v.ids.has(ch.toUpperCase()) ? ' (the vocabulary has its upper case: give uppercase transcripts)' : v.ids.has(ch.toLowerCase()) ? ' (the vocabulary has its lower case)' : '';
      throw new Error(`${where}: character ${JSON.stringify(ch)} is not in ${v.file}${other}`);
    }
    out.push(id);
  }
  return out;
}
