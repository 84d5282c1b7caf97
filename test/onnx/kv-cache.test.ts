// withoutKvCache and writeWeightsBack (src/onnx/kv-cache.ts) on hand-made graphs: what each
// refuses, by name, and that a refusal changes nothing. The real exports are in
// test/e2e/cli-kv-cache.test.ts and the zoo.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RefitModel } from '../../src/model.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { withoutKvCache, writeWeightsBack, kvCacheOf } from '../../src/onnx/kv-cache.ts';
import { f32, tensorOf, type Tensor } from '../../src/onnx/tensor.ts';
import type { Dim } from '../../src/onnx/ir.ts';

/** ids → Gather(table) [b, s, 4] → Unsqueeze to [b, 1, s, 4] → Concat(past, ·) on axis 2 → present; logits = ReduceMean over the cache. */
function decoder(pastShape: Dim[] | null) {
  const b = new ModelBuilder({ opset: 14 })
    .input('input_ids', 'int64', ['batch', 'seq'])
    .initializer('table', f32([5, 4], Array.from({ length: 20 }, (_, i) => i / 10)))
    .initializer('axes', tensorOf('int64', [1], () => 1));
  b.model.graph.inputs.push({ name: 'past_key_values.0.key', dtype: 'float32', shape: pastShape });
  b.node('Gather', ['table', 'input_ids'], ['emb'])
    .node('Unsqueeze', ['emb', 'axes'], ['k'])
    .node('Concat', ['past_key_values.0.key', 'k'], ['present.0.key'], { axis: 2 })
    .node('ReduceMean', ['present.0.key'], ['logits'], { axes: [1, 2], keepdims: 0 })
    .output('logits', 'float32', ['batch', 4]).output('present.0.key', 'float32', ['batch', 1, 'total', 4]);
  return new RefitModel(b.build());
}

test('withoutKvCache: an empty cache made from the ids\' batch; the present output dropped', async () => {
  const m = decoder(['batch', 1, 'past_sequence_length', 4]);
  assert.deepEqual(kvCacheOf(m), { past: [m.inputs[1]], present: ['present.0.key'] });
  const free = withoutKvCache(m);
  assert.deepEqual(free.inputs.map((i) => i.name), ['input_ids']);
  assert.deepEqual(free.outputs.map((o) => o.name), ['logits']);
  const ids = tensorOf('int64', [3, 2], (i) => i % 5);
  const got = (await free.run({ input_ids: ids }))['logits']!;
  const want = (await m.run({ input_ids: ids, 'past_key_values.0.key': { dtype: 'float32', dims: [3, 1, 0, 4], data: new Float32Array(0) } as Tensor }))['logits']!;
  assert.deepEqual(Array.from(got.data as Float32Array), Array.from(want.data as Float32Array));
  const plain = new RefitModel(new ModelBuilder().input('x', 'float32', [1]).node('Relu', ['x'], ['y']).output('y').build());
  assert.equal(withoutKvCache(plain), plain, 'a model without a cache is returned as it is');
});

test('withoutKvCache refuses, naming the input, a past whose head count or size is symbolic, or whose rank is unknown', () => {
  assert.throws(() => withoutKvCache(decoder(['batch', 'num_heads', 'past_sequence_length', 4])), /KV cache input 'past_key_values\.0\.key' \(shape \["batch","num_heads","past_sequence_length",4\]\): dimension 1 \('num_heads'\) is not a number; refit needs every dimension but the batch and the past length fixed/);
  assert.throws(() => withoutKvCache(decoder(null)), /KV cache input 'past_key_values\.0\.key' \(shape null\): its rank is not declared/);
  assert.throws(() => withoutKvCache(decoder(['batch', 1, 'length', 4, 2])), /no dimension is named for the past length and it is not \[batch, heads, past, head size\]/);
});

test('writeWeightsBack writes every named weight or, on any mismatch, none', () => {
  const m = decoder(['batch', 1, 'past_sequence_length', 4]);
  const free = withoutKvCache(m);
  free.setParams({ table: new Float32Array(20).fill(7) });
  const before = Array.from(m.param('table').data as Float32Array);
  assert.throws(() => writeWeightsBack(m, free, ['table', 'nope']), /weight 'nope' is not in the original model/);
  assert.deepEqual(Array.from(m.param('table').data as Float32Array), before, 'nothing written');
  writeWeightsBack(m, free, ['table']);
  assert.ok((m.param('table').data as Float32Array).every((v) => v === 7));
});
