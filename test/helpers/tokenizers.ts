// Hugging Face tokenizer files for the zoo's 32-token BERT and GPT, written as the tokenizers library
// writes them (tokenizer.json and tokenizer_config.json): a lowercasing WordPiece with BERT's
// [CLS] … [SEP] template, and a byte-level BPE with GPT-2's <|endoftext|> and no pad token.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });

/** The 28 words beside [PAD] [UNK] [CLS] [SEP]: ids 4 … 31. */
export const BERT_WORDS = ['good', 'bad', 'great', 'awful', 'the', 'film', 'movie', 'was', 'is', 'very', 'not', 'plot', 'acting', 'and', 'a', 'fun',
  'dull', '##s', '##ly', 'it', 'i', 'liked', 'hated', '.', ',', '!', 'story', 'music'];

export function writeBertTokenizer(dir: string, vocabWords = BERT_WORDS): void {
  const vocab: Record<string, number> = { '[PAD]': 0, '[UNK]': 1, '[CLS]': 2, '[SEP]': 3 };
  vocabWords.forEach((w, i) => (vocab[w] = 4 + i));
  const tok = (t: string, type: number) => ({ SpecialToken: { id: t, type_id: type } });
  const seq = (id: 'A' | 'B', type: number) => ({ Sequence: { id, type_id: type } });
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({
    version: '1.0', truncation: null, padding: null,
    added_tokens: ['[PAD]', '[UNK]', '[CLS]', '[SEP]'].map((t, i) => special(i, t)),
    normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [tok('[CLS]', 0), seq('A', 0), tok('[SEP]', 0)],
      pair: [tok('[CLS]', 0), seq('A', 0), tok('[SEP]', 0), seq('B', 1), tok('[SEP]', 1)],
      special_tokens: { '[CLS]': { id: '[CLS]', ids: [2], tokens: ['[CLS]'] }, '[SEP]': { id: '[SEP]', ids: [3], tokens: ['[SEP]'] } },
    },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab },
  }));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({
    tokenizer_class: 'BertTokenizer', do_lower_case: true, model_max_length: 512,
    pad_token: '[PAD]', unk_token: '[UNK]', cls_token: '[CLS]', sep_token: '[SEP]', mask_token: '[UNK]',
  }));
}

/** Byte-level BPE over the letters a–h: <|endoftext|> 0, the 8 letters and Ġ (a space) 1–9, 22 merges 10–31. */
export function writeGptTokenizer(dir: string): void {
  const letters = 'abcdefgh'.split('');
  const vocab: Record<string, number> = { '<|endoftext|>': 0 };
  [...letters, 'Ġ'].forEach((c, i) => (vocab[c] = 1 + i));
  const merges: string[] = [];
  for (const c of letters) { merges.push(`Ġ ${c}`); vocab[`Ġ${c}`] = Object.keys(vocab).length; }
  for (const [a, b] of [['a', 'b'], ['c', 'd'], ['e', 'f'], ['g', 'h'], ['Ġa', 'b'], ['Ġc', 'd'], ['Ġe', 'f'], ['Ġg', 'h'], ['ab', 'cd'], ['Ġab', 'cd'], ['ef', 'gh'], ['Ġef', 'gh'], ['Ġabcd', 'ef'], ['ab', 'ab']]) {
    merges.push(`${a} ${b}`);
    vocab[a + b] = Object.keys(vocab).length;
  }
  if (Object.keys(vocab).length !== 32) throw new Error(`GPT fixture vocabulary has ${Object.keys(vocab).length} tokens`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({
    version: '1.0', truncation: null, padding: null,
    added_tokens: [special(0, '<|endoftext|>')],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, vocab, merges },
  }));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({
    tokenizer_class: 'GPT2Tokenizer', model_max_length: 1024, add_prefix_space: false,
    bos_token: '<|endoftext|>', eos_token: '<|endoftext|>', unk_token: '<|endoftext|>',
  }));
}

/**
 * A SentencePiece-style BPE as Llama's tokenizer.json writes it: no pre-tokenizer, a normalizer
 * that prepends ▁ and turns spaces into ▁, byte fallback, <s> in front, and no pad token;
 * tokenizer_config.json's model_max_length the 1e30 of "no limit".
 */
export function writeLlamaTokenizer(dir: string): void {
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2, '▁': 3, t: 4, h: 5, e: 6, c: 7, a: 8, '▁t': 9, '▁th': 10, '▁the': 11, '▁c': 12, '▁ca': 13, '▁cat': 14, s: 15, at: 16 };
  const merges = ['▁ t', '▁t h', '▁th e', '▁ c', '▁c a', '▁ca t', 'a t'];
  const bos = { SpecialToken: { id: '<s>', type_id: 0 } };
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({
    version: '1.0', truncation: null, padding: null,
    added_tokens: [special(0, '<unk>'), special(1, '<s>'), special(2, '</s>')],
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
    pre_tokenizer: null,
    post_processor: { type: 'TemplateProcessing', single: [bos, { Sequence: { id: 'A', type_id: 0 } }], pair: [bos, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '<s>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }], special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } } },
    decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] },
    model: { type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, vocab, merges },
  }));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>', model_max_length: 1e30, legacy: false }));
}
