// Test-time adaptation on a token model: the zoo's Hugging Face BertForSequenceClassification
// export (input_ids, token_type_ids, attention_mask). withTokenInputs makes the companions inside
// the graph, as the CLI makes them in JavaScript, so the adapters feed the ids alone.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel, type RefitModel } from '../../src/model.ts';
import { withTokenInputs } from '../../src/onnx/token-companions.ts';
import { tokenInputs, tokenFeeds } from '../../src/cli/token-inputs.ts';
import { createAdapter } from '../../src/tta/index.ts';
import { tensor, type Tensor } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';

const path = new URL('../fixtures/zoo/bert/model.onnx', import.meta.url).pathname;
let bert: RefitModel;
let ids: RefitModel;
const B = 8, L = 6, PAD = 0;
// Token ids 1–31 (the zoo BERT's vocabulary is 32); the last two rows padded with PAD.
const values = (() => {
  const r = new Rng(4);
  const v = Array.from({ length: B * L }, () => 1 + r.int(31));
  for (const [row, from] of [[6, 3], [7, 4]] as const) for (let p = from; p < L; p++) v[row * L + p] = PAD;
  return v;
})();
const batch = (rows: number[], length = L): Tensor => tensor('int64', [rows.length, length], BigInt64Array.from(rows.flatMap((r) => values.slice(r * L, r * L + length).map(BigInt))));
const rows = Array.from({ length: B }, (_, i) => i);

before(async () => {
  bert = await loadModel(path, { threads: 1 });
  ids = withTokenInputs(bert, { padToken: PAD });
});
after(async () => { await ids.release(); await bert.release(); });

const maxDiff = (a: Tensor, b: Tensor) => { let d = 0; for (let i = 0; i < a.data.length; i++) d = Math.max(d, Math.abs(Number(a.data[i]) - Number(b.data[i]))); return d; };

test('withTokenInputs: one input, and the outputs the model gives with the companions the CLI makes', async () => {
  assert.deepEqual(bert.inputs.map((i) => i.name), ['input_ids', 'token_type_ids', 'attention_mask']);
  assert.deepEqual(ids.inputs.map((i) => i.name), ['input_ids']);
  const feeds = tokenFeeds(tokenInputs(bert, 'test'), values, L, rows, PAD);
  const want = (await bert.run(feeds)).logits!;
  const got = (await ids.run({ input_ids: feeds.input_ids! })).logits!;
  assert.equal(maxDiff(want, got), 0);
  // Without a pad token every position is a token: the padded rows then score differently.
  const unmasked = (await withTokenInputs(bert).run({ input_ids: feeds.input_ids! })).logits!;
  assert.ok(maxDiff(unmasked, got) > 1e-4);
  assert.throws(() => withTokenInputs(bert, { padToken: -1 }), /padToken must be a non-negative integer/);
  const img = await loadModel(new URL('../../models/fmnist-cnn.onnx', import.meta.url).pathname);
  assert.throws(() => withTokenInputs(img), /needs one input of int64 or int32 token ids .* it has x \(float32\)/);
  await img.release();
});

test('withTokenInputs with segmentAfter: a text pair\'s token_type_ids (1 after the first [SEP], pads 0) rebuilt from the ids, as the tokenizer gives them', async () => {
  const CLS = 2, SEP = 3;
  // [CLS] a [SEP] b [SEP] and padding; a single text [CLS] a [SEP] and padding; a row with no separator
  const pairRows = [[CLS, 5, 9, SEP, 14, 20, SEP, PAD], [CLS, 7, SEP, 11, 12, 13, 4, SEP], [CLS, 8, 8, 8, SEP, PAD, PAD, PAD], [6, 7, 8, 9, 10, 11, 12, 13]];
  const types = Uint8Array.from(pairRows.flatMap((r) => { let seen = false; return r.map((v) => { const t = seen && v !== PAD ? 1 : 0; if (v === SEP) seen = true; return t; }); }));
  assert.deepEqual([...types.subarray(0, 8)], [0, 0, 0, 0, 1, 1, 1, 0]);
  const flat = pairRows.flat(), idx = [0, 1, 2, 3];
  const feeds = tokenFeeds(tokenInputs(bert, 'test'), flat, 8, idx, PAD, types);
  const want = (await bert.run(feeds)).logits!;
  const seg = withTokenInputs(bert, { padToken: PAD, segmentAfter: SEP });
  try {
    assert.equal(maxDiff(want, (await seg.run({ input_ids: feeds.input_ids! })).logits!), 0);
    // one segment (types 0) answers otherwise on the pairs, the same on the single text and the row without a separator
    const flatTypes = (await ids.run({ input_ids: feeds.input_ids! })).logits!;
    const C = want.dims[1]!, rowDiff = (r: number) => { let d = 0; for (let j = 0; j < C; j++) d = Math.max(d, Math.abs(Number(want.data[r * C + j]) - Number(flatTypes.data[r * C + j]))); return d; };
    assert.ok(rowDiff(0) > 1e-4 && rowDiff(1) > 1e-4, 'the second segment changes the pairs\' answers');
    assert.equal(rowDiff(2), 0);
    assert.equal(rowDiff(3), 0);
  } finally {
    await seg.release();
  }
  assert.throws(() => withTokenInputs(bert, { segmentAfter: 1.5 }), /segmentAfter must be a non-negative integer \(the separator's id\), got 1\.5/);
});

test('positionTableRows: the rows of a learned position table (BERT, RoBERTa, GPT-2 style), none for rotary positions', async () => {
  const { positionTableRows } = await import('../../src/onnx/token-companions.ts');
  const rows: Record<string, number | null> = {};
  for (const z of ['bert', 'roberta', 'gpt', 'llama']) {
    const m = await loadModel(new URL(`../fixtures/zoo/${z}/model.onnx`, import.meta.url).pathname);
    rows[z] = positionTableRows(m);
    await m.release();
  }
  assert.deepEqual(rows, { bert: 16, roberta: 18, gpt: 16, llama: null });
});

test('Tent on token ids: predicts as the model, lowers its entropy, and the padding mask holds', async () => {
  const tent = createAdapter(ids, 'tent', { lr: 0.05 });
  const plain = (await ids.run({ input_ids: batch(rows) })).logits!;
  const first = await tent.predict(batch(rows));
  assert.ok(maxDiff(first.logits, plain) < 1e-5, 'the first prediction is the unadapted model\'s (LayerNorm only: no batch statistics)');
  const losses = [first.info.loss!];
  for (let i = 0; i < 5; i++) losses.push((await tent.predict(batch(rows))).info.loss!);
  assert.ok(losses.at(-1)! < losses[0]! - 1e-3, `entropy ${losses.map((l) => l.toFixed(4)).join(' → ')}`);
  // A padded row predicts as its unpadded prefix (episodic: each call starts from the source).
  const episodic = createAdapter(ids, 'tent', { mode: 'episodic' });
  const padded = (await episodic.predict(batch([6]))).logits;
  const prefix = (await episodic.predict(batch([6], 3))).logits;
  assert.ok(maxDiff(padded, prefix) < 1e-5, `padded ${Array.from(padded.data as Float32Array)} against prefix ${Array.from(prefix.data as Float32Array)}`);
  await tent.release();
  await episodic.release();
});

test('EATA, SAR, LAME, T3A and source run on token ids; augmenting methods and several inputs are refused by name', async () => {
  for (const m of ['eata', 'sar', 'lame', 't3a', 'source']) {
    const a = createAdapter(m === 'lame' || m === 't3a' ? ids.withFeatures() : ids, m);
    const r = await a.predict(batch(rows));
    assert.deepEqual(r.logits.dims, [B, 2], m);
    assert.ok(Array.from(r.logits.data as Float32Array).every(Number.isFinite), m);
    await a.release();
  }
  for (const m of ['cotta', 'rmt', 'roid', 'rotta']) assert.throws(() => createAdapter(ids, m), new RegExp(`^Error: ${m} augments its input images, and this model's input 'input_ids' is int64 \\(token ids\\); on token models use tent`));
  const tent = createAdapter(bert, 'tent');
  await assert.rejects(tent.predict(batch(rows)), /tent: the model takes 3 inputs \(input_ids, token_type_ids, attention_mask\) and an adapter feeds one; for a Hugging Face token model, withTokenInputs/);
  await tent.release();
  const t2 = createAdapter(ids, 'tent');
  await assert.rejects(t2.predict(tensor('float32', [1, L])), /tent: input 'input_ids' must be int64 token ids, got float32/);
  await t2.release();
});

test('RoBERTa- and DistilBERT-style exports (input_ids and attention_mask only; RoBERTa pads with id 1 and counts positions from it): the mask made from the ids, Tent and the controller on them', async () => {
  const { ContinualController } = await import('../../src/continual/controller.ts');
  for (const [name, pad] of [['roberta', 1], ['distilbert', 0]] as const) {
    const m = await loadModel(new URL(`../fixtures/zoo/${name}/model.onnx`, import.meta.url).pathname, { threads: 1 });
    assert.deepEqual(m.inputs.map((i) => i.name), ['input_ids', 'attention_mask'], name);
    const one = withTokenInputs(m, { padToken: pad });
    // Ids 2–31 (no pad id among them) with the last two rows padded, fed with the mask a tokenizer makes and alone.
    const v = values.map((t) => (t === PAD ? pad : Math.max(2, t)));
    const x = tensor('int64', [B, L], BigInt64Array.from(v.map(BigInt)));
    const mask = tensor('int64', [B, L], BigInt64Array.from(v.map((t) => BigInt(t === pad ? 0 : 1))));
    const want = (await m.run({ input_ids: x, attention_mask: mask })).logits!;
    assert.equal(maxDiff((await one.run({ input_ids: x })).logits!, want), 0, name);
    const tent = createAdapter(one, 'tent', { lr: 0.05 });
    const losses: number[] = [];
    for (let i = 0; i < 4; i++) losses.push((await tent.predict(x)).info.loss!);
    assert.ok(losses.at(-1)! < losses[0]!, `${name}: entropy ${losses.join(' → ')}`);
    const c = new ContinualController(one, { padToken: pad });
    const r = await c.predict(x);
    assert.deepEqual(r.probs.length, B * 2, name);
    await Promise.all([tent.release(), c.release()]);
    await one.release();
    await m.release();
  }
});

test("EATA's Fisher from in-distribution token ids; fisherData of another type than the model's input is refused", async () => {
  const eata = createAdapter(ids, 'eata', { fisherData: batch(rows) });
  const r = await eata.predict(batch(rows));
  assert.equal(r.info.extra?.fisher, 1, 'the Fisher regulariser is on');
  await eata.release();
  assert.throws(() => createAdapter(ids, 'eata', { fisherData: tensor('float32', [B, L]) }), /eata: fisherData is float32, and the model's input 'input_ids' takes int64/);
});
