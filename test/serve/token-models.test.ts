// The service on a token model (the zoo's BERT-style classifier, its attention_mask made inside
// the graph by withTokenInputs): requests send the ids alone, plain and under Tent; ids that are
// not whole numbers within the vocabulary (as JSON gave them, not rounded to float32), images and
// float32 bytes are refused with a reason.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { FastifyInstance } from 'fastify';
import { loadModel } from '../../src/model.ts';
import { withTokenInputs } from '../../src/onnx/token-companions.ts';
import { tokenInputs, tokenFeeds } from '../../src/cli/token-inputs.ts';
import { SqliteRegistry } from '../../src/registry/index.ts';
import { buildServer } from '../../src/serve/index.ts';

const bert = await loadModel(new URL('../fixtures/zoo/bert/model.onnx', import.meta.url).pathname, { threads: 1 });
const ids = withTokenInputs(bert, { padToken: 0 });
test.after(async () => { await ids.release(); await bert.release(); });

const rows = [[5, 9, 14, 3, 0, 0], [7, 7, 2, 30, 11, 4], [12, 1, 0, 0, 0, 0]];
const post = (app: FastifyInstance, inputs: unknown, tenant = 'a') => app.inject({ method: 'POST', url: '/v1/models/bert/predict', headers: { 'x-refit-tenant': tenant }, payload: { inputs, output: 'logits' } });

test('predict on token ids: the logits of the model fed its companions, plain and under Tent; bad ids refused with a reason', async () => {
  const want = (await bert.run(tokenFeeds(tokenInputs(bert, 'test'), rows.flat(), 6, [0, 1, 2], 0))).logits!.data as Float32Array;
  for (const method of [undefined, 'tent']) {
    const app = await buildServer({ models: { bert: ids }, registry: new SqliteRegistry(':memory:'), defaultMetrics: false, inferenceWorkers: method ? 0 : 1, ...(method ? { method } : {}) }); // plain: through an inference worker thread
    try {
      const r = await post(app, rows);
      assert.equal(r.statusCode, 200, r.body);
      const got = (r.json() as { logits: number[][] }).logits.flat();
      // The first Tent prediction is the unadapted model's (LayerNorm only: no batch statistics).
      got.forEach((v, i) => assert.ok(Math.abs(v - want[i]!) < 1e-5, `${method ?? 'plain'}: logit ${i}: ${v} against ${want[i]}`));
      assert.equal((await post(app, { dims: [1, 6], data: rows[0] })).statusCode, 200, 'one row as { dims, data }');
      for (const [inputs, re] of [
        [[[5, 9, 14.5, 3, 0, 0]], /takes token ids \(whole numbers in \[0, 32\), the model's vocabulary\); value 2 is 14\.5/],
        [[[5, 9, 32, 3, 0, 0]], /value 2 is 32/],
        [[[5, 9, 14.0000001, 3, 0, 0]], /value 2 is 14\.0000001/], // float32 would make it 14
        [{ dims: [1, 6], data: [5, 9, 3.00000001, 3, 0, 0] }, /value 2 is 3\.00000001/],
        [[[-1, 9, 3, 3, 0, 0]], /value 0 is -1/],
        [{ images: ['aGVsbG8='] }, /takes token ids in 'input_ids' \(or texts\), not images/],
        [{ dims: [1, 6], base64: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' }, /takes token ids: give nested arrays or \{ dims, data \}, not base64 float32/],
      ] as const) {
        const bad = await post(app, inputs);
        assert.equal(bad.statusCode, 400, bad.body);
        assert.match((bad.json() as { message: string }).message, re);
      }
      const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
      assert.match(metrics, /refit_rejected_inputs_total\{model="bert",reason="bad-token"\} 7/);
    } finally {
      await app.close();
    }
  }
  // A model with its companions as inputs is refused at start, naming the way to serve it.
  await assert.rejects(buildServer({ models: { bert }, registry: new SqliteRegistry(':memory:'), defaultMetrics: false }), /model 'bert': the service feeds one input, and it takes 3 \(input_ids, token_type_ids, attention_mask\); for a Hugging Face token model, withTokenInputs/);
  await assert.rejects(buildServer({ models: { bert: ids }, registry: new SqliteRegistry(':memory:'), defaultMetrics: false, method: 'cotta' }), /model 'bert': method 'cotta' cannot run on it: cotta augments its input images/);
  await assert.rejects(buildServer({ models: { bert: ids }, registry: new SqliteRegistry(':memory:'), defaultMetrics: false, method: 'dynamic-eval' }), /dynamic-eval adapts language models, which the service does not serve; run it with refit adapt or the library/);
  const gpt = await loadModel(new URL('../fixtures/zoo/gpt/model.onnx', import.meta.url).pathname);
  await assert.rejects(buildServer({ models: { gpt }, registry: new SqliteRegistry(':memory:'), defaultMetrics: false }), /model 'gpt': the service answers class scores \[batch, classes\], and output 'logits' is \[batch, sequence, 32\] \(a language model's logits are not served\)/);
  await gpt.release();
});

test('the continual controller behind the service on token ids: requests of different lengths, labels fed back later, a batch it cannot take is a 400', async () => {
  const methodOptions = { padToken: 0, patience: 1, feedback: { minBatch: 4, minNew: 4 } };
  const app = await buildServer({ models: { bert: ids }, registry: new SqliteRegistry(':memory:'), defaultMetrics: false, method: 'continual', methodOptions });
  try {
    const first = await post(app, rows, 'c');
    assert.equal(first.statusCode, 400, 'the controller returns probabilities only');
    const predict = (inputs: unknown) => app.inject({ method: 'POST', url: '/v1/models/bert/predict', headers: { 'x-refit-tenant': 'c' }, payload: { inputs } });
    const a = await predict(rows), b = await predict([[4, 8, 15, 16], [23, 4, 2, 0]]);
    assert.equal(a.statusCode, 200, a.body);
    assert.equal(b.statusCode, 200, b.body);
    const seen = [...(a.json() as { ids: string[] }).ids, ...(b.json() as { ids: string[] }).ids];
    const fb = await app.inject({ method: 'POST', url: '/v1/models/bert/feedback', headers: { 'x-refit-tenant': 'c' }, payload: { ids: seen, labels: [0, 1, 1, 0, 1] } });
    assert.equal(fb.statusCode, 200, fb.body);
    assert.equal((fb.json() as { accepted: number }).accepted, 5, 'rows of 6 and 4 ids, padded into one labelled step');
  } finally {
    await app.close();
  }
  // Without a pad token the controller keeps one sequence length: another is the caller's error.
  const fixed = await buildServer({ models: { bert: ids }, registry: new SqliteRegistry(':memory:'), defaultMetrics: false, method: 'continual' });
  try {
    const predict = (inputs: unknown) => fixed.inject({ method: 'POST', url: '/v1/models/bert/predict', payload: { inputs } });
    assert.equal((await predict(rows)).statusCode, 200);
    const other = await predict([[4, 8, 15, 16]]);
    assert.equal(other.statusCode, 400, other.body);
    assert.match((other.json() as { message: string }).message, /sequences of 4 ids after sequences of 6: without padToken/);
  } finally {
    await fixed.close();
  }
});

test('a model whose logits are per position (a segmenter, a speech recogniser) is refused at start: its scores read as [batch, classes] were answered as nonsense predictions', async () => {
  const { loadModel } = await import('../../src/model.ts');
  const segmenter = await loadModel(new URL('../fixtures/exports/segmenter/model.onnx', import.meta.url).pathname, { threads: 1 });
  await assert.rejects(buildServer({ models: { seg: segmenter }, registry: new SqliteRegistry(':memory:'), defaultMetrics: false }),
    /model 'seg': the service answers class scores \[batch, classes\], and output 'logits' is \[batch, [^\]]+\] \(per-position outputs \(a segmenter, a speech recogniser, a detector, a depth map\) are not served\); use refit eval, refit adapt or the library/);
  await segmenter.release();
});

test('refit serve takes texts for a token model whose tokenizer lies beside it: the logits of the same ids sent as numbers; where none, a 400 that says so', async () => {
  const { runServe } = await import('../../src/cli/serve.ts');
  const { writeBertTokenizer } = await import('../helpers/tokenizers.ts');
  const { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } = await import('node:fs');
  const { createTextEncoder } = await import('../../src/text/encode.ts');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(join(tmpdir(), 'refit-serve-text-'));
  mkdirSync(join(dir, 'onnx'));
  copyFileSync(new URL('../fixtures/zoo/bert/model.onnx', import.meta.url).pathname, join(dir, 'onnx/model.onnx'));
  writeBertTokenizer(dir);
  const lines: string[] = [];
  const h = await runServe({ model: [`bert=${join(dir, 'onnx/model.onnx')}`, `plain=${new URL('../fixtures/zoo/bert/model.onnx', import.meta.url).pathname}`], port: 0, host: '127.0.0.1', signals: false, log: (l) => lines.push(l) });
  const predict = async (model: string, inputs: unknown) => {
    const r = await fetch(`${h.url}/v1/models/${model}/predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ inputs, output: 'logits' }) });
    return { status: r.status, body: await r.json() as { logits: number[][]; message: string } };
  };
  try {
    assert.ok(lines.some((l) => /model bert takes texts and text pairs, tokenized by .*tokenizer\.json/.test(l)), lines.join('\n'));
    // [CLS] the film was good [SEP] and [CLS] i hated it ! [SEP], padded with [PAD] 0 to 7
    const byText = await predict('bert', { texts: ['The film was GOOD', 'i hated it!'] });
    assert.equal(byText.status, 200, JSON.stringify(byText.body));
    const byIds = await predict('bert', [[2, 8, 9, 11, 4, 3, 0], [2, 24, 26, 23, 29, 3, 0]]);
    assert.equal(byIds.status, 200);
    byText.body.logits.flat().forEach((v, i) => assert.ok(Math.abs(v - byIds.body.logits.flat()[i]!) < 1e-6, `logit ${i}`));
    // the padded row answers as it does alone: the mask leaves the pad out
    const alone = await predict('bert', { texts: ['The film was GOOD'] });
    alone.body.logits[0]!.forEach((v, i) => assert.ok(Math.abs(v - byText.body.logits[0]![i]!) < 1e-5, `alone ${i}`));
    // Text pairs: token_type_ids 1 on the second segment, rebuilt in the served graph from the ids
    // after the first [SEP], give the logits of the model fed the tokenizer's own types.
    const pairs: [string, string][] = [['the film was good', 'i liked the music'], ['the plot', 'was dull and the acting was awful !']];
    const byPairs = await predict('bert', { texts: [...pairs, 'the story'] });
    assert.equal(byPairs.status, 200, JSON.stringify(byPairs.body));
    const enc = createTextEncoder(JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')), JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')));
    const e = enc.encode([...pairs, 'the story']);
    assert.ok(e.types && e.types.includes(1));
    const fed = (types: Uint8Array | null) => bert.run(tokenFeeds(tokenInputs(bert, 'test'), e.values, e.length, [0, 1, 2], 0, types));
    const want = (await fed(e.types)).logits!.data as Float32Array, oneSegment = (await fed(null)).logits!.data as Float32Array;
    byPairs.body.logits.flat().forEach((v, i) => assert.ok(Math.abs(v - want[i]!) < 1e-5, `pair logit ${i}: ${v} against ${want[i]}`));
    assert.ok(want.some((v, i) => Math.abs(v - oneSegment[i]!) > 1e-4), 'the second segment\'s types change the answer');
    for (const [model, inputs, re] of [
      ['plain', { texts: ['the film'] }, /model 'plain' has no tokenizer on this server: send token ids, or start the server with the model's tokenizer/],
      ['bert', { texts: [] }, /inputs\.texts must be a non-empty array of strings/],
      ['bert', { texts: ['a', ['the film', 'a plot', 'music']] }, /inputs\.texts\[1\] is an array of 3 strings; each text must be a string, or a pair of two strings/],
      ['bert', { texts: [['the film', 7]] }, /inputs\.texts\[0\] is an array of 2 values that are not all strings/],
      ['bert', { texts: ['a'], dims: [1] }, /inputs with texts takes no 'dims'/],
    ] as const) {
      const r = await predict(model, inputs);
      assert.equal(r.status, 400, JSON.stringify(r.body));
      assert.match(r.body.message, re);
    }
  } finally {
    await h.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
