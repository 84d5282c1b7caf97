// LoRA on convolutions whose weight the graph computes (weight norm, spectral norm; BiT's and
// NFNet's weight standardization in test/peft/module-names.test.ts), against PyTorch: an adapter
// PyTorch wrote in HF PEFT's layout loads onto the exported model and gives PyTorch's logits, loss
// and LoRA gradients (test/fixtures/peft/make_computed_weights.py, float64 reference).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadModel, loadAdapter, losses } from '../../src/index.ts';
import { PeftModel } from '../../src/peft/index.ts';
import { computedWeightNodes } from '../../src/peft/sites.ts';
import { parseSafetensors } from '../../src/io/safetensors.ts';
import { relErr } from '../helpers/close.ts';
import { refit } from '../helpers/cli.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dir = fileURLToPath(new URL('../fixtures/peft/computed_weights/', import.meta.url));
const expected = parseSafetensors(readFileSync(`${dir}expected.safetensors`), 'expected.safetensors').tensors;
const ref = (k: string) => expected.get(k)!;

test('weight-normed and spectral-normed convs are LoRA sites with their own shapes; PyTorch\'s adapter file gives its logits, loss and gradients', async () => {
  const base = await loadModel(`${dir}model.onnx`, { threads: 1 });
  const sites = PeftModel.from(base).sites();
  assert.deepEqual(sites.map((s) => [s.module, s.op, s.computed ?? false, s.dOut, s.dIn, s.kernel]), [
    ['c1', 'Conv', true, 8, 4, [3]], ['c2', 'Conv', true, 8, 8, [5]], ['c3', 'Conv', true, 6, 8, [3]], ['fc', 'Gemm', false, 3, 6, undefined],
  ]);
  // Spectral norm's power iteration multiplies parameters by parameters (u·W·v): no layer of its own.
  assert.deepEqual(computedWeightNodes(base.ir.graph).map((n) => n.name), ['/c1/Conv', '/c2/Conv', '/c3/Conv']);
  const model = await loadAdapter(base, `${dir}adapter`, 'torch');
  const logits = (await model.run({ x: ref('x') })).logits!;
  assert.ok(relErr(logits.data as Float32Array, ref('logits').data as Float32Array) < 1e-5, `logits ${relErr(logits.data as Float32Array, ref('logits').data as Float32Array)}`);
  const step = model.compileTrainStep({ trainable: model.trainableNames('torch'), loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }) });
  const r = await step.run({ x: ref('x'), y: ref('y') });
  assert.ok(Math.abs(r.loss - (ref('loss').data as Float32Array)[0]!) < 1e-5, `loss ${r.loss}`);
  const fileKey = model.planOf('torch').fileKeys;
  assert.equal(r.grads.size, 6);
  for (const [name, g] of r.grads) {
    const e = relErr(g, ref(`grad.${fileKey.get(name)}`).data as Float32Array);
    assert.ok(e < 1e-4, `${name}: relative error ${e}`);
  }
  await step.release();
  await model.release();
});

test('`refit adapter merge` bakes the LoRA of computed-weight convs into a plain model that gives PyTorch\'s logits', async () => {
  const out = mkdtempSync(join(tmpdir(), 'refit-cw-'));
  try {
    const r = await refit('adapter', 'merge', `${dir}model.onnx`, `${dir}adapter`, '--out', join(out, 'merged.onnx'));
    assert.equal(r.status, 0, r.stderr);
    const merged = await loadModel(join(out, 'merged.onnx'), { threads: 1 });
    assert.equal(merged.ir.graph.nodes.filter((n) => n.opType === 'Conv').length, 9, 'three convs and each LoRA branch\'s two');
    const logits = (await merged.run({ x: ref('x') })).logits!.data as Float32Array;
    assert.ok(relErr(logits, ref('logits').data as Float32Array) < 1e-5);
    await merged.release();
  } finally { rmSync(out, { recursive: true, force: true }); }
});
