"""Hugging Face transformers' own model classes (transformers 4.57.6, bench/requirements-hf.txt),
not re-written: tiny random configs of the real modeling code, eager attention, exported by
torch.onnx (Debian's torch 1.13) the way optimum's exporter calls it (input names as the model's
forward arguments, batch and sequence axes dynamic, opset 14). For bench/popular_architectures.py.

Without transformers installed (pip install --no-deps --target tmp/pypi/hf -r bench/requirements-hf.txt)
this family has no cases and says so. bench/hf_compat.py lets transformers import beside torch 1.13.

hf_llama_past and hf_qwen2_past are exported with past_key_values inputs and present outputs, as
onnx-community's model.onnx (transformers.js's decoders); their reference runs the whole sequence
with empty pasts, as refit trains them (withoutKvCache). hf_minilm_l6 and hf_smollm_135m are
published configs at full size, for step times.

Every case: random token ids (or pixels, or audio), a padding mask where the model takes one
(right padding for encoders, left padding for decoders, as transformers.js and generate pad),
weights drawn with std 0.2 instead of the configs' 0.02 (0.02 leaves attention uniform and most
gradients below the comparison's noise), norms perturbed by main. Losses: cross-entropy on the
class logits; next-token cross-entropy (-100 at padding and the last position) for causal LMs and
on the decoder's logits for encoder-decoders.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

import hf_compat

T = hf_compat.load()
CASES = {}

V = 97  # vocabulary


def _std(m, std=0.2):
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d)) or type(mod).__name__ == "Conv1D":  # GPT-2's transposed Linear
                mod.weight.normal_(0, std)
                if getattr(mod, "padding_idx", None) is not None and isinstance(mod, nn.Embedding):
                    mod.weight[mod.padding_idx].zero_()  # as nn.Embedding keeps it: zero, and never trained
                if getattr(mod, "bias", None) is not None:
                    mod.bias.normal_(0, 0.1)
    return m


def _eager(config):
    config._attn_implementation = "eager"
    return config


class Logits(nn.Module):
    """The model called with keyword inputs, returning its logits (what optimum exports)."""

    def __init__(self, m, names, **extra):
        super().__init__()
        self.m, self.names, self.extra = m, names, extra

    def forward(self, *args):
        return self.m(**dict(zip(self.names, args)), **self.extra, return_dict=True).logits


def _norms():
    """transformers' own norm classes that main's perturbation would miss."""
    out = []
    for mod, cls in (("llama", "LlamaRMSNorm"), ("qwen2", "Qwen2RMSNorm"), ("mistral", "MistralRMSNorm"), ("t5", "T5LayerNorm"), ("gemma2", "Gemma2RMSNorm"), ("phi3", "Phi3RMSNorm"),
                     ("mobilebert", "NoNorm"), ("qwen3", "Qwen3RMSNorm"), ("olmo2", "Olmo2RMSNorm"), ("gemma3", "Gemma3RMSNorm"), ("stablelm", "StableLmLayerNorm")):
        try:
            out.append(getattr(__import__(f"transformers.models.{mod}.modeling_{mod}", fromlist=[cls]), cls))
        except (ImportError, AttributeError):
            pass
    return tuple(out)


def _ids(batch, seq, pad, pad_at="right", n_pad=3):
    ids = torch.randint(3, V, (batch, seq))
    mask = torch.ones_like(ids)
    if pad_at == "right":
        mask[-1, seq - n_pad:] = 0
    else:
        mask[-1, :n_pad] = 0
    ids[mask == 0] = pad
    return ids, mask


def classifier(model, pad, opset=14, batch=2, seq=9, std=0.2):
    ids, mask = _ids(batch, seq, pad)
    names = ["input_ids", "attention_mask"]
    return dict(model=Logits(_std(model, std), names), inputs={"input_ids": ids, "attention_mask": mask}, outputs=["logits"], opset=opset,
                dynamic={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}},
                target=lambda out: torch.arange(batch) % 2, loss=lambda out, y: F.cross_entropy(out[0], y), norms=_norms())


def causal_lm(model, pad=0, opset=14, batch=2, seq=8, std=0.2):
    ids, mask = _ids(batch, seq, pad, pad_at="left", n_pad=2)
    names = ["input_ids", "attention_mask"]

    def target(out):
        keep = (mask[:, :-1] == 1) & (mask[:, 1:] == 1)
        y = torch.full_like(ids, -100)
        y[:, :-1] = torch.where(keep, ids[:, 1:], torch.full_like(ids[:, 1:], -100))
        return y

    return dict(model=Logits(_std(model, std), names, use_cache=False), inputs={"input_ids": ids, "attention_mask": mask}, outputs=["logits"], opset=opset,
                dynamic={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}},
                target=target, loss=lambda out, y: F.cross_entropy(out[0].flatten(0, 1), y.flatten(), ignore_index=-100), norms=_norms())


def seq2seq(model, pad=0, opset=14, encoder_input="input_ids", encoder_value=None, reference_without_onednn=False):
    dec = torch.randint(3, V, (2, 5))
    names = [encoder_input, "attention_mask", "decoder_input_ids"] if encoder_value is None else [encoder_input, "decoder_input_ids"]
    if encoder_value is None:
        ids, mask = _ids(2, 9, pad)
        inputs = {encoder_input: ids, "attention_mask": mask, "decoder_input_ids": dec}
        dynamic = {encoder_input: {0: "batch", 1: "encoder_sequence"}, "attention_mask": {0: "batch", 1: "encoder_sequence"}}
    else:
        inputs = {encoder_input: encoder_value, "decoder_input_ids": dec}
        dynamic = {encoder_input: {0: "batch"}}
    dynamic.update({"decoder_input_ids": {0: "batch", 1: "decoder_sequence"}, "logits": {0: "batch", 1: "decoder_sequence"}})
    return dict(model=Logits(_std(model), names, use_cache=False), inputs=inputs, outputs=["logits"], opset=opset, dynamic=dynamic,
                target=lambda out: torch.randint(0, V, out[0].shape[:2]), loss=lambda out, y: F.cross_entropy(out[0].flatten(0, 1), y.flatten()), norms=_norms(),
                reference_without_onednn=reference_without_onednn)


def image_classifier(model, size=32, opset=14):
    return dict(model=Logits(_std(model), ["pixel_values"]), inputs={"pixel_values": torch.randn(2, 3, size, size)}, outputs=["logits"], opset=opset,
                dynamic={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
                target=lambda out: torch.tensor([3, 1]), loss=lambda out, y: F.cross_entropy(out[0], y), norms=_norms())


def audio_classifier(model, opset=14):
    x = torch.randn(2, 400)
    mask = torch.ones(2, 400, dtype=torch.long)
    mask[-1, 320:] = 0
    names = ["input_values", "attention_mask"]
    return dict(model=Logits(_std(model), names), inputs={"input_values": x, "attention_mask": mask}, outputs=["logits"], opset=opset,
                dynamic={"input_values": {0: "batch", 1: "samples"}, "attention_mask": {0: "batch", 1: "samples"}, "logits": {0: "batch"}},
                target=lambda out: torch.tensor([2, 0]), loss=lambda out, y: F.cross_entropy(out[0], y), norms=_norms(), reference_without_onednn=True)


class WithPast(nn.Module):
    """A causal LM as onnx-community's model.onnx takes it (transformers.js's decoders): input_ids,
    attention_mask, position_ids and past_key_values.{i}.key/value in, logits and present.{i}.key/value out."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, attention_mask, position_ids, *past):
        # the layers hold the pasts as they are: from_legacy_cache would concatenate each onto an
        # empty 1-D tensor first, which eager PyTorch allows and torch.onnx exports as an invalid Concat
        cache = T.DynamicCache()
        for i in range(len(past) // 2):
            layer = T.cache_utils.DynamicLayer()
            layer.lazy_initialization(past[2 * i])
            layer.keys, layer.values = past[2 * i], past[2 * i + 1]
            cache.layers.append(layer)
        out = self.m(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, past_key_values=cache, use_cache=True, return_dict=True)
        return (out.logits, *[t for kv in out.past_key_values.to_legacy_cache() for t in kv])


def causal_lm_with_past(model, layers, kv_heads, head_dim, pad=0, opset=14):
    """Exported with a past of 4 tokens (the graph must take any); the reference runs the whole
    sequence with empty pasts, as refit trains it (withoutKvCache)."""
    case = causal_lm(model, pad=pad, opset=opset)
    ids, mask = case["inputs"]["input_ids"], case["inputs"]["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    past_names = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    present_names = [n.replace("past_key_values", "present") for n in past_names]
    empty = {n: torch.zeros(2, kv_heads, 0, head_dim) for n in past_names}
    dyn_past = {n: {0: "batch", 2: "past_sequence_length"} for n in past_names}
    dyn_present = {n: {0: "batch", 2: "total_sequence_length"} for n in present_names}
    case.update(
        model=WithPast(case["model"].m),
        inputs={"input_ids": ids, "attention_mask": mask, "position_ids": positions, **empty},
        export_inputs={"input_ids": ids, "attention_mask": torch.cat([torch.ones(2, 4, dtype=mask.dtype), mask], 1), "position_ids": positions + 4,
                       **{n: torch.randn(2, kv_heads, 4, head_dim) for n in past_names}},
        outputs=["logits", *present_names],
        dynamic={"input_ids": {0: "batch", 1: "sequence_length"}, "attention_mask": {0: "batch", 1: "total_sequence_length"}, "position_ids": {0: "batch", 1: "sequence_length"},
                 **dyn_past, "logits": {0: "batch", 1: "sequence_length"}, **dyn_present})
    return case


def layout_classifier(model, opset=14):
    """LayoutLM: token ids with a box (x0, y0, x1, y1 in 0..1000) per token."""
    case = classifier(model, 0, opset=opset)
    ids, mask = case["inputs"]["input_ids"], case["inputs"]["attention_mask"]
    x0, y0 = torch.randint(0, 500, ids.shape), torch.randint(0, 500, ids.shape)
    bbox = torch.stack([x0, y0, x0 + torch.randint(1, 400, ids.shape), y0 + torch.randint(1, 400, ids.shape)], -1)
    case["model"] = Logits(case["model"].m, ["input_ids", "bbox", "attention_mask"])
    case["inputs"] = {"input_ids": ids, "bbox": bbox, "attention_mask": mask}
    case["dynamic"]["bbox"] = {0: "batch", 1: "sequence"}
    return case


def dense(model, size=64, opset=14):
    """Semantic segmentation: per-pixel cross-entropy at the logits' size (1/4 of the input)."""
    case = image_classifier(model, size=size, opset=opset)
    case.update(dynamic={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
                target=lambda out: torch.randint(0, out[0].shape[1], (out[0].shape[0], *out[0].shape[2:])))
    return case


def detection_tokens(model, opset=14):
    """A set-prediction detector's class logits per detection token: cross-entropy to matched labels."""
    case = image_classifier(model, opset=opset)
    case.update(target=lambda out: torch.randint(0, out[0].shape[-1], out[0].shape[:2]), loss=lambda out, y: F.cross_entropy(out[0].flatten(0, 1), y.flatten()))
    return case


def ctc(model, opset=14):
    """Speech recognition: CTC on the frame logits against 3 labels a row (ids 1..11; 0 is the blank)."""
    case = audio_classifier(model, opset=opset)
    case.update(dynamic={"input_values": {0: "batch", 1: "samples"}, "attention_mask": {0: "batch", 1: "samples"}, "logits": {0: "batch", 1: "frames"}},
                target=lambda out: torch.randint(1, 12, (2, 3)),
                loss=lambda out, y: F.ctc_loss(out[0].log_softmax(-1).transpose(0, 1), y, torch.full((2,), out[0].shape[1], dtype=torch.long), torch.full((2,), 3, dtype=torch.long), reduction="mean"))
    return case


class Outputs(nn.Module):
    """The model called with keyword inputs, returning the named outputs (a dual encoder's two logits, a depth map)."""

    def __init__(self, m, names, outputs, **extra):
        super().__init__()
        self.m, self.names, self.outputs, self.extra = m, names, outputs, extra

    def forward(self, *args):
        out = self.m(**dict(zip(self.names, args)), **self.extra, return_dict=True)
        return tuple(getattr(out, o) for o in self.outputs)


def dual_encoder(model, sigmoid=False, opset=14):
    """CLIP: 4 texts and 4 images, the symmetric cross-entropy; with `sigmoid`, SigLIP's pairwise
    loss (binary cross-entropy of every image-text pair, the diagonal positive). (SigLIP itself
    does not export with torch 1.13: its patch conv has padding="valid".)"""
    ids, mask = _ids(4, 7, 0)
    names = ["input_ids", "pixel_values"] + ([] if sigmoid else ["attention_mask"])
    inputs = {"input_ids": ids, "pixel_values": torch.randn(4, 3, 32, 32), **({} if sigmoid else {"attention_mask": mask})}
    dynamic = {"input_ids": {0: "batch", 1: "sequence"}, "pixel_values": {0: "batch"}, "logits_per_image": {0: "batch", 1: "batch"}, "logits_per_text": {0: "batch", 1: "batch"}}
    if not sigmoid:
        dynamic["attention_mask"] = {0: "batch", 1: "sequence"}
    case = dict(model=Outputs(_std(model, 0.02), names, ["logits_per_image", "logits_per_text"]), inputs=inputs, outputs=["logits_per_image", "logits_per_text"], opset=opset,
                dynamic=dynamic, norms=_norms())
    if sigmoid:
        case.update(target=lambda out: torch.eye(4), loss=lambda out, y: F.binary_cross_entropy_with_logits(out[0], y))
    else:
        case.update(target=lambda out: torch.arange(4), loss=lambda out, y: (F.cross_entropy(out[0], y) + F.cross_entropy(out[1], y)) / 2)
    return case


def depth(model, opset=14):
    """Monocular depth (Depth Anything): MSE of the predicted depth to a target."""
    return dict(model=Outputs(_std(model), ["pixel_values"], ["predicted_depth"]), inputs={"pixel_values": torch.randn(2, 3, 56, 56)}, outputs=["predicted_depth"], opset=opset,
                dynamic={"pixel_values": {0: "batch"}, "predicted_depth": {0: "batch"}}, target=lambda out: torch.rand_like(out[0]), loss=lambda out, y: F.mse_loss(out[0], y), norms=_norms())


if T is not None:
    small = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    decoder = dict(small, num_key_value_heads=2, tie_word_embeddings=False)
    CASES.update({
        "hf_bert": lambda: classifier(T.BertForSequenceClassification(_eager(T.BertConfig(**small))), 0),
        "hf_distilbert": lambda: classifier(T.DistilBertForSequenceClassification(_eager(T.DistilBertConfig(vocab_size=V, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64))), 0),
        "hf_roberta": lambda: classifier(T.RobertaForSequenceClassification(_eager(T.RobertaConfig(**small, pad_token_id=1))), 1),
        "hf_electra": lambda: classifier(T.ElectraForSequenceClassification(_eager(T.ElectraConfig(**dict(small, embedding_size=16)))), 0),
        "hf_deberta_v2": lambda: classifier(T.DebertaV2ForSequenceClassification(_eager(T.DebertaV2Config(**small, relative_attention=True, position_buckets=8, pos_att_type=["p2c", "c2p"], max_relative_positions=16, share_att_key=True, norm_rel_ebd="layer_norm"))), 0),
        "hf_gpt2": lambda: causal_lm(T.GPT2LMHeadModel(_eager(T.GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=64)))),
        "hf_llama": lambda: causal_lm(T.LlamaForCausalLM(_eager(T.LlamaConfig(**decoder)))),
        "hf_qwen2": lambda: causal_lm(T.Qwen2ForCausalLM(_eager(T.Qwen2Config(**decoder)))),
        "hf_mistral": lambda: causal_lm(T.MistralForCausalLM(_eager(T.MistralConfig(**decoder, sliding_window=4)))),
        "hf_phi3": lambda: causal_lm(T.Phi3ForCausalLM(_eager(T.Phi3Config(**dict(decoder, pad_token_id=0), partial_rotary_factor=0.5)))),
        "hf_gemma2": lambda: causal_lm(T.Gemma2ForCausalLM(_eager(T.Gemma2Config(**dict(decoder, tie_word_embeddings=True), head_dim=8, sliding_window=4, attn_logit_softcapping=50.0, final_logit_softcapping=30.0)))),
        "hf_gpt_neox": lambda: causal_lm(T.GPTNeoXForCausalLM(_eager(T.GPTNeoXConfig(**small, rotary_pct=0.5)))),
        "hf_opt": lambda: causal_lm(T.OPTForCausalLM(_eager(T.OPTConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64, max_position_embeddings=64, word_embed_proj_dim=32))), pad=1),
        "hf_t5": lambda: seq2seq(T.T5ForConditionalGeneration(_eager(T.T5Config(vocab_size=V, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=8, feed_forward_proj="gated-gelu")))),
        "hf_bart": lambda: seq2seq(T.BartForConditionalGeneration(_eager(T.BartConfig(vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64))), pad=1),
        "hf_whisper": lambda: seq2seq(T.WhisperForConditionalGeneration(_eager(T.WhisperConfig(vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=16, max_source_positions=20, max_target_positions=32, pad_token_id=1, bos_token_id=2, eos_token_id=2, decoder_start_token_id=2))),
                                      encoder_input="input_features", encoder_value=torch.randn(2, 16, 40), reference_without_onednn=True),
        "hf_vit": lambda: image_classifier(T.ViTForImageClassification(_eager(T.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_labels=5)))),
        "hf_swin": lambda: image_classifier(T.SwinForImageClassification(_eager(T.SwinConfig(image_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4, num_labels=5)))),
        "hf_convnext": lambda: image_classifier(T.ConvNextForImageClassification(T.ConvNextConfig(num_stages=2, hidden_sizes=[16, 32], depths=[1, 1], num_labels=5))),
        "hf_mobilebert": lambda: classifier(T.MobileBertForSequenceClassification(_eager(T.MobileBertConfig(**dict(small, hidden_size=32, embedding_size=16, intra_bottleneck_size=16, true_hidden_size=16, num_feedforward_networks=2)))), 0),
        "hf_albert": lambda: classifier(T.AlbertForSequenceClassification(_eager(T.AlbertConfig(**small, embedding_size=16))), 0),
        "hf_xlm_roberta": lambda: classifier(T.XLMRobertaForSequenceClassification(_eager(T.XLMRobertaConfig(**small, pad_token_id=1))), 1),
        "hf_bloom": lambda: causal_lm(T.BloomForCausalLM(_eager(T.BloomConfig(vocab_size=V, hidden_size=32, n_layer=2, n_head=4)))),
        "hf_falcon": lambda: causal_lm(T.FalconForCausalLM(_eager(T.FalconConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, new_decoder_architecture=False, multi_query=True, parallel_attn=True, bias=False)))),
        "hf_gptj": lambda: causal_lm(T.GPTJForCausalLM(_eager(T.GPTJConfig(vocab_size=V, n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_positions=64)))),
        "hf_gpt_bigcode": lambda: causal_lm(T.GPTBigCodeForCausalLM(_eager(T.GPTBigCodeConfig(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=64, multi_query=True)))),
        "hf_stablelm": lambda: causal_lm(T.StableLmForCausalLM(_eager(T.StableLmConfig(**decoder, partial_rotary_factor=0.25)))),
        "hf_qwen3": lambda: causal_lm(T.Qwen3ForCausalLM(_eager(T.Qwen3Config(**decoder, head_dim=8)))),
        "hf_olmo2": lambda: causal_lm(T.Olmo2ForCausalLM(_eager(T.Olmo2Config(**decoder)))),
        "hf_gemma3": lambda: causal_lm(T.Gemma3ForCausalLM(_eager(T.Gemma3TextConfig(**dict(decoder, tie_word_embeddings=True), head_dim=8, sliding_window=4, query_pre_attn_scalar=8)))),
        "hf_marian": lambda: seq2seq(T.MarianMTModel(_eager(T.MarianConfig(vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64, pad_token_id=1, decoder_start_token_id=1))), pad=1),
        "hf_m2m100": lambda: seq2seq(T.M2M100ForConditionalGeneration(_eager(T.M2M100Config(vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64, pad_token_id=1))), pad=1),
        "hf_mt5": lambda: seq2seq(T.MT5ForConditionalGeneration(_eager(T.MT5Config(vocab_size=V, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=8)))),
        "hf_wav2vec2": lambda: audio_classifier(T.Wav2Vec2ForSequenceClassification(_eager(T.Wav2Vec2Config(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4, num_labels=4)))),
        "hf_hubert": lambda: audio_classifier(T.HubertForSequenceClassification(_eager(T.HubertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4, num_labels=4)))),
        "hf_deit": lambda: image_classifier(T.DeiTForImageClassification(_eager(T.DeiTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_labels=5)))),
        "hf_beit": lambda: image_classifier(T.BeitForImageClassification(_eager(T.BeitConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_labels=5, use_relative_position_bias=True, use_mean_pooling=True)))),
        "hf_segformer": lambda: image_classifier(T.SegformerForImageClassification(_eager(T.SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32], patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2], num_labels=5)))),
        "hf_mobilevit": lambda: image_classifier(T.MobileViTForImageClassification(_eager(T.MobileViTConfig(image_size=32, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 32], num_attention_heads=2, num_labels=5)))),
        "hf_resnet": lambda: image_classifier(T.ResNetForImageClassification(T.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", num_labels=5))),
        "hf_clip_vision": lambda: image_classifier(T.CLIPForImageClassification(_eager(T.CLIPConfig(vision_config=dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64), text_config=dict(vocab_size=V, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64), num_labels=5)))),
        # published configs at full size (random weights, the configs' own 0.02 init), for step times:
        # sentence-transformers' all-MiniLM-L6-v2 (a BERT) at batch 8 × 128 tokens, SmolLM-135M (a Llama) at 4 × 64
        "hf_minilm_l6": lambda: classifier(T.BertForSequenceClassification(_eager(T.BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536, max_position_embeddings=512))), 0, batch=8, seq=128, std=0.02),
        "hf_smollm_135m": lambda: causal_lm(T.LlamaForCausalLM(_eager(T.LlamaConfig(vocab_size=49152, hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536, max_position_embeddings=2048, tie_word_embeddings=True, rope_theta=10000.0))), batch=4, seq=64, std=0.02),
        # with past_key_values inputs, as onnx-community's model.onnx (transformers.js)
        "hf_llama_past": lambda: causal_lm_with_past(T.LlamaForCausalLM(_eager(T.LlamaConfig(**decoder))), 2, 2, 8),
        "hf_qwen2_past": lambda: causal_lm_with_past(T.Qwen2ForCausalLM(_eager(T.Qwen2Config(**decoder))), 2, 2, 8),
        # a third round: sparse mixtures of experts (routing by top-k and NonZero), a selective
        # state-space model, 2-D layout positions, relative attention, detection and dense heads
        "hf_mixtral": lambda: causal_lm(T.MixtralForCausalLM(_eager(T.MixtralConfig(**decoder, num_local_experts=4, num_experts_per_tok=2)))),
        "hf_qwen2_moe": lambda: causal_lm(T.Qwen2MoeForCausalLM(_eager(T.Qwen2MoeConfig(**decoder, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32, decoder_sparse_step=1)))),
        "hf_mamba": lambda: causal_lm(T.MambaForCausalLM(T.MambaConfig(vocab_size=V, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2, conv_kernel=4))),
        "hf_llama3_rope": lambda: causal_lm(T.LlamaForCausalLM(_eager(T.LlamaConfig(**decoder, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16})))),
        "hf_layoutlm": lambda: layout_classifier(T.LayoutLMForSequenceClassification(_eager(T.LayoutLMConfig(**small)))),
        "hf_xlnet": lambda: classifier(T.XLNetForSequenceClassification(T.XLNetConfig(vocab_size=V, d_model=32, n_layer=2, n_head=4, d_inner=64)), 5),
        "hf_funnel": lambda: classifier(T.FunnelForSequenceClassification(T.FunnelConfig(vocab_size=V, d_model=32, n_head=4, d_head=8, d_inner=64, block_sizes=[1, 1], num_decoder_layers=1)), 0),
        "hf_yolos": lambda: detection_tokens(T.YolosForObjectDetection(_eager(T.YolosConfig(image_size=[32, 32], patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_detection_tokens=5, num_labels=3)))),
        "hf_mobilenet_v2": lambda: image_classifier(T.MobileNetV2ForImageClassification(T.MobileNetV2Config(image_size=32, depth_multiplier=0.35, num_labels=5))),
        "hf_segformer_seg": lambda: dense(T.SegformerForSemanticSegmentation(_eager(T.SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32], patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2], decoder_hidden_size=32, num_labels=4)))),
        "hf_wav2vec2_ctc": lambda: ctc(T.Wav2Vec2ForCTC(_eager(T.Wav2Vec2Config(vocab_size=12, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4, pad_token_id=0)))),
        # dual encoders, depth, and two v2 vision families
        "hf_clip": lambda: dual_encoder(T.CLIPModel(_eager(T.CLIPConfig(text_config=dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=16, eos_token_id=2),
                                                                      vision_config=dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64), projection_dim=16)))),
        "hf_depth_anything": lambda: depth(T.DepthAnythingForDepthEstimation(T.DepthAnythingConfig(backbone_config=_eager(T.Dinov2Config(image_size=56, patch_size=14, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, mlp_ratio=2, out_features=["stage1", "stage2", "stage3", "stage4"], reshape_hidden_states=False)),
                                                                                                    reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8))),
        "hf_swinv2": lambda: image_classifier(T.Swinv2ForImageClassification(_eager(T.Swinv2Config(image_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4, num_labels=5)))),
        "hf_convnextv2": lambda: image_classifier(T.ConvNextV2ForImageClassification(T.ConvNextV2Config(num_stages=2, hidden_sizes=[16, 32], depths=[1, 1], num_labels=5))),
        # a fourth round of decoders and seq2seq models (Cohere's export fails in onnxruntime itself:
        # torch 1.13 writes its rotary table's expand(batch, -1, 1) as an invalid Expand)
        "hf_gpt_neo": lambda: causal_lm(T.GPTNeoForCausalLM(_eager(T.GPTNeoConfig(vocab_size=V, hidden_size=32, num_layers=2, num_heads=4, attention_types=[[["global", "local"], 1]], window_size=4, max_position_embeddings=64)))),
        "hf_phi": lambda: causal_lm(T.PhiForCausalLM(_eager(T.PhiConfig(**dict(small), partial_rotary_factor=0.5)))),
        "hf_granite": lambda: causal_lm(T.GraniteForCausalLM(_eager(T.GraniteConfig(**decoder, embedding_multiplier=2.0, residual_multiplier=0.5, attention_multiplier=0.2, logits_scaling=4.0)))),
        "hf_starcoder2": lambda: causal_lm(T.Starcoder2ForCausalLM(_eager(T.Starcoder2Config(**decoder, sliding_window=4, use_bias=True)))),
        "hf_pegasus": lambda: seq2seq(T.PegasusForConditionalGeneration(_eager(T.PegasusConfig(vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64, pad_token_id=0, decoder_start_token_id=0)))),
        "hf_mbart": lambda: seq2seq(T.MBartForConditionalGeneration(_eager(T.MBartConfig(vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64))), pad=1),
        "hf_bigbird": lambda: classifier(T.BigBirdForSequenceClassification(T.BigBirdConfig(**small, attention_type="original_full")), 0),
        # a fifth round: dynamic and grouped convolutions, Nyström attention, relative positions,
        # rotary encoders, gated relative position bias (FNet's FFT does not export with torch 1.13)
        "hf_convbert": lambda: classifier(T.ConvBertForSequenceClassification(T.ConvBertConfig(**dict(small, embedding_size=32), conv_kernel_size=3, head_ratio=2)), 0),
        "hf_squeezebert": lambda: classifier(T.SqueezeBertForSequenceClassification(T.SqueezeBertConfig(**small, embedding_size=32, q_groups=2, k_groups=2, v_groups=2, post_attention_groups=2, intermediate_groups=4, output_groups=2)), 0),
        "hf_nystromformer": lambda: classifier(T.NystromformerForSequenceClassification(T.NystromformerConfig(**small, num_landmarks=3, segment_means_seq_len=9, conv_kernel_size=3)), 0),
        "hf_mpnet": lambda: classifier(T.MPNetForSequenceClassification(_eager(T.MPNetConfig(**small, pad_token_id=1))), 1),
        "hf_roformer": lambda: classifier(T.RoFormerForSequenceClassification(T.RoFormerConfig(**dict(small, embedding_size=32))), 0),
        "hf_esm": lambda: classifier(T.EsmForSequenceClassification(_eager(T.EsmConfig(**small, pad_token_id=1, mask_token_id=2, position_embedding_type="rotary"))), 1),
        "hf_wavlm": lambda: audio_classifier(T.WavLMForSequenceClassification(T.WavLMConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4, num_buckets=16, max_bucket_distance=32, num_labels=4))),
        "hf_codegen": lambda: causal_lm(T.CodeGenForCausalLM(T.CodeGenConfig(vocab_size=V, n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_positions=64))),
        "hf_xglm": lambda: causal_lm(T.XGLMForCausalLM(_eager(T.XGLMConfig(vocab_size=V, d_model=32, num_layers=2, attention_heads=4, ffn_dim=64, max_position_embeddings=64, pad_token_id=1))), pad=1),
        "hf_regnet": lambda: image_classifier(T.RegNetForImageClassification(T.RegNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], groups_width=8, num_labels=5))),
        "hf_dinov2": lambda: image_classifier(T.Dinov2ForImageClassification(_eager(T.Dinov2Config(image_size=28, patch_size=7, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2, num_labels=5))), size=28),
    })
