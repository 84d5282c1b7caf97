// refit's full step against PyTorch on SAM's image encoder (windowed attention with padding,
// decomposed relative positions through Einsum, LayerNorm2d) and its prompt encoder with mask decoder
// (Fourier features of points, Where-selected embeddings, a two-way transformer, ConvTranspose
// upscaling), trained as MedSAM trains it (binary cross-entropy on the masks, MSE on the IoU
// scores); DeBERTa-v3 (key and query projections shared with the relative-position path: a weight
// used twice, which torch.onnx stores as an Identity alias of its folded copy); RT-DETR's decoder
// (GridSample's gradient to the sampling offsets, boxes detached between layers, one
// query_pos_head called by every layer); torchvision's detectors; and transformers' own classes
// (Mistral, GPT-2, MobileBERT, wav2vec 2.0, Qwen2 with its cache, BERT after onnxruntime's
// optimizer and quantizer). Fixtures: test/fixtures/popular (bench/popular_architectures.py).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { loadModel, type RefitModel } from '../src/model.ts';
import { withoutKvCache } from '../src/onnx/kv-cache.ts';
import { parseSafetensors } from '../src/io/safetensors.ts';
import { parseNpy } from '../src/cli/data-files.ts';
import * as losses from '../src/train/losses.ts';
import type { LossSpec } from '../src/train/loss-spec.ts';
import { f32, i64, type Tensor } from '../src/onnx/tensor.ts';
import { withFixedInputs } from '../src/onnx/fixed-inputs.ts';
import { assertCloseToTorch } from './helpers/close.ts';
import { detectorLoss } from './helpers/detector-loss.ts';
import * as peft from '../src/peft/index.ts';
import { Trainer } from '../src/train/trainer.ts';
import * as optim from '../src/train/optim/index.ts';
import { gradCheck } from '../src/autodiff/gradcheck.ts';
import { subgraphDataShapes } from '../src/onnx/data-shapes.ts';
import { embeddingBagOf } from '../src/onnx/embedding-bag.ts';

const dir = new URL('./fixtures/popular/', import.meta.url).pathname;

function npy(file: string): Tensor {
  const a = parseNpy(readFileSync(dir + file), file);
  return a.dtype === 'float32' || a.dtype === 'float64' ? f32(a.shape, Float32Array.from(a.values)) : i64(a.shape, Array.from(a.values, Number));
}

/** `beyond`: what refit may train beyond PyTorch's parameters (buffers a file cannot tell from weights), by name or by test. */
async function againstTorch(name: string, loss: LossSpec, feeds: Record<string, Tensor>, beyond: string[] | ((p: string, grad: Float32Array) => boolean) = [], transform?: (m: RefitModel) => RefitModel): Promise<void> {
  // inputsFrom: a variant of another export (onnxruntime's optimizer output) runs on that one's batch
  const ref = JSON.parse(readFileSync(`${dir}${name}.json`, 'utf8')) as { loss: number; inputs: Record<string, number[]>; inputsFrom?: string; stopGradient?: string[] };
  const loaded = await loadModel(`${dir}${name}.onnx`, { threads: 1 });
  const model = transform ? transform(loaded) : loaded;
  // the inputs the model takes (a decoder without its cache no longer takes the empty pasts PyTorch ran with)
  for (const input of Object.keys(ref.inputs)) if (model.ir.graph.inputs.some((i) => i.name === input)) feeds[input] = npy(`${ref.inputsFrom ?? name}.${input}.npy`);
  const r = await model.compileTrainStep({ trainable: 'all', loss, ...(ref.stopGradient ? { stopGradient: ref.stopGradient } : {}) }).run(feeds);
  assert.ok(Math.abs(r.loss - ref.loss) <= 1e-5 * Math.abs(ref.loss), `${name}: loss ${r.loss} vs PyTorch ${ref.loss}`);
  const torch = parseSafetensors(readFileSync(`${dir}${name}.grads.safetensors`)).tensors;
  for (const [p, want] of torch) {
    const got = r.grads.get(p);
    assert.ok(got, `${name}: no gradient for ${p}`);
    assertCloseToTorch(`${name} ${p}`, got, want);
  }
  // What refit trains beyond PyTorch's parameters: only the buffers a file cannot tell from weights.
  const extra = [...r.grads.keys()].filter((p) => !torch.has(p));
  if (Array.isArray(beyond)) assert.deepEqual(extra, beyond);
  else for (const p of extra) assert.ok(beyond(p, r.grads.get(p)!), `${name}: refit trains '${p}' beyond PyTorch's parameters`);
  await model.release();
  if (model !== loaded) await loaded.release();
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

test('DeBERTa-v3: the key and query projections, used twice, train as one tensor each with PyTorch\'s gradient; LoRA reaches both uses', async () => {
  await againstTorch('deberta_v3', losses.crossEntropy({ logits: 'logits', labels: 'y' }), { y: npy('deberta_v3.y.npy') });
  const model = await loadModel(`${dir}deberta_v3.onnx`, { threads: 1 });
  const p = peft.withAdapter(model, 'ad', peft.lora({ targets: /(query|value)_proj$/, rank: 2 }));
  const uses = (t: string) => p.ir.graph.nodes.filter((n) => n.inputs.includes(t)).length;
  const a = p.trainableNames().filter((n) => n.includes('lora_A'));
  assert.equal(a.length, 4, `one pair per projection and layer: ${a.join(', ')}`);
  for (const n of a) assert.equal(uses(n), /query_proj/.test(n) ? 2 : 1, `${n}: applied at every use of its weight`);
  await p.release();
});

test('RT-DETR\'s decoder: deformable attention\'s GridSample, boxes detached between layers (stopGradient) and its shared query_pos_head: loss and every gradient are PyTorch\'s', async () => {
  const loss = losses.combine([{ loss: losses.tokenCrossEntropy({ logits: 'logits', labels: 'y' }) }, { loss: losses.mse({ output: 'pred_boxes', target: 'boxes' }) }]);
  // Beyond PyTorch's parameters: the frozen BatchNorms' folded scales and shifts (PyTorch buffers
  // that 'all' trains), and the first layer's box head, whose only output the stop cuts (gradient 0).
  await againstTorch('rtdetr', loss, { y: npy('rtdetr.y.npy'), boxes: npy('rtdetr.boxes.npy') },
    (p, g) => /^onnx::(Mul|Add)_/.test(p) || g.every((v) => v === 0));
});

test('Silero VAD as its files take it (the sample rate an input, an If on it): refused naming the input; with the rate fixed, the 16 kHz branch trains with PyTorch\'s loss and gradients', async () => {
  const loss = losses.binaryCrossEntropy({ probabilities: 'output', target: 'y' });
  const feeds = { input: npy('silero_vad_if.input.npy'), h: npy('silero_vad_if.h.npy'), c: npy('silero_vad_if.c.npy'), sr: npy('silero_vad_if.sr.npy'), y: npy('silero_vad_if.y.npy') };
  const plain = await loadModel(`${dir}silero_vad_if.onnx`, { threads: 1 });
  await assert.rejects(plain.compileTrainStep({ trainable: 'all', loss }).run(feeds), /no gradient rule for op If.*\n[^]*computed from the input 'sr': fix it to a value with withFixedInputs\(model, \{ sr: … \}\)/);
  assert.throws(() => withFixedInputs(plain, { rate: i64([], [16000]) }), /'rate' is not an input of the model; its inputs: input \(float32\), sr \(int64\), h \(float32\), c \(float32\)/);
  assert.throws(() => withFixedInputs(plain, { sr: f32([], [16000]) }), /input 'sr' is int64; the value given is float32/);
  const vad = withFixedInputs(plain, { sr: i64([], [16000]) });
  assert.ok(!vad.ir.graph.nodes.some((n) => n.opType === 'If'), 'the branch 16 kHz takes is inlined at once, so adapters see its layers');
  assert.ok(!vad.inputs.some((i) => i.name === 'sr'));
  const ref = JSON.parse(readFileSync(`${dir}silero_vad_if.json`, 'utf8')) as { loss: number };
  const { sr: _, ...rest } = feeds;
  const r = await vad.compileTrainStep({ trainable: 'all', loss }).run(rest);
  assert.ok(Math.abs(r.loss - ref.loss) <= 1e-5 * ref.loss, `loss ${r.loss} vs PyTorch ${ref.loss}`);
  const torch = parseSafetensors(readFileSync(`${dir}silero_vad_if.grads.safetensors`)).tensors;
  for (const [p, want] of torch) assertCloseToTorch(`silero_vad_if ${p}`, r.grads.get(p)!, want);
  // The 8 kHz branch's weights are unused at 16 kHz: zero gradients.
  for (const [p, g] of r.grads) if (p.startsWith('_model_8k.')) assert.ok(g.every((v) => v === 0), p);
  // The rate as a stored constant instead: the If is inlined while the step compiles, after the
  // shape probe, whose second run gives the branch's tensors (its LSTM needs them to unroll).
  const stored = plain.rewritten((ir) => { ir.graph.initializers.set('sr', i64([], [16000])); ir.graph.inputs = ir.graph.inputs.filter((i) => i.name !== 'sr'); });
  assert.ok(stored.ir.graph.nodes.some((n) => n.opType === 'If'));
  const s = await stored.compileTrainStep({ trainable: 'all', loss }).run(rest);
  assert.ok(Math.abs(s.loss - ref.loss) <= 1e-5 * ref.loss, `stored rate: loss ${s.loss} vs PyTorch ${ref.loss}`);
  await Promise.all([vad.release(), plain.release(), stored.release()]);
});

test('a DLRM-style click model on EmbeddingBags (Loops over the bags slicing the ids by offsets, one bag empty): PyTorch\'s loss and gradients; sum and mean bags become one fixed-shape product, a max bag keys its step on its offsets; other bags pass finite differences', async () => {
  const loss = losses.binaryCrossEntropy({ logits: 'logit', target: 'y' });
  await againstTorch('embedding_bag', loss, { y: npy('embedding_bag.y.npy') });
  const model = await loadModel(`${dir}embedding_bag.onnx`, { threads: 1 });
  const loops = model.ir.graph.nodes.filter((n) => n.opType === 'Loop');
  assert.deepEqual(loops.map((n) => embeddingBagOf(n, model.ir.graph)?.mode), ['sum', 'mean', undefined]);
  assert.deepEqual(subgraphDataShapes(model.ir.graph).inputs, ['offsets_c'], 'only the max bag\'s offsets decide a step\'s sizes');
  // the same ids and shapes, other bags: [7] [2] [1,29,4,5]; [2,19] [] [0,8,8]; [5] [11,3,17] [6,2]
  const feeds = { dense: npy('embedding_bag.dense.npy'), ids_a: npy('embedding_bag.ids_a.npy'), offsets_a: i64([3], [0, 1, 3]), ids_b: npy('embedding_bag.ids_b.npy'), offsets_b: i64([3], [0, 2, 2]),
    ids_c: npy('embedding_bag.ids_c.npy'), offsets_c: i64([3], [0, 1, 4]), y: npy('embedding_bag.y.npy') };
  for (const r of await gradCheck(model.ir, feeds, { params: ['emb_sum.weight', 'emb_mean.weight', 'emb_max.weight', 'top.0.weight'], loss, eps: 1e-2 })) {
    assert.ok(r.relError <= 1e-2 && r.analyticNorm > 0, `${r.param}: relative error ${r.relError.toExponential(2)}`);
  }
  await model.release();
});

test('torchvision\'s Faster R-CNN (RPN with NMS, MultiScaleRoIAlign, box head, postprocess), summed detection scores, proposals detached (stopGradient): loss and every gradient are PyTorch\'s', async () => {
  // Beyond PyTorch's parameters: the RPN head's, whose only paths to the scores the stop cuts (gradient 0).
  await againstTorch('faster_rcnn', detectorLoss([['scores', 1, 'sum']]), {}, (p, g) => g.every((v) => v === 0));
});

test('torchvision\'s RetinaNet and FCOS (anchor decoding, per-level top-k, batched NMS; FCOS\'s GroupNorm head and centerness): the kept scores plus 0.01 · the decoded boxes, loss and every gradient PyTorch\'s', async () => {
  const loss = detectorLoss([['scores', 1, 'sum'], ['boxes', 0.01, 'sum']]);
  await againstTorch('retinanet', loss, {});
  await againstTorch('fcos', loss, {});
});

test('torchvision\'s Mask R-CNN and Keypoint R-CNN (each mask resized to its box and pasted there, heatmaps to keypoints: Loops over the detections, unrolled), proposals detached: loss and every gradient PyTorch\'s', async () => {
  // Beyond PyTorch's parameters: the RPN head's, whose only paths to the loss the stop cuts (gradient 0).
  await againstTorch('mask_rcnn', detectorLoss([['scores', 1, 'sum'], ['masks', 1, 'mean']]), {}, (p, g) => g.every((v) => v === 0));
  await againstTorch('keypoint_rcnn', detectorLoss([['scores', 1, 'sum'], ['keypoints_scores', 0.1, 'sum']]), {}, (p, g) => g.every((v) => v === 0));
});

// transformers' own classes (bench/arch_hf.py), not re-written: the graphs their mask-building
// code exports (causal and sliding-window masks over left padding), their weight layouts.
test('transformers\' MistralForCausalLM (rotary positions, grouped-query attention, a sliding-window causal mask over left padding) and GPT2LMHeadModel (Conv1D weights, the lm_head tied to wte): next-token loss and every gradient PyTorch\'s; LoRA finds q_proj and v_proj', async () => {
  const loss = losses.tokenCrossEntropy({ logits: 'logits', labels: 'y' });
  await againstTorch('hf_mistral', loss, { y: npy('hf_mistral.y.npy') });
  await againstTorch('hf_gpt2', loss, { y: npy('hf_gpt2.y.npy') });
  const model = await loadModel(`${dir}hf_mistral.onnx`, { threads: 1 });
  const p = peft.withAdapter(model, 'ad', peft.lora({ targets: /(q_proj|v_proj)$/, rank: 2 }));
  assert.deepEqual(p.trainableNames().filter((n) => n.includes('lora_A')).map((n) => n.replace('ad.lora_A.', '')).sort(),
    ['layers.0.self_attn.q_proj', 'layers.0.self_attn.v_proj', 'layers.1.self_attn.q_proj', 'layers.1.self_attn.v_proj'].map((s) => `m.model.${s}`));
  await p.release();
});

test('transformers\' MobileBertForSequenceClassification (trigram embeddings over the padding row, NoNorm, bottlenecks) and Wav2Vec2ForSequenceClassification (conv feature extractor with GroupNorm, weight-normed grouped positional conv, a sample mask): loss and every gradient PyTorch\'s', async () => {
  // MobileBERT's trigram concatenation reads the padding token's row beside real tokens: PyTorch's
  // padding_idx passes it no gradient, and neither does refit (the row is all zeros).
  await againstTorch('hf_mobilebert', losses.crossEntropy({ logits: 'logits', labels: 'y' }), { y: npy('hf_mobilebert.y.npy') });
  await againstTorch('hf_wav2vec2', losses.crossEntropy({ logits: 'logits', labels: 'y' }), { y: npy('hf_wav2vec2.y.npy') });
});

test('transformers\' Qwen2ForCausalLM exported with past_key_values (onnx-community\'s model.onnx form): without its cache, loss and every gradient PyTorch\'s; with it, a cached step gives the whole sequence\'s logits', async () => {
  await againstTorch('hf_qwen2_past', losses.tokenCrossEntropy({ logits: 'logits', labels: 'y' }), { y: npy('hf_qwen2_past.y.npy') }, [], withoutKvCache);
  // The file as given: 5 tokens with empty pasts, then the last 3 with the presents they returned.
  const model = await loadModel(`${dir}hf_qwen2_past.onnx`, { threads: 1 });
  const ids = npy('hf_qwen2_past.input_ids.npy'), mask = npy('hf_qwen2_past.attention_mask.npy'), pos = npy('hf_qwen2_past.position_ids.npy');
  const cols = (t: Tensor, from: number, to: number) => {
    const [B, S] = t.dims as [number, number], d = t.data as BigInt64Array;
    return i64([B, to - from], Array.from({ length: B * (to - from) }, (_, k) => Number(d[Math.floor(k / (to - from)) * S + from + (k % (to - from))])));
  };
  const pasts = (pastOf: (name: string) => Tensor) => Object.fromEntries(model.ir.graph.inputs.filter((i) => i.name.startsWith('past_key_values.')).map((i) => [i.name, pastOf(i.name)]));
  const empty = () => f32([2, 2, 0, 8], new Float32Array(0));
  const whole = (await model.run({ input_ids: ids, attention_mask: mask, position_ids: pos, ...pasts(empty) })).logits!;
  const first = await model.run({ input_ids: cols(ids, 0, 5), attention_mask: cols(mask, 0, 5), position_ids: cols(pos, 0, 5), ...pasts(empty) });
  const next = (await model.run({ input_ids: cols(ids, 5, 8), attention_mask: mask, position_ids: cols(pos, 5, 8), ...pasts((n) => first[n.replace('past_key_values', 'present')]!) })).logits!;
  const V = whole.dims[2]!, w = whole.data as Float32Array, n = next.data as Float32Array;
  let worst = 0;
  for (let b = 0; b < 2; b++) for (let t = 0; t < 3; t++) for (let v = 0; v < V; v++) worst = Math.max(worst, Math.abs(n[(b * 3 + t) * V + v]! - w[(b * 8 + 5 + t) * V + v]!));
  assert.ok(worst <= 1e-4, `cached logits differ by ${worst}`);
  await model.release();
});

test('transformers\' BERT after onnxruntime\'s own tools: fused (EmbedLayerNormalization on int32 ids, Attention with packed Q|K|V, SkipLayerNormalization, BiasGelu) gives PyTorch\'s loss and gradients, and inspect notes the packing; quantized to int8, LoRA on query and value trains', async () => {
  const y = npy('hf_bert.y.npy');
  // PyTorch's gradients under the fused file's names, the packed Q|K|V's concatenated (bench/ort_tools_variants.py)
  await againstTorch('hf_bert.fused', losses.crossEntropy({ logits: 'logits', labels: 'y' }), { y });
  const { inspectModel } = await import('../src/cli/inspect.ts');
  assert.match((await inspectModel(`${dir}hf_bert.fused.onnx`)).exportNotes?.join('\n') ?? '', /2 com\.microsoft Attention nodes pack the query, key and value projections/);
  assert.equal((await inspectModel(`${dir}hf_bert.int8.onnx`)).exportNotes, undefined);
  const int8 = await loadModel(`${dir}hf_bert.int8.onnx`, { threads: 1 });
  assert.ok(int8.ir.graph.nodes.some((n) => n.opType === 'MatMulInteger'));
  const m = peft.withAdapter(int8, 'ad', peft.lora({ rank: 4, alpha: 8, targets: /(query|value)$/ }));
  assert.deepEqual(m.trainableNames().filter((n) => n.includes('lora_A')).map((n) => n.replace('ad.lora_A.m.bert.encoder.', '')),
    ['layer.0.attention.self.query', 'layer.0.attention.self.value', 'layer.1.attention.self.query', 'layer.1.attention.self.value']);
  const t = new Trainer(m.compileTrainStep({ trainable: m.trainableNames(), loss: losses.crossEntropy({ logits: 'logits', labels: 'y' }) }), optim.adam({ lr: 1e-2 }));
  const feeds = { input_ids: npy('hf_bert.input_ids.npy'), attention_mask: npy('hf_bert.attention_mask.npy'), y };
  const first = (await t.step(feeds)).loss;
  let last = first;
  for (let i = 0; i < 9; i++) last = (await t.step(feeds)).loss;
  assert.ok(last < 0.5 * first, `LoRA on the int8 base: loss ${first} → ${last}`);
  await m.release();
  await int8.release();
});
