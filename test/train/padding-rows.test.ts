// PyTorch's nn.Embedding(padding_idx=p): the export keeps a Gather and loses p; the table's one
// all-zero row shows it. refit's lookups of that row pass no gradient, as PyTorch's do, while a
// tied output projection (reading the same table) still trains it. References: PyTorch 1.13, float64.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { RefitModel } from '../../src/model.ts';
import * as losses from '../../src/train/losses.ts';
import { f32, i64 } from '../../src/onnx/tensor.ts';
import { embeddingPaddingRows } from '../../src/onnx/padding-rows.ts';

const E = [0, 0, 0, 0.5, -1, 0.25, 1, 0.2, -0.3, -0.4, 0.8, 0.6, 0.3, 0.3, -0.9]; // row 0: padding_idx 0
const W = [0.2, -0.5, 0.1, 0.4, 0.3, 0.7, 0.1, -0.2, 0.5, -0.6, -0.3, 0.8, 0.9, -0.1, 0.2];

/** ids [1, 4] → E[ids] [1, 4, 3] → logits by W [3, 5], or by Eᵀ (tied). */
function tagger(tied: boolean): RefitModel {
  const b = new ModelBuilder({ opset: 14 }).input('ids', 'int64', [1, 4]).initializer('embed.weight', f32([5, 3], E));
  b.node('Gather', ['embed.weight', 'ids'], ['h'], { axis: 0 });
  if (tied) b.node('Transpose', ['embed.weight'], ['Et'], { perm: [1, 0] }).node('MatMul', ['h', 'Et'], ['logits']);
  else b.initializer('W', f32([3, 5], W)).node('MatMul', ['h', 'W'], ['logits']);
  return new RefitModel(b.output('logits', 'float32', [1, 4, 5]).build(), { threads: 1 });
}

const feeds = { ids: i64([1, 4], [0, 2, 1, 0]), y: i64([1, 4], [1, 0, 3, 2]) };
const loss = losses.tokenCrossEntropy({ logits: 'logits', labels: 'y' });

async function embedGrad(m: RefitModel, paddingRows?: false): Promise<{ loss: number; grad: Float32Array }> {
  const step = m.compileTrainStep({ trainable: ['embed.weight'], loss, ...(paddingRows === false ? { paddingRows } : {}) });
  const r = await step.run(feeds);
  await step.release();
  return { loss: r.loss, grad: r.grads.get('embed.weight')! };
}

const close = (got: ArrayLike<number>, want: number[], what: string) =>
  want.forEach((v, i) => assert.ok(Math.abs(got[i]! - v) < 1e-6, `${what}[${i}]: ${got[i]} vs ${v}`));

test('lookups of an embedding\'s zero row pass no gradient (PyTorch\'s padding_idx); paddingRows: false trains it', async () => {
  const m = tagger(false);
  assert.deepEqual([...embeddingPaddingRows(m.ir.graph)], [['embed.weight', 0]]);
  const r = await embedGrad(m);
  assert.ok(Math.abs(r.loss - 1.6567052400645998) < 1e-6, `loss ${r.loss}`);
  close(r.grad, [0, 0, 0, -0.066716207887, -0.160993548603, 0.124388660246, 0.001358020543, -0.124849759973, 0.106502984758, 0, 0, 0, 0, 0, 0], 'grad');
  const trained = await embedGrad(m, false);
  assert.ok(trained.grad.slice(0, 3).some((v) => Math.abs(v) > 1e-3), `row 0 trains when asked: ${trained.grad.slice(0, 3)}`);
  close(trained.grad.slice(3), [...r.grad.slice(3)], 'the other rows');
  await m.release();
});

test('a tied output projection still trains the padding row, as in PyTorch', async () => {
  const m = tagger(true);
  const r = await embedGrad(m);
  assert.ok(Math.abs(r.loss - 2.022790516946954) < 1e-6, `loss ${r.loss}`);
  close(r.grad, [-0.200635532625, -0.078955326396, 0.074310012468, 0.316315362453, -0.426166547256, -0.122384064902, 0.247849880084, -0.010115466838,
    -0.079018071439, -0.096618050714, 0.239080628904, -0.064979762621, 0.071679038378, -0.012350411556, -0.011799631793], 'grad');
  await m.release();
});

test('no padding row: none, two zero rows (not one padding index), a table of two rows, a lookup along axis 1', () => {
  const graph = (rows: number, zeroRows: number[], axis = 0) => new ModelBuilder({ opset: 14 }).input('ids', 'int64', [2])
    .initializer('t', f32([rows, 2], Array.from({ length: rows * 2 }, (_, i) => (zeroRows.includes(Math.floor(i / 2)) ? 0 : i + 1))))
    .node('Gather', ['t', 'ids'], ['h'], { axis }).output('h').build().graph;
  assert.equal(embeddingPaddingRows(graph(5, [])).size, 0);
  assert.equal(embeddingPaddingRows(graph(5, [1, 3])).size, 0);
  assert.equal(embeddingPaddingRows(graph(2, [0])).size, 0);
  assert.equal(embeddingPaddingRows(graph(5, [2], 1)).size, 0);
  assert.deepEqual([...embeddingPaddingRows(graph(5, [2]))], [['t', 2]]);
});
