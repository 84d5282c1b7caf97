// `refit train --task ctc` and `refit eval --task ctc`: a frame classifier (features [N, 24, 6] →
// Linear-ReLU-Linear → [N, 24, 5] logits, class 0 the blank) learns to read sequences of 2–4
// "phonemes" (each a few frames of its own feature pattern, silence between) from their label
// sequences alone, without frame alignments; the label error rate of greedy decoding falls.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTrain } from '../../src/cli/train.ts';
import { runEval, formatEval } from '../../src/cli/eval.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { encodeModel, decodeModel } from '../../src/onnx/proto.ts';
import { f32 } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { npy } from '../helpers/cli.ts';
import { inspectModel } from '../../src/cli/inspect.ts';
import { readCtcVocab, encodeTranscript } from '../../src/cli/ctc-vocab.ts';

const dir = mkdtempSync(join(tmpdir(), 'refit-ctc-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));
const p = (f: string) => join(dir, f);
const T = 24, F = 6, C = 5, S = 4;

function model(seed: number): Uint8Array {
  const r = new Rng(seed), rnd = (n: number, s: number) => Array.from({ length: n }, () => s * (r.next() - 0.5));
  return encodeModel(new ModelBuilder({ opset: 17 }).input('features', 'float32', ['N', T, F])
    .initializer('w1', f32([F, 16], rnd(F * 16, 0.6))).initializer('b1', f32([16], rnd(16, 0.1)))
    .initializer('w2', f32([16, C], rnd(16 * C, 0.6))).initializer('b2', f32([C], rnd(C, 0.1)))
    .node('MatMul', ['features', 'w1'], ['h0']).node('Add', ['h0', 'b1'], ['h1']).node('Relu', ['h1'], ['h'])
    .node('MatMul', ['h', 'w2'], ['z0']).node('Add', ['z0', 'b2'], ['logits'])
    .output('logits', 'float32', ['N', T, C]).build());
}

/** n utterances: 2–4 phonemes (classes 1–4, a repeat allowed), each 3–4 frames of its pattern, 1–2 silent frames between. */
function utterances(n: number, seed: number): { x: Float32Array; y: BigInt64Array } {
  const r = new Rng(seed), x = new Float32Array(n * T * F), y = new BigInt64Array(n * S).fill(-100n);
  for (let i = 0; i < n; i++) {
    const k = 2 + Math.floor(r.next() * 3);
    let t = 1;
    for (let j = 0; j < k; j++) {
      const c = 1 + Math.floor(r.next() * 4);
      y[i * S + j] = BigInt(c);
      const len = 3 + Math.floor(r.next() * 2);
      for (let u = 0; u < len && t < T; u++, t++) { x[(i * T + t) * F + c - 1] = 1; x[(i * T + t) * F + 4 + (j % 2)] = 0.5; }
      t += 1 + Math.floor(r.next() * 2);
    }
    for (let q = 0; q < T * F; q++) x[i * T * F + q]! += 0.1 * (r.next() - 0.5);
  }
  return { x, y };
}

test('a frame classifier learns label sequences with the CTC loss: label error rate falls; eval agrees', async () => {
  writeFileSync(p('model.onnx'), model(3));
  assert.equal((await inspectModel(p('model.onnx'))).task?.task, 'ctc', 'inspect suggests --task ctc for float input and [N, frames, classes] logits');
  const { x, y } = utterances(240, 4);
  writeFileSync(p('x.npy'), npy('<f4', [240, T, F], x));
  writeFileSync(p('y.npy'), npy('<i8', [240, S], y));
  const before = await runEval(p('model.onnx'), { task: 'ctc', data: p('x.npy'), labels: p('y.npy'), json: true });
  const r = await runTrain(p('model.onnx'), { task: 'ctc', data: p('x.npy'), labels: p('y.npy'), epochs: 12, lr: 0.02, batchSize: 16, out: p('tuned.onnx'), json: true });
  assert.equal(r.task, 'ctc');
  const after = await runEval(p('tuned.onnx'), { task: 'ctc', data: p('x.npy'), labels: p('y.npy'), json: true });
  assert.equal(after.task, 'ctc');
  assert.match(formatEval(after), /label error rate \d+\.\d+% \(greedy decoding/);
  // Measured: label error rate 79.4 % → 0.0 %, CTC loss 9.25 → 0.007 nats per label
  assert.ok(1 - after.accuracy < 0.1 && 1 - before.accuracy > 0.5, `label error rate ${1 - before.accuracy} → ${1 - after.accuracy}`);
  assert.ok(after.loss < before.loss / 4, `loss ${before.loss} → ${after.loss}`);
});

test('--task ctc reads transcripts with a Hugging Face vocab.json (spaces as the word delimiter, the pad token the blank); a character outside it is refused by name', async () => {
  // phonemes 1–4 as the letters A–D of a vocab.json
  writeFileSync(p('wide.onnx'), model(7));
  const { x, y } = utterances(40, 8);
  writeFileSync(p('x40.npy'), npy('<f4', [40, T, F], x));
  mkdirSync(p('vocab'), { recursive: true });
  writeFileSync(p('vocab/vocab.json'), JSON.stringify({ '<pad>': 0, A: 1, B: 2, C: 3, D: 4 }));
  const letters = (i: number) => Array.from(y.subarray(i * S, (i + 1) * S)).filter((v) => v >= 0n).map((v) => 'ABCD'[Number(v) - 1]).join('');
  writeFileSync(p('t.txt'), Array.from({ length: 40 }, (_, i) => letters(i)).join('\n') + '\n');
  writeFileSync(p('ids.npy'), npy('<i8', [40, S], y));
  const fromText = await runEval(p('wide.onnx'), { task: 'ctc', data: p('x40.npy'), labels: p('t.txt'), vocab: p('vocab'), json: true });
  const fromIds = await runEval(p('wide.onnx'), { task: 'ctc', data: p('x40.npy'), labels: p('ids.npy'), json: true });
  assert.equal(fromText.loss, fromIds.loss);
  assert.equal(fromText.accuracy, fromIds.accuracy);
  writeFileSync(p('lower.txt'), 'ab\n'.repeat(40));
  await assert.rejects(runEval(p('wide.onnx'), { task: 'ctc', data: p('x40.npy'), labels: p('lower.txt'), vocab: p('vocab'), json: true }),
    /lower\.txt line 1: character "a" is not in .*vocab\.json \(the vocabulary has its upper case: give uppercase transcripts\)/);
  await assert.rejects(runEval(p('wide.onnx'), { task: 'ctc', data: p('x40.npy'), labels: p('t.txt'), json: true }), /transcripts need the model's vocabulary to become ids: give --vocab/);
  await assert.rejects(runEval(p('wide.onnx'), { task: 'ctc', data: p('x40.npy'), labels: p('ids.npy'), vocab: p('vocab'), json: true }), /--vocab turns transcripts .* holds ids already/);
  await assert.rejects(runEval(p('wide.onnx'), { task: 'classify', data: p('x40.npy'), labels: p('ids.npy'), vocab: p('vocab'), json: true }), /--vocab is for --task ctc/);
  // words: spaces become the delimiter token
  writeFileSync(p('vocab2.json'), JSON.stringify({ '<pad>': 0, A: 1, B: 2, '|': 3 }));
  assert.deepEqual(encodeTranscript(readCtcVocab(p('vocab2.json')), '  AB  A ', 'x'), [1, 2, 3, 1]);
});

test('--task ctc --preprocessor: a Wav2Vec2FeatureExtractor\'s per-utterance normalisation is applied as transformers does; a log-mel extractor is refused', async () => {
  writeFileSync(p('pm.onnx'), model(9));
  const { x, y } = utterances(12, 10);
  for (let i = 0; i < x.length; i++) x[i] = 3 * x[i]! + 0.5; // an offset and a scale the normalisation removes
  writeFileSync(p('x12.npy'), npy('<f4', [12, T, F], x));
  writeFileSync(p('y12.npy'), npy('<i8', [12, S], y));
  writeFileSync(p('w2v.json'), JSON.stringify({ feature_extractor_type: 'Wav2Vec2FeatureExtractor', do_normalize: true, feature_size: 1, padding_value: 0, sampling_rate: 16000 }));
  const by = await runEval(p('pm.onnx'), { task: 'ctc', data: p('x12.npy'), labels: p('y12.npy'), preprocessor: p('w2v.json'), json: true });
  // the same rows normalised here: (x − mean) / sqrt(var + 1e-7) per row, in float64
  const per = T * F, z = new Float32Array(x.length);
  for (let r = 0; r < 12; r++) {
    const row = Array.from(x.subarray(r * per, (r + 1) * per));
    const mean = row.reduce((a, v) => a + v, 0) / per, v = row.reduce((a, q) => a + (q - mean) ** 2, 0) / per;
    row.forEach((q, i) => { z[r * per + i] = (q - mean) / Math.sqrt(v + 1e-7); });
  }
  writeFileSync(p('z12.npy'), npy('<f4', [12, T, F], z));
  const pre = await runEval(p('pm.onnx'), { task: 'ctc', data: p('z12.npy'), labels: p('y12.npy'), json: true });
  assert.ok(Math.abs(by.loss - pre.loss) <= 1e-5 * Math.abs(pre.loss), `${by.loss} vs ${pre.loss}`);
  const raw = await runEval(p('pm.onnx'), { task: 'ctc', data: p('x12.npy'), labels: p('y12.npy'), json: true });
  assert.notEqual(raw.loss, by.loss);
  writeFileSync(p('whisper.json'), JSON.stringify({ feature_extractor_type: 'WhisperFeatureExtractor', feature_size: 80 }));
  await assert.rejects(runEval(p('pm.onnx'), { task: 'ctc', data: p('x12.npy'), labels: p('y12.npy'), preprocessor: p('whisper.json'), json: true }), /WhisperFeatureExtractor, which computes log-mel features: give those features as --data/);
});

test('--task ctc: labels that are the blank, out of range, after the fill, or of the wrong count, and misplaced flags get one clear error; nothing written', async () => {
  writeFileSync(p('m.onnx'), model(5));
  const { x, y } = utterances(8, 6);
  writeFileSync(p('x8.npy'), npy('<f4', [8, T, F], x));
  const bad = (edit: (v: BigInt64Array) => void, name: string) => { const v = y.slice(); edit(v); writeFileSync(p(name), npy('<i8', [8, S], v)); return p(name); };
  const train = (labels: string | undefined, extra: Record<string, unknown> = {}) => runTrain(p('m.onnx'), { task: 'ctc', data: p('x8.npy'), ...(labels ? { labels } : {}), out: p('never.onnx'), json: true, ...extra });
  await assert.rejects(train(bad((v) => { v[1] = 0n; }, 'blank.npy')), /row 0 has label 0, which is the blank \(--pad-token\)/);
  await assert.rejects(train(bad((v) => { v[0] = 7n; }, 'big.npy')), /row 0 has label 7, which is not a class \(the model has 5\)/);
  await assert.rejects(train(bad((v) => { v[4 + 2] = -100n; v[4 + 3] = 2n; }, 'gap.npy')), /row 1 has a label after its fill/);
  writeFileSync(p('y7.npy'), npy('<i8', [7, S], y.slice(0, 7 * S)));
  await assert.rejects(train(p('y7.npy')), /7 label sequences for 8 samples/);
  await assert.rejects(train(undefined), /--task ctc learns label sequences: give them with --labels/);
  await assert.rejects(train(p('y7.npy'), { padToken: 9 }), /--pad-token 9 \(the CTC blank\) is not one of the model's 5 classes/);
  await assert.rejects(train(p('y7.npy'), { labelColumn: 'y' }), /--label-column reads CSV data; --task ctc reads label sequences/);
  assert.ok(!existsSync(p('never.onnx')));
  // 13 repeats of one label need 25 frames and the model has 24: that row counts 0, the loss stays finite
  const long = new BigInt64Array(8 * 13).fill(-100n);
  long.fill(1n, 0, 13);
  for (let i = 1; i < 8; i++) long[i * 13] = 2n;
  writeFileSync(p('long.npy'), npy('<i8', [8, 13], long));
  const r = await runEval(p('m.onnx'), { task: 'ctc', data: p('x8.npy'), labels: p('long.npy'), json: true });
  assert.ok(Number.isFinite(r.loss), `loss ${r.loss}`);
  const t = await runTrain(p('m.onnx'), { task: 'ctc', data: p('x8.npy'), labels: p('long.npy'), epochs: 1, batchSize: 8, valSplit: 0, out: p('long.onnx'), json: true });
  assert.ok(t.epochs.every((e) => Number.isFinite(e.trainLoss)), JSON.stringify(t.epochs));
});

// Recognisers are often exported with their Softmax (PaddleOCR's PP-OCR): probabilities out.
test('--task ctc on a model that ends in a Softmax reads the Softmax\'s input: the same losses as the model without it', async () => {
  const ir = decodeModel(model(3));
  ir.graph.nodes.push({ name: 'softmax', opType: 'Softmax', domain: '', inputs: ['logits'], outputs: ['probs'], attrs: { axis: { kind: 'int', value: -1 } } });
  ir.graph.outputs = [{ name: 'probs', dtype: 'float32', shape: ['N', T, C] }];
  writeFileSync(p('logits.onnx'), model(3));
  writeFileSync(p('probs.onnx'), encodeModel(ir));
  const { x, y } = utterances(48, 9);
  writeFileSync(p('x48.npy'), npy('<f4', [48, T, F], x));
  writeFileSync(p('y48.npy'), npy('<i8', [48, S], y));
  const runs: { before: number; train: number[] }[] = [];
  for (const f of ['logits', 'probs']) {
    const before = await runEval(p(`${f}.onnx`), { task: 'ctc', data: p('x48.npy'), labels: p('y48.npy'), json: true });
    const r = await runTrain(p(`${f}.onnx`), { task: 'ctc', data: p('x48.npy'), labels: p('y48.npy'), epochs: 2, lr: 0.02, batchSize: 16, out: p(`${f}-tuned.onnx`), json: true });
    runs.push({ before: before.loss, train: r.epochs.map((e) => e.trainLoss) });
  }
  assert.ok(Math.abs(runs[1]!.before - runs[0]!.before) <= 1e-5 * runs[0]!.before, `eval loss through the Softmax ${runs[1]!.before} vs logits ${runs[0]!.before}`);
  runs[0]!.train.forEach((l, i) => assert.ok(Math.abs(runs[1]!.train[i]! - l) <= 1e-4 * l, `epoch ${i + 1}: ${runs[1]!.train[i]} vs ${l}`));
});

// A text-line recogniser in PP-OCR's shape: image in, a depthwise conv, frames along the width
// [N, frames, classes] through a Softmax.
test('a text-line recogniser (image in, frames along the width): inspect suggests --task ctc; LoRA by default passes over its depthwise conv', async () => {
  const r = new Rng(11), rnd = (n: number, s: number) => Array.from({ length: n }, () => s * (r.next() - 0.5));
  const K = 5;
  writeFileSync(p('crnn.onnx'), encodeModel(new ModelBuilder({ opset: 17 }).input('x', 'float32', ['N', 3, 8, 'W'])
    .initializer('c1.weight', f32([8, 3, 3, 3], rnd(216, 0.6))).initializer('dw.weight', f32([8, 1, 3, 3], rnd(72, 0.6)))
    .initializer('head.weight', f32([8, K], rnd(8 * K, 0.6))).initializer('head.bias', f32([K], rnd(K, 0.1)))
    .node('Conv', ['x', 'c1.weight'], ['h1'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, 'c1')
    .node('Conv', ['h1', 'dw.weight'], ['h2'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1], group: 8 }, 'dw')
    .node('Relu', ['h2'], ['h3']).node('ReduceMean', ['h3'], ['h4'], { axes: [2], keepdims: 0 })
    .node('Transpose', ['h4'], ['seq'], { perm: [0, 2, 1] })
    .node('MatMul', ['seq', 'head.weight'], ['z0'], {}, 'head').node('Add', ['z0', 'head.bias'], ['z'])
    .node('Softmax', ['z'], ['probs'], { axis: -1 })
    .output('probs', 'float32', ['N', 'T', K]).build()));
  assert.equal((await inspectModel(p('crnn.onnx'))).task?.task, 'ctc', 'frames free, classes fixed: a recogniser, not a detector');
  const n = 12, Wd = 16, y = new BigInt64Array(n * 3).fill(-100n);
  for (let i = 0; i < n; i++) for (let j = 0; j < 1 + (i % 3); j++) y[i * 3 + j] = BigInt(1 + ((i + j) % 4));
  writeFileSync(p('lines.npy'), npy('<f4', [n, 3, 8, Wd], Float32Array.from(rnd(n * 3 * 8 * Wd, 2))));
  writeFileSync(p('lines-y.npy'), npy('<i8', [n, 3], y));
  const t = await runTrain(p('crnn.onnx'), { task: 'ctc', data: p('lines.npy'), labels: p('lines-y.npy'), adapter: 'lora', rank: 2, epochs: 1, batchSize: 4, out: p('crnn-lora'), json: true });
  assert.equal(t.mode, 'adapter');
  const config = JSON.parse(readFileSync(p('crnn-lora/adapter_config.json'), 'utf8')) as { target_modules: string[] };
  assert.deepEqual([...config.target_modules].sort(), ['c1', 'head'], 'the depthwise conv is passed over');
});

test('--vocab <dictionary>.txt reads a PaddleOCR character dictionary (blank 0, line k class k + 1, then the space): the same labels as ids; a dictionary of another size is refused', async () => {
  writeFileSync(p('keys.txt'), '中\n文\na\n'); // with the blank and the space: 5 classes, the recogniser's
  writeFileSync(p('lines3.txt'), '中a\n文  a\na中\n');
  const ids = new BigInt64Array([1, 3, -100, 2, 4, 3, 3, 1, -100].map(BigInt)); // 文 a: the run of spaces is one space (class 4)
  writeFileSync(p('lines3-ids.npy'), npy('<i8', [3, 3], ids));
  writeFileSync(p('lines3.npy'), npy('<f4', [3, 3, 8, 16], Float32Array.from({ length: 3 * 3 * 8 * 16 }, (_, i) => Math.sin(i * 0.37))));
  const fromText = await runEval(p('crnn.onnx'), { task: 'ctc', data: p('lines3.npy'), labels: p('lines3.txt'), vocab: p('keys.txt'), json: true });
  const fromIds = await runEval(p('crnn.onnx'), { task: 'ctc', data: p('lines3.npy'), labels: p('lines3-ids.npy'), json: true });
  assert.equal(fromText.loss, fromIds.loss);
  writeFileSync(p('keys4.txt'), '中\n文\na\nb\n');
  await assert.rejects(runEval(p('crnn.onnx'), { task: 'ctc', data: p('lines3.npy'), labels: p('lines3.txt'), vocab: p('keys4.txt'), json: true }), /keys4\.txt defines 6 classes \(blank included\) and the model has 5/);
  writeFileSync(p('keys-bad.txt'), '中\nab\n');
  await assert.rejects(runEval(p('crnn.onnx'), { task: 'ctc', data: p('lines3.npy'), labels: p('lines3.txt'), vocab: p('keys-bad.txt'), json: true }), /line 2 is "ab"; a character dictionary has one character a line/);
});

test('--data a PaddleOCR recognition label file (image<TAB>transcript): images resized to the model\'s height, BGR, (x/255 − 0.5)/0.5, zero-padded to the width; its errors name the line', async () => {
  const sharp = (await import('sharp')).default;
  mkdirSync(p('crops'), { recursive: true });
  // 4×2 pure red, 6×3 pure blue: both become 16 columns at height 8
  await sharp(Buffer.from(new Uint8Array(4 * 2 * 3).map((_, i) => (i % 3 === 0 ? 255 : 0))), { raw: { width: 4, height: 2, channels: 3 } }).png().toFile(p('crops/red.png'));
  await sharp(Buffer.from(new Uint8Array(6 * 3 * 3).map((_, i) => (i % 3 === 2 ? 255 : 0))), { raw: { width: 6, height: 3, channels: 3 } }).png().toFile(p('crops/blue.png'));
  writeFileSync(p('crops/rec_gt.txt'), 'red.png\t中a\nblue.png\t文 a\n');
  const { readTextLines, isLineLabelFile } = await import('../../src/cli/text-lines.ts');
  assert.ok(isLineLabelFile(p('crops/rec_gt.txt')) && !isLineLabelFile(p('keys.txt')));
  const lines = await readTextLines(p('crops/rec_gt.txt'), 8, 20);
  assert.deepEqual(lines.transcripts, ['中a', '文 a']);
  const at = (i: number, c: number, r: number, q: number) => lines.data.x[((i * 3 + c) * 8 + r) * 20 + q]!;
  assert.deepEqual([at(0, 0, 3, 5), at(0, 1, 3, 5), at(0, 2, 3, 5), at(0, 2, 3, 15), at(0, 2, 3, 16)], [-1, -1, 1, 1, 0], 'red: B −1, G −1, R +1 over 16 columns, then padding');
  assert.deepEqual([at(1, 0, 7, 0), at(1, 2, 7, 0), at(1, 0, 0, 19)], [1, -1, 0], 'blue: B +1, R −1, then padding');
  const r = await runEval(p('crnn.onnx'), { task: 'ctc', data: p('crops/rec_gt.txt'), vocab: p('keys.txt'), json: true });
  assert.equal(r.task, 'ctc');
  await assert.rejects(runEval(p('crnn.onnx'), { task: 'ctc', data: p('crops/rec_gt.txt'), json: true }), /its transcripts need the model's vocabulary[^]*ppocr_keys_v1\.txt/);
  await assert.rejects(runEval(p('crnn.onnx'), { task: 'ctc', data: p('crops/rec_gt.txt'), labels: p('y.npy'), vocab: p('keys.txt'), json: true }), /holds the labels; drop --labels/);
  writeFileSync(p('crops/broken.txt'), 'red.png\t中a\nmissing.png\ta\n');
  await assert.rejects(runEval(p('crnn.onnx'), { task: 'ctc', data: p('crops/broken.txt'), vocab: p('keys.txt'), json: true }), /broken\.txt line 2: cannot read image .*missing\.png/);
  writeFileSync(p('crops/unknown.txt'), 'red.png\tab\n');
  await assert.rejects(runEval(p('crnn.onnx'), { task: 'ctc', data: p('crops/unknown.txt'), vocab: p('keys.txt'), json: true }), /unknown\.txt line 1: character "b" is not in/);
});

test('refit eval --adapter applies an adapter folder as trained: the merged model scores the same; tasks it is not for refuse it', async () => {
  const t = await runTrain(p('crnn.onnx'), { task: 'ctc', data: p('crops/rec_gt.txt'), vocab: p('keys.txt'), adapter: 'lora', rank: 2, epochs: 2, batchSize: 1, lr: 0.05, out: p('crnn-lora2'), json: true });
  assert.equal(t.mode, 'adapter');
  const { mergeAdapters } = await import('../../src/cli/adapter.ts');
  await mergeAdapters(p('crnn.onnx'), [p('crnn-lora2')], p('crnn-merged.onnx'));
  const withAdapter = await runEval(p('crnn.onnx'), { task: 'ctc', data: p('crops/rec_gt.txt'), vocab: p('keys.txt'), adapter: p('crnn-lora2'), json: true });
  const merged = await runEval(p('crnn-merged.onnx'), { task: 'ctc', data: p('crops/rec_gt.txt'), vocab: p('keys.txt'), json: true });
  const plain = await runEval(p('crnn.onnx'), { task: 'ctc', data: p('crops/rec_gt.txt'), vocab: p('keys.txt'), json: true });
  assert.ok(Math.abs(withAdapter.loss - merged.loss) <= 1e-5 * merged.loss && Math.abs(withAdapter.loss - plain.loss) > 1e-4, `adapter ${withAdapter.loss}, merged ${merged.loss}, base ${plain.loss}`);
  assert.match(withAdapter.model, /crnn\.onnx \+ .*crnn-lora2/);
  await assert.rejects(runEval(p('crnn.onnx'), { task: 'pairs', data: p('lines.npy'), adapter: p('crnn-lora2'), json: true }), /--adapter: not for --task pairs; merge it first/);
});
