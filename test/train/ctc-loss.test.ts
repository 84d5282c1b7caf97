// The CTC loss (src/train/ctc-loss.ts) against PyTorch's F.ctc_loss computed in float64
// (test/fixtures/ctc/make_ctc_fixture.py): loss and the gradient of the weights that make the logits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { RefitModel } from '../../src/model.ts';
import { ModelBuilder } from '../../src/onnx/model-builder.ts';
import { parseSafetensors } from '../../src/io/safetensors.ts';
import * as losses from '../../src/train/losses.ts';
import { relErr } from '../helpers/close.ts';
import { ctcGreedyDecode, ctcRowLoss, editDistance } from '../../src/train/ctc-decode.ts';

const { tensors } = parseSafetensors(readFileSync(new URL('../fixtures/ctc/tensors.safetensors', import.meta.url)));
const x = tensors.get('input.x')!;
const model = () => new RefitModel(new ModelBuilder({ opset: 17 }).input('x', 'float32', [3, 12, 5]).initializer('w', tensors.get('param.w')!)
  .node('MatMul', ['x', 'w'], ['logits']).output('logits', 'float32', [3, 12, 6]).build(), { threads: 1 });

const CASES = {
  mean: { blank: 0, reduction: 'mean' as const },
  sum_blank5: { blank: 5, reduction: 'sum' as const },
  impossible: { blank: 0, reduction: 'mean' as const, zeroInfinity: true },
};

for (const [name, o] of Object.entries(CASES)) {
  test(`CTC '${name}' (blank ${o.blank}, ${o.reduction}${'zeroInfinity' in o ? ', zero_infinity' : ''}): PyTorch's loss and gradient`, async () => {
    const step = model().compileTrainStep({ trainable: ['w'], loss: losses.ctc({ logits: 'logits', labels: 'y', inputLengths: 'lens', maxLabelLength: 4, ...o }) });
    const r = await step.run({ x, y: tensors.get(`labels.${name}`)!, lens: tensors.get(`lengths.${name}`)! });
    const want = (tensors.get(`loss.${name}`)!.data as Float32Array)[0]!;
    assert.ok(Math.abs(r.loss - want) <= 1e-5 * Math.abs(want), `loss ${r.loss} vs PyTorch ${want}`);
    const e = relErr(r.grads.get('w')!, tensors.get(`grad.${name}`)!.data as Float32Array);
    assert.ok(e <= 1e-5, `gradient relative error ${e.toExponential(2)}`);
    await step.release();
  });
}

test('CTC: a row no alignment can produce gives +∞ without zeroInfinity, as PyTorch; every frame valid when no lengths are given', async () => {
  const inf = model().compileTrainStep({ trainable: ['w'], loss: losses.ctc({ logits: 'logits', inputLengths: 'lens', maxLabelLength: 4, reduction: 'sum' }) });
  const r = await inf.run({ x, y: tensors.get('labels.inf')!, lens: tensors.get('lengths.inf')! });
  assert.equal(r.loss, Infinity);
  assert.equal((tensors.get('loss.inf')!.data as Float32Array)[0], Infinity);
  // all 12 frames: the same as lengths of 12 for every row
  const all = model().compileTrainStep({ trainable: ['w'], loss: losses.ctc({ logits: 'logits', blank: 5, reduction: 'sum', maxLabelLength: 4 }) });
  const a = await all.run({ x, y: tensors.get('labels.sum_blank5')! });
  assert.ok(Math.abs(a.loss - (tensors.get('loss.sum_blank5')!.data as Float32Array)[0]!) <= 1e-4);
});

test('CTC refuses logits that are not [batch, frames, classes] and a blank outside the classes, by name', async () => {
  const step = model().compileTrainStep({ trainable: ['w'], loss: losses.ctc({ logits: 'logits', blank: 6, maxLabelLength: 4 }) });
  await assert.rejects(step.run({ x, y: tensors.get('labels.mean')! }), /ctc: blank 6 is not a class of 'logits' \(6 classes\)/);
  assert.throws(() => losses.ctc({ logits: 'logits', maxLabelLength: 0 }), /maxLabelLength must be a positive integer/);
});

test('ctcRowLoss (evaluation, in JavaScript) gives PyTorch\'s loss; greedy decoding merges repeats and drops blanks; edit distance', () => {
  const xs = x.data as Float32Array, w = tensors.get('param.w')!.data as Float32Array;
  const logits = new Float32Array(3 * 12 * 6);
  for (let r = 0; r < 36; r++) for (let c = 0; c < 6; c++) for (let d = 0; d < 5; d++) logits[r * 6 + c]! += xs[r * 5 + d]! * w[d * 6 + c]!;
  const rows = (name: string) => Array.from({ length: 3 }, (_, i) => Array.from((tensors.get(`labels.${name}`)!.data as BigInt64Array).subarray(i * 4, i * 4 + 4), Number).filter((v) => v >= 0));
  const sum = rows('sum_blank5').reduce((a, r, i) => a + ctcRowLoss(logits.subarray(i * 72, (i + 1) * 72), 12, 6, r, 5), 0);
  const want = (tensors.get('loss.sum_blank5')!.data as Float32Array)[0]!;
  assert.ok(Math.abs(sum - want) <= 1e-4 * want, `${sum} vs ${want}`);
  assert.equal(ctcRowLoss(logits.subarray(72, 72 + 4 * 6), 4, 6, [3, 3, 3], 0), Infinity, '3 repeated labels need 5 frames');
  // frames' best classes 0 2 2 0 2 3 3 0 → [2, 2, 3]
  const best = [0, 2, 2, 0, 2, 3, 3, 0];
  const scores = best.flatMap((b) => Array.from({ length: 4 }, (_, c) => (c === b ? 1 : 0)));
  assert.deepEqual(ctcGreedyDecode(scores, 8, 4, 0), [2, 2, 3]);
  assert.deepEqual(ctcGreedyDecode(scores, 8, 4, 2), [0, 0, 3, 0]); // 2 as the blank: the 0s are labels, a blank between the first two
  assert.equal(editDistance([1, 2, 3], [1, 3]), 1);
  assert.equal(editDistance([], [4, 4]), 2);
  assert.equal(editDistance([1, 2], [2, 1]), 2);
});
