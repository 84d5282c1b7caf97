// `refit train` and `refit eval` on a BERT-style sequence classifier (the zoo's HF
// BertForSequenceClassification export: input_ids, token_type_ids, attention_mask): the CLI feeds
// the ids from a .npy file and makes the other two as a tokenizer would.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel, RefitModel } from '../../src/model.ts';
import { runTrain } from '../../src/cli/train.ts';
import { runEval } from '../../src/cli/eval.ts';
import { tokenInputs, tokenFeeds } from '../../src/cli/token-inputs.ts';
import { loadAdapter } from '../../src/index.ts';
import { Rng } from '../../src/util/rng.ts';
import { npy } from '../helpers/cli.ts';

const bert = new URL('../fixtures/zoo/bert/model.onnx', import.meta.url).pathname;
const gpt = new URL('../fixtures/zoo/gpt/model.onnx', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'refit-tokens-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));
const p = (f: string) => join(dir, f);

/** n sequences of length L over tokens 1..31, the label whether the first token is above 16. */
function sequences(n: number, L: number, seed: number): { ids: BigInt64Array; labels: BigInt64Array } {
  const r = new Rng(seed);
  const ids = BigInt64Array.from({ length: n * L }, () => BigInt(1 + Math.floor(r.next() * 31)));
  const labels = BigInt64Array.from({ length: n }, (_, i) => (ids[i * L]! > 16n ? 1n : 0n));
  return { ids, labels };
}

test('a BERT-style classifier trains fully and with LoRA from token ids, and eval agrees', async () => {
  const { ids, labels } = sequences(200, 12, 1);
  writeFileSync(p('ids.npy'), npy('<i8', [200, 12], ids));
  writeFileSync(p('labels.npy'), npy('<i8', [200], labels));
  // Measured: validation accuracy 100 % after 8 epochs at lr 0.01 (50 % by chance).
  const full = await runTrain(bert, { data: p('ids.npy'), labels: p('labels.npy'), epochs: 8, lr: 0.01, out: p('full.onnx'), json: true });
  assert.equal(full.data.format, 'npy token ids');
  assert.deepEqual(full.data.sampleShape, [12]);
  assert.ok(full.epochs.at(-1)!.valAccuracy! >= 0.9, JSON.stringify(full.epochs.map((e) => e.valAccuracy)));
  const ev = await runEval(p('full.onnx'), { data: p('ids.npy'), labels: p('labels.npy'), json: true });
  assert.equal(ev.samples, 200);
  assert.ok(ev.accuracy >= 0.9, `eval accuracy ${ev.accuracy}`);
  const lora = await runTrain(bert, { data: p('ids.npy'), labels: p('labels.npy'), adapter: 'lora', rank: 2, epochs: 2, out: p('lora'), json: true });
  assert.ok(lora.epochs.every((e) => Number.isFinite(e.trainLoss)));
  const adapted = await loadAdapter(await loadModel(bert), p('lora'));
  assert.ok(adapted.trainableNames().some((n) => n.includes('lora_A')));
  await adapted.release();
});

test('attention_mask follows --pad-token: padded sequences score as their unpadded prefixes', async () => {
  const { ids, labels } = sequences(16, 8, 2);
  const padded = new BigInt64Array(16 * 12); // the same 8 tokens, then 4 pads (token 0)
  for (let s = 0; s < 16; s++) padded.set(ids.subarray(s * 8, s * 8 + 8), s * 12);
  writeFileSync(p('short.npy'), npy('<i8', [16, 8], ids));
  writeFileSync(p('padded.npy'), npy('<i8', [16, 12], padded));
  writeFileSync(p('y16.npy'), npy('<i8', [16], labels));
  const short = await runEval(bert, { data: p('short.npy'), labels: p('y16.npy'), json: true });
  const masked = await runEval(bert, { data: p('padded.npy'), labels: p('y16.npy'), padToken: 0, json: true });
  const unmasked = await runEval(bert, { data: p('padded.npy'), labels: p('y16.npy'), json: true });
  assert.ok(Math.abs(masked.loss - short.loss) < 1e-5, `masked ${masked.loss} against unpadded ${short.loss}`);
  assert.ok(Math.abs(unmasked.loss - short.loss) > 1e-4, 'without --pad-token the pads are attended to');

  // The companions as the model gets them, against the feeds the HF tokenizer would give.
  const model = await loadModel(bert);
  const t = tokenInputs(model, 'test');
  assert.deepEqual(t.ids, { name: 'input_ids', dtype: 'int64' });
  assert.deepEqual(t.companions.map((c) => c.name).sort(), ['attention_mask', 'token_type_ids']);
  assert.equal(t.vocab, 32, 'the word-embedding table\'s rows');
  const f = tokenFeeds(t, [5, 6, 0, 7, 0, 0], 3, [1, 0], 0);
  assert.deepEqual(Array.from(f.input_ids!.data as BigInt64Array, Number), [7, 0, 0, 5, 6, 0]);
  assert.deepEqual(Array.from(f.attention_mask!.data as BigInt64Array, Number), [1, 0, 0, 1, 1, 0]);
  assert.deepEqual(Array.from(f.token_type_ids!.data as BigInt64Array, Number), [0, 0, 0, 0, 0, 0]);
  const positions = tokenFeeds({ ...t, companions: [{ name: 'position_ids', dtype: 'int32', lengths: false }, { name: 'attention_mask', dtype: 'float32', lengths: false }] }, [5, 6, 0, 7, 0, 0], 3, [0, 1]);
  assert.deepEqual(Array.from(positions.position_ids!.data as Int32Array), [0, 1, 2, 0, 1, 2]);
  assert.deepEqual(Array.from(positions.attention_mask!.data as Float32Array), [1, 1, 1, 1, 1, 1], 'no pad token: every position attends');
  await model.release();
});

test('token models: bad data, labels and inputs get one clear error and nothing is written', async () => {
  const { ids, labels } = sequences(20, 6, 3);
  writeFileSync(p('ids20.npy'), npy('<i8', [20, 6], ids));
  writeFileSync(p('y20.npy'), npy('<i8', [20], labels));
  writeFileSync(p('y19.npy'), npy('<i8', [19], labels.subarray(0, 19)));
  writeFileSync(p('y-big.npy'), npy('<i8', [20], BigInt64Array.from(labels, (v, i) => (i === 7 ? 5n : v))));
  writeFileSync(p('oov.npy'), npy('<i8', [20, 6], BigInt64Array.from(ids, (v, i) => (i === 9 ? 40n : v))));
  writeFileSync(p('f32.npy'), npy('<f4', [20, 6], Float32Array.from(ids, Number)));
  // A model with an input the CLI cannot make: BERT's token_type_ids renamed.
  const m = await loadModel(bert);
  const ir = structuredClone(m.ir);
  ir.graph.inputs = ir.graph.inputs.map((i) => (i.name === 'token_type_ids' ? { ...i, name: 'segment' } : i));
  for (const n of ir.graph.nodes) n.inputs = n.inputs.map((x) => (x === 'token_type_ids' ? 'segment' : x));
  const renamed = new RefitModel(ir);
  await renamed.save(p('renamed.onnx'));
  await Promise.all([m.release(), renamed.release()]);
  const out = p('never.onnx');
  const cases: [Parameters<typeof runTrain>[0], Parameters<typeof runTrain>[1], RegExp][] = [
    [bert, { data: p('ids20.npy'), out }, /token ids carry no labels; give one per sequence with --labels/],
    [bert, { data: p('ids20.npy'), labels: p('y19.npy'), out }, /19 labels for 20 sequences/],
    [bert, { data: p('ids20.npy'), labels: p('y-big.npy'), out }, /label 7 is 5, but the model has 2 classes/],
    [bert, { data: p('oov.npy'), labels: p('y20.npy'), out }, /token 40 \(sequence 1, position 3\) is outside the model's vocabulary \[0, 32\)/],
    [bert, { data: p('f32.npy'), labels: p('y20.npy'), out }, /token ids must be int32 or int64, got float32/],
    [bert, { data: p('ids20.npy'), labels: p('y20.npy'), labelColumn: 'y', out }, /--label-column reads a column of text data .*with a .npy of token ids the labels are in --labels/],
    [p('renamed.onnx'), { data: p('ids20.npy'), labels: p('y20.npy'), out }, /cannot make the model's input 'segment' \(it makes attention_mask, token_type_ids, position_ids/],
    [gpt, { data: p('ids20.npy'), labels: p('y20.npy'), out }, /needs \[batch, classes\] logits; output 'logits' has shape .* \(for a language model use --task next-token\)/],
  ];
  for (const [model, o, msg] of cases) await assert.rejects(runTrain(model, { ...o, json: true }), msg);
  assert.ok(!existsSync(out));
  await assert.rejects(runEval(bert, { data: p('ids20.npy'), labels: p('y20.npy'), padToken: -1, json: true }), /--pad-token must be a non-negative integer token id/);
});

test('refit adapt on token ids: Tent, the others that leave the input as it is, and the continual controller; image-only methods and flags refused', async () => {
  const { ids, labels } = sequences(64, 8, 3);
  const padded = new BigInt64Array(64 * 12);
  for (let s = 0; s < 64; s++) padded.set(ids.subarray(s * 8, s * 8 + 8), s * 12);
  writeFileSync(p('stream.npy'), npy('<i8', [64, 12], padded));
  writeFileSync(p('stream-y.npy'), npy('<i8', [64], labels));
  const { runAdapt } = await import('../../src/cli/adapt.ts');
  const base = { stream: p('stream.npy'), labels: p('stream-y.npy'), padToken: 0, batchSize: 16, json: true };
  // The source method predicts as eval does with the same mask.
  const src = await runAdapt(bert, { ...base, method: 'source', out: p('src.csv') });
  const ev = await runEval(bert, { data: p('stream.npy'), labels: p('stream-y.npy'), padToken: 0, json: true });
  assert.equal(src.stream.format, 'npy token ids');
  assert.equal(src.error, 1 - ev.accuracy);
  assert.equal(src.sourceError, src.error);
  const tent = await runAdapt(bert, { ...base, method: 'tent', out: p('tent.jsonl') });
  assert.equal(tent.stream.samples, 64);
  assert.equal(tent.sourceError, src.error, 'the unadapted baseline is the same model, masked the same way');
  assert.ok(tent.error !== null && tent.error >= 0 && tent.error <= 1);
  for (const m of ['eata', 'sar', 'lame', 't3a']) assert.equal((await runAdapt(bert, { ...base, method: m, out: p(`${m}.csv`) })).stream.samples, 64, m);
  // The continual controller, with the stream's labels handed back one batch late.
  const cont = await runAdapt(bert, { ...base, method: 'continual', feedbackDelay: 1, out: p('continual.csv') });
  assert.equal(Object.values(cont.levels!).reduce((a, b) => a + b, 0), 4, JSON.stringify(cont.levels));
  assert.equal(cont.feedbackAccepted, 48, 'the labels of the first three batches');
  assert.equal(cont.sourceError, src.error);
  const { formatAdapt } = await import('../../src/cli/adapt.ts');
  assert.match(formatAdapt(cont), /level 3: the normalization adapters \(the deep learner, RMT, augments images: not for token ids\)/);
  await assert.rejects(runAdapt(bert, { ...base, method: 'rmt', out: p('x.csv') }), /--method rmt on a token model: rmt augments its input images; token models take tent, eata, sar, lame, t3a, source, continual/);
  // --source: in-distribution ids set the controller's entropy reference and EATA's Fisher.
  const calibrated = await runAdapt(bert, { ...base, method: 'continual', source: p('ids.npy'), out: p('calibrated.csv') });
  assert.equal(calibrated.deepLearner, false);
  assert.equal(Object.values(calibrated.levels!).reduce((a, b) => a + b, 0), 4);
  assert.equal((await runAdapt(bert, { ...base, method: 'eata', source: p('ids.npy'), out: p('eata-fisher.csv') })).stream.samples, 64);
  await assert.rejects(runAdapt(bert, { ...base, method: 'continual', source: p('ids.npy'), sourceLabels: p('labels.npy'), out: p('x.csv') }), /--source-labels: for image data; this model reads token ids/);
  await assert.rejects(runAdapt(bert, { ...base, method: 'continual', source: p('oov.npy'), out: p('x.csv') }), /token 40 .* is outside the model's vocabulary/);
  await assert.rejects(runAdapt(bert, { ...base, method: 'tent', mean: '0.5', std: '0.5', out: p('x.csv') }), /--mean\/--std: for image data; this model reads token ids/);
  await assert.rejects(runAdapt(new URL('../../models/fmnist-cnn.onnx', import.meta.url).pathname, { ...base, method: 'tent', out: p('x.csv') }), /--pad-token is for token models/);
  assert.equal(existsSync(p('x.csv')), false, 'nothing written');
});

test('refit inspect names the token-id input, its vocabulary and the inputs refit makes from it', async () => {
  const { inspectModel, formatInspect } = await import('../../src/cli/inspect.ts');
  const r = await inspectModel(bert);
  assert.deepEqual(r.tokens, { ids: 'input_ids', vocab: 32, companions: ['token_type_ids', 'attention_mask'], positions: 16 });
  assert.match(formatInspect(r), /token ids: {2}'input_ids' \(vocabulary 32\), from a \.npy of ids; refit makes token_type_ids, attention_mask from them/);
  assert.equal((await inspectModel(new URL('../../models/fmnist-cnn.onnx', import.meta.url).pathname)).tokens, undefined);
});
