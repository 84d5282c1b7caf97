// inBatchNegatives (sentence-transformers' MultipleNegativesRankingLoss) on a MiniLM-style
// feature-extraction export (test/fixtures/exports/make_exports.py feature_extraction): loss and
// every parameter's gradient against PyTorch's float64 ones, mean pooling over the attention mask
// with hard negatives and CLS pooling on pairs; and the shapes it refuses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { loadModel } from '../../src/model.ts';
import { parseSafetensors } from '../../src/io/safetensors.ts';
import { inBatchNegatives } from '../../src/train/losses.ts';
import { type Tensor } from '../../src/onnx/tensor.ts';
import type { LossSpec } from '../../src/train/loss-spec.ts';
import { relErr } from '../helpers/close.ts';

const FIX = new URL('../fixtures/exports/feature_extraction/', import.meta.url).pathname;
const { tensors } = parseSafetensors(readFileSync(`${FIX}tensors.safetensors`));

/** The first `rows` rows of the three [9, 6] int64 inputs. */
function feeds(rows: number): Record<string, Tensor> {
  return Object.fromEntries(['input_ids', 'attention_mask', 'token_type_ids'].map((k) => {
    const t = tensors.get(`input.${k}`)!;
    const T = t.dims[1]!;
    return [k, { dtype: t.dtype, dims: [rows, T], data: t.data.slice(0, rows * T) } as Tensor];
  }));
}

for (const [tag, rows, group, pooling] of [['mean3', 9, 3, 'mean'], ['cls2', 8, 2, 'cls']] as const) {
  test(`inBatchNegatives (${pooling} pooling, ${group === 3 ? 'hard negatives' : 'pairs'}) on a feature-extraction export: PyTorch's loss and gradients`, async () => {
    const model = await loadModel(`${FIX}model.onnx`, { threads: 1 });
    const loss = inBatchNegatives({ embeddings: 'last_hidden_state', pooling, group, ...(pooling === 'mean' ? { mask: 'attention_mask' } : {}) });
    const step = model.compileTrainStep({ trainable: 'all', loss });
    const r = await step.run(feeds(rows));
    await step.release();
    const want = (tensors.get(`loss.${tag}`)!.data as Float32Array)[0]!;
    assert.ok(Math.abs(r.loss - want) <= 1e-5 * Math.abs(want), `loss ${r.loss} vs PyTorch ${want}`);
    let checked = 0;
    for (const [k, t] of tensors) {
      if (!k.startsWith(`grad.${tag}.`)) continue;
      const name = k.slice(`grad.${tag}.`.length);
      const g = r.grads.get(name);
      assert.ok(g, `no gradient for ${name}`);
      const e = t.data as Float32Array;
      const norm = Math.hypot(...e);
      if (norm > 1e-7) assert.ok(relErr(g, e) <= 1e-4, `${name}: relative error ${relErr(g, e).toExponential(2)}`);
      else assert.ok(Math.hypot(...g) <= 1e-6, `${name}: expected ~0, got ‖g‖ ${Math.hypot(...g)}`);
      checked++;
    }
    assert.equal(checked, model.parameterNames('all').length);
    await model.release();
  });
}

test('inBatchNegatives refuses rows that are not whole groups and bad options', async () => {
  const model = await loadModel(`${FIX}model.onnx`, { threads: 1 });
  const compile = (o: LossSpec, rows: number) => model.compileTrainStep({ trainable: 'all', loss: o }).run(feeds(rows));
  await assert.rejects(async () => compile(inBatchNegatives({ embeddings: 'last_hidden_state', group: 2 }), 9), /has 9 rows, which is not 2 columns of at least 2 examples/);
  await assert.rejects(async () => compile(inBatchNegatives({ embeddings: 'last_hidden_state', group: 3 }), 3), /has 3 rows/);
  assert.throws(() => inBatchNegatives({ embeddings: 'e', group: 1 }), /group must be an integer ≥ 2/);
  assert.throws(() => inBatchNegatives({ embeddings: 'e', scale: 0 }), /scale must be a positive number/);
  await model.release();
});
