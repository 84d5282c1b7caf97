"""Mixture-of-experts language models for bench/popular_architectures.py, written after transformers'
modeling code (width-reduced, the same module structure and ops) and exported as their tools
export them:

- mixtral: transformers' MixtralForCausalLM: Llama-style attention (MixtralRMSNorm, rotary
  positions by rotate_half with rope_theta 1e6, grouped-query attention: 4 query heads, 2
  key/value heads, repeat_kv, eager attention with the causal and padding mask of
  _prepare_4d_causal_attention_mask_with_cache_position, sliding_window None) and
  MixtralSparseMoeBlock exactly as transformers writes it: the router `gate` Linear, softmax in
  float32, torch.topk(top_k=2), the top-2 weights renormalised, expert_mask =
  one_hot(selected_experts, num_experts).permute(2, 1, 0), then a Python loop over the 4 experts
  (unrolled by the export) with `idx, top_x = torch.where(expert_mask[expert_idx])` (NonZero: how
  many tokens an expert gets depends on the data, not only on the input's shape),
  `hidden_states[None, top_x]`, the expert MLP (w2(SiLU(w1 x) * w3 x)), scaled by
  routing_weights[top_x, idx, None], and final_hidden_states.index_add_(0, top_x, ...); the final
  norm and an untied lm_head (Mixtral's tie_word_embeddings False); hidden 16, head_dim 4,
  intermediate 32, 2 layers, vocabulary 40; batch 2 × sequence 8, no padding; opset 14, batch and
  sequence dynamic; loss: next-token cross-entropy over y[:, t] = input_ids[:, t + 1], -100 at
  the last position (router_aux_loss off: output_router_logits False, Mixtral's default).
  torch 1.13 exports index_add_ as ScatterElements into zeros plus an Add (exact here: top_x
  never repeats within an expert) and the routing by TopK, OneHot and NonZero; routing differs
  per batch (batch A's tokens per expert: layer 0 [5, 9, 13, 5], layer 1 [7, 10, 6, 9]).

Linear weights and the embedding are drawn with std 0.2 (transformers' 0.02 leaves attention
uniform and many gradients under the bench's 1e-6 cut; the router's std 0.2 also keeps the top-2
choice clear of float ties). Norms are perturbed by main (MixtralRMSNorm through the case's "norms").
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from arch_decoder_parts import repeat_kv, rotate_half  # noqa: E402


class MixtralConfig:
    vocab_size, hidden_size, intermediate_size, num_hidden_layers = 40, 16, 32, 2
    num_attention_heads, num_key_value_heads = 4, 2
    num_local_experts, num_experts_per_tok = 4, 2
    rms_norm_eps, rope_theta, pad_token_id = 1e-5, 1e6, None


def next_token_labels(ids):
    """labels = input_ids shifted left by one, the last position -100."""
    y = torch.full_like(ids, -100)
    y[:, :-1] = ids[:, 1:]
    return y


class MixtralRMSNorm(nn.Module):
    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


class MixtralRotaryEmbedding(nn.Module):
    def __init__(self, config):
        super().__init__()
        dim = config.hidden_size // config.num_attention_heads
        inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @torch.no_grad()
    def forward(self, x, position_ids):
        inv_freq_expanded = self.inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1)
        position_ids_expanded = position_ids[:, None, :].float()
        freqs = (inv_freq_expanded.float() @ position_ids_expanded.float()).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype=x.dtype), emb.sin().to(dtype=x.dtype)


def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


class MixtralAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim ** -0.5
        self.q_proj = nn.Linear(config.hidden_size, config.num_attention_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(config.num_attention_heads * self.head_dim, config.hidden_size, bias=False)

    def forward(self, hidden_states, position_embeddings, attention_mask):
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
        # eager_attention_forward
        key_states = repeat_kv(key_states, self.num_key_value_groups)
        value_states = repeat_kv(value_states, self.num_key_value_groups)
        attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) * self.scaling
        attn_weights = attn_weights + attention_mask[:, :, :, : key_states.shape[-2]]
        attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query_states.dtype)
        attn_output = torch.matmul(attn_weights, value_states).transpose(1, 2).contiguous()
        return self.o_proj(attn_output.reshape(*input_shape, -1).contiguous())


class MixtralBlockSparseTop2MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ffn_dim, self.hidden_dim = config.intermediate_size, config.hidden_size
        self.w1 = nn.Linear(self.hidden_dim, self.ffn_dim, bias=False)
        self.w2 = nn.Linear(self.ffn_dim, self.hidden_dim, bias=False)
        self.w3 = nn.Linear(self.hidden_dim, self.ffn_dim, bias=False)
        self.act_fn = nn.SiLU()  # hidden_act "silu"

    def forward(self, hidden_states):
        current_hidden_states = self.act_fn(self.w1(hidden_states)) * self.w3(hidden_states)
        return self.w2(current_hidden_states)


class MixtralSparseMoeBlock(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.hidden_dim = config.hidden_size
        self.ffn_dim = config.intermediate_size
        self.num_experts = config.num_local_experts
        self.top_k = config.num_experts_per_tok
        self.gate = nn.Linear(self.hidden_dim, self.num_experts, bias=False)
        self.experts = nn.ModuleList([MixtralBlockSparseTop2MLP(config) for _ in range(self.num_experts)])

    def forward(self, hidden_states):
        batch_size, sequence_length, hidden_dim = hidden_states.shape
        # router_jitter_noise: training only (0 by default)
        hidden_states = hidden_states.view(-1, hidden_dim)
        router_logits = self.gate(hidden_states)
        routing_weights = F.softmax(router_logits, dim=1, dtype=torch.float)
        routing_weights, selected_experts = torch.topk(routing_weights, self.top_k, dim=-1)
        routing_weights /= routing_weights.sum(dim=-1, keepdim=True)
        routing_weights = routing_weights.to(hidden_states.dtype)
        final_hidden_states = torch.zeros((batch_size * sequence_length, hidden_dim), dtype=hidden_states.dtype, device=hidden_states.device)
        expert_mask = torch.nn.functional.one_hot(selected_experts, num_classes=self.num_experts).permute(2, 1, 0)
        for expert_idx in range(self.num_experts):
            expert_layer = self.experts[expert_idx]
            idx, top_x = torch.where(expert_mask[expert_idx])
            current_state = hidden_states[None, top_x].reshape(-1, hidden_dim)
            current_hidden_states = expert_layer(current_state) * routing_weights[top_x, idx, None]
            final_hidden_states.index_add_(0, top_x, current_hidden_states.to(hidden_states.dtype))
        final_hidden_states = final_hidden_states.reshape(batch_size, sequence_length, hidden_dim)
        return final_hidden_states, router_logits


class MixtralDecoderLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self_attn = MixtralAttention(config)
        self.block_sparse_moe = MixtralSparseMoeBlock(config)
        self.input_layernorm = MixtralRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = MixtralRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states, position_embeddings, attention_mask):
        residual = hidden_states
        hidden_states = residual + self.self_attn(self.input_layernorm(hidden_states), position_embeddings, attention_mask)
        residual = hidden_states
        hidden_states, _router_logits = self.block_sparse_moe(self.post_attention_layernorm(hidden_states))
        return residual + hidden_states


def causal_mask_with_padding(attention_mask, sequence_length, dtype):
    """transformers' _prepare_4d_causal_attention_mask_with_cache_position with no cache and no
    sliding window (cache_position = arange(sequence_length), target length = the mask's)."""
    min_dtype = torch.finfo(dtype).min
    target_length = attention_mask.shape[-1]
    cache_position = torch.arange(sequence_length)
    causal_mask = torch.full((sequence_length, target_length), fill_value=min_dtype, dtype=dtype)
    causal_mask = causal_mask * (torch.arange(target_length) > cache_position.reshape(-1, 1))
    causal_mask = causal_mask[None, None, :, :].expand(attention_mask.shape[0], 1, -1, -1)
    mask_length = attention_mask.shape[-1]
    padding_mask = causal_mask[:, :, :, :mask_length] + attention_mask[:, None, None, :].to(dtype)
    padding_mask = padding_mask == 0
    return causal_mask.masked_fill(padding_mask, min_dtype)


class MixtralModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.layers = nn.ModuleList([MixtralDecoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.norm = MixtralRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = MixtralRotaryEmbedding(config)

    def forward(self, input_ids, attention_mask):
        inputs_embeds = self.embed_tokens(input_ids)
        cache_position = torch.arange(inputs_embeds.shape[1])
        position_ids = cache_position.unsqueeze(0)
        causal_mask = causal_mask_with_padding(attention_mask, inputs_embeds.shape[1], inputs_embeds.dtype)
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        for decoder_layer in self.layers:
            hidden_states = decoder_layer(hidden_states, position_embeddings, causal_mask)
        return self.norm(hidden_states)


class MixtralForCausalLM(nn.Module):
    def __init__(self, config=MixtralConfig):
        super().__init__()
        self.model = MixtralModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        for m in self.modules():  # transformers' _init_weights, but std 0.2 (trained-looking)
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.data.normal_(0.0, 0.2)

    def forward(self, input_ids, attention_mask):
        return self.lm_head(self.model(input_ids, attention_mask)).float()


def mixtral_case():
    model = MixtralForCausalLM()
    ids = torch.randint(0, MixtralConfig.vocab_size, (2, 8))
    mask = torch.ones_like(ids)
    axes = {0: "batch", 1: "sequence"}
    return dict(model=model, inputs={"input_ids": ids, "attention_mask": mask}, outputs=["logits"], opset=14,
                dynamic={"input_ids": axes, "attention_mask": axes, "logits": axes}, norms=(MixtralRMSNorm,),
                target=lambda out: next_token_labels(ids),
                loss=lambda out, y: F.cross_entropy(out[0].flatten(0, 1), y.flatten(), ignore_index=-100))


CASES = {"mixtral": mixtral_case}
