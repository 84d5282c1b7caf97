// Architectures people deploy with onnxruntime that no other bench holds (bench/popular_architectures.py:
// YOLOv8's detector, a diffusers-style denoising U-Net, CLIP's dual encoder, SegFormer, Depth Anything,
// T5, SAM's image encoder and mask decoder, ConvNeXt V2; bench/arch_text.py: DeBERTa-v3;
// bench/arch_detection.py: DETR, RT-DETR's deformable decoder, torchvision's Faster R-CNN, Mask R-CNN,
// Keypoint R-CNN, RetinaNet and FCOS; bench/arch_levit.py: LeViT;
// bench/arch_vision.py: U²-Net / IS-Net (RMBG), MobileViT; bench/arch_lm.py: ALBERT, Gemma;
// bench/arch_lm2.py: Phi-3, Mamba; bench/arch_speech.py: Whisper, Silero VAD with and without its
// sample-rate If; bench/arch_bit.py: BiT's ResNetV2; bench/arch_restore.py: Real-ESRGAN, MODNet;
// bench/arch_vl.py: TrOCR, OWL-ViT; bench/arch_moe.py: a Mixtral-style MoE; bench/arch_graph.py: a
// PyG-style GCN), written after
// their reference code and exported as their tools export them; bench/arch_hf.py: 78 of
// transformers' own model classes (not re-written), tiny random configs exported as optimum does; and
// bench/arch_timm.py: 79 of timm's own vision models as timm's onnx_export builds them: does refit's full step ('all') give
// PyTorch's loss and every gradient, and do the PEFT and TTA paths a user of each would take run?
//
//   npx tsx bench/popular-architectures.ts [--only yolov8,clip] [--out bench/results/popular-architectures]
//        [--torch-times FILE]   PyTorch's step ms per case (bench/popular_step_times.py --out FILE, run
//                               just before on the same machine): a column of refit's step over PyTorch's
//
// Exports into tmp/popular-architectures first (Debian's python3-torch and python3-onnx) when a model
// is missing there. One batch; the step's first call (which compiles) and the median of 7 calls after one more;
// gradients compared as ‖refit − PyTorch‖ / ‖PyTorch‖ per tensor, the worst reported.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as losses from '../src/train/losses.ts';
import * as peft from '../src/peft/index.ts';
import { createAdapter } from '../src/tta/index.ts';
import type { RefitModel } from '../src/model.ts';
import type { LossSpec } from '../src/train/loss-spec.ts';
import { f32, i64, type Tensor } from '../src/onnx/tensor.ts';
import { withFixedInputs } from '../src/onnx/fixed-inputs.ts';
import { withoutKvCache } from '../src/onnx/kv-cache.ts';
import { exportMissing, stepAgainstTorch, parityTable, describeRow, savedTensor, type ParityRow } from './parity.ts';
import { detectorLoss } from '../test/helpers/detector-loss.ts';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
const dir = join(root, 'tmp', 'popular-architectures');

interface Case {
  loss: LossSpec;
  /** A tied embedding trained as one tensor, as PyTorch trains it (loadModel's keepTies). */
  keepTies?: boolean;
  /** Loss inputs beyond the saved target (a constant target of a second term). */
  extraFeeds?: (feeds: Record<string, Tensor>) => Record<string, Tensor>;
  /** Inputs fixed to a value before training (withFixedInputs): a sample rate an If branches on. */
  fixed?: Record<string, Tensor>;
  /** A decoder with past_key_values inputs, trained on whole sequences as refit trains it (withoutKvCache). */
  withoutCache?: true;
  /** What a user of this model would adapt: [column, what runs]. */
  paths: [string, (model: RefitModel, feeds: Record<string, Tensor>) => Promise<string>][];
}

/** One step of `method` (an adapter added to the model) with the case's loss: the trainable tensor count. */
const peftStep = (method: () => peft.AdapterMethod, loss: LossSpec) => async (model: RefitModel, feeds: Record<string, Tensor>) => {
  const m = peft.withAdapter(model, 'a', method());
  const step = m.compileTrainStep({ trainable: m.trainableNames(), loss });
  const r = await step.run(feeds);
  await step.release();
  await m.release();
  if (!Number.isFinite(r.loss)) throw new Error(`non-finite loss ${r.loss}`);
  return `✓ ${r.grads.size} tensors`;
};
const attention = /(q_proj|k_proj|v_proj|out_proj|to_q|to_k|to_v|to_out|query|key|value|output)/;
const loraOn = (re: RegExp) => () => peft.lora({ rank: 4, alpha: 8, targets: re });
const tta = (method: string, input: string) => async (model: RefitModel, feeds: Record<string, Tensor>) => {
  await createAdapter(model, method).predict(feeds[input]!);
  return '✓';
};

const CASES: Record<string, (lossOnly?: boolean) => Case> = {
  yolov8: () => {
    const loss = losses.mse({ output: 'output0', target: 'y' });
    return { loss, paths: [['norm-affine', peftStep(() => peft.normAffine(), loss)], ['BN-adapt', tta('bn-adapt', 'images')]] };
  },
  unet2d: () => {
    const loss = losses.mse({ output: 'noise_pred', target: 'y' });
    return { loss, paths: [['LoRA on attention (diffusers\' targets)', peftStep(loraOn(/to_(q|k|v|out)/), loss)], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
  },
  clip: () => {
    const loss = losses.combine([
      { loss: losses.crossEntropy({ logits: 'logits_per_image', labels: 'y' }), weight: 0.5 },
      { loss: losses.crossEntropy({ logits: 'logits_per_text', labels: 'y' }), weight: 0.5 }]);
    return { loss, paths: [['LoRA on attention', peftStep(loraOn(attention), loss)], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
  },
  depth_anything: () => {
    const loss = losses.mse({ output: 'predicted_depth', target: 'y' });
    return { loss, paths: [['LoRA on qkv and proj', peftStep(loraOn(/\.(qkv|proj)$/), loss)], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
  },
  t5: () => {
    const loss = losses.tokenCrossEntropy({ logits: 'logits', labels: 'y' });
    return { loss, paths: [['LoRA on q and v (PEFT\'s T5 default)', peftStep(loraOn(/\.(q|v)$/), loss)], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
  },
  sam_encoder: () => {
    const loss = losses.mse({ output: 'image_embeddings', target: 'y' });
    return { loss, paths: [['LoRA on qkv', peftStep(loraOn(/\.qkv$/), loss)], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
  },
  sam_decoder: () => {
    const loss = losses.combine([{ loss: losses.binaryCrossEntropy({ logits: 'pred_masks', target: 'y' }) }, { loss: losses.mse({ output: 'iou_scores', target: 'iou_target' }) }]);
    return { loss, extraFeeds: (f) => ({ iou_target: f32(f.y!.dims.slice(0, 2), new Float32Array(f.y!.dims[0]! * f.y!.dims[1]!).fill(0.5)) }),
      paths: [['LoRA on the two-way transformer (MedSAM-style)', peftStep(loraOn(/(q|k|v|out)_proj$/), loss)], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
  },
  convnextv2: () => {
    const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
    return { loss, paths: [['LoRA on pwconv', peftStep(loraOn(/pwconv\d$/), loss)], ['Tent', tta('tent', 'pixel_values')]] };
  },
  segformer: () => {
    const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
    return { loss, paths: [['LoRA on attention', peftStep(loraOn(attention), loss)], ['Tent', tta('tent', 'pixel_values')]] };
  },
  deberta_v3: () => {
    const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
    return { loss, paths: [['LoRA on query_proj and value_proj (PEFT\'s DeBERTa-v2 default)', peftStep(loraOn(/(query|value)_proj$/), loss)], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
  },
  detr: () => detection(/(q|v)_proj$/),
  rtdetr: () => detection(/(value_proj|sampling_offsets|q_proj|v_proj)$/),
  faster_rcnn: () => {
    // the kept detections' summed scores; torchvision detaches its proposals (the case's stopGradient)
    const loss = detectorLoss([['scores', 1, 'sum']]);
    return { loss, paths: [['LoRA on the box head', peftStep(loraOn(/fc[67]$/), loss)]] };
  },
  mask_rcnn: () => ({ loss: detectorLoss([['scores', 1, 'sum'], ['masks', 1, 'mean']]), paths: [] }),
  keypoint_rcnn: () => ({ loss: detectorLoss([['scores', 1, 'sum'], ['keypoints_scores', 0.1, 'sum']]), paths: [] }),
  retinanet: () => ({ loss: detectorLoss([['scores', 1, 'sum'], ['boxes', 0.01, 'sum']]), paths: [] }),
  fcos: () => ({ loss: detectorLoss([['scores', 1, 'sum'], ['boxes', 0.01, 'sum']]), paths: [] }),
  levit: () => {
    const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
    return { loss, paths: [['Tent', tta('tent', 'pixel_values')], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
  },
  mobilevit: () => {
    const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
    return { loss, paths: [['LoRA on attention', peftStep(loraOn(/(query|key|value)$/), loss)], ['Tent', tta('tent', 'pixel_values')]] };
  },
  albert: () => {
    const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
    return { loss, paths: [['LoRA on query and value (PEFT\'s ALBERT default)', peftStep(loraOn(/(query|value)$/), loss)], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
  },
  gemma: () => languageModel(/(q|v)_proj$/),
  phi3: () => languageModel(/(qkv_proj|o_proj)$/),
  mamba: () => languageModel(/(in_proj|out_proj)$/),
  whisper: () => {
    const loss = losses.tokenCrossEntropy({ logits: 'logits', labels: 'y' });
    return { loss, paths: [['LoRA on q_proj and v_proj (PEFT\'s Whisper default)', peftStep(loraOn(/(q|v)_proj$/), loss)], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
  },
  silero_vad: () => {
    const loss = losses.binaryCrossEntropy({ probabilities: 'output', target: 'y' });
    return { loss, paths: [['BitFit (it has no norm layers)', peftStep(() => peft.bitfit(), loss)]] };
  },
  // Silero's own interface: the sample rate as an input, an If on it; trained with the rate fixed.
  silero_vad_if: () => ({ ...CASES.silero_vad!(), fixed: { sr: i64([], [16000]) } }),
  bit_resnet: () => {
    const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
    return { loss, paths: [['norm-affine', peftStep(() => peft.normAffine(), loss)], ['Tent', tta('tent', 'pixel_values')]] };
  },
  esrgan: () => {
    const loss = losses.mse({ output: 'output', target: 'y' });
    return { loss, paths: [['LoRA on the convolutions', peftStep(loraOn(/conv/), loss)], ['BitFit', peftStep(() => peft.bitfit(), loss)]] };
  },
  modnet: () => {
    const loss = losses.mse({ output: 'matte', target: 'y' });
    return { loss, paths: [['norm-affine', peftStep(() => peft.normAffine(), loss)], ['BN-adapt', tta('bn-adapt', 'input')]] };
  },
  trocr: () => {
    const loss = losses.tokenCrossEntropy({ logits: 'logits', labels: 'y' });
    return { loss, paths: [['LoRA on q_proj and v_proj', peftStep(loraOn(/(q_proj|v_proj|query|value)$/), loss)], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
  },
  owlvit: () => {
    const loss = losses.combine([{ loss: losses.binaryCrossEntropy({ logits: 'logits', target: 'y' }) }, { loss: losses.mse({ output: 'pred_boxes', target: 'boxes' }) }]);
    return { loss, paths: [['LoRA on attention', peftStep(loraOn(attention), loss)], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
  },
  mixtral: () => languageModel(/(q_proj|v_proj)$/),
  gcn: () => {
    const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
    return { loss, paths: [['LoRA on the layers', peftStep(loraOn(/lin$/), loss)], ['BitFit', peftStep(() => peft.bitfit(), loss)]] };
  },
  swin_v2: () => {
    const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
    return { loss, paths: [['LoRA on qkv', peftStep(loraOn(/qkv$/), loss)], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
  },
  pointnet: () => {
    const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
    return { loss, paths: [['Tent', tta('tent', 'points')], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
  },
  dgcnn: () => {
    const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
    return { loss, paths: [['Tent', tta('tent', 'points')], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
  },
  fastspeech2: () => {
    const loss = losses.mse({ output: 'mel', target: 'y' });
    return { loss, paths: [['LoRA on attention', peftStep(loraOn(/(w_qs|w_ks|w_vs|q_proj|k_proj|v_proj)$/), loss)], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
  },
  ts_transformer: () => {
    const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
    // HF PEFT adapts an nn.MultiheadAttention by its module name (its packed in_proj) and out_proj
    return { loss, paths: [['LoRA on self_attn and out_proj', peftStep(loraOn(/self_attn(\.out_proj)?$/), loss)], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
  },
  tcn: () => {
    const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
    return { loss, paths: [['LoRA on the convolutions', peftStep(loraOn(/conv\d$/), loss)], ['BitFit (no norm layers)', peftStep(() => peft.bitfit(), loss)]] };
  },
  hifigan: () => {
    const loss = losses.l1({ output: 'waveform', target: 'y' });
    return { loss, paths: [['LoRA on the resblocks\' convolutions', peftStep(loraOn(/convs[12]\.\d$/), loss)], ['BitFit (no norm layers)', peftStep(() => peft.bitfit(), loss)]] };
  },
  gru_tagger: () => {
    const loss = losses.tokenCrossEntropy({ logits: 'logits', labels: 'y' });
    return { loss, paths: [['LoRA on the output layer', peftStep(loraOn(/^out$/), loss)], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
  },
  lstm_packed: () => {
    const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
    return { loss, paths: [['LoRA on the output layer', peftStep(loraOn(/^fc$/), loss)], ['BitFit', peftStep(() => peft.bitfit(), loss)]] };
  },
  quartznet: () => {
    const loss = losses.ctc({ logits: 'logits', labels: 'y', maxLabelLength: 6 });
    return { loss, paths: [['BN-adapt', tta('bn-adapt', 'audio_signal')], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
  },
  unet3d: () => {
    const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
    return { loss, paths: [['norm-affine', peftStep(() => peft.normAffine(), loss)], ['LoRA on the convolutions', peftStep(loraOn(/conv_\d\.0$/), loss)], ['Tent (per voxel)', tta('tent', 'image')]] };
  },
  espcn: () => {
    const loss = losses.mse({ output: 'output', target: 'y' });
    return { loss, paths: [['LoRA on the convolutions', peftStep(loraOn(/^conv\d$/), loss)], ['BitFit', peftStep(() => peft.bitfit(), loss)]] };
  },
  translator: () => {
    const loss = losses.tokenCrossEntropy({ logits: 'logits', labels: 'y' });
    // the decoder's cross-attention reads in_proj_weight through a Slice whose bounds the export computes from shapes: not a LoRA site
    return { loss, paths: [['LoRA on self-attention, out_proj and FFN', peftStep(loraOn(/(self_attn|out_proj|linear1|linear2)$/), loss)], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
  },
  embedding_bag: () => {
    const loss = losses.binaryCrossEntropy({ logits: 'logit', target: 'y' });
    return { loss, paths: [['LoRA on the MLPs', peftStep(loraOn(/^(bot|top)\.\d$/), loss)], ['BitFit', peftStep(() => peft.bitfit(), loss)]] };
  },
  cyclegan: () => {
    const loss = losses.l1({ output: 'output', target: 'y' });
    return { loss, paths: [['LoRA on the convolutions', peftStep(loraOn(/^model\.\d+(\.conv_block\.\d+)?$/), loss)], ['BitFit (its InstanceNorms have no affine)', peftStep(() => peft.bitfit(), loss)]] };
  },
  fast_style: () => {
    const loss = losses.mse({ output: 'stylized', target: 'y' });
    // a new style from the InstanceNorms' scale and shift alone (Dumoulin et al.'s conditional instance norm)
    return { loss, paths: [['norm-affine', peftStep(() => peft.normAffine(), loss)], ['LoRA on the convolutions', peftStep(loraOn(/conv2d$/), loss)]] };
  },
  pix2pix: () => {
    const loss = losses.l1({ output: 'output', target: 'y' });
    return { loss, paths: [['norm-affine', peftStep(() => peft.normAffine(), loss)], ['BN-adapt', tta('bn-adapt', 'image')]] };
  },
  tabnet: () => {
    const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
    // its shared GLU layers are one weight read by four modules: the file cannot tell that from
    // copied layers, which 'auto' unties; inspect and train say so and name --keep-ties
    return { loss, keepTies: true, paths: [['norm-affine (its ghost BatchNorms)', peftStep(() => peft.normAffine(), loss)], ['LoRA on the attentive transformers and the final mapping', peftStep(loraOn(/(att_transformers\.\d\.fc|final_mapping)$/), loss)]] };
  },
  ft_transformer: () => {
    const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
    return { loss, paths: [['LoRA on attention and the ReGLU layers', peftStep(loraOn(/(attention|attention\.out_proj|linear_first|linear_second)$/), loss)], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
  },
  u2net: () => {
    const loss = losses.binaryCrossEntropy({ probabilities: 'mask', target: 'y' }); // U²-Net trains its sigmoid outputs with BCE
    return { loss, paths: [['BN-adapt', tta('bn-adapt', 'pixel_values')], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
  },
  // bench/arch_hf.py: transformers' own classes, exported as optimum exports them
  hf_bert: () => hfClassifier(/(query|value)$/),
  hf_distilbert: () => hfClassifier(/(q_lin|v_lin)$/),
  hf_roberta: () => hfClassifier(/(query|value)$/),
  hf_electra: () => hfClassifier(/(query|value)$/),
  hf_deberta_v2: () => hfClassifier(/(query_proj|value_proj)$/),
  hf_gpt2: () => languageModel(/c_attn$/),
  hf_llama: () => languageModel(/(q_proj|v_proj)$/),
  hf_qwen2: () => languageModel(/(q_proj|v_proj)$/),
  hf_mistral: () => languageModel(/(q_proj|v_proj)$/),
  hf_phi3: () => languageModel(/(qkv_proj|o_proj)$/),
  hf_gemma2: () => languageModel(/(q_proj|v_proj)$/),
  hf_gpt_neox: () => languageModel(/query_key_value$/),
  hf_opt: () => languageModel(/(q_proj|v_proj)$/),
  hf_t5: () => languageModel(/\.(q|v)$/),
  hf_bart: () => languageModel(/(q_proj|v_proj)$/),
  hf_whisper: () => languageModel(/(q_proj|v_proj)$/),
  hf_vit: () => hfImageClassifier(/(query|value)$/),
  hf_swin: () => hfImageClassifier(/(query|value)$/),
  hf_convnext: () => hfImageClassifier(/pwconv\d$/),
  hf_dinov2: () => hfImageClassifier(/(query|value)$/),
  hf_minilm_l6: () => hfClassifier(/(query|value)$/),
  hf_smollm_135m: () => languageModel(/(q_proj|v_proj)$/),
  hf_llama_past: () => ({ ...languageModel(/(q_proj|v_proj)$/), withoutCache: true }),
  hf_qwen2_past: () => ({ ...languageModel(/(q_proj|v_proj)$/), withoutCache: true }),
  hf_mixtral: () => languageModel(/(q_proj|v_proj)$/),
  hf_qwen2_moe: () => languageModel(/(q_proj|v_proj)$/),
  hf_mamba: () => languageModel(/(in_proj|x_proj|out_proj)$/),
  hf_llama3_rope: () => languageModel(/(q_proj|v_proj)$/),
  hf_layoutlm: () => hfClassifier(/(query|value)$/),
  hf_xlnet: () => hfClassifier(/(layer_1|layer_2)$/),
  hf_funnel: () => hfClassifier(/(q_head|v_head)$/),
  hf_yolos: () => {
    const loss = losses.tokenCrossEntropy({ logits: 'logits', labels: 'y' });
    return { loss, paths: [['LoRA on attention', peftStep(loraOn(/(query|value)$/), loss)], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
  },
  hf_mobilenet_v2: () => hfImageClassifier(/conv_1x1$|expand_1x1\.convolution$/),
  hf_segformer_seg: () => {
    const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
    return { loss, paths: [['LoRA on attention', peftStep(loraOn(/(query|value)$/), loss)], ['Tent (per pixel)', tta('tent', 'pixel_values')]] };
  },
  hf_wav2vec2_ctc: () => {
    const loss = losses.ctc({ logits: 'logits', labels: 'y', maxLabelLength: 3 });
    return { loss, paths: [['LoRA on q_proj and v_proj', peftStep(loraOn(/(q_proj|v_proj)$/), loss)], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
  },
  hf_clip: () => {
    const loss = losses.combine([
      { loss: losses.crossEntropy({ logits: 'logits_per_image', labels: 'y' }), weight: 0.5 },
      { loss: losses.crossEntropy({ logits: 'logits_per_text', labels: 'y' }), weight: 0.5 }]);
    return { loss, paths: [['LoRA on q_proj and v_proj', peftStep(loraOn(/(q_proj|v_proj)$/), loss)], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
  },
  hf_depth_anything: () => {
    const loss = losses.mse({ output: 'predicted_depth', target: 'y' });
    return { loss, paths: [['LoRA on query and value', peftStep(loraOn(/(query|value)$/), loss)], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
  },
  hf_swinv2: () => hfImageClassifier(/(query|value)$/),
  hf_convnextv2: () => hfImageClassifier(/pwconv\d$/),
  hf_gpt_neo: () => languageModel(/(q_proj|v_proj)$/),
  hf_phi: () => languageModel(/(q_proj|v_proj)$/),
  hf_granite: () => languageModel(/(q_proj|v_proj)$/),
  hf_starcoder2: () => languageModel(/(q_proj|v_proj)$/),
  hf_pegasus: () => languageModel(/(q_proj|v_proj)$/),
  hf_mbart: () => languageModel(/(q_proj|v_proj)$/),
  hf_bigbird: () => hfClassifier(/(query|value)$/),
  hf_convbert: () => hfClassifier(/(query|value)$/),
  hf_squeezebert: () => hfClassifier(/(query|value)$/),
  hf_nystromformer: () => hfClassifier(/(query|value)$/),
  hf_mpnet: () => hfClassifier(/\.(q|v)$/),
  hf_roformer: () => hfClassifier(/(query|value)$/),
  hf_esm: () => hfClassifier(/(query|value)$/),
  hf_wavlm: () => hfClassifier(/(q_proj|v_proj)$/),
  hf_codegen: () => languageModel(/qkv_proj$/),
  hf_xglm: () => languageModel(/(q_proj|v_proj)$/),
  hf_regnet: () => hfImageClassifier(/convolution$/),
  hf_mobilebert: () => {
    // its NoNorm (x·w + b, no statistics) is no normalization layer: BitFit trains those biases
    const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
    return { loss, paths: [['LoRA (PEFT\'s default targets)', peftStep(loraOn(/(query|value)$/), loss)], ['BitFit', peftStep(() => peft.bitfit(), loss)]] };
  },
  hf_albert: () => hfClassifier(/(query|value)$/),
  hf_xlm_roberta: () => hfClassifier(/(query|value)$/),
  hf_bloom: () => languageModel(/query_key_value$/),
  hf_falcon: () => languageModel(/query_key_value$/),
  hf_gptj: () => languageModel(/(q_proj|v_proj)$/),
  hf_gpt_bigcode: () => languageModel(/c_attn$/),
  hf_stablelm: () => languageModel(/(q_proj|v_proj)$/),
  hf_qwen3: () => languageModel(/(q_proj|v_proj)$/),
  hf_olmo2: () => languageModel(/(q_proj|v_proj)$/),
  hf_gemma3: () => languageModel(/(q_proj|v_proj)$/),
  hf_marian: () => languageModel(/(q_proj|v_proj)$/),
  hf_m2m100: () => languageModel(/(q_proj|v_proj)$/),
  hf_mt5: () => languageModel(/\.(q|v)$/),
  hf_wav2vec2: () => hfClassifier(/(q_proj|v_proj)$/),
  hf_hubert: () => hfClassifier(/(q_proj|v_proj)$/),
  hf_deit: () => hfImageClassifier(/(query|value)$/),
  hf_beit: () => hfImageClassifier(/(query|value)$/),
  hf_segformer: () => hfImageClassifier(/(query|value)$/),
  hf_mobilevit: () => hfImageClassifier(/(query|value)$/),
  hf_resnet: () => hfImageClassifier(/convolution$/),
  hf_clip_vision: () => hfImageClassifier(/(q_proj|v_proj)$/),
};

/** A causal language model: next-token cross-entropy (labels already shifted by the case), LoRA on `loraTargets`, norm-affine. */
function languageModel(loraTargets: RegExp): Case {
  const loss = losses.tokenCrossEntropy({ logits: 'logits', labels: 'y' });
  return { loss, paths: [['LoRA', peftStep(loraOn(loraTargets), loss)], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
}

/** A transformers sequence or audio classifier: cross-entropy, LoRA on PEFT's default targets for it, norm-affine. */
function hfClassifier(loraTargets: RegExp): Case {
  const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
  return { loss, paths: [['LoRA (PEFT\'s default targets)', peftStep(loraOn(loraTargets), loss)], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
}

/** A transformers image classifier: cross-entropy, LoRA, and Tent on its norm layers. */
function hfImageClassifier(loraTargets: RegExp): Case {
  const loss = losses.crossEntropy({ logits: 'logits', labels: 'y' });
  return { loss, paths: [['LoRA', peftStep(loraOn(loraTargets), loss)], ['Tent', tta('tent', 'pixel_values')]] };
}

/**
 * The model (without its cache, if it has one) run on the first row of the batch with every
 * sequence input 2 tokens shorter (audio and its mask 80 samples): its output's dims, and whether
 * they are finite. A file whose exporter baked the traced sizes in fails here.
 */
async function otherSizes(model: RefitModel, feeds: Record<string, Tensor>): Promise<string> {
  const m = model.ir.graph.inputs.some((i) => i.name.startsWith('past_key_values.')) ? withoutKvCache(model) : model;
  const audio = 'input_values' in feeds;
  const small: Record<string, Tensor> = {};
  for (const input of m.ir.graph.inputs) {
    const t = feeds[input.name]!;
    const cut = ['input_ids', 'attention_mask', 'position_ids', 'token_type_ids', 'bbox', 'decoder_input_ids', 'input_values'].includes(input.name) ? (audio ? 80 : 2) : 0;
    const dims = [1, ...t.dims.slice(1)];
    if (cut) dims[1] = dims[1]! - cut;
    // row 0's first positions: in row-major order, the first n values
    const n = dims.reduce((a, b) => a * b, 1), src = t.data as ArrayLike<number | bigint>;
    const vals = Array.from({ length: n }, (_, i) => Number(src[i]!));
    small[input.name] = t.dtype === 'int64' ? i64(dims, vals) : f32(dims, Float32Array.from(vals));
  }
  const out = Object.values(await m.run(small))[0]!;
  if (m !== model) await m.release();
  const finite = [...(out.data as Float32Array)].every(Number.isFinite);
  if (!finite) throw new Error(`non-finite output at ${out.dims.join('×')}`);
  return `✓ ${out.dims.join('×')}`;
}

/** timm's classes (bench/arch_timm.py; the names mirror its MODELS): cross-entropy, LoRA on every
 * dense layer (PEFT's 'all-linear' with group-1 convolutions: refit's conv LoRA refuses grouped
 * ones), Tent, BN-adapt where the net has BatchNorm, and the file at other sizes. */
const TIMM = ['resnet26d', 'seresnext26d', 'resnest14d', 'res2net50', 'skresnet18', 'resnetblur18', 'regnetx_002', 'regnety_002', 'dla34', 'dpn48b', 'densenet121',
  'inception_v3', 'xception41', 'cspresnet50', 'cs3darknet_focus_s', 'hrnet_w18_small', 'tresnet_m', 'selecsls42b', 'gernet_s', 'repvgg_a0', 'mobileone_s0', 'nf_resnet26',
  'hgnetv2_b0', 'ese_vovnet19b_dw', 'efficientnet_b0', 'tf_efficientnet_b0', 'efficientnetv2_rw_t', 'mobilenetv3_small', 'mobilenetv3_large', 'mobilenetv4_conv_small',
  'lcnet_050', 'ghostnet', 'ghostnetv2', 'mixnet_s', 'mnasnet_small', 'rexnet_100', 'repvit_m0_9', 'fastvit_t8', 'efficientvit_b0', 'mobilevitv2_050', 'edgenext_xx_small',
  'convnext_atto', 'convnextv2_atto', 'inception_next_tiny', 'poolformer_s12', 'poolformerv2_s12', 'focalnet_tiny_srf', 'sequencer2d_s', 'botnet26t', 'lambda_resnet26t',
  'efficientvit_m0', 'coatnet_0_rw', 'maxvit_tiny_tf', 'levit_128s', 'efficientformerv2_s0', 'vit_tiny', 'deit_tiny_distilled', 'deit3_small', 'beit', 'eva02_tiny',
  'cait_xxs24', 'xcit_nano_12_p16', 'crossvit_tiny', 'tnt_s', 'pit_ti', 'convit_tiny', 'coat_lite_tiny', 'pvt_v2_b0', 'twins_svt_small', 'swin_tiny', 'swinv2_cr_tiny',
  'gcvit_xxtiny', 'davit_tiny', 'nest_tiny', 'mvitv2_tiny', 'hiera_tiny', 'mixer_s16', 'resmlp_12', 'gmlp_ti16'];

function timmClassifier(): Case {
  const loss = losses.crossEntropy({ logits: 'output0', labels: 'y' });
  const dense = () => peft.lora({ rank: 4, alpha: 8, targets: (s) => s.op !== 'Conv' || (s.group ?? 1) === 1 });
  const bnAdapt = async (model: RefitModel, feeds: Record<string, Tensor>) =>
    model.ir.graph.nodes.some((n) => n.opType === 'BatchNormalization') ? tta('bn-adapt', 'input0')(model, feeds) : '– no BatchNorm';
  return { loss, paths: [['LoRA on every dense layer', peftStep(dense, loss)], ['Tent', tta('tent', 'input0')], ['BN-adapt', bnAdapt], ['batch 1 (and 96×96 where height and width are dynamic)', otherImageSize]] };
}

/** The image model on the first sample alone, and at 96×96 when the file's height and width are symbolic. */
async function otherImageSize(model: RefitModel, feeds: Record<string, Tensor>): Promise<string> {
  const x = feeds.input0!, [, c, h, w] = x.dims as number[];
  const shape = model.ir.graph.inputs[0]!.shape;
  const side = shape && typeof shape[2] === 'string' && typeof shape[3] === 'string' ? 96 : h!;
  const one = (x.data as Float32Array).subarray(0, c! * h! * w!);
  const data = new Float32Array(c! * side * side);
  for (let i = 0; i < data.length; i++) data[i] = one[i % one.length]!;  // a finite image of the new size
  const out = Object.values(await model.run({ input0: f32([1, c!, side, side], data) }))[0]!;
  if (![...(out.data as Float32Array)].every(Number.isFinite)) throw new Error(`non-finite output at ${side}×${side}`);
  return `✓ ${side}×${side} → ${out.dims.join('×')}`;
}

/** A set-prediction detector (DETR's heads): class cross-entropy per query against matched labels, plus the boxes' squared error. */
function detection(loraTargets: RegExp): Case {
  const loss = losses.combine([{ loss: losses.tokenCrossEntropy({ logits: 'logits', labels: 'y' }) }, { loss: losses.mse({ output: 'pred_boxes', target: 'boxes' }) }]);
  return { loss, paths: [['LoRA on attention', peftStep(loraOn(loraTargets), loss)], ['norm-affine', peftStep(() => peft.normAffine(), loss)]] };
}

const arg = (k: string, d: string) => { const i = process.argv.indexOf(`--${k}`); return i >= 0 ? process.argv[i + 1]! : d; };
for (const t of TIMM) CASES[`timm_${t}`] = timmClassifier;
const names = arg('only', Object.keys(CASES).join(',')).split(',');
const torchTimes = process.argv.includes('--torch-times') ? (JSON.parse(readFileSync(arg('torch-times', ''), 'utf8')) as { ms: Record<string, number | null> }).ms : null;
const out = arg('out', join(root, 'bench/results/popular-architectures'));
exportMissing(join(here, 'popular_architectures.py'), dir, names, 'python3-torch python3-onnx');

const rows: (ParityRow & { paths: string })[] = [];
for (const name of names) {
  const ref = JSON.parse(readFileSync(join(dir, `${name}.json`), 'utf8')) as { loss: number; params: number; inputs: Record<string, number[]>; targets?: string[]; stopGradient?: string[] };
  const feeds: Record<string, Tensor> = {};
  for (const input of [...Object.keys(ref.inputs), ...(ref.targets ?? ['y'])]) feeds[input] = savedTensor(dir, `${name}.${input}.npy`);
  const c = CASES[name]!();
  Object.assign(feeds, c.extraFeeds?.(feeds));
  for (const k of Object.keys(c.fixed ?? {})) delete feeds[k];
  if (c.withoutCache) for (const k of Object.keys(feeds)) if (k.startsWith('past_key_values.')) delete feeds[k];
  const paths: string[] = [];
  // transformers' classes: the export must take other sizes than it was traced at (transformers.js feeds any)
  if (name.startsWith('hf_')) c.paths.push(['batch 1, 2 tokens (80 samples) shorter', otherSizes]);
  const row = await stepAgainstTorch(dir, name, {
    loss: c.loss, torchLoss: ref.loss, params: ref.params, feeds, ...(c.keepTies ? { keepTies: true } : {}), ...(ref.stopGradient ? { stopGradient: ref.stopGradient } : {}),
    ...(c.fixed ? { transform: (m: RefitModel) => withFixedInputs(m, c.fixed!) } : c.withoutCache ? { transform: withoutKvCache } : {}),
    after: async (model) => {
      for (const [what, run] of c.paths) {
        try { paths.push(`${what} ${await run(model, feeds)}`); } catch (e) { paths.push(`${what} ✗ ${(e as Error).message.split('\n')[0]!.slice(0, 160)}`); }
      }
    },
  });
  rows.push({ ...row, input: Object.entries(ref.inputs).map(([k, s]) => `${k} ${s.join('×')}`).join(', '), paths: paths.join('; ') });
  console.log(`${describeRow(row)} | ${paths.join(' | ')}`);
}
const lines = [`# Architectures people deploy, beyond the zoo (${new Date().toISOString()})`, '',
  `\`npx tsx bench/popular-architectures.ts ${process.argv.slice(2).join(' ')}\`: models named timm_* are timm 1.0.29's own classes (bench/arch_timm.py: timm.create_model(exportable=True), random weights with measured BatchNorm statistics, opset 14, batch dynamic and height and width for CNNs, BatchNorm kept (TrainingMode.PRESERVE); cross-entropy, PyTorch's reference in float64); models named hf_* are transformers 4.57.6's own classes (bench/arch_hf.py: tiny random configs, eager attention, opset 14, batch and sequence dynamic, padded masks; cross-entropy, next-token or decoder-token cross-entropy); the others are torch.onnx exports as each model's tools write them (bench/popular_architectures.py: YOLOv8 at opset 12 with batch, height and width dynamic; a diffusers-style UNet2DModel at opset 17; CLIP at opset 14 with batch and sequence dynamic; SegFormer-B0 at opset 14 with batch, height and width dynamic; Depth Anything (DINOv2 + DPT) at opset 14 with batch, height and width dynamic; T5 in one graph at opset 14 with batch and both lengths dynamic, its tied embedding one tensor (loadModel's default); SAM's image encoder, and its prompt encoder with mask decoder, at opset 16; ConvNeXt V2 (GRN) at opset 14; DeBERTa-v3 (disentangled attention, share_att_key) at opset 12, batch and sequence dynamic; DETR (frozen BatchNorm, sine positions, learned queries) at opset 12, batch, height and width dynamic; RT-DETR's decoder (multi-scale deformable attention by GridSample, two layers, boxes detached between them: stopGradient) at opset 16; LeViT (attention biases gathered by an index buffer, BatchNorm1d) at opset 13; U²-Net (ceil-mode pools, bilinear resizes to odd sizes, sigmoid output) at opset 11, batch, height and width dynamic; MobileViT (unfolding with bilinear resizes at odd sizes) at opset 13; ALBERT (one layer called three times) at opset 14; Gemma (tied, √d-scaled embedding, (1 + w) norms, left padding, grouped-query attention) at opset 14; Phi-3 (fused projections, partial rotary, sliding-window mask) at opset 14; Mamba (the selective scan unrolled, 8 steps) at opset 14; Whisper in one graph (conv front end, cross-attention, tied output) at opset 14; Silero VAD (STFT as a conv, LSTM with state) at opset 13, and as its files take it, with an If on the sample rate, fixed by withFixedInputs; BiT's ResNetV2 (weight-standardized convolutions, GroupNorm) at opset 13; Real-ESRGAN ×2 (pixel unshuffle, dense blocks, nearest upsampling) at opset 11 and MODNet (IBNorm: BatchNorm and InstanceNorm halves) at opset 11, batch, height and width dynamic; TrOCR in one graph (ViT encoder, tied decoder) and OWL-ViT (CLIP towers, class and box heads) at opset 14; Mixtral's sparse MoE block (top-2 of 4 experts by NonZero, index_add) at opset 14; a GCN as PyTorch Geometric computes it (self-loops by NonZero, scatter-add aggregation) at opset 16, nodes and edges dynamic; torchvision's Swin V2 layout (continuous position bias, cosine attention, shifted windows) at opset 14; PointNet (T-Net, shared MLP, max pool, BatchNorm1d) and DGCNN (k-NN by TopK in feature space, gathered neighbours) at opset 13; FastSpeech 2 (FFT blocks, duration predictor, a length regulator by index whose frame count the durations decide) at opset 14, batch and text length dynamic; torch.nn's own layers: a time-series nn.TransformerEncoder (packed in_proj, a bool key-padding mask input, two deep-copied layers the export deduplicates) at opset 14, a TCN (weight-normed dilated causal Conv1d) and HiFi-GAN's generator (weight norm, ConvTranspose1d, multi-receptive-field resblocks) at opset 13, a bidirectional two-layer GRU tagger (Embedding with padding_idx, LayerNorm) at opset 13; an LSTM classifier on pack_padded_sequence (lengths fed, LSTM sequence_lens) at opset 13; a DLRM-style click model on nn.EmbeddingBag (a Loop over the bags slicing by offsets, one bag empty) at opset 13; NeMo's QuartzNet (depthwise Conv1d of 33–87 taps, BatchNorm1d) at opset 13; nn.Transformer for translation (causal and key-padding masks, cross-attention) at opset 14; the PyTorch ONNX tutorial's ESPCN super-resolution net (PixelShuffle) at opset 10; MONAI's BasicUNet in 3-D (Conv3d, InstanceNorm3d, MaxPool3d, ConvTranspose3d) at opset 13; image-to-image generators: CycleGAN's ResnetGenerator (ReflectionPad2d, InstanceNorm without affine, ConvTranspose2d), fast-neural-style's TransformerNet (ReflectionPad2d, affine InstanceNorm, nearest upsampling) and pix2pix's UnetGenerator (BatchNorm, skip concatenations) at opset 13; random weights, width-reduced), refit's full step against PyTorch's loss (YOLOv8: MSE of the decoded output to a fixed target; U-Net: MSE to the noise; CLIP: the symmetric contrastive cross-entropy; SegFormer: per-pixel cross-entropy; Depth Anything: MSE of the depth map; T5: token cross-entropy; SAM's encoder: MSE of the embeddings; its decoder: binary cross-entropy of the masks plus MSE of the IoU scores; ConvNeXt V2, DeBERTa-v3, LeViT, MobileViT: cross-entropy; DETR and RT-DETR: cross-entropy per query to matched labels plus MSE of the boxes; U²-Net and Silero VAD: binary cross-entropy of the sigmoid output; ALBERT and BiT: cross-entropy; Gemma, Phi-3, Mamba, Whisper, TrOCR: next-token cross-entropy; Real-ESRGAN and MODNet: MSE of the output; OWL-ViT: binary cross-entropy of the query logits plus MSE of the boxes; Mixtral: next-token cross-entropy; GCN: cross-entropy per node; Swin V2 and PointNet: cross-entropy; FastSpeech 2: MSE of the mel frames; the time-series transformer and TCN: cross-entropy; HiFi-GAN: L1 of the waveform; the GRU tagger: token cross-entropy; the LSTM classifier: cross-entropy; the click model: binary cross-entropy; QuartzNet: CTC; the translator: token cross-entropy; ESPCN: MSE; the 3-D U-Net: per-voxel cross-entropy; CycleGAN and pix2pix: L1 to a target; fast-neural-style: MSE to a target; weight-normed weights compared with PyTorch's gradient of the computed weight, the GRU's W, R and B with PyTorch's gradients folded as the export folds them) on one batch; 2 threads. The last column runs what a user of each model would adapt with.`, '',
  ...parityTable(rows, [
    ...(torchTimes ? [{ head: 'PyTorch step ms (refit / PyTorch)', cell: (r: ParityRow) => (typeof torchTimes[r.model] === 'number' ? `${torchTimes[r.model]!.toFixed(1)} (${(r.stepMs / torchTimes[r.model]!).toFixed(2)})` : '–') }] : []),
    { head: 'adaptation paths', cell: (r) => (r as ParityRow & { paths: string }).paths }])];
writeFileSync(`${out}.md`, lines.join('\n') + '\n');
writeFileSync(`${out}.json`, JSON.stringify({ date: new Date().toISOString(), rows, ...(torchTimes ? { torchStepMs: torchTimes } : {}) }, null, 1));
console.log(`wrote ${out}.md and .json`);
