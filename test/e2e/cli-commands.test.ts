// `refit inspect | train | adapt | eval` run as a user runs them (node bin/refit.js …), on tiny
// datasets written here in every format the CLI reads: IDX, NPY, CSV and a PNG folder.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, mkdirSync, writeFileSync, readFileSync, readdirSync, symlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import jpeg from 'jpeg-js';
import { loadModel, loadAdapter, ModelBuilder, encodeModel, f32, i64 } from '../../src/index.ts';
import { loadFashionMnist } from '../../src/data/fashion-mnist.ts';
import { encodeIdx } from '../../src/data/idx.ts';
import { corrupt } from '../../src/data/corruptions/index.ts';
import { parseNpy, readDataset } from '../../src/cli/data-files.ts';
import { replaceDirAtomic } from '../../src/cli/common.ts';
import { refit, refitIn, root, npy, type Run } from '../helpers/cli.ts';

const cnn = join(root, 'models/fmnist-cnn.onnx');
const dir = mkdtempSync(join(tmpdir(), 'refit-cli-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const p = (...s: string[]) => join(dir, ...s);

const ok = (r: Run) => assert.equal(r.status, 0, r.stderr);
/** `refit adapt` on the CNN with `common` plus each variant's flags, concurrently; each must succeed, and its --json answer is returned. */
async function adaptJson(common: string[], ...variants: string[][]): Promise<Record<string, any>[]> {
  const runs = await Promise.all(variants.map((v) => refit('adapt', cnn, ...common, ...v)));
  runs.forEach(ok);
  return runs.map((r) => JSON.parse(r.stdout));
}
/** One line on stderr, exit status 1, no stack trace. */
function failsCleanly(r: Run, pattern: RegExp): void {
  assert.equal(r.status, 1, `expected exit 1: ${r.stdout}\n${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line expected:\n${r.stderr}`);
  assert.match(lines[0]!, /^refit: /);
  assert.match(lines[0]!, pattern);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
}


function png(file: string, px: Uint8Array, w: number, h: number, rgb = false): void {
  const img = new PNG({ width: w, height: h });
  for (let i = 0; i < w * h; i++) {
    const v = px[i]!;
    img.data.set([v, rgb ? 255 - v : v, v, 255], 4 * i); // an RGB image the CLI has to convert to gray
  }
  writeFileSync(file, PNG.sync.write(img));
}

const N = 96;
const fm = loadFashionMnist('test', { limit: N });
const bytes = Uint8Array.from(fm.images, (v) => Math.round(v * 255));

before(() => {
  // IDX (gzip-free) images and labels.
  writeFileSync(p('images-idx3-ubyte'), encodeIdx([N, 28, 28], bytes));
  writeFileSync(p('labels-idx1-ubyte'), encodeIdx([N], fm.labels));
  // NPY: float32 [N, 1, 28, 28] and int64 labels.
  writeFileSync(p('x.npy'), npy('<f4', [N, 1, 28, 28], Float32Array.from(bytes, (v) => v / 255)));
  writeFileSync(p('y.npy'), npy('<i8', [N], BigInt64Array.from(fm.labels, (v) => BigInt(v))));
  // CSV with a header, the label in a named first column.
  const rows = [['label', ...Array.from({ length: 784 }, (_, i) => `p${i}`)].join(',')];
  for (let i = 0; i < N; i++) rows.push([fm.labels[i], ...Array.from(fm.images.subarray(i * 784, (i + 1) * 784), (v) => +v.toFixed(4))].join(','));
  writeFileSync(p('data.csv'), rows.join('\n') + '\n');
  // A PNG folder, one sub-folder per class (all ten, so the sorted names are the class indices).
  for (let c = 0; c < 10; c++) mkdirSync(p('png', String(c)), { recursive: true });
  for (let i = 0; i < 48; i++) png(p('png', String(fm.labels[i]), `img${i}.png`), bytes.subarray(i * 784, (i + 1) * 784), 28, 28, i % 2 === 1);
  // One JPEG among the PNGs.
  const rgba = new Uint8Array(784 * 4);
  for (let i = 0; i < 784; i++) rgba.set([bytes[48 * 784 + i]!, bytes[48 * 784 + i]!, bytes[48 * 784 + i]!, 255], 4 * i);
  writeFileSync(p('png', String(fm.labels[48]), 'img48.jpg'), jpeg.encode({ data: rgba, width: 28, height: 28 }, 95).data);
  // Bad inputs.
  mkdirSync(p('png-big', '0'), { recursive: true });
  png(p('png-big', '0', 'big.png'), new Uint8Array(32 * 32), 32, 32);
  writeFileSync(p('bad.csv'), `${rows[0]}\n${rows[1]}\n${rows[2]!.replace(/,0\.\d+,/, ',abc,')}\n`);
});

test('inspect: the torch CNN fixture trains in every group; an op without a rule is named with its node', async () => {
  const [r, old] = await Promise.all([
    refit('inspect', join(root, 'test/fixtures/torch/cnn/model.onnx'), '--json'),
    refit('inspect', join(root, 'test/fixtures/opset/cnn_opset9.onnx')),
  ]);
  ok(r);
  ok(old);
  assert.match(old.stdout, /opset: +13 \(upgraded on load from 9 to 13; verified on x: float32\[2, 3, 6, 6\]/);
  const j = JSON.parse(r.stdout);
  assert.equal(j.opset, 17);
  assert.equal(j.upgrade, null);
  assert.deepEqual(j.inputs.map((i: { name: string }) => i.name), ['x']);
  assert.equal(j.opCounts.Conv, 6);
  assert.ok(j.ops.differentiable.includes('Conv') && j.ops.differentiable.includes('BatchNormalization'));
  assert.deepEqual(j.groups.map((g: { name: string }) => g.name), ['conv weights', 'linear weights', 'norm affine', 'biases']);
  assert.ok(j.groups.every((g: { trainable: boolean }) => g.trainable));
  assert.equal(j.blockers.length, 0);
  assert.equal(j.parameters.values, j.groups.reduce((a: number, g: { values: number }) => a + g.values, 0));

  // x → MatMul(W1) → Det (no gradient rule) → MatMul(W2) → y: W1 is blocked, W2 is not.
  const m = new ModelBuilder({ opset: 17 })
    .input('x', 'float32', ['N', 4])
    .initializer('fc1.weight', f32([4, 4], Array.from({ length: 16 }, (_, i) => i / 16)))
    .initializer('fc2.weight', f32([1, 3], [0.5, -1, 2]))
    .initializer('square', i64([3], [-1, 2, 2]))
    .initializer('last', i64([1], [1]))
    .node('MatMul', ['x', 'fc1.weight'], ['h'], {}, 'fc1')
    .node('Reshape', ['h', 'square'], ['h2x2'])
    .node('Det', ['h2x2'], ['det'], {}, 'odd_det')
    .node('Unsqueeze', ['det', 'last'], ['hn'])
    .node('MatMul', ['hn', 'fc2.weight'], ['logits'], {}, 'fc2')
    .output('logits', 'float32', ['N', 3])
    .build();
  writeFileSync(p('det.onnx'), encodeModel(m));
  const [t, js] = await Promise.all([refit('inspect', p('det.onnx')), refit('inspect', p('det.onnx'), '--json')]);
  ok(t);
  assert.match(t.stdout, /Det: no gradient rule; nodes 'odd_det'/);
  assert.match(t.stdout, /without a rule: Det\n/, 'a blocker gets no "nothing to differentiate" note');
  const b = JSON.parse(js.stdout).blockers;
  assert.equal(b.length, 1);
  assert.equal(b[0].opType, 'Det');
  assert.deepEqual(b[0].nodes, ['odd_det']);
  // An op without a rule off every parameter's path (the exported nanoGPT's positions: Range) is said to be harmless.
  const gpt = await refit('inspect', join(root, 'test/fixtures/token-ce/model.onnx'));
  ok(gpt);
  assert.match(gpt.stdout, /without a rule: Range \(none between a parameter and an output: nothing to differentiate there\)/);
  assert.match(gpt.stdout, /every parameter group can train/);
});

test('train: LoRA on IDX and on a PNG folder, full training on NPY, BitFit on CSV; outputs load and learn', async () => {
  const common = ['--epochs', '2', '--batch-size', '16', '--val-split', '0.25', '--json'];
  const [lora, full] = await Promise.all([
    refit('train', cnn, '--data', p('images-idx3-ubyte'), '--labels', p('labels-idx1-ubyte'), '--adapter', 'lora', '--rank', '4', '--targets', '/head|layer3/', '--out', p('lora'), ...common),
    refit('train', cnn, '--data', p('x.npy'), '--labels', p('y.npy'), '--lr', '5e-4', '--out', p('full.onnx'), ...common),
  ]);
  ok(lora);
  ok(full);
  const l = JSON.parse(lora.stdout), f = JSON.parse(full.stdout);
  assert.equal(l.data.format, 'idx');
  assert.equal(l.data.train + l.data.validation, N);
  assert.equal(l.data.validation, 24);
  assert.ok(l.trainablePercent > 0 && l.trainablePercent < 10, `LoRA share ${l.trainablePercent}`);
  assert.equal(f.data.format, 'npy');
  assert.equal(f.trainablePercent, 100);
  for (const r of [l, f]) {
    assert.equal(r.epochs.length, 2);
    for (const e of r.epochs) assert.ok(e.valAccuracy >= 0 && e.valAccuracy <= 1 && Number.isFinite(e.valLoss));
  }
  // Full training on 72 images at lr 5e-4: the training loss of epoch 2 is below epoch 1's.
  assert.ok(f.epochs[1].trainLoss < f.epochs[0].trainLoss, `full: ${f.epochs.map((e: { trainLoss: number }) => e.trainLoss)}`);
  assert.deepEqual(readdirSync(p('lora')).sort(), ['adapter_config.json', 'adapter_model.safetensors']);
  const base = await loadModel(cnn);
  const adapted = await loadAdapter(base, p('lora'));
  assert.ok(adapted.trainableNames().some((n) => n.includes('lora_A')));
  const tuned = await loadModel(p('full.onnx'));
  const x = f32([4, 1, 28, 28], fm.images.slice(0, 4 * 784));
  const a = (await base.run({ x })).logits!.data as Float32Array, b = (await tuned.run({ x })).logits!.data as Float32Array;
  assert.ok(a.some((v, i) => Math.abs(v - b[i]!) > 1e-4), 'full training changed the model');

  const [png, csv] = await Promise.all([
    refit('train', cnn, '--data', p('png'), '--adapter', 'lora', '--rank', '2', '--targets', 'head', '--out', p('lora-png'), ...common),
    refit('train', cnn, '--data', p('data.csv'), '--label-column', 'label', '--adapter', 'bitfit', '--out', p('bitfit'), '--epochs', '1', '--batch-size', '32'),
  ]);
  ok(png);
  ok(csv);
  const g = JSON.parse(png.stdout);
  assert.equal(g.data.format, 'images');
  assert.equal(g.data.samples, 49);
  assert.match(csv.stdout, /epoch 1\/1: train loss \d\.\d{4}, accuracy \d+\.\d\d% \| validation loss \d\.\d{4}, accuracy \d+\.\d\d%/);
  assert.ok(existsSync(p('bitfit', 'adapter_model.safetensors')));
  await Promise.all([base.release(), adapted.release(), tuned.release()]);
});

test('adapt (tent → CSV, continual → JSONL with a report) and eval', async () => {
  const [tent, cont, ev] = await Promise.all([
    refit('adapt', cnn, '--method', 'tent', '--stream', p('x.npy'), '--labels', p('y.npy'), '--batch-size', '48', '--out', p('tent.csv'), '--json'),
    refit('adapt', cnn, '--method', 'continual', '--stream', p('images-idx3-ubyte'), '--labels', p('labels-idx1-ubyte'), '--batch-size', '48', '--feedback-delay', '1', '--out', p('cont.jsonl'), '--report', p('report.html')),
    refit('eval', cnn, '--data', p('data.csv'), '--json'),
  ]);
  ok(tent);
  const t = JSON.parse(tent.stdout);
  assert.equal(t.stream.batches, 2);
  assert.ok(t.error >= 0 && t.error <= 1 && t.sourceError >= 0);
  const rows = readFileSync(p('tent.csv'), 'utf8').trim().split('\n');
  assert.equal(rows[0], 'id,prediction,confidence,label');
  assert.equal(rows.length, N + 1);
  const wrong = rows.slice(1).filter((r) => { const c = r.split(','); return c[1] !== c[3]; }).length;
  assert.equal(wrong / N, t.error);
  for (const r of rows.slice(1)) { const conf = Number(r.split(',')[2]); assert.ok(conf > 0 && conf <= 1); }

  ok(cont);
  assert.match(cont.stdout, /error \d+\.\d\d% \(unadapted model: \d+\.\d\d%\)/);
  assert.match(cont.stdout, /controller levels \(batches\): .*; 48 labels fed back/); // batch 0's labels, after batch 1
  const preds = readFileSync(p('cont.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(preds.length, N);
  assert.deepEqual(Object.keys(preds[0]), ['id', 'prediction', 'confidence', 'label', 'level']);
  assert.ok(readFileSync(p('report.html'), 'utf8').includes('refit adapt: continual'));

  ok(ev);
  const e = JSON.parse(ev.stdout);
  assert.equal(e.samples, N);
  assert.ok(e.accuracy > 0.8, `the shipped CNN on clean images: ${e.accuracy}`); // 92.99% on the full test set
  assert.ok(e.loss > 0 && Number.isFinite(e.loss));
});

test('adapt --method continual with --source: level 3 is the deep learner (RMT over every parameter), --no-deep keeps it off', async () => {
  // A shifted stream (the test images twice over: 12 batches of 16) makes the
  // controller climb to level 3 (gaussian noise at severity 5); the labelled CSV is the in-distribution set.
  const twice = new Float32Array(2 * N * 784);
  twice.set(fm.images);
  twice.set(fm.images, N * 784);
  const noisy = corrupt(twice, 2 * N, 28, 28, 'gaussian_noise', 5, 1);
  writeFileSync(p('noisy.npy'), npy('<f4', [2 * N, 1, 28, 28], noisy));
  const plain = ['--method', 'continual', '--stream', p('noisy.npy'), '--source', p('data.csv'), '--label-column', 'label', '--batch-size', '16'];
  const common = [...plain, '--json'];
  // Without --json, the same run shows the deep learner prepared before the stream, with its warm-up's progress.
  const [[d, n], shown] = await Promise.all([adaptJson(common, ['--out', p('deep.csv')], ['--no-deep', '--out', p('nodeep.csv')]), refit('adapt', cnn, ...plain, '--out', p('shown.csv'))]);
  ok(shown);
  assert.match(shown.stderr, /preparing the deep learner[^\n]*\n(refit: the deep learner's warm-up on the source set \(RMT\): \d+\/\d+ samples\n)+/);
  assert.equal(readFileSync(p('shown.csv'), 'utf8'), readFileSync(p('deep.csv'), 'utf8'), 'the same predictions as the --json run');
  assert.equal(d.deepLearner, true);
  assert.equal(d.deepParams, 'all', 'the shipped CNN is under the size where the deep learner adapts only the normalization affine');
  assert.equal(n.deepLearner, false);
  assert.ok((d.levels.consolidation ?? 0) > 0, `the stream should reach level 3: ${JSON.stringify(d.levels)}`);
  // Up to level 3 the two runs are the same controller; from there the deep learner predicts.
  const rows = (f: string) => readFileSync(p(f), 'utf8').trim().split('\n').slice(1);
  const a = rows('deep.csv'), b = rows('nodeep.csv');
  assert.equal(a.length, 2 * N);
  assert.ok(a.some((r, i) => r !== b[i]), 'the deep learner changed no prediction');
  const tent = await refit('adapt', cnn, '--method', 'tent', '--stream', p('x.npy'), '--no-deep', '--out', p('never.csv'));
  failsCleanly(tent, /--no-deep is for --method continual/);
  const [badParams, noDeepParams] = await Promise.all([
    refit('adapt', cnn, ...plain, '--deep-params', 'some', '--out', p('never.csv')),
    refit('adapt', cnn, ...plain, '--no-deep', '--deep-params', 'norm', '--out', p('never.csv')),
  ]);
  failsCleanly(badParams, /--deep-params must be 'all' or 'norm', got 'some'/);
  failsCleanly(noDeepParams, /--deep-params is for the deep learner .*--no-deep turns it off/);
  failsCleanly(await refit('adapt', cnn, '--method', 'tent', '--stream', p('x.npy'), '--deep-params', 'norm', '--out', p('never.csv')), /--deep-params is for --method continual/);
});

test('adapt --input-align: a washed-out stream standardised to --source loses most of its error (by default for continual with --source); without --source it fails cleanly', async () => {
  writeFileSync(p('washed.npy'), npy('<f4', [N, 1, 28, 28], Float32Array.from(fm.images, (v) => 0.3 * v + 0.45)));
  const common = ['--method', 'source', '--stream', p('washed.npy'), '--labels', p('y.npy'), '--source', p('data.csv'), '--label-column', 'label', '--json'];
  const [a, b] = await adaptJson(common, ['--input-align', '--out', p('aligned.csv')], ['--out', p('plain.csv')]);
  assert.equal(a.inputAlign.mean.length, 1);
  assert.equal(b.inputAlign, undefined);
  assert.ok(b.error > 0.3 && a.error < b.error / 2, `washed-out stream: ${a.error} aligned against ${b.error}`);
  // The continual controller with --source aligns by default (its recommended options); --no-input-align turns it off.
  const cont = ['--method', 'continual', '--stream', p('washed.npy'), '--labels', p('y.npy'), '--source', p('data.csv'), '--label-column', 'label', '--no-deep', '--json'];
  const [ca, cb] = await adaptJson(cont, ['--out', p('c-aligned.csv')], ['--no-input-align', '--out', p('c-plain.csv')]);
  assert.equal(ca.inputAlign.mean.length, 1);
  assert.equal(cb.inputAlign, undefined);
  assert.ok(ca.error < cb.error / 2, `continual on the washed-out stream: ${ca.error} aligned by default against ${cb.error} with --no-input-align`);
  failsCleanly(await refit('adapt', cnn, '--method', 'tent', '--stream', p('x.npy'), '--input-align', '--out', p('never.csv')), /--input-align .* give --source/);
});

test('train --task next-token: LoRA on an exported nanoGPT from a .npy of token ids; bad token files fail cleanly', async () => {
  const gpt = join(root, 'test/fixtures/token-ce/model.onnx'); // vocabulary 37, dynamic batch and sequence
  const S = 48, T = 10;
  // A corpus that counts (token t is followed by t + 1 mod 37), some tails padded with id 0.
  const ids = BigInt64Array.from({ length: S * T }, (_, i) => { const s = Math.floor(i / T), t = i % T; return BigInt(s < 6 && t >= 7 ? 0 : (s * 5 + t) % 37); });
  writeFileSync(p('tokens.npy'), npy('<i8', [S, T], ids));
  const r = await refit('train', gpt, '--task', 'next-token', '--data', p('tokens.npy'), '--pad-token', '0', '--adapter', 'lora', '--rank', '4', '--lr', '2e-2',
    '--epochs', '3', '--batch-size', '8', '--val-split', '0.25', '--out', p('gpt-lora'), '--json');
  ok(r);
  const j = JSON.parse(r.stdout);
  assert.equal(j.task, 'next-token');
  assert.equal(j.data.format, 'npy token ids');
  assert.deepEqual(j.data.sampleShape, [T]);
  assert.equal(j.data.train + j.data.validation, S);
  assert.equal(j.epochs.length, 3);
  for (const e of j.epochs) assert.ok(Number.isFinite(e.valLoss) && e.valAccuracy >= 0 && e.valAccuracy <= 1);
  // Measured: train loss 3.7 -> 2.5 over the three epochs.
  assert.ok(j.epochs[2].trainLoss < j.epochs[0].trainLoss - 0.3, `train losses ${j.epochs.map((e: { trainLoss: number }) => e.trainLoss)}`);
  const adapted = await loadAdapter(await loadModel(gpt), p('gpt-lora'));
  assert.ok(adapted.trainableNames().some((n) => n.includes('lora_A')));

  writeFileSync(p('tokens-f32.npy'), npy('<f4', [S, T], Float32Array.from(ids, Number)));
  writeFileSync(p('tokens-oov.npy'), npy('<i8', [2, T], BigInt64Array.from({ length: 2 * T }, (_, i) => BigInt(i === 13 ? 40 : 1))));
  const out = p('never-lm');
  const [f32ids, oov, cnnModel, task] = await Promise.all([
    refit('train', gpt, '--task', 'next-token', '--data', p('tokens-f32.npy'), '--adapter', 'lora', '--out', out),
    refit('train', gpt, '--task', 'next-token', '--data', p('tokens-oov.npy'), '--adapter', 'lora', '--out', out),
    refit('train', cnn, '--task', 'next-token', '--data', p('tokens.npy'), '--adapter', 'lora', '--out', out),
    refit('train', gpt, '--task', 'summarise', '--data', p('tokens.npy'), '--adapter', 'lora', '--out', out),
  ]);
  failsCleanly(f32ids, /token ids must be int32 or int64, got float32/);
  failsCleanly(oov, /token 40 \(sequence 1, position 3\) is outside the model's vocabulary \[0, 37\)/);
  failsCleanly(cnnModel, /--task next-token feeds one input of token ids; this model has x \(float32\)/);
  failsCleanly(task, /unknown --task 'summarise'; known tasks: classify, next-token/);
  assert.ok(!existsSync(out));
  await adapted.release();
});

test('bad input: one line, exit 1, nothing written', async () => {
  const outs = ['m.onnx', 'big', 'u.csv', 'c.onnx'].map((f) => p('never', f));
  const [missing, big, method, nan, help] = await Promise.all([
    refit('train', cnn, '--data', p('nope.npy'), '--out', outs[0]!),
    refit('train', cnn, '--data', p('png-big'), '--adapter', 'lora', '--out', outs[1]!),
    refit('adapt', cnn, '--method', 'tnet', '--stream', p('x.npy'), '--out', outs[2]!),
    refit('train', cnn, '--data', p('bad.csv'), '--label-column', 'label', '--out', outs[3]!),
    refit('train', '--help'),
  ]);
  failsCleanly(missing, /data not found: .*nope\.npy/);
  failsCleanly(big, /big\.png is 32×32; the model's input 'x' takes 28×28 images/);
  failsCleanly(method, /unknown method 'tnet'; known methods: .*tent.*continual/);
  failsCleanly(nan, /bad\.csv:3: column \d+ \('p\d+'\) is "abc", not a finite number/);
  for (const o of outs) assert.ok(!existsSync(o), `${o} must not exist`);
  assert.ok(!existsSync(p('never')));
  ok(help);
  assert.match(help.stdout, /Examples:\n  refit train /);
  // A failed run leaves a good output from before as it was.
  const good = readFileSync(p('full.onnx'));
  failsCleanly(await refit('train', cnn, '--data', p('bad.csv'), '--out', p('full.onnx')), /not a finite number/);
  assert.ok(readFileSync(p('full.onnx')).equals(good));
  // --debug shows the stack.
  const dbg = await refit('--debug', 'eval', cnn, '--data', p('nope.npy'));
  assert.equal(dbg.status, 1);
  assert.match(dbg.stderr, /\n\s+at /);
});

test('image folder reader: classes from sub-folders, gray kept, RGB to luma, JPEG decoded', () => {
  const ds = readDataset(p('png'), { input: 'x', dims: [1, 28, 28] });
  assert.deepEqual(ds.classes, ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
  assert.equal(ds.n, 49);
  for (let k = 0; k < ds.n; k++) {
    const m = /img(\d+)\.(png|jpg)$/.exec(ds.ids[k]!)!;
    const i = Number(m[1]);
    assert.equal(ds.labels![k], fm.labels[i]);
    const got = ds.x.subarray(k * 784, (k + 1) * 784);
    const want = Array.from(bytes.subarray(i * 784, (i + 1) * 784), (v) => (m[2] === 'jpg' ? v : i % 2 ? 0.299 * v + 0.587 * (255 - v) + 0.114 * v : v) / 255);
    const tol = m[2] === 'jpg' ? 0.1 : 1e-6; // JPEG is lossy
    const err = Math.max(...Array.from(got, (v, j) => Math.abs(v - want[j]!)));
    assert.ok(err <= tol, `${ds.ids[k]}: max difference ${err}`);
  }
  // A 3-channel model gets planar RGB: gray copied to every plane, colour kept.
  const rgb = readDataset(p('png'), { input: 'x', dims: [3, 28, 28] });
  const k1 = rgb.ids.indexOf(join(String(fm.labels[1]), 'img1.png')); // an RGB image (r = b = v, g = 255 − v)
  const k0 = rgb.ids.indexOf(join(String(fm.labels[0]), 'img0.png')); // a gray one
  for (let j = 0; j < 784; j += 37) {
    const v = bytes[784 + j]! / 255, g = bytes[j]! / 255, at = (k: number, c: number) => rgb.x[k * 3 * 784 + c * 784 + j]!;
    assert.ok(Math.abs(at(k1, 0) - v) < 1e-6 && Math.abs(at(k1, 1) - (1 - v)) < 1e-6 && Math.abs(at(k1, 2) - v) < 1e-6);
    assert.ok([0, 1, 2].every((c) => Math.abs(at(k0, c) - g) < 1e-6));
  }
  // A flat folder is an unlabelled stream, named by file.
  const flat = readDataset(p('png', String(fm.labels[0])), { input: 'x', dims: [1, 28, 28] });
  assert.equal(flat.labels, undefined);
  assert.ok(flat.ids.includes('img0.png'));
  assert.throws(() => readDataset(p('png'), { input: 'x', dims: [3, 32, 32] }), /img\d+\.(png|jpg) is 28×28; the model's input 'x' takes 32×32 images/);
});

test('NPY reader: header versions and dtypes', () => {
  const a = parseNpy(npy('<i8', [3], BigInt64Array.from([1n, 2n, 7n])), 'a.npy');
  assert.deepEqual([a.dtype, a.shape, Array.from(a.values)], ['int64', [3], [1, 2, 7]]);
  const bad = npy('<f4', [2], Float32Array.from([1, 2]));
  bad.set(new TextEncoder().encode('>f4'), bad.indexOf(0x3c)); // big-endian
  assert.throws(() => parseNpy(bad, 'b.npy'), /b\.npy: NPY dtype '>f4' is not supported/);
  assert.throws(() => parseNpy(npy('<f4', [4], Float32Array.from([1, 2])), 'c.npy'), /c\.npy: NPY data is truncated/);
  const mask = parseNpy(npy('|b1', [2, 2], Uint8Array.from([0, 1, 1, 0])), 'mask.npy'); // np.save of a bool padding mask
  assert.deepEqual([mask.dtype, mask.shape, Array.from(mask.values)], ['bool', [2, 2], [0, 1, 1, 0]]);
  assert.throws(() => parseNpy(npy('|b1', [2], Uint8Array.from([1, 7])), 'm.npy'), /m\.npy: bool NPY element 1 is byte 7, not 0 or 1/);
});

test('adapter folder swap: a failed write leaves the old folder as it was and no temp folder behind', async () => {
  const d = p('swap', 'adapter');
  await replaceDirAtomic(d, async (tmp) => writeFileSync(join(tmp, 'a.txt'), 'v1'));
  await assert.rejects(replaceDirAtomic(d, async (tmp) => { writeFileSync(join(tmp, 'a.txt'), 'half'); throw new Error('disk full'); }), /disk full/);
  assert.equal(readFileSync(join(d, 'a.txt'), 'utf8'), 'v1');
  assert.deepEqual(readdirSync(p('swap')), ['adapter']);
  await replaceDirAtomic(d, async (tmp) => writeFileSync(join(tmp, 'b.txt'), 'v2'));
  assert.deepEqual(readdirSync(d), ['b.txt']);
  assert.deepEqual(readdirSync(p('swap')), ['adapter']);
});

test("README: the CLI section's examples run as written", async (t) => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## The `refit` command'));
  const block = /```bash\n([\s\S]*?)```/.exec(section)![1]!;
  const lines = block.replace(/\\\n\s*/g, ' ').split('\n').map((l) => l.replace(/\s+#.*$/, '').trim()).filter(Boolean);
  // Run where the README's relative paths resolve, writing into a temp dir.
  const cwd = mkdtempSync(join(tmpdir(), 'refit-readme-'));
  t.after(() => rmSync(cwd, { recursive: true, force: true }));
  for (const d of ['models', 'data']) symlinkSync(join(root, d), join(cwd, d));
  const vars: Record<string, string> = {};
  const commands: string[][] = [];
  for (const l of lines) {
    const a = /^(\w+)=(\S+)$/.exec(l);
    if (a) { vars[a[1]!] = a[2]!; continue; }
    assert.match(l, /^npx refit /, `a README example that is not a refit command: ${l}`);
    const args = [...l.slice('npx refit '.length).matchAll(/'([^']*)'|(\S+)/g)].map((m) => m[1] ?? m[2]!.replace(/\$(\w+)/g, (_, v) => vars[v]!));
    commands.push(args);
  }
  assert.ok(commands.length >= 4);
  for (const args of commands) {
    const r = await refitIn(cwd, args);
    assert.equal(r.status, 0, `refit ${args.join(' ')}\n${r.stderr}`);
    if (args[0] === 'eval' && !args.includes('--adapter')) assert.match(r.stdout, /accuracy 92\.99% \(9299\/10000\)/); // the model card's clean test accuracy
    if (args.includes('--adapter') && args[0] === 'eval') assert.match(r.stdout, /fmnist-cnn\.onnx \+ cnn-lora\/ on .*: accuracy \d+\.\d+% \(\d+\/10000\)/);
  }
  assert.ok(existsSync(join(cwd, 'cnn-lora', 'adapter_model.safetensors')));
  assert.equal(readFileSync(join(cwd, 'preds.jsonl'), 'utf8').trim().split('\n').length, 2000);
  assert.ok(existsSync(join(cwd, 'report.html')));
});
