// Text decoders as transformers.js ships them, with a KV cache (src/onnx/kv-cache.ts): the zoo's
// GPT-2-structured decoder merged by optimum's rule (one If on use_cache_branch) and its
// Llama-structured decoder with past_key_values inputs. refit trains them without the cache and
// writes what it learnt back into the file as given, which must still generate with its cache.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel, type RefitModel } from '../../src/model.ts';
import { runTrain } from '../../src/cli/train.ts';
import { mergeAdapters } from '../../src/cli/adapter.ts';
import { inspectModel } from '../../src/cli/inspect.ts';
import { loadAdapter } from '../../src/index.ts';
import { withoutKvCache, kvCacheOf } from '../../src/onnx/kv-cache.ts';
import { tensor, tensorOf, type Tensor } from '../../src/onnx/tensor.ts';
import { Rng } from '../../src/util/rng.ts';
import { npy } from '../helpers/cli.ts';
import * as ortNode from 'onnxruntime-node';
import { nodeBackend, runtime, useRuntime, type OrtModule } from '../../src/onnx/runtime.ts';

const zoo = (name: string) => new URL(`../fixtures/zoo/${name}/model.onnx`, import.meta.url).pathname;
const gpt2 = zoo('gpt2_merged');
const llama = zoo('llama');
const dir = mkdtempSync(join(tmpdir(), 'refit-kv-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));
const p = (f: string) => join(dir, f);

const B = 2;
const ids = (T: number) => tensorOf('int64', [B, T], (i) => (3 + 5 * i + Math.floor(i / T)) % 29);

/** Feeds for the file as given: the ids, an all-ones mask over past + T, positions, the cache (empty when `past` is absent). */
function feeds(m: RefitModel, input: Tensor, past?: Record<string, Tensor>, pastLength = 0): Record<string, Tensor> {
  const T = input.dims[1]!;
  const f: Record<string, Tensor> = { input_ids: input, attention_mask: tensorOf('int64', [B, pastLength + T], () => 1) };
  if (m.inputs.some((i) => i.name === 'position_ids')) f.position_ids = tensorOf('int64', [B, T], (i) => pastLength + (i % T));
  const kv = kvCacheOf(m)!;
  for (const v of kv.past) f[v.name] = past?.[v.name] ?? tensor('float32', v.shape!.map((d, k) => (k === 0 ? B : typeof d === 'number' ? d : 0)), new Float32Array(0));
  if (kv.useCacheBranch) f[kv.useCacheBranch] = tensor('bool', [1], [past ? 1 : 0]);
  return f;
}

function maxDiff(a: Tensor, b: Tensor): number {
  let m = 0;
  for (let i = 0; i < a.data.length; i++) m = Math.max(m, Math.abs(Number(a.data[i]) - Number(b.data[i])));
  return m;
}

/**
 * The model generates with its cache as it scores whole sequences: logits of the last token fed
 * after a cached prefix equal those of the full sequence's last position.
 */
async function assertCacheAgrees(m: RefitModel, what: string) {
  const T = 7;
  const full = ids(T);
  const whole = (await m.run(feeds(m, full)))['logits']!;
  const prefix = tensorOf('int64', [B, T - 1], (i) => Number(full.data[Math.floor(i / (T - 1)) * T + (i % (T - 1))]));
  const first = await m.run(feeds(m, prefix));
  const kv = kvCacheOf(m)!;
  const past = Object.fromEntries(kv.past.map((v, k) => [v.name, first[kv.present[k]!]!]));
  const last = tensorOf('int64', [B, 1], (b) => Number(full.data[b * T + T - 1]));
  const step = (await m.run(feeds(m, last, past, T - 1)))['logits']!;
  const V = whole.dims[2]!;
  const wantLast = tensor('float32', [B, 1, V], Float32Array.from({ length: B * V }, (_, i) => whole.data[Math.floor(i / V) * T * V + (T - 1) * V + (i % V)] as number));
  assert.ok(maxDiff(step, wantLast) < 1e-4, `${what}: cached step vs whole sequence differ by ${maxDiff(step, wantLast)}`);
}

function tokenData(name: string, n: number, L: number, seed: number) {
  const r = new Rng(seed);
  // a learnable pattern: each token is the previous one plus 1 (mod 29), from a random start
  const a = new BigInt64Array(n * L);
  for (let s = 0; s < n; s++) { let t = Math.floor(r.next() * 29); for (let k = 0; k < L; k++) { a[s * L + k] = BigInt(t); t = (t + 1) % 29; } }
  writeFileSync(p(name), npy('<i8', [n, L], a));
  return p(name);
}

test('the models as given: the cache-free form computes what they compute on empty pasts, and generation with the cache agrees', async () => {
  for (const path of [gpt2, llama]) {
    const m = await loadModel(path, { threads: 1 });
    const free = withoutKvCache(m);
    assert.deepEqual(free.outputs.map((o) => o.name), ['logits']);
    assert.ok(!free.ir.graph.nodes.some((n) => n.opType === 'If'));
    const x = ids(6);
    const a = (await free.run(Object.fromEntries(Object.entries(feeds(m, x)).filter(([k]) => free.inputs.some((i) => i.name === k)))))['logits']!;
    const b = (await m.run(feeds(m, x)))['logits']!;
    assert.equal(maxDiff(a, b), 0, path);
    await assertCacheAgrees(m, path);
    const r = await inspectModel(path);
    assert.equal(r.kvCache?.useCacheBranch, path === gpt2);
    assert.deepEqual(r.blockers, [], 'inspect analyses the cache-free form: nothing blocks');
    await Promise.all([m.release(), free.release()]);
  }
});

test('refit train --task next-token on the merged decoder: the written file keeps its If and cache, carries the trained weights, and still generates with its cache', async () => {
  const data = tokenData('seq.npy', 96, 10, 1);
  const r = await runTrain(gpt2, { task: 'next-token', data, epochs: 3, lr: 0.01, out: p('gpt2-trained.onnx'), json: true });
  assert.ok(r.kvCache, 'reported as trained without the cache');
  assert.ok(r.epochs.at(-1)!.valLoss! < r.epochs[0]!.valLoss!, JSON.stringify(r.epochs.map((e) => e.valLoss)));
  const before = await loadModel(gpt2, { threads: 1 });
  const after = await loadModel(p('gpt2-trained.onnx'), { threads: 1 });
  assert.ok(after.ir.graph.nodes.some((n) => n.opType === 'If'), 'the If stays');
  assert.deepEqual(after.inputs.map((i) => i.name), before.inputs.map((i) => i.name));
  assert.deepEqual(after.outputs.map((i) => i.name), before.outputs.map((i) => i.name));
  const x = ids(6);
  const l0 = (await before.run(feeds(before, x)))['logits']!;
  const l1 = (await after.run(feeds(after, x)))['logits']!;
  assert.ok(maxDiff(l0, l1) > 1e-2, 'the weights changed');
  await assertCacheAgrees(after, 'trained merged decoder');
  await Promise.all([before.release(), after.release()]);
});

test('refit train on the merged decoder: the tied lm_head trains as one tensor with the embedding (--untie: as its own), and the written file still generates with its cache', async () => {
  const data = tokenData('seq-tied.npy', 48, 10, 3);
  const untied = await runTrain(gpt2, { task: 'next-token', data, epochs: 1, lr: 0.01, untie: true, out: p('gpt2-untied.onnx'), json: true });
  const tied = await runTrain(gpt2, { task: 'next-token', data, epochs: 1, lr: 0.01, out: p('gpt2-tied.onnx'), json: true });
  await assert.rejects(runTrain(gpt2, { task: 'next-token', data, keepTies: true, untie: true, out: p('gpt2-both.onnx') }), /--keep-ties and --untie contradict/);
  const m = await loadModel(gpt2);
  const wte = m.param('transformer.wte.weight');
  assert.equal(untied.trainableParams - tied.trainableParams, wte.data.length, 'the transposed copy is no parameter of its own');
  await m.release();
  const after = await loadModel(p('gpt2-tied.onnx'), { threads: 1 });
  await assertCacheAgrees(after, 'decoder trained with its tie');
  await after.release();
});

test('refit train --low-memory: the step session is created without onnxruntime\'s weight pre-packing, and trains as without it', async () => {
  const data = tokenData('seq-low.npy', 32, 10, 4);
  const before = runtime();
  const configs: (string | undefined)[] = [];
  const IS = ortNode.InferenceSession;
  useRuntime(nodeBackend({ ...ortNode, InferenceSession: { create: async (bytes: Uint8Array, o: ortNode.InferenceSession.SessionOptions) => {
    const s = await IS.create(bytes, o);
    if (s.outputNames.includes('refit.loss') && o.graphOptimizationLevel === 'all') configs.push((o.extra as { session?: Record<string, string> } | undefined)?.session?.disable_prepacking);
    return s;
  } } } as unknown as OrtModule));
  let low, plain;
  try {
    low = await runTrain(llama, { task: 'next-token', data, adapter: 'lora', rank: 2, epochs: 1, lowMemory: true, out: p('llama-low'), json: true });
    plain = await runTrain(llama, { task: 'next-token', data, adapter: 'lora', rank: 2, epochs: 1, out: p('llama-plain'), json: true });
  } finally {
    useRuntime(before);
  }
  assert.deepEqual(configs, ['1', undefined]);
  assert.ok(Math.abs(low.epochs[0]!.valLoss! - plain.epochs[0]!.valLoss!) < 1e-4, `${low.epochs[0]!.valLoss} vs ${plain.epochs[0]!.valLoss}`);
});

test('LoRA on the Llama-style decoder, then refit adapter merge: the merged file keeps its cache and computes what the adapter computes', async () => {
  const data = tokenData('seq2.npy', 64, 10, 2);
  await runTrain(llama, { task: 'next-token', data, adapter: 'lora', rank: 2, epochs: 2, lr: 0.02, out: p('llama-lora'), json: true });
  const { out } = await mergeAdapters(llama, [p('llama-lora')], p('llama-merged.onnx'));
  const merged = await loadModel(out, { threads: 1 });
  assert.ok(kvCacheOf(merged)!.past.length > 0, 'the merged file keeps its past inputs');
  const base = await loadModel(llama, { threads: 1 });
  const adapted = await loadAdapter(withoutKvCache(base), p('llama-lora'));
  const x = ids(6);
  const want = (await adapted.run(Object.fromEntries(Object.entries(feeds(merged, x)).filter(([k]) => adapted.inputs.some((i) => i.name === k)))))['logits']!;
  const got = (await merged.run(feeds(merged, x)))['logits']!;
  assert.ok(maxDiff(got, want) < 1e-4, `merged vs adapter: ${maxDiff(got, want)}`);
  const plain = (await base.run(feeds(base, x)))['logits']!;
  assert.ok(maxDiff(plain, want) > 1e-3, 'the adapter changed the logits');
  await assertCacheAgrees(merged, 'merged Llama');
  await Promise.all([merged.release(), base.release(), adapted.release()]);
});

test('refit adapt --method dynamic-eval on the merged decoder: per-sequence log-loss before each update, and the unadapted model\'s', async () => {
  const { runAdapt, formatAdapt } = await import('../../src/cli/adapt.ts');
  const { readFileSync } = await import('node:fs');
  // 16 sequences, then the same 16 again: read twice, the second pass is more likely.
  const r = new Rng(3);
  const rows = Array.from({ length: 16 }, () => { let t = Math.floor(r.next() * 29); return Array.from({ length: 10 }, () => (t = (t + 3) % 29)); });
  const all = [...rows, ...rows].flat();
  writeFileSync(p('stream.npy'), npy('<i8', [32, 10], BigInt64Array.from(all, BigInt)));
  const res = await runAdapt(gpt2, { method: 'dynamic-eval', stream: p('stream.npy'), batchSize: 8, out: p('ll.csv'), json: true });
  assert.equal(res.stream.samples, 32);
  const lm = res.languageModel!;
  assert.equal(lm.tokens, 32 * 9);
  assert.ok(lm.nll < lm.sourceNll, `adapted ${lm.nll} against unadapted ${lm.sourceNll}`);
  const csv = readFileSync(p('ll.csv'), 'utf8').trim().split('\n').slice(1).map((l) => l.split(',').map(Number));
  assert.equal(csv.length, 32);
  for (const row of csv.slice(0, 8)) assert.ok(Math.abs(row[2]! - row[3]!) < 1e-4, 'the first batch is scored before any update');
  const mean = (rs: number[][], k: number) => rs.reduce((a, x) => a + x[k]!, 0) / rs.length;
  assert.ok(mean(csv.slice(16), 2) < mean(csv.slice(0, 16), 2), 'the repeated half is more likely after adapting on it');
  assert.ok(Math.abs(mean(csv.slice(16), 3) - mean(csv.slice(0, 16), 3)) < 1e-4, 'the unadapted model scores both halves alike');
  assert.match(formatAdapt(res), /next-token log-loss .* nats per token, perplexity .* \(unadapted model: /);
  // refit eval --task next-token scores the unadapted model the same way
  const { runEval, formatEval } = await import('../../src/cli/eval.ts');
  const ev = await runEval(gpt2, { task: 'next-token', data: p('stream.npy'), json: true });
  assert.ok(Math.abs(ev.loss - lm.sourceNll) < 1e-4, `eval ${ev.loss} against the adapt run's unadapted ${lm.sourceNll}`);
  assert.match(formatEval(ev), /\(32 sequences\): next-token accuracy .*%, loss .* nats per token, perplexity /);
  await assert.rejects(runEval(gpt2, { task: 'next-token', data: p('stream.npy'), labels: p('stream.npy'), json: true }), /--labels: not for --task next-token/);
  // --method-options reach the method: a vanishing rate leaves the model as it was
  const still = await runAdapt(gpt2, { method: 'dynamic-eval', stream: p('stream.npy'), batchSize: 8, out: p('ll2.csv'), methodOptions: '{"lr": 1e-9}', json: true });
  assert.ok(Math.abs(still.languageModel!.nll - still.languageModel!.sourceNll) < 1e-5, JSON.stringify(still.languageModel));
  await assert.rejects(runAdapt(gpt2, { method: 'dynamic-eval', stream: p('stream.npy'), out: p('x.csv'), methodOptions: '{lr: 1}', json: true }), /--method-options must be a JSON object/);
  await assert.rejects(runAdapt(gpt2, { method: 'dynamic-eval', stream: p('stream.npy'), out: p('x.csv'), methodOptions: '{"lr": -1}', json: true }), /dynamic-eval: option 'lr'/);
  await assert.rejects(runAdapt(gpt2, { method: 'dynamic-eval', stream: p('stream.npy'), labels: p('stream.npy'), out: p('x.csv'), json: true }), /--labels: not for --method dynamic-eval/);
  await assert.rejects(runAdapt(new URL('../fixtures/zoo/bert/model.onnx', import.meta.url).pathname, { method: 'dynamic-eval', stream: p('stream.npy'), out: p('x.csv'), json: true }), /dynamic-eval adapts language models/);
});
