// losses.tokenCrossEntropy against PyTorch: a small nanoGPT exported from torch (dynamic batch and
// sequence, the tied lm_head kept as one initializer), next-token labels with a prompt and the
// last position ignored (-100). Loss and every parameter's gradient as F.cross_entropy(...,
// ignore_index=-100) gives them (test/fixtures/token-ce/make_token_ce.py).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../../src/model.ts';
import { parseSafetensors } from '../../src/io/safetensors.ts';
import * as losses from '../../src/train/losses.ts';
import { i64 } from '../../src/onnx/tensor.ts';

const dir = fileURLToPath(new URL('../fixtures/token-ce/', import.meta.url));
const meta = JSON.parse(readFileSync(`${dir}meta.json`, 'utf8')) as { idx: number[][]; labels: number[][]; loss: number; params: string[] };

test('token cross-entropy on an exported nanoGPT: loss and every gradient equal PyTorch\'s', async () => {
  const model = await loadModel(`${dir}model.onnx`);
  assert.deepEqual([...model.parameterNames()].sort(), [...meta.params].sort(), 'the trainable tensors are torch\'s parameters');
  const B = meta.idx.length, T = meta.idx[0]!.length;
  const step = model.compileTrainStep({ trainable: meta.params, loss: losses.tokenCrossEntropy({ logits: 'logits', labels: 'labels' }) });
  const r = await step.run({ idx: i64([B, T], meta.idx.flat()), labels: i64([B, T], meta.labels.flat()) });
  assert.ok(Math.abs(r.loss - meta.loss) <= 1e-5 * meta.loss, `loss ${r.loss} vs PyTorch ${meta.loss}`);
  const ref = parseSafetensors(new Uint8Array(readFileSync(`${dir}grads.safetensors`))).tensors;
  let worst = 0;
  for (const p of meta.params) {
    const want = ref.get(p)!.data as Float32Array, got = r.grads.get(p)!;
    let d2 = 0, w2 = 0;
    for (let i = 0; i < want.length; i++) { d2 += (got[i]! - want[i]!) ** 2; w2 += want[i]! ** 2; }
    const rel = Math.sqrt(d2 / Math.max(w2, 1e-30));
    worst = Math.max(worst, rel);
    assert.ok(rel <= 1e-4, `${p}: relative gradient error ${rel}`);
  }
  console.log(`# loss ${r.loss} (PyTorch ${meta.loss}); worst relative gradient error ${worst.toExponential(1)} over ${meta.params.length} parameters`);
});
