// Transcripts as CTC label ids, as Hugging Face's Wav2Vec2CTCTokenizer reads them: a vocab.json
// (character → id, beside the model on the Hub), spaces as the word delimiter token ('|' unless
// tokenizer_config.json says otherwise), lower-cased first when the tokenizer does so. A character
// the vocabulary lacks is refused by name rather than read as <unk>: a transcript of lowercase
// letters against wav2vec2-base-960h's uppercase vocabulary would otherwise train on <unk> alone.
// A .txt is a PaddleOCR character dictionary instead (ppocr_keys_v1.txt: one character a line), read
// as PaddleOCR's CTC label decoder does: the blank is class 0, line k is class k + 1, and a space
// follows the last line (use_space_char, on in its recognisers' configs).
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';

export interface CtcVocab {
  ids: Map<string, number>;
  /** The blank: the tokenizer's pad token (<pad>, id 0 in HF's wav2vec 2.0 vocabularies). */
  blank: number;
  /** Classes the vocabulary defines, blank included (a PaddleOCR dictionary's: lines + 2). */
  size: number;
  delimiter: string;
  lowerCase: boolean;
  file: string;
}

/** Read a vocab.json (or a folder holding one, with its tokenizer_config.json when present). */
export function readCtcVocab(path: string): CtcVocab {
  const file = existsSync(path) && statSync(path).isDirectory() ? join(path, 'vocab.json') : path;
  if (!existsSync(file)) throw new Error(`--vocab: ${file} not found (give a vocab.json, or the model folder holding it)`);
  if (/\.txt$/i.test(file)) return readCharacterDictionary(file);
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
  return { ids, blank, size: Math.max(...ids.values()) + 1, delimiter: token(cfg.word_delimiter_token, '|'), lowerCase: cfg.do_lower_case === true, file };
}

/** A PaddleOCR character dictionary: blank 0, line k → k + 1, then the space. */
function readCharacterDictionary(file: string): CtcVocab {
  const lines = readFileSync(file, 'utf8').split(/\r?\n/);
  if (lines.at(-1) === '') lines.pop();
  const ids = new Map<string, number>();
  lines.forEach((ch, k) => {
    if ([...ch].length !== 1) throw new Error(`--vocab ${file}: line ${k + 1} is ${JSON.stringify(ch)}; a character dictionary has one character a line`);
    if (ids.has(ch)) throw new Error(`--vocab ${file}: ${JSON.stringify(ch)} is on lines ${ids.get(ch)} and ${k + 1}`);
    ids.set(ch, k + 1);
  });
  if (!ids.has(' ')) ids.set(' ', lines.length + 1);
  return { ids, blank: 0, size: Math.max(...ids.values()) + 1, delimiter: ' ', lowerCase: false, file };
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
