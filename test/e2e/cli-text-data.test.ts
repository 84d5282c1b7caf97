// Text data for token models: `refit train|eval|adapt` read .txt, .csv and .jsonl files and tokenize
// them with the model's own Hugging Face tokenizer (src/cli/text-tokens.ts), on the zoo's BERT-style
// classifier and GPT-style decoder with tokenizers written for their 32-token vocabularies.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTrain } from '../../src/cli/train.ts';
import { runEval } from '../../src/cli/eval.ts';
import { runAdapt } from '../../src/cli/adapt.ts';
import { loadSeq2seq, seq2seqTask } from '../../src/cli/seq2seq-task.ts';
import { loadTokenizer, readTextTokens, textEncoder } from '../../src/cli/text-tokens.ts';
import { encodeText, createTextEncoder } from '../../src/text/encode.ts';
import { readTaggedText } from '../../src/cli/tagged-text.ts';
import { inspectModel, formatInspect } from '../../src/cli/inspect.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { encodeModel } from '../../src/onnx/proto.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { npy } from '../helpers/cli.ts';
import { BERT_WORDS, writeBertTokenizer, writeGptTokenizer, writeLlamaTokenizer } from '../helpers/tokenizers.ts';

const zoo = (m: string) => new URL(`../fixtures/zoo/${m}/model.onnx`, import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'refit-text-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));
const p = (f: string) => join(dir, f);
writeBertTokenizer(p('bert-tok'));
writeGptTokenizer(p('gpt-tok'));
// transformers.js's layout: the tokenizer in the model folder, the model under onnx/
mkdirSync(p('bert-hub/onnx'), { recursive: true });
copyFileSync(zoo('bert'), p('bert-hub/onnx/model.onnx'));
writeBertTokenizer(p('bert-hub'));

/** Reviews whose label is whether a liked/good word or a hated/bad word comes first, some with commas and quotes. */
function reviews(n: number, seed: number): { text: string; label: string }[] {
  const r = new Rng(seed);
  const pick = <T,>(a: T[]) => a[Math.floor(r.next() * a.length)]!;
  return Array.from({ length: n }, () => {
    const positive = r.next() < 0.5;
    const word = positive ? pick(['good', 'great', 'fun', 'liked']) : pick(['bad', 'awful', 'dull', 'hated']);
    const text = `${pick(['the film', 'the movie', 'the plot', 'i'])} ${word}${pick(['', ', and the music', '!', ', "very" dull story'.replace('dull', pick(['fun', 'dull']))])}`;
    return { text, label: positive ? 'positive' : 'negative' };
  });
}
/** ids [N, T] → an embedding of 20 rows → a Linear to 2 tags per token (a tagger's shape, untrained). */
function tagger(): Uint8Array {
  const r = new Rng(2);
  const b = new ModelBuilder({ opset: 14 }).input('input_ids', 'int64', ['batch', 'tokens'])
    .initializer('embed.weight', f32([20, 8], r.fill(new Float32Array(160), 0.1, 'normal'))).initializer('classifier.weight', f32([8, 2], r.fill(new Float32Array(16), 0.1, 'normal')))
    .initializer('classifier.bias', f32([2], [0, 0]))
    .node('Gather', ['embed.weight', 'input_ids'], ['h'], { axis: 0 }).node('MatMul', ['h', 'classifier.weight'], ['z']).node('Add', ['z', 'classifier.bias'], ['logits']);
  return encodeModel(b.output('logits', 'float32', ['batch', 'tokens', 2]).build());
}
const csvCell = (s: string) => (/[",\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s);

test('rows are encoded as the tokenizer encodes them, pairs with their segments, cut longest first', () => {
  const { tok } = loadTokenizer({ modelPath: 'unused', tokenizer: p('bert-tok') });
  const one = 'The film was VERY good, I liked it!';
  assert.deepEqual(encodeText(tok, one, null, 64).ids, tok.encode(one).ids);
  const pair = encodeText(tok, 'the film', 'a fun plot', 64);
  const want = tok.encode('the film', { text_pair: 'a fun plot', return_token_type_ids: true });
  assert.deepEqual(pair.ids, want.ids);
  assert.deepEqual(pair.types, want.token_type_ids);
  assert.deepEqual(pair.types, [0, 0, 0, 0, 1, 1, 1, 1]);
  // 4 + 3 content tokens into 8 − 3 special: the longer loses one, then the tie is cut from the pair (HF's longest_first)
  const cut = encodeText(tok, 'the film was good', 'a fun plot', 8);
  assert.equal(cut.truncated, true);
  assert.deepEqual(cut.ids, tok.encode('the film was', { text_pair: 'a fun' }).ids);
  const single = encodeText(tok, one, null, 5);
  assert.deepEqual(single.ids, tok.encode('the film was').ids, '[CLS] and [SEP] kept around the cut content');
  assert.throws(() => encodeText(tok, one, null, 2), /--max-length 2 leaves no room for text beside the tokenizer's 2 special tokens/);
  // the library's encoder from the parsed files (what a page holds) gives what the CLI's does
  const parsed = createTextEncoder(JSON.parse(readFileSync(p('bert-tok/tokenizer.json'), 'utf8')), JSON.parse(readFileSync(p('bert-tok/tokenizer_config.json'), 'utf8')));
  const fromFiles = textEncoder({ modelPath: 'unused', tokenizer: p('bert-tok') })!;
  assert.deepEqual(parsed.encode([one, 'bad']), fromFiles.encode([one, 'bad']));
  assert.deepEqual([parsed.encode([one, 'bad']).length, parsed.padToken, parsed.vocabSize], [12, 0, 32]);
  assert.throws(() => createTextEncoder({ model: 'nonsense' }), /not a tokenizer @huggingface\/tokenizers can read/);

  // SentencePiece-style (Llama): ▁ from the normalizer, <s> in front only, no pad token (padded
  // with </s>), 1e30 as model_max_length read as no limit (512); words for --task tag get their ▁ each
  writeLlamaTokenizer(p('llama-tok'));
  const llama = loadTokenizer({ modelPath: 'unused', tokenizer: p('llama-tok') });
  for (const s of ['the cat', 'the cats', 'cat the the']) assert.deepEqual(encodeText(llama.tok, s, null, 512).ids, llama.tok.encode(s).ids, s);
  assert.deepEqual(encodeText(llama.tok, 'the cats', null, 512).ids, [1, 11, 14, 15]);
  assert.deepEqual(encodeText(llama.tok, 'the cat the cat', null, 3).ids, [1, 11, 14]);
  writeFileSync(p('llama.jsonl'), JSON.stringify({ tokens: ['the', 'cats'], ner_tags: ['O', 'B'] }) + '\n' + JSON.stringify({ tokens: ['cat'], ner_tags: ['B'] }));
  const tagged = readTaggedText(p('llama.jsonl'), { modelPath: 'unused', tokenizer: p('llama-tok') });
  assert.deepEqual(Array.from(tagged.values), [1, 11, 14, 15, 1, 14, 2, 2]);
  assert.deepEqual(Array.from(tagged.labels), [-100, 1, 0, -100, -100, 0, -100, -100]);
  assert.match(tagged.format, /no pad token: padded with the end-of-sequence token 2/);
});

test('a BERT-style classifier trains from a CSV of texts with named labels, and the same ids as .npy give the same evaluation', async () => {
  const rows = reviews(240, 1);
  writeFileSync(p('reviews.csv'), ['review,sentiment', ...rows.map((r) => `${csvCell(r.text)},${r.label}`)].join('\n') + '\n');
  // Measured: validation accuracy 0.5 (chance) for 4 epochs, then 1.0 at epochs 5 and 6 (lr 0.01, seeded).
  const r = await runTrain(p('bert-hub/onnx/model.onnx'), { data: p('reviews.csv'), epochs: 6, lr: 0.01, out: p('text.onnx'), json: true });
  assert.match(r.data.format, /^text \(review\) tokenized by .*bert-hub\/tokenizer\.json; pad token 0; labels by sorted names: 0 negative, 1 positive$/);
  const info = await inspectModel(p('bert-hub/onnx/model.onnx'));
  assert.deepEqual(info.tokens?.tokenizer, { path: p('bert-hub/tokenizer.json'), vocab: 32, pad: 'pad token 0', fits: true, maxLength: 512, pairs: 'text pairs: token_type_ids 1 after the first separator (id 3)' });
  assert.equal(info.tokens?.positions, 16);
  assert.match(formatInspect(info), /tokenizer: {2}.*bert-hub\/tokenizer\.json \(32 tokens; pad token 0; sequences cut to 16 tokens, the model's position table \(the tokenizer says 512\); text pairs: token_type_ids 1 after the first separator \(id 3\)\): train, eval, adapt and serve take text/);
  assert.ok(r.epochs.at(-1)!.valAccuracy! >= 0.85, JSON.stringify(r.epochs.map((e) => e.valAccuracy)));
  const byText = await runEval(p('text.onnx'), { data: p('reviews.csv'), tokenizer: p('bert-tok'), json: true });
  // the same rows, tokenized here, padded with 0, as ids and labels files
  const t = readTextTokens(p('reviews.csv'), { modelPath: zoo('bert'), tokenizer: p('bert-tok') }, { wantLabels: true });
  writeFileSync(p('ids.npy'), npy('<i8', [t.n, t.length], BigInt64Array.from(t.values, BigInt)));
  writeFileSync(p('labels.npy'), npy('<i8', [t.n], BigInt64Array.from(t.labels!, (l) => BigInt(l === 'positive' ? 1 : 0))));
  const byIds = await runEval(p('text.onnx'), { data: p('ids.npy'), labels: p('labels.npy'), padToken: 0, json: true });
  assert.equal(byText.samples, 240);
  assert.ok(Math.abs(byText.loss - byIds.loss) < 1e-6 && byText.accuracy === byIds.accuracy, `text ${byText.loss} / ${byText.accuracy}, ids ${byIds.loss} / ${byIds.accuracy}`);
});

test('pairs of texts feed token_type_ids; config.json\'s label2id names the classes; JSONL reads the same', async () => {
  writeFileSync(p('bert-hub/config.json'), JSON.stringify({ label2id: { contradiction: 0, entailment: 1 } }));
  try {
    const rows = Array.from({ length: 40 }, (_, i) => ({ premise: i % 2 ? 'the film was good' : 'the plot was dull', hypothesis: i % 3 ? 'it was fun' : 'it was bad', label: i % 2 ? 'entailment' : 'contradiction' }));
    writeFileSync(p('nli.jsonl'), rows.map((r) => JSON.stringify(r)).join('\n'));
    writeFileSync(p('nli.csv'), ['premise,hypothesis,label', ...rows.map((r) => `${r.premise},${r.hypothesis},${r.label}`)].join('\n'));
    // TSV as GLUE writes it: no quoting, so a quote inside a sentence is a character
    writeFileSync(p('nli.tsv'), ['premise\thypothesis\tlabel', ...rows.map((r) => `${r.premise}\t${r.hypothesis}\t${r.label}`)].join('\n'));
    writeFileSync(p('quoted.tsv'), 'sentence\tlabel\nthe "film" was good\tentailment\n');
    assert.deepEqual(readTextTokens(p('quoted.tsv'), { modelPath: p('bert-hub/onnx/model.onnx') }, { wantLabels: true }).labels, ['entailment']);
    const jsonl = await runEval(p('bert-hub/onnx/model.onnx'), { data: p('nli.jsonl'), json: true });
    assert.equal((await runEval(p('bert-hub/onnx/model.onnx'), { data: p('nli.tsv'), json: true })).loss, jsonl.loss);
    const csv = await runEval(p('bert-hub/onnx/model.onnx'), { data: p('nli.csv'), json: true });
    assert.equal(jsonl.loss, csv.loss);
    const t = readTextTokens(p('nli.csv'), { modelPath: p('bert-hub/onnx/model.onnx') }, { wantLabels: true });
    assert.ok(t.types && t.types.some((v) => v === 1), 'the hypothesis is segment 1');
    assert.match(t.format, /premise, hypothesis as pairs/);
    // the same ids as a .npy (token_type_ids all 0) score differently: the pair's segments reach the model
    writeFileSync(p('nli-ids.npy'), npy('<i8', [t.n, t.length], BigInt64Array.from(t.values, BigInt)));
    writeFileSync(p('nli-labels.npy'), npy('<i8', [t.n], BigInt64Array.from(rows, (r) => (r.label === 'entailment' ? 1n : 0n))));
    const oneSegment = await runEval(p('bert-hub/onnx/model.onnx'), { data: p('nli-ids.npy'), labels: p('nli-labels.npy'), padToken: 0, json: true });
    assert.ok(Math.abs(oneSegment.loss - csv.loss) > 1e-4, `segments ${csv.loss}, all 0 ${oneSegment.loss}`);
    await assert.rejects(runEval(p('bert-hub/onnx/model.onnx'), { data: p('nli.csv'), textColumn: 'premise,label', labelColumn: 'hypothesis', json: true }),
      /labels 'it was bad', 'it was fun' not in .*config\.json's label2id \(contradiction, entailment\)/);
  } finally { rmSync(p('bert-hub/config.json')); }
});

test('a GPT-style decoder trains next-token on a .txt file; a tokenizer without a pad token pads with its end-of-sequence token', async () => {
  const r = new Rng(3);
  const words = ['ab', 'cd', 'ef', 'gh', 'abcd', 'efgh'];
  const lines = Array.from({ length: 60 }, () => Array.from({ length: 2 + Math.floor(r.next() * 5) }, () => words[Math.floor(r.next() * words.length)]).join(' '));
  writeFileSync(p('corpus.txt'), lines.join('\n') + '\n\n');
  const before = await runEval(zoo('gpt'), { task: 'next-token', data: p('corpus.txt'), tokenizer: p('gpt-tok'), json: true });
  const trained = await runTrain(zoo('gpt'), { task: 'next-token', data: p('corpus.txt'), tokenizer: p('gpt-tok'), maxLength: 16, epochs: 4, lr: 0.01, out: p('gpt.onnx'), json: true });
  assert.match(trained.data.format, /no pad token: padded with the end-of-sequence token 0/);
  assert.equal(trained.data.samples, 60);
  // Measured: 3.84 → 2.78 (seeded)
  const after = await runEval(p('gpt.onnx'), { task: 'next-token', data: p('corpus.txt'), tokenizer: p('gpt-tok'), json: true });
  assert.ok(after.loss < before.loss - 0.3, `next-token loss ${before.loss} → ${after.loss}`);
  // dynamic evaluation over the same lines as a stream
  const dyn = await runAdapt(zoo('gpt'), { method: 'dynamic-eval', stream: p('corpus.txt'), tokenizer: p('gpt-tok'), maxLength: 16, batchSize: 20, out: p('dyn.csv'), json: true });
  assert.equal(dyn.stream.samples, 60);
  assert.match(dyn.stream.format, /tokenized by .*gpt-tok/);
  assert.ok(dyn.languageModel!.nll < dyn.languageModel!.sourceNll, `dynamic evaluation ${dyn.languageModel!.sourceNll} → ${dyn.languageModel!.nll}`);
});

test('--task pairs reads an anchor and a positive column; --task seq2seq reads source and target lines', async () => {
  // the feature-extraction export's 20 ids and the BART-style pair's 16: [PAD] [UNK] [CLS] [SEP] and 16 or 12 words
  writeBertTokenizer(p('tok20'), BERT_WORDS.slice(0, 16));
  writeBertTokenizer(p('tok16'), BERT_WORDS.slice(0, 12));
  const r = new Rng(7);
  const w = (k: number) => Array.from({ length: k }, () => BERT_WORDS[Math.floor(r.next() * 16)]!).join(' ');
  writeFileSync(p('pairs.csv'), ['anchor,positive', ...Array.from({ length: 24 }, () => `${w(3)},${w(2)}`)].join('\n'));
  const pairs = await runTrain(new URL('../fixtures/exports/feature_extraction/model.onnx', import.meta.url).pathname,
    { task: 'pairs', data: p('pairs.csv'), tokenizer: p('tok20'), epochs: 1, batchSize: 8, out: p('pairs.onnx'), json: true });
  assert.match(pairs.data.format, /^text \(anchor, positive\) tokenized by /);
  assert.deepEqual(pairs.data.sampleShape, [2, 5], 'two columns of [CLS] + at most 3 words + [SEP]');

  const fix = new URL('../fixtures/seq2seq/', import.meta.url).pathname;
  writeFileSync(p('src.txt'), 'the film was good\nbad\n');
  writeFileSync(p('tgt.txt'), 'good film the\nbad bad\n');
  const pair = await loadSeq2seq(join(fix, 'encoder_model.onnx'), join(fix, 'decoder_model_merged.onnx'));
  try {
    const task = seq2seqTask(pair, { data: p('src.txt'), targets: p('tgt.txt'), decoderStart: 2, text: { modelPath: join(fix, 'encoder_model.onnx'), tokenizer: p('tok16') } });
    const f = task.feeds([0, 1]);
    // targets [CLS] good film the [SEP] / [CLS] bad bad [SEP] [PAD]: labels as they are, the pad unscored; decoder ids shifted right behind the start
    assert.deepEqual([...f.refit_labels!.data].map(Number), [2, 4, 9, 8, 3, 2, 5, 5, 3, -100]);
    assert.deepEqual([...f[pair.decoderIds]!.data].map(Number), [2, 2, 4, 9, 8, 2, 2, 5, 5, 3]);
    assert.deepEqual([...f.input_ids!.data].map(Number), [2, 8, 9, 11, 4, 3, 2, 5, 3, 0, 0, 0]);
    assert.deepEqual([...f.attention_mask!.data].map(Number), [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]);
  } finally { await pair.release(); }
});

test('--task tag reads words with a label each (JSONL as HF datasets write it, or CoNLL): each word\'s first token labelled, as HF\'s examples do', async () => {
  const words = ['the', 'film', '##s', 'was', 'good', 'bad', 'plot', 'is', 'a', 'fun', 'dull', 'it', 'i', 'liked', 'hated', '.'];
  writeBertTokenizer(p('tok-tag'), words); // ids: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, the 4, film 5, ##s 6, was 7, good 8, …
  writeFileSync(p('tiny.jsonl'), JSON.stringify({ id: '0', tokens: ['The', 'films', 'was', 'good'], ner_tags: ['O', 'B-ENT', 'O', 'O'] }) + '\n');
  writeFileSync(p('tiny.conll'), '-DOCSTART- -X- O\n\nThe DT O\nfilms NNS B-ENT\nwas VBD O\ngood JJ O\n\n');
  for (const f of ['tiny.jsonl', 'tiny.conll']) {
    const t = readTaggedText(p(f), { modelPath: 'unused', tokenizer: p('tok-tag') });
    assert.deepEqual(Array.from(t.values), [2, 4, 5, 6, 7, 8, 3]);
    // sorted names: B-ENT 0, O 1; [CLS], the "##s" of "films" and [SEP] unlabelled
    assert.deepEqual(Array.from(t.labels), [-100, 1, 0, -100, 1, 1, -100], f);
    assert.match(t.format, /labels on each word's first token by sorted names: 0 B-ENT, 1 O/);
  }
  // a tagger learns which words are sentiment words (B-SENT) from JSONL, and eval agrees with training's last validation
  writeFileSync(p('tagger.onnx'), tagger());
  const r = new Rng(11);
  const sentiment = new Set(['good', 'bad', 'fun', 'dull', 'liked', 'hated']);
  const plain = ['the', 'film', 'films', 'was', 'plot', 'is', 'a', 'it', 'i', '.'];
  const lines = Array.from({ length: 96 }, () => {
    const toks = Array.from({ length: 2 + Math.floor(r.next() * 5) }, () => {
      const pool = r.next() < 0.4 ? [...sentiment] : plain;
      return pool[Math.floor(r.next() * pool.length)]!;
    });
    return JSON.stringify({ tokens: toks, ner_tags: toks.map((w) => (sentiment.has(w) ? 'B-SENT' : 'O')) });
  });
  writeFileSync(p('ner.jsonl'), lines.join('\n'));
  const common = { task: 'tag', data: p('ner.jsonl'), tokenizer: p('tok-tag'), json: true };
  const before = await runEval(p('tagger.onnx'), common);
  const trained = await runTrain(p('tagger.onnx'), { ...common, epochs: 10, lr: 0.05, out: p('tagged.onnx') });
  const after = await runEval(p('tagged.onnx'), common);
  // Measured: token accuracy 0.50 → 1.00 (seeded)
  assert.ok(after.accuracy > 0.9 && after.accuracy > before.accuracy + 0.2, `token accuracy ${before.accuracy} → ${after.accuracy}`);
  assert.equal(trained.data.samples, 96);
  await assert.rejects(runTrain(p('tagger.onnx'), { ...common, labels: p('labels.npy'), out: p('no.onnx') }), /carries a label per word already/);
  writeFileSync(p('ragged.jsonl'), JSON.stringify({ tokens: ['the', 'film'], ner_tags: ['O'] }));
  await assert.rejects(runTrain(p('tagger.onnx'), { ...common, data: p('ragged.jsonl'), out: p('no.onnx') }), /ragged\.jsonl:1: 'ner_tags' must hold one label \(a class index or name\) per word: 2 words, 1 labels/);
  await assert.rejects(runTrain(p('tagger.onnx'), { ...common, data: p('tiny.conll'), labelColumn: 'x', out: p('no.onnx') }), /--label-column x: a CoNLL file's label is its last column/);
  writeFileSync(p('tag.csv'), 'text,label\nthe film,O\n');
  await assert.rejects(runTrain(p('tagger.onnx'), { ...common, data: p('tag.csv'), out: p('no.onnx') }), /--task tag reads words with a label each from \.jsonl .* or \.conll/);
});

test('refit adapt runs a TTA method on a text stream and scores it by its label column', async () => {
  writeFileSync(p('stream.csv'), ['text,label', ...reviews(64, 4).map((r) => `${csvCell(r.text)},${r.label === 'positive' ? 1 : 0}`)].join('\n'));
  const r = await runAdapt(zoo('bert'), { method: 'tent', stream: p('stream.csv'), tokenizer: p('bert-tok'), batchSize: 16, out: p('preds.csv'), json: true });
  assert.equal(r.stream.samples, 64);
  assert.equal(r.stream.labelled, true);
  assert.ok(r.error !== null && r.error >= 0 && r.error <= 1);
  assert.ok(existsSync(p('preds.csv')));
  // the same file as --source (read without labels): its label column is not read as a second text
  const src = readTextTokens(p('stream.csv'), { modelPath: zoo('bert'), tokenizer: p('bert-tok') });
  assert.equal(src.types, null);
  assert.match(src.format, /^text \(text\) tokenized/);
});

test('refit adapt on text pairs for a model that takes token_type_ids: the second segment rebuilt from the ids after [SEP], predictions as the model fed the tokenizer\'s types', async () => {
  const rows = reviews(24, 9);
  writeFileSync(p('pair-stream.csv'), ['premise,hypothesis,label', ...rows.map((r, i) => `${csvCell(r.text)},${csvCell(rows[(i + 5) % rows.length]!.text)},${r.label === 'positive' ? 1 : 0}`)].join('\n'));
  // the zoo's BERT has 16 positions, fewer than its tokenizer's model_max_length (512) says: rows are cut to 16
  const r = await runAdapt(zoo('bert'), { method: 'source', stream: p('pair-stream.csv'), tokenizer: p('bert-tok'), batchSize: 8, out: p('pair-preds.jsonl'), json: true });
  assert.match(r.stream.format, /cut to 16 tokens/);
  await assert.rejects(runAdapt(zoo('bert'), { method: 'source', stream: p('pair-stream.csv'), tokenizer: p('bert-tok'), maxLength: 20, out: p('never.jsonl'), json: true }),
    /--max-length 20 is longer than the model can read: its position table has 16 rows/);
  assert.equal(r.stream.samples, 24);
  const got = readFileSync(p('pair-preds.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { confidence: number }).confidence);
  const { loadModel } = await import('../../src/model.ts');
  const { tokenInputs, tokenFeeds } = await import('../../src/cli/token-inputs.ts');
  const bert = await loadModel(zoo('bert'));
  try {
    const t = readTextTokens(p('pair-stream.csv'), { modelPath: zoo('bert'), tokenizer: p('bert-tok'), maxLength: 16 }, { wantLabels: true });
    assert.ok(t.types, 'two text columns are pairs');
    const confidence = async (types: Uint8Array | null) => {
      const l = (await bert.run(tokenFeeds(tokenInputs(bert, 'test'), t.values, t.length, rows.map((_, i) => i), t.padToken, types))).logits!;
      const C = l.dims[1]!, d = l.data as Float32Array;
      return rows.map((_, i) => { const z = Array.from(d.subarray(i * C, (i + 1) * C)), m = Math.max(...z), e = z.map((v) => Math.exp(v - m)); return Math.max(...e) / e.reduce((a, b) => a + b, 0); });
    };
    const want = await confidence(t.types), oneSegment = await confidence(null);
    got.forEach((c, i) => assert.ok(Math.abs(c - want[i]!) < 1e-5, `row ${i}: confidence ${c} against ${want[i]}`));
    assert.ok(want.some((c, i) => Math.abs(c - oneSegment[i]!) > 1e-4), 'the second segment\'s types change the answers');
  } finally {
    await bert.release();
  }
  // GPT-2's byte-level tokenizer marks a pair's second segment with no separator between: refused for a model fed the ids alone
  writeFileSync(p('gpt-pairs.csv'), 'a,b,label\nabc,def,0\ncab,fed,1\n');
  await assert.rejects(runAdapt(zoo('bert'), { method: 'source', stream: p('gpt-pairs.csv'), tokenizer: p('gpt-tok'), out: p('never.jsonl'), json: true }),
    /gpt-pairs\.csv: text pairs \(two text columns\) for a model that takes token_type_ids: .*tokenizer\.json marks the second segment without a separator token, which the adapted model \(fed the ids alone\) cannot rebuild; choose one text column with --text-column/);
});

test('text data: clear errors before anything trains', async () => {
  writeFileSync(p('few.csv'), 'text,label\nthe film was good,1\nthe plot was dull,0\n');
  const out = p('never.onnx');
  const fails = (o: Omit<Parameters<typeof runTrain>[1], 'out'>, re: RegExp) => assert.rejects(runTrain(zoo('bert'), { ...o, out, json: true }), re);
  await fails({ data: p('few.csv') }, /text data needs the model's tokenizer: no tokenizer\.json beside .*model\.onnx or one folder up; give --tokenizer/);
  await fails({ data: p('few.csv'), tokenizer: p('nowhere') }, /--tokenizer .*nowhere: not found/);
  await fails({ data: p('few.csv'), tokenizer: p('gpt-tok'), maxLength: 1 }, /--max-length must be an integer ≥ 2/);
  await fails({ data: p('few.csv'), tokenizer: p('bert-tok'), labelColumn: 'stars' }, /no column named 'stars' \(columns: text, label\)/);
  writeFileSync(p('broken.csv'), 'text,label\n"the film was good,1\n');
  await fails({ data: p('broken.csv'), tokenizer: p('bert-tok') }, /broken\.csv: .*needs a header row naming its columns, and quotes around cells/);
  // a tokenizer whose ids run past the model's 32-token embedding
  writeBertTokenizer(p('big-tok'), [...Array.from({ length: 40 }, (_, i) => `w${i}`), 'the', 'film', 'was', 'good']);
  await fails({ data: p('few.csv'), tokenizer: p('big-tok') }, /token 4[4-7] .* outside the model's vocabulary \[0, 32\): is the tokenizer the model's own\?/);
  mkdirSync(p('mismatched/onnx'), { recursive: true });
  copyFileSync(zoo('bert'), p('mismatched/onnx/model.onnx'));
  writeBertTokenizer(p('mismatched'), [...Array.from({ length: 40 }, (_, i) => `w${i}`), 'the', 'film', 'was', 'good']);
  assert.match(formatInspect(await inspectModel(p('mismatched/onnx/model.onnx'))), /\(48 tokens; pad token 0; .*\): WARNING its ids run past the model's 32-row embedding/);
  writeFileSync(p('lines.txt'), 'the film was good\n');
  await fails({ data: p('lines.txt'), tokenizer: p('bert-tok'), labelColumn: 'label' }, /a \.txt file is one text a line, with no columns/);
  assert.ok(!existsSync(out), 'nothing written');
});
