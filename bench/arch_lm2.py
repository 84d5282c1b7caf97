"""More language-model families for bench/popular_architectures.py, written after transformers'
modeling code (width-reduced, the same module structure and ops) and exported as their tools
export them:

- phi3: transformers' Phi3ForCausalLM (modular Phi-3 as Phi-4-mini uses it): the fused `qkv_proj`
  sliced into query, key and value, grouped-query attention (4 query heads, 2 key/value heads,
  repeat_kv), partial rotary positions (partial_rotary_factor 0.5: the first 4 of each head's 8
  dimensions rotated by rotate_half, the rest passed through, concatenated back), eager
  attention with the sliding-window causal and padding mask of
  _prepare_4d_causal_attention_mask_with_cache_position (comparisons of aranges: key j masked
  when j > i or j <= i - sliding_window, sliding_window 4; padded keys masked_fill'd with
  finfo.min), Phi3RMSNorm, the MLP's fused `gate_up_proj` chunked in two with SiLU, `o_proj`,
  `down_proj`, the final norm and an untied lm_head (Phi-3-mini's tie_word_embeddings False);
  hidden 32, head_dim 8, 2 layers, intermediate 64, vocabulary 64; row 2 right-padded after 7
  tokens; opset 14, batch and sequence dynamic; loss: next-token cross-entropy over y[:, t] =
  input_ids[:, t + 1], -100 at the last position and wherever the label is padding.
- mamba: transformers' MambaForCausalLM on its slow path (MambaMixer.slow_forward, as
  mamba-minimal writes it): per layer MambaRMSNorm and the mixer: `in_proj` to 2 * d_inner
  (x and the gate z, chunked), the depthwise causal `conv1d` (kernel 4, padding 3, sliced back
  to the sequence), SiLU, `x_proj` split into dt_rank + 2 * d_state (time step, B, C), `dt_proj`
  and softplus, A = -exp(A_log), the discretisation exp(delta * A) and delta * B * x, the
  selective scan as a Python loop over the sequence (torch.onnx unrolls it: the sequence is
  fixed at export, 8, only the batch is dynamic), y = state @ C per step, stacked, the D skip,
  gating by SiLU(z), `out_proj`; the final norm and the lm_head tied to the embedding; d_model
  16, d_inner 32, d_state 8, dt_rank 2, 2 layers, vocabulary 50; opset 14; loss: next-token
  cross-entropy, -100 at the last position. The export keeps A_log (renamed: its `.float()` Cast
  folded) and D (folded to [1, d_inner, 1]) as initializers; the tied lm_head's transposed copy
  is retied by refit's loader.

Phi-3's Linear weights and embedding are drawn with std 0.2 (transformers' 0.02 leaves attention
uniform and many gradients under the bench's 1e-6 cut). Mamba keeps transformers' init
(initializer_range 0.1, nn.Linear's and nn.Conv1d's own, dt_proj's time-step init, out_proj's
kaiming rescale) but: time steps drawn in [0.01, 1] (not [0.001, 0.1]) and x_proj's weights
tripled, so that the scan carries weight (else A_log's and dt_proj's gradients are ~4e-6, next to
the 1e-6 cut; now >= 6e-4); A_log and D perturbed by 0.1 * randn (every row of A_log is
log(1..d_state) and D ones: equal in both layers, torch.onnx would store them once and refit
would tie them).
Norms are perturbed by main (Phi3RMSNorm and MambaRMSNorm through the cases' "norms").
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from arch_decoder_parts import repeat_kv, rotate_half  # noqa: E402


def next_token_labels(ids, mask=None):
    """labels = input_ids with -100 at padding, shifted left by one (the last position -100)."""
    labels = ids if mask is None else ids.masked_fill(mask == 0, -100)
    y = torch.full_like(ids, -100)
    y[:, :-1] = labels[:, 1:]
    return y


def token_cross_entropy(out, y):
    return F.cross_entropy(out[0].flatten(0, 1), y.flatten(), ignore_index=-100)


# ---------------------------------------------------------------- Phi-3 (transformers' modeling_phi3)
class Phi3Config:
    vocab_size, hidden_size, intermediate_size, num_hidden_layers = 64, 32, 64, 2
    num_attention_heads, num_key_value_heads = 4, 2
    rms_norm_eps, rope_theta, partial_rotary_factor, sliding_window, pad_token_id = 1e-5, 10000.0, 0.5, 4, 63


class Phi3RMSNorm(nn.Module):
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


class Phi3RotaryEmbedding(nn.Module):
    """The default rope over the rotary part of a head: dim = head_dim * partial_rotary_factor."""

    def __init__(self, config):
        super().__init__()
        head_dim = config.hidden_size // config.num_attention_heads
        dim = int(head_dim * config.partial_rotary_factor)
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
    """Phi-3's: rotary on the first cos.shape[-1] dimensions of each head, the rest passed through."""
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    rotary_dim = cos.shape[-1]
    q_rot, q_pass = q[..., :rotary_dim], q[..., rotary_dim:]
    k_rot, k_pass = k[..., :rotary_dim], k[..., rotary_dim:]
    q_embed = torch.cat([(q_rot * cos) + (rotate_half(q_rot) * sin), q_pass], dim=-1)
    k_embed = torch.cat([(k_rot * cos) + (rotate_half(k_rot) * sin), k_pass], dim=-1)
    return q_embed, k_embed


class Phi3Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.num_heads, self.num_key_value_heads = config.num_attention_heads, config.num_key_value_heads
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim ** -0.5
        op_size = config.num_attention_heads * self.head_dim + 2 * (config.num_key_value_heads * self.head_dim)
        self.o_proj = nn.Linear(config.num_attention_heads * self.head_dim, config.hidden_size, bias=False)
        self.qkv_proj = nn.Linear(config.hidden_size, op_size, bias=False)

    def forward(self, hidden_states, position_embeddings, attention_mask):
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        qkv = self.qkv_proj(hidden_states)
        query_pos = self.num_heads * self.head_dim
        query_states = qkv[..., :query_pos]
        key_states = qkv[..., query_pos: query_pos + self.num_key_value_heads * self.head_dim]
        value_states = qkv[..., query_pos + self.num_key_value_heads * self.head_dim:]
        query_states = query_states.view(hidden_shape).transpose(1, 2)
        key_states = key_states.view(hidden_shape).transpose(1, 2)
        value_states = value_states.view(hidden_shape).transpose(1, 2)
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


class Phi3MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.activation_fn = nn.SiLU()  # hidden_act "silu"

    def forward(self, hidden_states):
        up_states = self.gate_up_proj(hidden_states)
        gate, up_states = up_states.chunk(2, dim=-1)
        up_states = up_states * self.activation_fn(gate)
        return self.down_proj(up_states)


class Phi3DecoderLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self_attn = Phi3Attention(config)
        self.mlp = Phi3MLP(config)
        self.input_layernorm = Phi3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = Phi3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states, position_embeddings, attention_mask):
        residual = hidden_states
        hidden_states = residual + self.self_attn(self.input_layernorm(hidden_states), position_embeddings, attention_mask)  # resid_attn_dropout: eval
        residual = hidden_states
        return residual + self.mlp(self.post_attention_layernorm(hidden_states))


def sliding_window_causal_mask(attention_mask, sequence_length, dtype, sliding_window):
    """transformers' _prepare_4d_causal_attention_mask_with_cache_position (Mistral, Phi-3) with no
    cache (cache_position = arange(sequence_length), target length = the mask's): key j is masked
    for query i when j > i or j <= i - sliding_window, and where the mask is 0. The mask covers
    every key, so its slice assignment is written as a whole masked_fill; the window's bitwise_or_ as |."""
    min_dtype = torch.finfo(dtype).min
    target_length = attention_mask.shape[-1]
    cache_position = torch.arange(sequence_length)
    causal_mask = torch.full((sequence_length, target_length), fill_value=min_dtype, dtype=dtype)
    diagonal_attend_mask = torch.arange(target_length) > cache_position.reshape(-1, 1)
    sliding_attend_mask = torch.arange(target_length) <= (cache_position.reshape(-1, 1) - sliding_window)
    diagonal_attend_mask = diagonal_attend_mask | sliding_attend_mask  # transformers' bitwise_or_ (aten::bitwise_or has no symbolic in torch 1.13; | exports the same Or)
    causal_mask = causal_mask * diagonal_attend_mask
    causal_mask = causal_mask[None, None, :, :].expand(attention_mask.shape[0], 1, -1, -1)
    mask_length = attention_mask.shape[-1]
    padding_mask = causal_mask[:, :, :, :mask_length] + attention_mask[:, None, None, :].to(dtype)
    padding_mask = padding_mask == 0
    return causal_mask.masked_fill(padding_mask, min_dtype)


class Phi3Model(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.layers = nn.ModuleList([Phi3DecoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.norm = Phi3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = Phi3RotaryEmbedding(config)

    def forward(self, input_ids, attention_mask):
        inputs_embeds = self.embed_tokens(input_ids)  # embd_pdrop: eval
        cache_position = torch.arange(inputs_embeds.shape[1])
        position_ids = cache_position.unsqueeze(0)
        causal_mask = sliding_window_causal_mask(attention_mask, inputs_embeds.shape[1], inputs_embeds.dtype, self.config.sliding_window)
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        for decoder_layer in self.layers:
            hidden_states = decoder_layer(hidden_states, position_embeddings, causal_mask)
        return self.norm(hidden_states)


class Phi3ForCausalLM(nn.Module):
    def __init__(self, config=Phi3Config):
        super().__init__()
        self.model = Phi3Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        for m in self.modules():  # transformers' _init_weights, but std 0.2 (trained-looking)
            if isinstance(m, nn.Linear):
                m.weight.data.normal_(0.0, 0.2)
            elif isinstance(m, nn.Embedding):
                m.weight.data.normal_(0.0, 0.2)
                if m.padding_idx is not None:
                    m.weight.data[m.padding_idx].zero_()

    def forward(self, input_ids, attention_mask):
        return self.lm_head(self.model(input_ids, attention_mask)).float()


def phi3_case():
    ids = torch.randint(1, 63, (2, 10))
    ids[1, 7:] = Phi3Config.pad_token_id  # row 2 right-padded after 7 tokens
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 7:] = 0
    axes = {0: "batch", 1: "sequence"}
    return dict(model=Phi3ForCausalLM(), inputs={"input_ids": ids, "attention_mask": mask}, outputs=["logits"], opset=14,
                dynamic={"input_ids": axes, "attention_mask": axes, "logits": axes}, norms=(Phi3RMSNorm,),
                target=lambda out: next_token_labels(ids, mask),
                loss=token_cross_entropy)


# ---------------------------------------------------------------- Mamba (transformers' modeling_mamba, slow path)
class MambaConfig:
    vocab_size, hidden_size, state_size, num_hidden_layers, expand, conv_kernel = 50, 16, 8, 2, 2, 4
    layer_norm_epsilon, use_bias, use_conv_bias, initializer_range = 1e-5, False, True, 0.1
    time_step_scale, time_step_min, time_step_max, time_step_floor, time_step_init_scheme = 1.0, 0.01, 1.0, 1e-4, "random"  # transformers: 0.001, 0.1
    intermediate_size = expand * hidden_size
    time_step_rank = 2  # "auto" would be ceil(hidden_size / 16) = 1


class MambaRMSNorm(nn.Module):
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


class MambaMixer(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.ssm_state_size = config.state_size
        self.conv_kernel_size = config.conv_kernel
        self.intermediate_size = config.intermediate_size
        self.time_step_rank = int(config.time_step_rank)
        self.layer_idx = layer_idx
        self.conv1d = nn.Conv1d(self.intermediate_size, self.intermediate_size, bias=config.use_conv_bias, kernel_size=config.conv_kernel,
                                groups=self.intermediate_size, padding=config.conv_kernel - 1)
        self.act = nn.SiLU()  # hidden_act "silu"
        self.in_proj = nn.Linear(self.hidden_size, self.intermediate_size * 2, bias=config.use_bias)
        self.x_proj = nn.Linear(self.intermediate_size, self.time_step_rank + self.ssm_state_size * 2, bias=False)
        self.dt_proj = nn.Linear(self.time_step_rank, self.intermediate_size, bias=True)
        A = torch.arange(1, self.ssm_state_size + 1, dtype=torch.float32)[None, :]
        A = A.expand(self.intermediate_size, -1).contiguous()
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.intermediate_size))
        self.out_proj = nn.Linear(self.intermediate_size, self.hidden_size, bias=config.use_bias)

    def forward(self, input_states):  # slow_forward, no cache
        batch_size, seq_len, _ = input_states.shape
        dtype = input_states.dtype
        # 1. Gated MLP's linear projection
        projected_states = self.in_proj(input_states).transpose(1, 2)  # [batch, 2 * intermediate_size, seq_len]
        hidden_states, gate = projected_states.chunk(2, dim=1)
        # 2. Convolution sequence transformation
        hidden_states = self.act(self.conv1d(hidden_states)[..., :seq_len])  # [batch, intermediate_size, seq_len]
        # 3. State Space Model sequence transformation
        # 3.a. Selection: [batch, seq_len, time_step_rank + 2 * ssm_state_size]
        ssm_parameters = self.x_proj(hidden_states.transpose(1, 2))
        time_step, B, C = torch.split(ssm_parameters, [self.time_step_rank, self.ssm_state_size, self.ssm_state_size], dim=-1)
        discrete_time_step = self.dt_proj(time_step)  # [batch, seq_len, intermediate_size]
        discrete_time_step = nn.functional.softplus(discrete_time_step).transpose(1, 2)  # [batch, intermediate_size, seq_len]
        # 3.b. Discretization: B and C to [batch, seq_len, intermediate_size, ssm_state_size]
        A = -torch.exp(self.A_log.float())  # [intermediate_size, ssm_state_size]
        discrete_A = torch.exp(A[None, :, None, :] * discrete_time_step[:, :, :, None])  # [batch, intermediate_size, seq_len, ssm_state_size]
        discrete_B = discrete_time_step[:, :, :, None] * B[:, None, :, :].float()
        deltaB_u = discrete_B * hidden_states[:, :, :, None].float()
        # 3.c perform the recurrence y ← SSM(A, B, C)(x)
        scan_outputs = []
        ssm_state = torch.zeros((batch_size, self.intermediate_size, self.ssm_state_size), dtype=dtype)
        for i in range(seq_len):
            ssm_state = discrete_A[:, :, i, :] * ssm_state + deltaB_u[:, :, i, :]  # [batch, intermediate_size, ssm_state]
            scan_output = torch.matmul(ssm_state.to(dtype), C[:, i, :].unsqueeze(-1))  # [batch, intermediate_size, 1]
            scan_outputs.append(scan_output[:, :, 0])
        scan_output = torch.stack(scan_outputs, dim=-1)  # [batch, intermediate_size, seq_len]
        scan_output = scan_output + (hidden_states * self.D[None, :, None])
        scan_output = (scan_output * self.act(gate))
        # 4. Final linear projection
        return self.out_proj(scan_output.transpose(1, 2))  # [batch, seq_len, hidden_size]


class MambaBlock(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.norm = MambaRMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.mixer = MambaMixer(config, layer_idx=layer_idx)

    def forward(self, hidden_states):
        residual = hidden_states
        hidden_states = self.mixer(self.norm(hidden_states.to(dtype=self.norm.weight.dtype)))
        residual = residual.to(torch.float32)  # residual_in_fp32
        return residual + hidden_states


class MambaModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([MambaBlock(config, layer_idx=idx) for idx in range(config.num_hidden_layers)])
        self.norm_f = MambaRMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)

    def forward(self, input_ids):
        hidden_states = self.embeddings(input_ids)
        for mixer_block in self.layers:
            hidden_states = mixer_block(hidden_states)
        return self.norm_f(hidden_states)


class MambaForCausalLM(nn.Module):
    def __init__(self, config=MambaConfig):
        super().__init__()
        self.backbone = MambaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self._init_weights(config)
        self.lm_head.weight = self.backbone.embeddings.weight  # tie_word_embeddings

    def _init_weights(self, config):
        """transformers' MambaPreTrainedModel._init_weights (dt_proj's time-step init, out_proj's
        rescale_prenorm_residual), then A_log and D perturbed (each layer its own) and x_proj tripled
        (trained-looking: the scan's B and C carry weight)."""
        for module in self.modules():
            if isinstance(module, MambaMixer):
                module.A_log._no_weight_decay = True
                module.D._no_weight_decay = True
                dt_init_std = config.time_step_rank ** -0.5 * config.time_step_scale
                nn.init.uniform_(module.dt_proj.weight, -dt_init_std, dt_init_std)
                dt = torch.exp(torch.rand(config.intermediate_size) * (math.log(config.time_step_max) - math.log(config.time_step_min))
                               + math.log(config.time_step_min)).clamp(min=config.time_step_floor)
                inv_dt = dt + torch.log(-torch.expm1(-dt))
                with torch.no_grad():
                    module.dt_proj.bias.copy_(inv_dt)
                    module.A_log.add_(0.1 * torch.randn_like(module.A_log))
                    module.D.add_(0.1 * torch.randn_like(module.D))
                    module.x_proj.weight.mul_(3.0)
            # Linear weights keep nn.Linear's init; the only Linear bias (dt_proj's) is _no_reinit
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=config.initializer_range)
        for name, p in self.named_parameters():  # rescale_prenorm_residual
            if name.endswith("out_proj.weight"):
                nn.init.kaiming_uniform_(p, a=math.sqrt(5))
                with torch.no_grad():
                    p /= math.sqrt(config.num_hidden_layers)

    def forward(self, input_ids):
        hidden_states = self.backbone(input_ids)
        return self.lm_head(hidden_states.to(self.lm_head.weight.dtype)).float()


def mamba_case():
    ids = torch.randint(0, 50, (2, 8))
    return dict(model=MambaForCausalLM(), inputs={"input_ids": ids}, outputs=["logits"], opset=14,
                dynamic={"input_ids": {0: "batch"}, "logits": {0: "batch"}}, norms=(MambaRMSNorm,),
                target=lambda out: next_token_labels(ids),
                loss=token_cross_entropy)


CASES = {"phi3": phi3_case, "mamba": mamba_case}
