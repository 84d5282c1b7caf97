"""Vision-language families for bench/popular_architectures.py (both run in transformers.js), written
after transformers' modeling code (width-reduced, the same module structure and ops), random
weights, exported with torch.onnx:

- trocr: transformers' VisionEncoderDecoderModel as microsoft/trocr-base-* builds it
  (convert_trocr_unilm_to_pytorch.py): a ViTModel encoder without pooler (ViTConfig qkv_bias=False:
  query/key/value without bias; the patch Conv2d with bias, the CLS token and the learned
  position table [1, 17, d] added whole, pre-LN ViTLayers with layernorm_before/after at eps 1e-12,
  attention.output.dense, intermediate.dense + exact GELU, output.dense, the final layernorm) and a
  TrOCRForCausalLM decoder with TrOCRConfig's defaults: TrOCRScaledWordEmbedding with embed_scale
  1.0 (scale_embedding False; the Mul by 1.0 stays in the graph), padding_idx 1;
  TrOCRLearnedPositionalEmbedding (arange(length) + offset 2, a table of max + 2 rows);
  layernorm_embedding; the causal mask as _prepare_4d_causal_attention_mask builds it (finfo.min,
  masked_fill, expand); post-LN TrOCRDecoderLayers (TrOCRAttention: q_proj scaled by
  head_dim^-0.5, bmm, the mask added; self-attention, then cross-attention whose k_proj/v_proj take
  the encoder width, cross_attention_hidden_size, as trocr-base's 768 → 1024 with no
  enc_to_dec_proj; fc1, exact GELU, fc2), and output_projection (no bias) tied to embed_tokens
  (tie_word_embeddings, TrOCRConfig's default, kept by trocr-base: one Parameter).
  Encoder d 32 (2 heads, 2 layers, MLP 128, 32×32 pixels in 8×8 patches: 16 + 1 tokens); decoder
  d 48 (2 heads, 2 layers, ffn 192), vocabulary 50, 16 positions. ONE graph (pixel_values,
  decoder_input_ids → logits), opset 14, batch and decoder sequence dynamic. Loss: token
  cross-entropy on the decoder ids shifted left (the last label -100, ignored). The decoder ids
  start with decoder_start_token_id 2. nn.Embedding's padding_idx (1), which zeroes that row's
  lookup gradient in PyTorch, is lost in ONNX's Gather; it does not matter for right padding (a
  causal decoder's padded positions reach only labels -100, so that lookup gradient is zero
  anyway). The four k_proj biases get zero gradients (softmax ignores a shift shared by every
  key); the bench leaves them out of the worst error.
  Weights: PyTorch's default Linear/Conv init; the token embedding, decoder positions, CLS token
  and ViT position table drawn with std 0.2 (transformers' 0.02 leaves attention uniform and the
  tied logits flat), the padding row zeroed as transformers does.
- owlvit: transformers' OwlViTForObjectDetection with text queries, the layout of transformers
  4.38+ (box_bias computed once in __init__, the class token broadcast to image_embeds[:, :-1]'s
  shape, which keeps batch dynamic): the CLIP text tower (token + position embeddings, the 4-D
  causal mask of _create_4d_causal_attention_mask plus the padding mask of
  _prepare_4d_attention_mask, both finfo.min, pre-LN OwlViTEncoderLayers with q/k/v/out_proj and
  quick_gelu MLPs, final_layer_norm, pooling at input_ids.to(int).argmax(-1), the end token being
  the largest id, text_projection, L2-normalised as OwlViTModel returns it), the CLIP vision tower
  (class_embedding, bias-free patch Conv2d, position_embedding gathered by the position_ids buffer,
  pre_layernorm, encoder; no pooling: post_layernorm on every token), the class token multiplied
  into the patch tokens, layer_norm, the [N, 4, 4, d] feature map; OwlViTClassPredictionHead
  (dense0, both sides normalised with + 1e-6, einsum '...pd,...qd->...pq', logit_shift and
  elu(logit_scale) + 1 from the image features, then torch.where(query_mask == 0, finfo.min, ·)
  with query_mask = input_ids[..., 0] > 0: every query here is real, its first token the start
  token) and OwlViTBoxPredictionHead (dense0, GELU, dense1, GELU, dense2) plus box_bias,
  sigmoid. OwlViTModel's visual_projection and logit_scale only serve the CLIP logits, which the
  detector's outputs do not use (torch.onnx drops them, PyTorch gives them no gradient): left out.
  compute_box_bias (grid corners / 4, clip, log(x + 1e-4) - log1p(-x + 1e-4) for the centres and
  for the 1/4 sizes) is a plain tensor attribute, neither parameter nor buffer: torch.onnx writes
  it as a Constant node [16, 4] (not an initializer) added to the box head's output, so refit's
  'all' does not train it either. The position tables stay initializers (Gather with constant
  ids). Two export workarounds for torch 1.13 (the same graph a later torch writes from
  transformers' code): torch.broadcast_to, which its exporter lacks, is written as expand (an
  Expand either way); torch.where's Python-float finfo.min is given as a float32 tensor, since
  torch 1.13 writes the float as a double constant and so an invalid Where (onnx's checker and
  onnxruntime reject it). Text d 32 (2 heads, 2 layers, MLP 128, vocabulary 100,
  16 positions), vision d 48 (2 heads, 2 layers, MLP 192, 32×32 pixels, patch 8: 4×4 patches),
  projection 32 (= text width, as the class head needs). Inputs input_ids [N·Q = 4, 7] (2 images
  × 2 queries, padded with 0 after the end token), pixel_values [2, 3, 32, 32], attention_mask
  [4, 7]; outputs logits [2, 16, 2], pred_boxes [2, 16, 4]; opset 14, the image batch and the
  text batch and sequence dynamic (optimum's axes). Loss: binary cross-entropy of the logits to
  random 0/1 labels per patch and query plus MSE of the boxes to targets in (0.1, 0.9),
  F.binary_cross_entropy_with_logits(logits, y) + F.mse_loss(pred_boxes, boxes).
  Weights: PyTorch's defaults (nn.Embedding N(0, 1), as the clip case), class_embedding randn.

GELU is F.gelu in the export and written out in PyTorch's own step (arch_speech.gelu: Debian's
torch 1.13 float32 GELU backward with non-contiguous incoming gradients).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from arch_detection import inverted_mask
from arch_speech import gelu, make_causal_mask


# ---------------------------------------------------------------- TrOCR (transformers' ViTModel + modeling_trocr)
class TrOCRSmall:
    image, patch, enc_d, enc_heads, enc_mlp, enc_layers, enc_eps = 32, 8, 32, 2, 128, 2, 1e-12
    vocab, d, heads, ffn, layers, max_positions = 50, 48, 2, 192, 2, 16
    pad, bos, eos, decoder_start = 1, 0, 2, 2
    scale_embedding = False  # TrOCRConfig's default, trocr-base's: embed_scale 1.0


class ViTPatchEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.projection = nn.Conv2d(3, c.enc_d, c.patch, stride=c.patch)

    def forward(self, pixel_values):
        return self.projection(pixel_values).flatten(2).transpose(1, 2)


class ViTEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.cls_token = nn.Parameter(0.2 * torch.randn(1, 1, c.enc_d))
        self.patch_embeddings = ViTPatchEmbeddings(c)
        self.position_embeddings = nn.Parameter(0.2 * torch.randn(1, (c.image // c.patch) ** 2 + 1, c.enc_d))

    def forward(self, pixel_values):
        batch_size = pixel_values.shape[0]
        embeddings = self.patch_embeddings(pixel_values)
        cls_tokens = self.cls_token.expand(batch_size, -1, -1)
        embeddings = torch.cat((cls_tokens, embeddings), dim=1)
        return embeddings + self.position_embeddings


class ViTSelfAttention(nn.Module):
    def __init__(self, c, qkv_bias=False):
        super().__init__()
        self.num_attention_heads, self.attention_head_size = c.enc_heads, c.enc_d // c.enc_heads
        self.all_head_size = c.enc_d
        self.query = nn.Linear(c.enc_d, c.enc_d, bias=qkv_bias)
        self.key = nn.Linear(c.enc_d, c.enc_d, bias=qkv_bias)
        self.value = nn.Linear(c.enc_d, c.enc_d, bias=qkv_bias)

    def transpose_for_scores(self, x):
        new_x_shape = x.size()[:-1] + (self.num_attention_heads, self.attention_head_size)
        return x.view(new_x_shape).permute(0, 2, 1, 3)

    def forward(self, hidden_states):
        key_layer = self.transpose_for_scores(self.key(hidden_states))
        value_layer = self.transpose_for_scores(self.value(hidden_states))
        query_layer = self.transpose_for_scores(self.query(hidden_states))
        attention_scores = torch.matmul(query_layer, key_layer.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
        attention_probs = F.softmax(attention_scores, dim=-1)
        context_layer = torch.matmul(attention_probs, value_layer).permute(0, 2, 1, 3).contiguous()
        return context_layer.view(context_layer.size()[:-2] + (self.all_head_size,))


class ViTSelfOutput(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c.enc_d, c.enc_d)

    def forward(self, hidden_states):
        return self.dense(hidden_states)


class ViTAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention, self.output = ViTSelfAttention(c), ViTSelfOutput(c)

    def forward(self, hidden_states):
        return self.output(self.attention(hidden_states))


class ViTIntermediate(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c.enc_d, c.enc_mlp)

    def forward(self, hidden_states):
        return gelu(self.dense(hidden_states))


class ViTOutput(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c.enc_mlp, c.enc_d)

    def forward(self, hidden_states, input_tensor):
        return self.dense(hidden_states) + input_tensor


class ViTLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention, self.intermediate, self.output = ViTAttention(c), ViTIntermediate(c), ViTOutput(c)
        self.layernorm_before, self.layernorm_after = nn.LayerNorm(c.enc_d, eps=c.enc_eps), nn.LayerNorm(c.enc_d, eps=c.enc_eps)

    def forward(self, hidden_states):
        hidden_states = self.attention(self.layernorm_before(hidden_states)) + hidden_states
        return self.output(self.intermediate(self.layernorm_after(hidden_states)), hidden_states)


class ViTEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layer = nn.ModuleList(ViTLayer(c) for _ in range(c.enc_layers))

    def forward(self, hidden_states):
        for layer in self.layer:
            hidden_states = layer(hidden_states)
        return hidden_states


class ViTModel(nn.Module):
    """ViTModel(add_pooling_layer=False): the last hidden state after the final layernorm."""

    def __init__(self, c):
        super().__init__()
        self.embeddings, self.encoder = ViTEmbeddings(c), ViTEncoder(c)
        self.layernorm = nn.LayerNorm(c.enc_d, eps=c.enc_eps)

    def forward(self, pixel_values):
        return self.layernorm(self.encoder(self.embeddings(pixel_values)))


class TrOCRLearnedPositionalEmbedding(nn.Embedding):
    def __init__(self, num_embeddings, embedding_dim):
        self.offset = 2
        super().__init__(num_embeddings + self.offset, embedding_dim)

    def forward(self, input_ids, past_key_values_length=0):
        bsz, seq_len = input_ids.shape[:2]
        positions = torch.arange(past_key_values_length, past_key_values_length + seq_len, dtype=torch.long, device=self.weight.device).expand(bsz, -1)
        return super().forward(positions + self.offset)


class TrOCRScaledWordEmbedding(nn.Embedding):
    def __init__(self, num_embeddings, embedding_dim, padding_idx, embed_scale=1.0):
        super().__init__(num_embeddings, embedding_dim, padding_idx)
        self.embed_scale = embed_scale

    def forward(self, input_ids):
        return super().forward(input_ids) * self.embed_scale


class TrOCRAttention(nn.Module):
    def __init__(self, embed_dim, num_heads, kdim=None, vdim=None):
        super().__init__()
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.scaling = self.head_dim ** -0.5
        self.k_proj = nn.Linear(kdim or embed_dim, embed_dim)
        self.v_proj = nn.Linear(vdim or embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, hidden_states, key_value_states=None, attention_mask=None):
        bsz, tgt_len, embed_dim = hidden_states.size()
        query_states = self.q_proj(hidden_states) * self.scaling
        current_states = hidden_states if key_value_states is None else key_value_states
        key_states = self.k_proj(current_states).view(bsz, -1, self.num_heads, self.head_dim).transpose(1, 2)
        value_states = self.v_proj(current_states).view(bsz, -1, self.num_heads, self.head_dim).transpose(1, 2)
        proj_shape = (bsz * self.num_heads, -1, self.head_dim)
        query_states = query_states.view(bsz, tgt_len, self.num_heads, self.head_dim).transpose(1, 2).reshape(*proj_shape)
        key_states = key_states.reshape(*proj_shape)
        value_states = value_states.reshape(*proj_shape)
        src_len = key_states.size(1)
        attn_weights = torch.bmm(query_states, key_states.transpose(1, 2))
        if attention_mask is not None:
            attn_weights = attn_weights.view(bsz, self.num_heads, tgt_len, src_len) + attention_mask
            attn_weights = attn_weights.view(bsz * self.num_heads, tgt_len, src_len)
        attn_weights = F.softmax(attn_weights, dim=-1)
        attn_output = torch.bmm(attn_weights, value_states)
        attn_output = attn_output.view(bsz, self.num_heads, tgt_len, self.head_dim).transpose(1, 2).reshape(bsz, tgt_len, embed_dim)
        return self.out_proj(attn_output)


class TrOCRDecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = TrOCRAttention(c.d, c.heads)
        self.self_attn_layer_norm = nn.LayerNorm(c.d)
        self.encoder_attn = TrOCRAttention(c.d, c.heads, kdim=c.enc_d, vdim=c.enc_d)  # cross_attention_hidden_size
        self.encoder_attn_layer_norm = nn.LayerNorm(c.d)
        self.fc1, self.fc2 = nn.Linear(c.d, c.ffn), nn.Linear(c.ffn, c.d)
        self.final_layer_norm = nn.LayerNorm(c.d)

    def forward(self, hidden_states, attention_mask, encoder_hidden_states):
        hidden_states = self.self_attn_layer_norm(hidden_states + self.self_attn(hidden_states, attention_mask=attention_mask))
        hidden_states = self.encoder_attn_layer_norm(hidden_states + self.encoder_attn(hidden_states, key_value_states=encoder_hidden_states))
        return self.final_layer_norm(hidden_states + self.fc2(gelu(self.fc1(hidden_states))))


class TrOCRDecoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        embed_scale = math.sqrt(c.d) if c.scale_embedding else 1.0
        self.embed_tokens = TrOCRScaledWordEmbedding(c.vocab, c.d, c.pad, embed_scale=embed_scale)
        self.embed_positions = TrOCRLearnedPositionalEmbedding(c.max_positions, c.d)
        self.layernorm_embedding = nn.LayerNorm(c.d)
        self.layers = nn.ModuleList(TrOCRDecoderLayer(c) for _ in range(c.layers))

    def forward(self, input_ids, encoder_hidden_states):
        input_ids = input_ids.view(-1, input_ids.shape[-1])
        inputs_embeds = self.embed_tokens(input_ids)
        hidden_states = self.layernorm_embedding(inputs_embeds + self.embed_positions(input_ids))
        attention_mask = make_causal_mask(input_ids.size(), inputs_embeds.dtype)
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask, encoder_hidden_states)
        return hidden_states


class TrOCRDecoderWrapper(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.decoder = TrOCRDecoder(c)


class TrOCRForCausalLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.model = TrOCRDecoderWrapper(c)
        self.output_projection = nn.Linear(c.d, c.vocab, bias=False)

    def forward(self, input_ids, encoder_hidden_states):
        return self.output_projection(self.model.decoder(input_ids, encoder_hidden_states))


class VisionEncoderDecoderModel(nn.Module):
    """TrOCR: ViT encoder → TrOCR decoder cross-attending to it (no enc_to_dec_proj: cross_attention_hidden_size is set)."""

    def __init__(self, c=TrOCRSmall):
        super().__init__()
        self.encoder, self.decoder = ViTModel(c), TrOCRForCausalLM(c)
        dec = self.decoder.model.decoder
        with torch.no_grad():  # trained-looking scales: logits of order 1 through the tied projection
            dec.embed_tokens.weight.normal_(0.0, 0.2)
            dec.embed_tokens.weight[c.pad].zero_()
            dec.embed_positions.weight.normal_(0.0, 0.2)
        self.decoder.output_projection.weight = dec.embed_tokens.weight  # tie_word_embeddings

    def forward(self, pixel_values, decoder_input_ids):
        encoder_hidden_states = self.encoder(pixel_values)
        return self.decoder(decoder_input_ids, encoder_hidden_states)


# ---------------------------------------------------------------- OWL-ViT (transformers' modeling_owlvit)
class OwlViTTextConfig:
    vocab_size, hidden_size, num_attention_heads, intermediate_size, num_hidden_layers, max_position_embeddings = 100, 32, 2, 128, 2, 16
    layer_norm_eps = 1e-5


class OwlViTVisionConfig:
    hidden_size, num_attention_heads, intermediate_size, num_hidden_layers, image_size, patch_size = 48, 2, 192, 2, 32, 8
    layer_norm_eps = 1e-5


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


class OwlViTAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embed_dim, self.num_heads = config.hidden_size, config.num_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.scale = self.head_dim ** -0.5
        self.k_proj, self.v_proj, self.q_proj, self.out_proj = (nn.Linear(self.embed_dim, self.embed_dim) for _ in range(4))

    def _shape(self, tensor, seq_len, bsz):
        return tensor.view(bsz, seq_len, self.num_heads, self.head_dim).transpose(1, 2).contiguous()

    def forward(self, hidden_states, attention_mask=None, causal_attention_mask=None):
        bsz, tgt_len, embed_dim = hidden_states.size()
        query_states = self.q_proj(hidden_states) * self.scale
        key_states = self._shape(self.k_proj(hidden_states), -1, bsz)
        value_states = self._shape(self.v_proj(hidden_states), -1, bsz)
        proj_shape = (bsz * self.num_heads, -1, self.head_dim)
        query_states = self._shape(query_states, tgt_len, bsz).view(*proj_shape)
        key_states = key_states.view(*proj_shape)
        value_states = value_states.view(*proj_shape)
        src_len = key_states.size(1)
        attn_weights = torch.bmm(query_states, key_states.transpose(1, 2))
        if causal_attention_mask is not None:
            attn_weights = attn_weights.view(bsz, self.num_heads, tgt_len, src_len) + causal_attention_mask
            attn_weights = attn_weights.view(bsz * self.num_heads, tgt_len, src_len)
        if attention_mask is not None:
            attn_weights = attn_weights.view(bsz, self.num_heads, tgt_len, src_len) + attention_mask
            attn_weights = attn_weights.view(bsz * self.num_heads, tgt_len, src_len)
        attn_weights = F.softmax(attn_weights, dim=-1)
        attn_output = torch.bmm(attn_weights, value_states)
        attn_output = attn_output.view(bsz, self.num_heads, tgt_len, self.head_dim).transpose(1, 2).reshape(bsz, tgt_len, embed_dim)
        return self.out_proj(attn_output)


class OwlViTMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(config.hidden_size, config.intermediate_size), nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states):
        return self.fc2(quick_gelu(self.fc1(hidden_states)))  # hidden_act "quick_gelu"


class OwlViTEncoderLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self_attn = OwlViTAttention(config)
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = OwlViTMLP(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states, attention_mask, causal_attention_mask):
        hidden_states = hidden_states + self.self_attn(self.layer_norm1(hidden_states), attention_mask, causal_attention_mask)
        return hidden_states + self.mlp(self.layer_norm2(hidden_states))


class OwlViTEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layers = nn.ModuleList(OwlViTEncoderLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, inputs_embeds, attention_mask=None, causal_attention_mask=None):
        hidden_states = inputs_embeds
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask, causal_attention_mask)
        return hidden_states


class OwlViTTextEmbeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.register_buffer("position_ids", torch.arange(config.max_position_embeddings).expand((1, -1)), persistent=False)

    def forward(self, input_ids):
        seq_length = input_ids.shape[-1]
        position_ids = self.position_ids[:, :seq_length]
        return self.token_embedding(input_ids) + self.position_embedding(position_ids)


class OwlViTTextTransformer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embeddings, self.encoder = OwlViTTextEmbeddings(config), OwlViTEncoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids, attention_mask):
        input_shape = input_ids.size()
        input_ids = input_ids.view(-1, input_shape[-1])
        hidden_states = self.embeddings(input_ids)
        causal_attention_mask = make_causal_mask(input_shape, hidden_states.dtype)  # _create_4d_causal_attention_mask
        attention_mask = inverted_mask(attention_mask, input_shape[-1], hidden_states.dtype)  # _prepare_4d_attention_mask
        last_hidden_state = self.final_layer_norm(self.encoder(hidden_states, attention_mask, causal_attention_mask))
        # the end token is the largest id; cast to int for ONNX (ArgMax on int64 at opset 14), as transformers does
        pooled_output = last_hidden_state[torch.arange(last_hidden_state.shape[0], device=last_hidden_state.device), input_ids.to(torch.int).argmax(dim=-1)]
        return last_hidden_state, pooled_output


class OwlViTVisionEmbeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.class_embedding = nn.Parameter(torch.randn(config.hidden_size))
        self.patch_embedding = nn.Conv2d(3, self.embed_dim, config.patch_size, stride=config.patch_size, bias=False)
        self.num_patches = (config.image_size // config.patch_size) ** 2
        self.num_positions = self.num_patches + 1
        self.position_embedding = nn.Embedding(self.num_positions, self.embed_dim)
        self.register_buffer("position_ids", torch.arange(self.num_positions).expand((1, -1)), persistent=False)

    def forward(self, pixel_values):
        batch_size = pixel_values.shape[0]
        patch_embeds = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        class_embeds = self.class_embedding.expand(batch_size, 1, -1)
        embeddings = torch.cat([class_embeds, patch_embeds], dim=1)
        return embeddings + self.position_embedding(self.position_ids)


class OwlViTVisionTransformer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embeddings = OwlViTVisionEmbeddings(config)
        self.pre_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.encoder = OwlViTEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixel_values):
        return self.encoder(self.pre_layernorm(self.embeddings(pixel_values)))  # last_hidden_state (the pooled CLS output is the CLIP logits', unused here)


class OwlViTModel(nn.Module):
    """The two towers and text_projection (visual_projection and logit_scale serve only the CLIP logits: left out)."""

    def __init__(self, text_config, vision_config, projection_dim):
        super().__init__()
        self.text_model, self.vision_model = OwlViTTextTransformer(text_config), OwlViTVisionTransformer(vision_config)
        self.text_projection = nn.Linear(text_config.hidden_size, projection_dim, bias=False)

    def forward(self, input_ids, pixel_values, attention_mask):
        vision_last_hidden_state = self.vision_model(pixel_values)
        text_embeds = self.text_projection(self.text_model(input_ids, attention_mask)[1])
        text_embeds = text_embeds / torch.linalg.norm(text_embeds, ord=2, dim=-1, keepdim=True)  # text_embeds_norm, what OwlViTModel returns
        return text_embeds, vision_last_hidden_state


class OwlViTBoxPredictionHead(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.dense0, self.dense1, self.dense2 = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, 4)

    def forward(self, image_features):
        return self.dense2(gelu(self.dense1(gelu(self.dense0(image_features)))))  # nn.GELU()


class OwlViTClassPredictionHead(nn.Module):
    def __init__(self, out_dim, query_dim):
        super().__init__()
        self.dense0 = nn.Linear(query_dim, out_dim)
        self.logit_shift = nn.Linear(query_dim, 1)
        self.logit_scale = nn.Linear(query_dim, 1)
        self.elu = nn.ELU()

    def forward(self, image_embeds, query_embeds, query_mask):
        image_class_embeds = self.dense0(image_embeds)
        image_class_embeds = image_class_embeds / (torch.linalg.norm(image_class_embeds, dim=-1, keepdim=True) + 1e-6)
        query_embeds = query_embeds / (torch.linalg.norm(query_embeds, dim=-1, keepdim=True) + 1e-6)
        pred_logits = torch.einsum("...pd,...qd->...pq", image_class_embeds, query_embeds)
        logit_shift = self.logit_shift(image_embeds)
        logit_scale = self.elu(self.logit_scale(image_embeds)) + 1
        pred_logits = (pred_logits + logit_shift) * logit_scale
        if query_mask is not None:
            if query_mask.ndim > 1:
                query_mask = torch.unsqueeze(query_mask, dim=-2)
            # transformers passes the Python float; torch 1.13's exporter writes it as a double constant, an invalid
            # Where (onnx's checker and onnxruntime reject it); later exporters give it the logits' type, as this does
            pred_logits = torch.where(query_mask == 0, torch.tensor(torch.finfo(pred_logits.dtype).min, dtype=pred_logits.dtype), pred_logits)
        return pred_logits, image_class_embeds


class OwlViTForObjectDetection(nn.Module):
    def __init__(self, text_config=OwlViTTextConfig, vision_config=OwlViTVisionConfig):
        super().__init__()
        self.owlvit = OwlViTModel(text_config, vision_config, projection_dim=text_config.hidden_size)
        self.class_head = OwlViTClassPredictionHead(text_config.hidden_size, vision_config.hidden_size)
        self.box_head = OwlViTBoxPredictionHead(vision_config.hidden_size)
        self.layer_norm = nn.LayerNorm(vision_config.hidden_size, eps=vision_config.layer_norm_eps)
        self.sigmoid = nn.Sigmoid()
        self.sqrt_num_patches = vision_config.image_size // vision_config.patch_size
        self.box_bias = self.compute_box_bias(self.sqrt_num_patches)  # a plain tensor: neither parameter nor buffer

    @staticmethod
    def normalize_grid_corner_coordinates(num_patches):
        x_coordinates = torch.arange(1, num_patches + 1, dtype=torch.float32)
        y_coordinates = torch.arange(1, num_patches + 1, dtype=torch.float32)
        xx, yy = torch.meshgrid(x_coordinates, y_coordinates, indexing="xy")
        box_coordinates = torch.stack((xx, yy), dim=-1) / num_patches
        return box_coordinates.view(-1, 2)

    def compute_box_bias(self, num_patches):
        box_coordinates = torch.clip(self.normalize_grid_corner_coordinates(num_patches), 0.0, 1.0)
        box_coord_bias = torch.log(box_coordinates + 1e-4) - torch.log1p(-box_coordinates + 1e-4)  # inverse sigmoid of the centres
        box_size = torch.full_like(box_coord_bias, 1.0 / num_patches)
        box_size_bias = torch.log(box_size + 1e-4) - torch.log1p(-box_size + 1e-4)  # and of the patch size
        return torch.cat([box_coord_bias, box_size_bias], dim=-1)

    def box_predictor(self, image_feats, feature_map):
        pred_boxes = self.box_head(image_feats)
        pred_boxes += self.box_bias.to(feature_map.device)
        return self.sigmoid(pred_boxes)

    def image_text_embedder(self, input_ids, pixel_values, attention_mask):
        text_embeds, last_hidden_state = self.owlvit(input_ids, pixel_values, attention_mask)
        image_embeds = self.owlvit.vision_model.post_layernorm(last_hidden_state)
        # torch.broadcast_to(image_embeds[:, :1, :], image_embeds[:, :-1].shape) in transformers; torch 1.13's exporter has no
        # aten::broadcast_to (later ones export it as expand's Expand): the same op written as expand
        class_token_out = image_embeds[:, :1, :].expand(image_embeds[:, :-1].shape)
        image_embeds = self.layer_norm(image_embeds[:, 1:, :] * class_token_out)
        new_size = (image_embeds.shape[0], self.sqrt_num_patches, self.sqrt_num_patches, image_embeds.shape[-1])
        return text_embeds, image_embeds.reshape(new_size)

    def forward(self, input_ids, pixel_values, attention_mask):
        query_embeds, feature_map = self.image_text_embedder(input_ids, pixel_values, attention_mask)
        batch_size, num_patches, num_patches, hidden_dim = feature_map.shape
        image_feats = torch.reshape(feature_map, (batch_size, num_patches * num_patches, hidden_dim))
        max_text_queries = input_ids.shape[0] // batch_size
        query_embeds = query_embeds.reshape(batch_size, max_text_queries, query_embeds.shape[-1])
        input_ids = input_ids.reshape(batch_size, max_text_queries, input_ids.shape[-1])
        query_mask = input_ids[..., 0] > 0  # a query whose first token is 0 is padding
        pred_logits, _ = self.class_head(image_feats, query_embeds, query_mask)
        pred_boxes = self.box_predictor(image_feats, feature_map)
        return pred_logits, pred_boxes


# ---------------------------------------------------------------- cases
def trocr_case():
    c = TrOCRSmall
    dec = torch.randint(3, c.vocab, (2, 6))  # no pad (1) or bos (0)
    dec[:, 0] = c.decoder_start
    labels = torch.cat([dec[:, 1:], torch.full((2, 1), -100)], 1)  # the ids shifted left; the last position ignored
    return dict(model=VisionEncoderDecoderModel(), inputs={"pixel_values": torch.randn(2, 3, 32, 32), "decoder_input_ids": dec}, outputs=["logits"], opset=14,
                dynamic={"pixel_values": {0: "batch"}, "decoder_input_ids": {0: "batch", 1: "decoder_sequence"}, "logits": {0: "batch", 1: "decoder_sequence"}},
                target=lambda out: labels,
                loss=lambda out, y: F.cross_entropy(out[0].flatten(0, 1), y.flatten(), ignore_index=-100))


def owlvit_case():
    bos, eos = 98, 99  # CLIP's start and end tokens: the end token the largest id, where the text tower pools
    lengths = [7, 5, 6, 4]  # tokens up to and with the end token; the rest padded with 0
    ids, mask = torch.zeros(4, 7, dtype=torch.long), torch.zeros(4, 7, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, 0], ids[i, 1:n - 1], ids[i, n - 1] = bos, torch.randint(1, 98, (n - 2,)), eos
        mask[i, :n] = 1
    return dict(model=OwlViTForObjectDetection(), inputs={"input_ids": ids, "pixel_values": torch.randn(2, 3, 32, 32), "attention_mask": mask}, outputs=["logits", "pred_boxes"], opset=14,
                dynamic={"input_ids": {0: "text_batch", 1: "sequence"}, "pixel_values": {0: "batch"}, "attention_mask": {0: "text_batch", 1: "sequence"}, "logits": {0: "batch"}, "pred_boxes": {0: "batch"}},
                target=lambda out: {"y": (torch.rand_like(out[0]) > 0.5).float(), "boxes": torch.rand_like(out[1]) * 0.8 + 0.1},
                loss=lambda out, t: F.binary_cross_entropy_with_logits(out[0], t["y"]) + F.mse_loss(out[1], t["boxes"]))


CASES = {"trocr": trocr_case, "owlvit": owlvit_case}
