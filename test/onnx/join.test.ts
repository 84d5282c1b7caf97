// joinModels: an encoder and a decoder exported as two files (optimum's seq2seq layout) as one
// graph, so one step trains both: the joined forward is the decoder's on the encoder's output,
// a tensor both files hold with the same values (Marian's and T5's shared embedding) is one
// parameter with both uses' gradients (finite differences), and trained weights go back into
// the two files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import type { Model } from '../../src/onnx/ir.ts';
import { readFileSync } from 'node:fs';
import { loadModel, RefitModel } from '../../src/model.ts';
import { tokenCrossEntropy } from '../../src/train/losses.ts';
import { joinModels, splitWeights } from '../../src/onnx/join.ts';
import { kvCacheOf, withoutKvCache, writeWeightsBack } from '../../src/onnx/kv-cache.ts';
import { gradCheck } from '../../src/autodiff/gradcheck.ts';
import { f32, tensor, tensorOf, type Tensor } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';

const V = 11, d = 6, B = 2, TE = 5, TD = 4;

function weights(seed: number, dims: number[]): Tensor {
  const r = new Rng(seed);
  return f32(dims, Array.from({ length: dims.reduce((a, b) => a * b) }, () => r.next() - 0.5));
}

/** Encoder: shared embedding → MatMul → Tanh → last_hidden_state [B, TE, d]. */
function encoder(): Model {
  const b = new ModelBuilder({ opset: 17 });
  b.input('input_ids', 'int64', ['batch', 'enc']);
  b.input('attention_mask', 'int64', ['batch', 'enc']);
  b.initializer('shared', weights(1, [V, d]));
  b.initializer('enc.w', weights(2, [d, d]));
  b.node('Gather', ['shared', 'input_ids'], ['h']);
  b.node('MatMul', ['h', 'enc.w'], ['m']);
  b.node('Tanh', ['m'], ['last_hidden_state']);
  b.output('last_hidden_state', 'float32', ['batch', 'enc', d]);
  return b.build();
}

/** Decoder: shared embedding, cross-attention over the encoder states (masked), a head. */
function decoder(): Model {
  const b = new ModelBuilder({ opset: 17 });
  b.input('input_ids', 'int64', ['batch', 'dec']);
  b.input('encoder_hidden_states', 'float32', ['batch', 'enc', d]);
  b.input('encoder_attention_mask', 'int64', ['batch', 'enc']);
  b.initializer('shared', weights(1, [V, d])); // the same values as the encoder's: one tensor when joined
  b.initializer('dec.q', weights(3, [d, d]));
  b.initializer('lm_head', weights(4, [d, V]));
  b.initializer('one', f32([], [1]));
  b.initializer('neg', f32([], [-1e4]));
  b.initializer('axis1', { dtype: 'int64', dims: [1], data: new BigInt64Array([1n]) });
  b.node('Gather', ['shared', 'input_ids'], ['h']); // 'h' clashes with the encoder's
  b.node('MatMul', ['h', 'dec.q'], ['q']);
  b.node('Transpose', ['encoder_hidden_states'], ['kT'], { perm: [0, 2, 1] });
  b.node('MatMul', ['q', 'kT'], ['scores']);
  b.node('Cast', ['encoder_attention_mask'], ['maskf'], { to: 1 });
  b.node('Sub', ['one', 'maskf'], ['off']);
  b.node('Mul', ['off', 'neg'], ['bias2']);
  b.node('Unsqueeze', ['bias2', 'axis1'], ['bias']);
  b.node('Add', ['scores', 'bias'], ['masked']);
  b.node('Softmax', ['masked'], ['attn'], { axis: -1 });
  b.node('MatMul', ['attn', 'encoder_hidden_states'], ['ctx']);
  b.node('Add', ['h', 'ctx'], ['m']); // 'm' clashes too
  b.node('MatMul', ['m', 'lm_head'], ['logits']);
  b.output('logits', 'float32', ['batch', 'dec', V]);
  return b.build();
}

const encIds = tensorOf('int64', [B, TE], (i) => (3 * i + 1) % V);
const mask = tensorOf('int64', [B, TE], (i) => (i >= TE + 3 ? 0 : 1)); // the second row's last 2 positions padded
const decIds = tensorOf('int64', [B, TD], (i) => (5 * i + 2) % V);
const links = { encoder_hidden_states: 'last_hidden_state', encoder_attention_mask: 'attention_mask' };

test('joinModels: the joined forward is the decoder on the encoder\'s output; clashing names get the prefix, the shared embedding stays one tensor', async () => {
  const j = joinModels(encoder(), decoder(), { links });
  assert.deepEqual(j.model.graph.inputs.map((i) => i.name), ['input_ids', 'attention_mask', 'decoder_input_ids']);
  assert.deepEqual(j.shared, ['shared']);
  assert.equal(j.renamed.get('input_ids'), 'decoder_input_ids');
  assert.equal(j.renamed.get('h'), 'decoder_h');
  const joined = new RefitModel(j.model, { threads: 1 });
  const params = joined.parameterNames();
  assert.ok(['dec.q', 'enc.w', 'lm_head', 'shared'].every((p) => params.includes(p)) && params.filter((p) => p === 'shared').length === 1, params.join());
  const enc = new RefitModel(encoder(), { threads: 1 }), dec = new RefitModel(decoder(), { threads: 1 });
  const states = (await enc.run({ input_ids: encIds, attention_mask: mask }))['last_hidden_state']!;
  const want = (await dec.run({ input_ids: decIds, encoder_hidden_states: states, encoder_attention_mask: mask }))['logits']!;
  const got = (await joined.run({ input_ids: encIds, attention_mask: mask, decoder_input_ids: decIds }))['logits']!;
  assert.deepEqual([...got.data], [...want.data]);
  await Promise.all([joined.release(), enc.release(), dec.release()]);
});

test('joinModels: one step trains both halves; the shared embedding\'s gradient sums its three uses (finite differences)', async () => {
  const j = joinModels(encoder(), decoder(), { links });
  const reports = await gradCheck(j.model, { input_ids: encIds, attention_mask: mask, decoder_input_ids: decIds }, { params: ['shared', 'enc.w', 'dec.q'], outputs: ['logits'], maxElements: 24 });
  assert.equal(reports.length, 3);
  for (const r of reports) {
    assert.ok(r.relError <= 1e-2, `${r.param}: relative error ${r.relError.toExponential(2)}`);
    assert.ok(r.analyticNorm > 0, `${r.param}: zero gradient`);
  }
});

test('splitWeights: trained weights go back into the two models under their own names', () => {
  const j = joinModels(encoder(), decoder(), { links });
  const joined = new RefitModel(j.model);
  joined.setParams({ shared: new Float32Array(V * d).fill(0.25), 'enc.w': new Float32Array(d * d).fill(0.5), 'dec.q': new Float32Array(d * d).fill(0.75) });
  const enc = new RefitModel(encoder()), dec = new RefitModel(decoder());
  const n = splitWeights(joined, enc, dec, j);
  assert.deepEqual(n.first.sort(), ['enc.w', 'shared']);
  assert.deepEqual(n.second.sort(), ['dec.q', 'lm_head', 'one', 'neg', 'shared'].sort());
  assert.equal(enc.param('shared').data[0], 0.25);
  assert.equal(dec.param('shared').data[0], 0.25);
  assert.equal(enc.param('enc.w').data[0], 0.5);
  assert.equal(dec.param('dec.q').data[0], 0.75);
});

test('joinModels refuses, by name: a link to a tensor the first model lacks, an input the second lacks, a subgraph node', () => {
  assert.throws(() => joinModels(encoder(), decoder(), { links: { encoder_hidden_states: 'nope' } }), /the first model has no tensor 'nope' to feed 'encoder_hidden_states'/);
  assert.throws(() => joinModels(encoder(), decoder(), { links: { nope: 'last_hidden_state' } }), /the second model has no input 'nope'/);
  const withIf = decoder();
  withIf.graph.nodes.push({ name: 'branch', opType: 'If', domain: '', inputs: ['c'], outputs: ['z'], attrs: { then_branch: { kind: 'opaque', value: {} } } });
  assert.throws(() => joinModels(encoder(), withIf, { links }), /a node with a subgraph \('branch', If\); for a decoder with a KV cache, join withoutKvCache\(decoder\)/);
});

// A BART/Marian-style encoder-decoder exported by torch.onnx as optimum lays it out, two files
// (test/fixtures/seq2seq/make_seq2seq.py), against PyTorch's float64 loss and gradients. Its
// embedding `model.shared` is read by the encoder, the decoder and the tied lm_head (a transposed
// copy in the decoder file).
const FIX = new URL('../fixtures/seq2seq/', import.meta.url).pathname;
const seq2seqRef = JSON.parse(readFileSync(`${FIX}reference.json`, 'utf8')) as {
  encoder: Record<string, [string, boolean][]>; decoder_model: Record<string, [string, boolean][]>; decoder_model_merged: Record<string, [string, boolean][]>;
  inputs: Record<'input_ids' | 'attention_mask' | 'decoder_input_ids' | 'labels', number[][]>;
  loss: number; grads: Record<string, number[]>; shapes: Record<string, number[]>;
};
const ids2 = (rows: number[][]) => tensor('int64', [rows.length, rows[0]!.length], rows.flat());

for (const [decoderName, keepTies] of [['decoder_model', false], ['decoder_model', true], ['decoder_model_merged', false]] as const) {
  test(`an exported encoder-decoder joined (${decoderName}${keepTies ? ', keepTies' : ''}): loss and every parameter's gradient match PyTorch`, async () => {
    const encoderFile = await loadModel(`${FIX}encoder_model.onnx`, { keepTies });
    // the merged decoder trains without its cache (both its own keys and values and the cross-attention's)
    const decoderFile = withoutKvCache(await loadModel(`${FIX}${decoderName}.onnx`, { keepTies }));
    const j = joinModels(encoderFile.ir, decoderFile.ir, { links });
    const model = new RefitModel(j.model, { threads: 1 });
    const step = model.compileTrainStep({ trainable: 'all', loss: tokenCrossEntropy({ logits: 'logits', labels: 'labels' }) });
    const { input_ids, attention_mask, decoder_input_ids, labels } = seq2seqRef.inputs;
    const r = await step.run({ input_ids: ids2(input_ids), attention_mask: ids2(attention_mask), decoder_input_ids: ids2(decoder_input_ids), labels: ids2(labels) });
    await step.release();
    assert.ok(Math.abs(r.loss - seq2seqRef.loss) <= 1e-5 * seq2seqRef.loss, `loss ${r.loss} vs PyTorch ${seq2seqRef.loss}`);
    const seen = new Set<string>();
    for (const [param, want] of Object.entries(seq2seqRef.grads)) {
      const got = new Float32Array(want.length);
      const [rows, cols] = seq2seqRef.shapes[param]!;
      let found = 0;
      const holders = [...seq2seqRef.encoder[param]!.map(([n, t]) => [n, t] as const), ...seq2seqRef[decoderName][param]!.map(([n, t]) => [j.renamed.get(n) ?? n, t] as const)];
      for (const [name, transposed] of holders) {
        const g = r.grads.get(name);
        if (!g || seen.has(`${name}`)) continue; // a tensor both files share, or a retied copy, counts once
        seen.add(name);
        found++;
        for (let i = 0; i < want.length; i++) got[i]! += transposed ? g[(i % cols!) * rows! + Math.floor(i / cols!)]! : g[i]!;
      }
      assert.ok(found > 0, `no gradient for ${param}`);
      assertClose(`${param}`, got, want);
    }
    if (keepTies) assert.ok(!model.parameterNames().some((n) => seq2seqRef[decoderName]['model.shared.weight']!.some(([c, t]) => t && (j.renamed.get(c) ?? c) === n)), 'the tied lm_head copy is no parameter');
    await model.release();
  });
}

function assertClose(name: string, got: Float32Array, want: number[]) {
  let d2 = 0, w2 = 0;
  for (let i = 0; i < want.length; i++) { d2 += (got[i]! - want[i]!) ** 2; w2 += want[i]! ** 2; }
  assert.ok(Math.sqrt(d2) <= 1e-4 * Math.sqrt(w2) + 1e-6, `${name}: relative error ${(Math.sqrt(d2 / Math.max(w2, 1e-30))).toExponential(2)}`);
}

test('the merged seq2seq decoder fixture generates with its cache as it scores whole sequences', async () => {
  const enc = await loadModel(`${FIX}encoder_model.onnx`, { threads: 1 });
  const dec = await loadModel(`${FIX}decoder_model_merged.onnx`, { threads: 1 });
  const kv = kvCacheOf(dec)!;
  assert.deepEqual(kv.past.map((p) => p.name).sort(), ['past_key_values.0.decoder.key', 'past_key_values.0.decoder.value', 'past_key_values.0.encoder.key', 'past_key_values.0.encoder.value']);
  const { input_ids, attention_mask, decoder_input_ids } = seq2seqRef.inputs;
  const states = (await enc.run({ input_ids: ids2(input_ids), attention_mask: ids2(attention_mask) }))['last_hidden_state']!;
  const empty = Object.fromEntries(kv.past.map((p) => [p.name, tensor('float32', [2, 2, 0, 4], [])]));
  const run = (ids: Tensor, past: Record<string, Tensor>, cached: boolean) => dec.run({ input_ids: ids, encoder_hidden_states: states, encoder_attention_mask: ids2(attention_mask), ...past, use_cache_branch: tensor('bool', [1], [cached ? 1 : 0]) });
  const T = decoder_input_ids[0]!.length;
  const whole = (await run(ids2(decoder_input_ids), empty, false))['logits']!;
  const first = await run(ids2(decoder_input_ids.map((r) => r.slice(0, T - 1))), empty, false);
  const past = Object.fromEntries(kv.past.map((p, k) => [p.name, first[kv.present[k]!]!]));
  const step = (await run(ids2(decoder_input_ids.map((r) => r.slice(T - 1))), past, true))['logits']!;
  let diff = 0;
  for (let b = 0; b < 2; b++) for (let v = 0; v < V + 5; v++) diff = Math.max(diff, Math.abs((step.data[b * (V + 5) + v] as number) - (whole.data[(b * T + T - 1) * (V + 5) + v] as number)));
  assert.ok(diff < 1e-4, `cached step vs whole sequence: ${diff}`);
  await Promise.all([enc.release(), dec.release()]);
});


test('trained weights go back into the merged decoder\'s file (splitWeights, then writeWeightsBack), which then computes what the joined model computes', async () => {
  const enc = await loadModel(`${FIX}encoder_model.onnx`, { threads: 1 });
  const file = await loadModel(`${FIX}decoder_model_merged.onnx`, { threads: 1 });
  const free = withoutKvCache(file);
  const j = joinModels(enc.ir, free.ir, { links });
  const joined = new RefitModel(j.model, { threads: 1 });
  // "train": move every float weight a little
  joined.setParams(new Map(joined.parameterNames().map((n) => [n, (joined.param(n).data as Float32Array).map((v, i) => v + 0.01 * Math.sin(i + n.length))])));
  splitWeights(joined, enc, free, j);
  writeWeightsBack(file, free);
  const { input_ids, attention_mask, decoder_input_ids } = seq2seqRef.inputs;
  const want = (await joined.run({ input_ids: ids2(input_ids), attention_mask: ids2(attention_mask), decoder_input_ids: ids2(decoder_input_ids) }))['logits']!;
  const states = (await enc.run({ input_ids: ids2(input_ids), attention_mask: ids2(attention_mask) }))['last_hidden_state']!;
  const kv = kvCacheOf(file)!;
  const empty = Object.fromEntries(kv.past.map((p) => [p.name, tensor('float32', [2, 2, 0, 4], [])]));
  const got = (await file.run({ input_ids: ids2(decoder_input_ids), encoder_hidden_states: states, encoder_attention_mask: ids2(attention_mask), ...empty, use_cache_branch: tensor('bool', [1], [0]) }))['logits']!;
  let diff = 0;
  for (let i = 0; i < want.data.length; i++) diff = Math.max(diff, Math.abs((got.data[i] as number) - (want.data[i] as number)));
  assert.ok(diff < 1e-5, `file vs joined: ${diff}`);
  await Promise.all([enc.release(), file.release(), joined.release()]);
});
