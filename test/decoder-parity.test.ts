// refit's loss and gradients against PyTorch on a tiny U-Net/FPN-style decoder exported by
// torch 1.13 (fixture made by test/fixtures/decoder/make_decoder_fixture.py): ConvTranspose with
// stride 2 and output_padding, Resize nearest and bilinear (half_pixel, align_corners), PRelu
// (per-channel and single slope), Mish (exported as Softplus·Tanh·Mul), DepthToSpace (PixelShuffle).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { loadModel } from '../src/model.ts';
import { parseSafetensors } from '../src/io/safetensors.ts';
import * as losses from '../src/train/losses.ts';
import type { Tensor } from '../src/onnx/tensor.ts';

const dir = new URL('./fixtures/decoder/', import.meta.url);

/** ‖a − b‖ / ‖b‖ ≤ 1e-4. */
function assertClose(name: string, actual: Float32Array, expected: Tensor, rel = 1e-4) {
  const e = expected.data as Float32Array;
  assert.equal(actual.length, e.length, `${name}: length`);
  let d2 = 0, e2 = 0;
  for (let i = 0; i < e.length; i++) { d2 += (actual[i]! - e[i]!) ** 2; e2 += e[i]! ** 2; }
  assert.ok(e2 > 0, `${name}: the reference gradient is zero, the check proves nothing`);
  assert.ok(Math.sqrt(d2) <= rel * Math.sqrt(e2), `${name}: ‖diff‖ ${Math.sqrt(d2).toExponential(2)} vs ‖ref‖ ${Math.sqrt(e2).toExponential(2)}`);
}

test('U-Net/FPN-style decoder (ConvTranspose, Resize nearest/bilinear, PRelu, Mish, DepthToSpace): loss and every gradient match PyTorch', async () => {
  const model = await loadModel(new URL('model.onnx', dir).pathname, { threads: 1 });
  const { tensors } = parseSafetensors(readFileSync(new URL('tensors.safetensors', dir)));
  const meta = JSON.parse(readFileSync(new URL('meta.json', dir), 'utf8')) as { op_types: string[]; trainable: string[] };
  for (const op of ['ConvTranspose', 'Resize', 'PRelu', 'DepthToSpace']) assert.ok(meta.op_types.includes(op), `fixture lacks ${op}`);
  const step = model.compileTrainStep({ trainable: 'all', loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }), outputs: ['logits'] });
  const r = await step.run({ x: tensors.get('input.x')!, y: tensors.get('label.y')! });
  const refLoss = (tensors.get('loss')!.data as Float32Array)[0]!;
  assert.ok(Math.abs(r.loss - refLoss) <= 1e-4 * Math.abs(refLoss), `loss ${r.loss} vs PyTorch ${refLoss}`);
  let n = 0;
  for (const [k, t] of tensors) {
    if (!k.startsWith('grad.')) continue;
    const p = k.slice(5);
    const g = r.grads.get(p);
    assert.ok(g, `refit computed no gradient for '${p}'`);
    assertClose(`grad ${p}`, g, t);
    n++;
  }
  assert.equal(n, meta.trainable.length);
  assert.equal(n, 18); // 8 conv/linear layers with weight and bias, 2 PReLU slopes
  await step.release();
});
