// keepTies and a tied lm_head: torch.onnx's constant folding stores `x @ wte.T` as a MatMul with a
// transposed copy of the embedding. By default ('auto') and with keepTies: true the copy is read as Transpose(wte), so 'all'
// trains one tensor whose gradient is PyTorch's tied gradient (the sum of both uses), and writing
// the weights back into a file with a KV cache refreshes the copy too.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/model.ts';
import { withoutKvCache, writeWeightsBack } from '../../src/onnx/kv-cache.ts';
import { applyExporterQuirks } from '../../src/onnx/exporter-quirks.ts';
import { readZoo, batchOf, lossOf } from '../fixtures/zoo/read.ts';
import { assertCloseToTorch, relErr } from '../helpers/close.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { f32 } from '../../src/onnx/tensor.ts';

const WTE = 'transformer.wte.weight';

for (const [name, weight] of [['gpt', WTE], ['qwen2', 'model.embed_tokens.weight']] as const) {
  test(`keepTies, zoo ${name}: the tied lm_head copy is read as a Transpose of the embedding, whose gradient is PyTorch's tied one`, async () => {
    const f = readZoo(name);
    const [copy] = f.meta.params[weight]!.find(([, transposed]) => transposed)!;
    const load = async (keepTies: boolean) => {
      const m = await loadModel(f.modelPath, { threads: 1, keepTies });
      return f.meta.kv_cache ? withoutKvCache(m) : m;
    };
    const tied = await load(true), untied = await load(false);
    assert.ok(!tied.parameterNames().includes(copy), `'${copy}' is no parameter of its own`);
    assert.ok(untied.parameterNames().includes(copy), 'with keepTies: false the copy stays a parameter');
    const byDefault = await loadModel(f.modelPath, { threads: 1 });
    assert.ok(!byDefault.parameterNames().includes(copy) && byDefault.parameterNames().includes(weight), 'by default the tie is kept');
    await byDefault.release();
    const c = f.meta.cases[0]!;
    const ref = f.tensors.get(`${c.name}.grad.${weight}`)!;
    const run = async (m: typeof tied) => {
      const step = m.compileTrainStep({ trainable: 'all', loss: lossOf(f.meta) });
      try { return await step.run(batchOf(f, c.name)); } finally { await step.release(); }
    };
    const a = await run(tied), b = await run(untied);
    assert.ok(Math.abs(a.loss - b.loss) <= 1e-6 * Math.abs(b.loss), 'the same forward');
    assertCloseToTorch(`${weight} (tied)`, a.grads.get(weight)!, ref);
    // not vacuous: the untied embedding's own gradient is only part of the tied one
    assert.ok(relErr(b.grads.get(weight)!, ref.data as Float32Array) > 1e-2);
    await tied.release(); await untied.release();
  });
}

test('keepTies: only exact transposes are tied, the gathered table as the original, never tensors of one value', () => {
  const b = new ModelBuilder({ opset: 17 });
  b.input('ids', 'int64', [2]);
  const e = Array.from({ length: 15 }, (_, i) => Math.sin(i + 1));
  b.initializer('emb', f32([5, 3], e));
  b.initializer('head', f32([3, 5], Array.from({ length: 15 }, (_, k) => e[(k % 5) * 3 + Math.floor(k / 5)]!))); // emb transposed
  b.initializer('near', f32([3, 5], Array.from({ length: 15 }, (_, k) => e[(k % 5) * 3 + Math.floor(k / 5)]! + (k === 7 ? 1e-7 : 0))));
  b.initializer('z1', f32([3, 4], new Array(12).fill(0)));
  b.initializer('z2', f32([4, 3], new Array(12).fill(0)));
  b.node('Gather', ['emb', 'ids'], ['x']);
  b.node('MatMul', ['x', 'head'], ['y1']);
  b.node('MatMul', ['x', 'near'], ['y2']);
  b.node('MatMul', ['x', 'z1'], ['y3']);
  b.node('MatMul', ['y3', 'z2'], ['y4']);
  for (const y of ['y1', 'y2', 'y4']) b.output(y, 'float32', null);
  const { model, report } = applyExporterQuirks(b.build(), { keepTies: true });
  assert.deepEqual(report.retied, [['head', 'emb']]);
  assert.ok(!model.graph.initializers.has('head'));
  assert.deepEqual(applyExporterQuirks(b.build()).report.retied, [['head', 'emb']], 'by default too (keepTies \'auto\')');
  assert.deepEqual(applyExporterQuirks(b.build(), { keepTies: false }).report.retied, [], 'not with keepTies: false');
});

test('keepTies with a KV cache: a trained wte written back refreshes the file\'s transposed copy', async () => {
  const f = readZoo('gpt2_merged');
  const [copy] = f.meta.params[WTE]!.find(([, transposed]) => transposed)!;
  const base = await loadModel(f.modelPath, { threads: 1, keepTies: false }); // the file's own tensors, its copy among them
  const trained = withoutKvCache(await loadModel(f.modelPath, { threads: 1, keepTies: true }));
  const step = trained.compileTrainStep({ trainable: [WTE], loss: lossOf(f.meta) });
  const r = await step.run(batchOf(f, f.meta.cases[0]!.name));
  await step.release();
  const w = trained.param(WTE).data as Float32Array;
  trained.setParams(new Map([[WTE, w.map((v, i) => v - 0.5 * r.grads.get(WTE)![i]!)]]));
  const written = writeWeightsBack(base, trained, [WTE]);
  assert.deepEqual(written.sort(), [WTE, copy].sort());
  const [V, d] = base.param(WTE).dims as [number, number];
  const e = base.param(WTE).data as Float32Array, t = base.param(copy).data as Float32Array;
  assert.deepEqual(e, trained.param(WTE).data, 'wte written');
  for (let i = 0; i < V; i++) for (let j = 0; j < d; j++) assert.equal(t[j * V + i], e[i * d + j], `copy[${j}, ${i}]`);
  await base.release(); await trained.release();
});
