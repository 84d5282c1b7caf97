// refit's full step against PyTorch on SAM's image encoder (windowed attention with padding,
// decomposed relative positions through Einsum, LayerNorm2d) and its prompt encoder with mask decoder
// (Fourier features of points, Where-selected embeddings, a two-way transformer, ConvTranspose
// upscaling), trained as MedSAM trains it (binary cross-entropy on the masks, MSE on the IoU
// scores). Fixtures: test/fixtures/popular (bench/popular_architectures.py).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { loadModel } from '../src/model.ts';
import { parseSafetensors } from '../src/io/safetensors.ts';
import { parseNpy } from '../src/cli/data-files.ts';
import * as losses from '../src/train/losses.ts';
import type { LossSpec } from '../src/train/loss-spec.ts';
import { f32, i64, type Tensor } from '../src/onnx/tensor.ts';
import { assertCloseToTorch } from './helpers/close.ts';

const dir = new URL('./fixtures/popular/', import.meta.url).pathname;

function npy(file: string): Tensor {
  const a = parseNpy(readFileSync(dir + file), file);
  return a.dtype === 'float32' || a.dtype === 'float64' ? f32(a.shape, Float32Array.from(a.values)) : i64(a.shape, Array.from(a.values, Number));
}

async function againstTorch(name: string, loss: LossSpec, feeds: Record<string, Tensor>, buffers: string[] = []): Promise<void> {
  const ref = JSON.parse(readFileSync(`${dir}${name}.json`, 'utf8')) as { loss: number; inputs: Record<string, number[]> };
  for (const input of Object.keys(ref.inputs)) feeds[input] = npy(`${name}.${input}.npy`);
  const model = await loadModel(`${dir}${name}.onnx`, { threads: 1 });
  const r = await model.compileTrainStep({ trainable: 'all', loss }).run(feeds);
  assert.ok(Math.abs(r.loss - ref.loss) <= 1e-5 * Math.abs(ref.loss), `${name}: loss ${r.loss} vs PyTorch ${ref.loss}`);
  const torch = parseSafetensors(readFileSync(`${dir}${name}.grads.safetensors`)).tensors;
  for (const [p, want] of torch) {
    const got = r.grads.get(p);
    assert.ok(got, `${name}: no gradient for ${p}`);
    assertCloseToTorch(`${name} ${p}`, got, want);
  }
  // What refit trains beyond PyTorch's parameters: only the buffers a file cannot tell from weights.
  assert.deepEqual([...r.grads.keys()].filter((p) => !torch.has(p)), buffers);
  await model.release();
}

test('SAM\'s image encoder: the full step\'s loss and every gradient are PyTorch\'s', async () => {
  await againstTorch('sam_encoder', losses.mse({ output: 'image_embeddings', target: 'y' }), { y: npy('sam_encoder.y.npy') });
});

test('SAM\'s prompt encoder and mask decoder, trained as MedSAM trains it: loss and every gradient are PyTorch\'s', async () => {
  const y = npy('sam_decoder.y.npy');
  const loss = losses.combine([{ loss: losses.binaryCrossEntropy({ logits: 'pred_masks', target: 'y' }) }, { loss: losses.mse({ output: 'iou_scores', target: 'iou_target' }) }]);
  const iou = f32(y.dims.slice(0, 2), new Float32Array(y.dims[0]! * y.dims[1]!).fill(0.5));
  // The random Fourier matrix is a PyTorch buffer stored as an initializer read as data: 'all' trains it.
  await againstTorch('sam_decoder', loss, { y, iou_target: iou }, ['pe_layer.positional_encoding_gaussian_matrix']);
});
