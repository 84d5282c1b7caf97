"""Language-model families for bench/popular_architectures.py, written after transformers' modeling
code (width-reduced, the same module structure and ops) and exported as their tools export them:

- albert: transformers' AlbertForSequenceClassification: factorized embeddings (word, position and
  token-type tables of width 16, LayerNorm, then `embedding_hidden_mapping_in` to hidden 32), ONE
  AlbertLayer (num_hidden_groups 1, inner_group_num 1) called for each of the 3 layers with the
  same parameters, its attention's query/key/value/dense Linears with post-LayerNorm, the FFN
  ffn/ffn_output with gelu_new, the extended attention mask (1 - mask) * finfo.min, the pooler
  (first token, Linear, tanh) and classifier; 4 heads, intermediate 64, vocabulary 100, 3 labels;
  opset 14 (optimum's ALBERT default), batch and sequence dynamic; loss: cross-entropy. torch.onnx
  folds each call's transposed Linear weight and deduplicates calls 2 and 3 as Identity aliases
  of the first: refit ties them (loadModel's keepTies 'auto'), so a weight's gradient is the sum
  over the three layers, as PyTorch's.
- gemma: transformers' GemmaForCausalLM: the embedding scaled by a sqrt(hidden) tensor,
  GemmaRMSNorm's (1 + weight), rotary positions (rotate_half) from position ids computed inside
  from the mask (cumsum - 1, masked_fill 1, as generate does for left padding), grouped-query
  attention (4 query heads, 2 key/value heads, repeat_kv), eager attention with the 4-D causal
  and padding mask of _prepare_4d_causal_attention_mask_with_cache_position (masked_fill with
  finfo.min), the GeGLU MLP (gate_proj, up_proj, down_proj, tanh GELU), the final norm and the
  lm_head tied to the embedding (tie_word_embeddings); hidden 32, head_dim 8, 2 layers,
  intermediate 64, vocabulary 64; row 2 left-padded (3 pads); opset 14, batch and sequence
  dynamic; loss: next-token cross-entropy over the labels y[:, t] = input_ids[:, t + 1], -100 at
  the last position and wherever t or t + 1 is padding. torch.onnx folds each norm's (1 + weight)
  into one initializer (onnx::Mul_*), which refit trains; its gradient is the weight's (`derived`).
  The tied lm_head is folded as a transposed copy of the embedding, which refit reads as
  Transpose(embedding) (loadModel's default): the embedding's gradient sums both uses, as PyTorch's.

Linear weights are drawn with std 0.2 and embeddings with std 0.2 (transformers' 0.02 leaves
attention uniform and most gradients under the bench's 1e-6 cut), ALBERT's biases random; norms
are perturbed by main (GemmaRMSNorm through the case's "norms").
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from arch_decoder_parts import repeat_kv, rotate_half  # noqa: E402


def gelu_new(x):
    """transformers' NewGELUActivation (ALBERT's hidden_act "gelu_new")."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


# ---------------------------------------------------------------- ALBERT (transformers' modeling_albert)
class AlbertConfig:
    vocab_size, embedding_size, hidden_size, num_hidden_layers, num_hidden_groups, inner_group_num = 100, 16, 32, 3, 1, 1
    num_attention_heads, intermediate_size, max_position_embeddings, type_vocab_size = 4, 64, 64, 2
    layer_norm_eps, pad_token_id, num_labels = 1e-12, 0, 3


class AlbertEmbeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.embedding_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.embedding_size)
        self.LayerNorm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
        self.register_buffer("position_ids", torch.arange(config.max_position_embeddings).expand((1, -1)), persistent=False)

    def forward(self, input_ids, token_type_ids):
        seq_length = input_ids.size(1)
        position_ids = self.position_ids[:, 0:seq_length]
        embeddings = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        embeddings = embeddings + self.position_embeddings(position_ids)  # position_embedding_type "absolute"
        return self.LayerNorm(embeddings)


class AlbertAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.all_head_size = self.num_attention_heads * self.attention_head_size
        self.query = nn.Linear(config.hidden_size, self.all_head_size)
        self.key = nn.Linear(config.hidden_size, self.all_head_size)
        self.value = nn.Linear(config.hidden_size, self.all_head_size)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def transpose_for_scores(self, x):
        new_x_shape = x.size()[:-1] + (self.num_attention_heads, self.attention_head_size)
        return x.view(new_x_shape).permute(0, 2, 1, 3)

    def forward(self, hidden_states, attention_mask):
        query_layer = self.transpose_for_scores(self.query(hidden_states))
        key_layer = self.transpose_for_scores(self.key(hidden_states))
        value_layer = self.transpose_for_scores(self.value(hidden_states))
        attention_scores = torch.matmul(query_layer, key_layer.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
        attention_scores = attention_scores + attention_mask
        attention_probs = nn.functional.softmax(attention_scores, dim=-1)
        context_layer = torch.matmul(attention_probs, value_layer).transpose(2, 1).flatten(2)
        projected_context_layer = self.dense(context_layer)
        return self.LayerNorm(hidden_states + projected_context_layer)


class AlbertLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.full_layer_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = AlbertAttention(config)
        self.ffn = nn.Linear(config.hidden_size, config.intermediate_size)
        self.ffn_output = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states, attention_mask):
        attention_output = self.attention(hidden_states, attention_mask)
        ffn_output = self.ffn_output(gelu_new(self.ffn(attention_output)))
        return self.full_layer_layer_norm(ffn_output + attention_output)


class AlbertLayerGroup(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.albert_layers = nn.ModuleList([AlbertLayer(config) for _ in range(config.inner_group_num)])

    def forward(self, hidden_states, attention_mask):
        for albert_layer in self.albert_layers:
            hidden_states = albert_layer(hidden_states, attention_mask)
        return hidden_states


class AlbertTransformer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embedding_hidden_mapping_in = nn.Linear(config.embedding_size, config.hidden_size)
        self.albert_layer_groups = nn.ModuleList([AlbertLayerGroup(config) for _ in range(config.num_hidden_groups)])

    def forward(self, hidden_states, attention_mask):
        hidden_states = self.embedding_hidden_mapping_in(hidden_states)
        for i in range(self.config.num_hidden_layers):
            group_idx = int(i / (self.config.num_hidden_layers / self.config.num_hidden_groups))
            hidden_states = self.albert_layer_groups[group_idx](hidden_states, attention_mask)
        return hidden_states


class AlbertModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embeddings = AlbertEmbeddings(config)
        self.encoder = AlbertTransformer(config)
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)
        self.pooler_activation = nn.Tanh()

    def forward(self, input_ids, attention_mask, token_type_ids):
        extended_attention_mask = attention_mask.unsqueeze(1).unsqueeze(2).to(dtype=torch.float32)
        extended_attention_mask = (1.0 - extended_attention_mask) * torch.finfo(torch.float32).min
        sequence_output = self.encoder(self.embeddings(input_ids, token_type_ids), extended_attention_mask)
        return self.pooler_activation(self.pooler(sequence_output[:, 0]))


class AlbertForSequenceClassification(nn.Module):
    def __init__(self, config=AlbertConfig):
        super().__init__()
        self.albert = AlbertModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        for m in self.modules():  # transformers' _init_weights, but std 0.2 and random biases (trained-looking)
            if isinstance(m, nn.Linear):
                m.weight.data.normal_(0.0, 0.2)
                m.bias.data.normal_(0.0, 0.02)
            elif isinstance(m, nn.Embedding):
                m.weight.data.normal_(0.0, 0.2)
                if m.padding_idx is not None:
                    m.weight.data[m.padding_idx].zero_()

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.classifier(self.albert(input_ids, attention_mask, token_type_ids))


def albert_case():
    ids = torch.randint(5, 100, (2, 10))
    ids[:, 0], ids[0, 9], ids[1, 6] = 2, 3, 3  # [CLS] ... [SEP]
    ids[0, 4] = 3  # a sentence pair in row 1: [CLS] a [SEP] b [SEP]
    ids[1, 7:] = 0  # [PAD]
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 7:] = 0
    types = torch.zeros(2, 10, dtype=torch.long)
    types[0, 5:] = 1
    axes = {0: "batch", 1: "sequence"}
    return dict(model=AlbertForSequenceClassification(), inputs={"input_ids": ids, "attention_mask": mask, "token_type_ids": types}, outputs=["logits"], opset=14,
                dynamic={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes, "logits": {0: "batch"}},
                target=lambda out: torch.tensor([0, 2]),
                loss=lambda out, y: F.cross_entropy(out[0], y))


# ---------------------------------------------------------------- Gemma (transformers' modeling_gemma)
class GemmaConfig:
    vocab_size, hidden_size, intermediate_size, num_hidden_layers = 64, 32, 64, 2
    num_attention_heads, num_key_value_heads, head_dim = 4, 2, 8
    rms_norm_eps, rope_theta, pad_token_id = 1e-6, 10000.0, 0


class GemmaRMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def _norm(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, x):
        output = self._norm(x.float())
        output = output * (1.0 + self.weight.float())  # Gemma: (1 + weight), in float32
        return output.type_as(x)


class GemmaRotaryEmbedding(nn.Module):
    def __init__(self, dim, base=10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
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


class GemmaAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = config.head_dim ** -0.5
        self.q_proj = nn.Linear(config.hidden_size, config.num_attention_heads * self.head_dim, bias=False)  # attention_bias False
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


class GemmaMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))  # hidden_activation gelu_pytorch_tanh


class GemmaDecoderLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self_attn = GemmaAttention(config)
        self.mlp = GemmaMLP(config)
        self.input_layernorm = GemmaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = GemmaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states, position_embeddings, attention_mask):
        residual = hidden_states
        hidden_states = residual + self.self_attn(self.input_layernorm(hidden_states), position_embeddings, attention_mask)
        residual = hidden_states
        return residual + self.mlp(self.post_attention_layernorm(hidden_states))


def causal_mask_with_padding(attention_mask, sequence_length, dtype):
    """transformers' _prepare_4d_causal_attention_mask_with_cache_position with no cache
    (cache_position = arange(sequence_length), target length = the mask's)."""
    min_dtype = torch.finfo(dtype).min
    target_length = attention_mask.shape[-1]
    cache_position = torch.arange(sequence_length)
    causal_mask = torch.full((sequence_length, target_length), fill_value=min_dtype, dtype=dtype)
    causal_mask = torch.triu(causal_mask, diagonal=1)
    causal_mask = causal_mask * (torch.arange(target_length) > cache_position.reshape(-1, 1))
    causal_mask = causal_mask[None, None, :, :].expand(attention_mask.shape[0], 1, -1, -1)
    mask_length = attention_mask.shape[-1]
    padding_mask = causal_mask[:, :, :, :mask_length] + attention_mask[:, None, None, :].to(dtype)
    padding_mask = padding_mask == 0
    return causal_mask.masked_fill(padding_mask, min_dtype)


class GemmaModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.layers = nn.ModuleList([GemmaDecoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.norm = GemmaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = GemmaRotaryEmbedding(config.head_dim, base=config.rope_theta)

    def forward(self, input_ids, attention_mask):
        inputs_embeds = self.embed_tokens(input_ids)
        # position ids from the mask, as generate's prepare_inputs_for_generation writes them
        position_ids = attention_mask.long().cumsum(-1) - 1
        position_ids = position_ids.masked_fill(attention_mask == 0, 1)
        causal_mask = causal_mask_with_padding(attention_mask, input_ids.shape[1], inputs_embeds.dtype)
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        normalizer = torch.tensor(hidden_states.shape[-1] ** 0.5, dtype=hidden_states.dtype)
        hidden_states = hidden_states * normalizer
        for decoder_layer in self.layers:
            hidden_states = decoder_layer(hidden_states, position_embeddings, causal_mask)
        return self.norm(hidden_states)


class GemmaForCausalLM(nn.Module):
    def __init__(self, config=GemmaConfig):
        super().__init__()
        self.model = GemmaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        for m in self.modules():  # transformers' _init_weights, but std 0.2 (trained-looking)
            if isinstance(m, nn.Linear):
                m.weight.data.normal_(0.0, 0.2)
            elif isinstance(m, nn.Embedding):
                m.weight.data.normal_(0.0, 0.2)
                if m.padding_idx is not None:
                    m.weight.data[m.padding_idx].zero_()
        self.lm_head.weight = self.model.embed_tokens.weight  # tie_word_embeddings

    def forward(self, input_ids, attention_mask):
        return self.lm_head(self.model(input_ids, attention_mask)).float()


def gemma_case():
    ids = torch.randint(3, 64, (2, 9))
    ids[0, 0] = 2  # <bos>
    ids[1, :3], ids[1, 3] = 0, 2  # row 2 left-padded: <pad> <pad> <pad> <bos> ...
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :3] = 0

    def target(out):
        y = torch.full_like(ids, -100)
        keep = (mask[:, :-1] == 1) & (mask[:, 1:] == 1)
        y[:, :-1] = torch.where(keep, ids[:, 1:], torch.full_like(ids[:, 1:], -100))
        return y

    # torch.onnx folds each GemmaRMSNorm's (1 + weight) into one initializer: refit trains that
    # tensor, whose gradient is the weight's. main calls a fold with the parameters' values (to find
    # the initializer: 1 + weight) and with their gradients (the same gradient, unshifted).
    model = GemmaForCausalLM()
    norm_names = [f"{k}.weight" for k, m in model.named_modules() if isinstance(m, GemmaRMSNorm)]

    def plus_one(k):
        p = model.get_parameter(k)
        return lambda P: P[k] + 1 if P[k].data_ptr() == p.data_ptr() else P[k]

    axes = {0: "batch", 1: "sequence"}
    return dict(model=model, inputs={"input_ids": ids, "attention_mask": mask}, outputs=["logits"], opset=14, derived=[plus_one(k) for k in norm_names],
                dynamic={"input_ids": axes, "attention_mask": axes, "logits": axes}, norms=(GemmaRMSNorm,),
                target=target,
                loss=lambda out, y: F.cross_entropy(out[0].flatten(0, 1), y.flatten(), ignore_index=-100))


CASES = {"albert": albert_case, "gemma": gemma_case}
