"""Text families for bench/popular_architectures.py, written after their reference code
(width-reduced, the same module structure and ops) and exported as their tools export them:

- deberta_v3: transformers' DebertaV2ForSequenceClassification with DeBERTa-v3's configuration
  (relative attention over log-bucketed positions, p2c and c2p with the content projections shared
  (share_att_key), the relative embeddings LayerNorm'd, no absolute positions, no token types),
  XSoftmax as transformers' autograd Function exports it (its `symbolic`: Cast, Sub, Where,
  Softmax, Where), the ContextPooler's first token, dense and GELU; hidden 32, 2 heads, 2 layers,
  intermediate 64, vocabulary 100, 16 position buckets (max relative position 32), 3 labels;
  opset 12 (optimum's default for deberta-v2), batch and sequence dynamic; loss: cross-entropy.
  With share_att_key each layer calls query_proj and key_proj twice (hidden states, relative
  embeddings): torch.onnx folds each call's transposed weight and deduplicates the second as an
  Identity of the first, which refit unties by default (its own parameter): PyTorch's gradient of
  those weights then matches only with loadModel's keepTies. Linear weights are drawn with std 0.2
  (transformers' 0.02 leaves attention uniform and the position terms without gradient), biases
  random; embeddings as transformers draws them, the pad row zero.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn import LayerNorm


# ---------------------------------------------------------------- DeBERTa-v3 (transformers' modeling_deberta_v2)
class DebertaV3Config:
    vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size = 100, 32, 2, 2, 64
    hidden_act, pooler_hidden_act, layer_norm_eps, pad_token_id, num_labels = "gelu", "gelu", 1e-7, 0, 3
    relative_attention, position_buckets, max_relative_positions = True, 16, 32
    pos_att_type, share_att_key, norm_rel_ebd = ["p2c", "c2p"], True, "layer_norm"
    position_biased_input, type_vocab_size, max_position_embeddings = False, 0, 64


class XSoftmax(torch.autograd.Function):
    """transformers' masked softmax: masked scores filled with the dtype's minimum, softmax, masked
    probabilities zeroed; its backward is softmax's on the saved output; `symbolic` is what the ONNX
    export writes."""

    @staticmethod
    def forward(ctx, input, mask, dim):
        ctx.dim = dim
        rmask = ~(mask.to(torch.bool))
        output = input.masked_fill(rmask, torch.tensor(torch.finfo(input.dtype).min))
        output = torch.softmax(output, ctx.dim)
        output.masked_fill_(rmask, 0)
        ctx.save_for_backward(output)
        return output

    @staticmethod
    def backward(ctx, grad_output):
        (output,) = ctx.saved_tensors
        return torch._softmax_backward_data(grad_output, output, ctx.dim, output.dtype), None, None

    @staticmethod
    def symbolic(g, self, mask, dim):
        import torch.onnx.symbolic_helper as sym_help
        from torch.onnx.symbolic_opset9 import masked_fill, softmax

        mask_cast_value = g.op("Cast", mask, to_i=sym_help.cast_pytorch_to_onnx["Long"])
        r_mask = g.op("Cast", g.op("Sub", g.op("Constant", value_t=torch.tensor(1, dtype=torch.int64)), mask_cast_value),
                      to_i=sym_help.cast_pytorch_to_onnx["Byte"])
        output = masked_fill(g, self, r_mask, g.op("Constant", value_t=torch.tensor(torch.finfo(self.type().dtype()).min)))
        output = softmax(g, output, dim)
        return masked_fill(g, output, r_mask, g.op("Constant", value_t=torch.tensor(0, dtype=torch.uint8)))


def make_log_bucket_position(relative_pos, bucket_size, max_position):
    sign = torch.sign(relative_pos)
    mid = bucket_size // 2
    abs_pos = torch.where((relative_pos < mid) & (relative_pos > -mid), torch.tensor(mid - 1).type_as(relative_pos), torch.abs(relative_pos))
    log_pos = torch.ceil(torch.log(abs_pos / mid) / torch.log(torch.tensor((max_position - 1) / mid)) * (mid - 1)) + mid
    return torch.where(abs_pos <= mid, relative_pos.type_as(log_pos), log_pos * sign)


def build_relative_position(query_size, key_size, bucket_size=-1, max_position=-1):
    q_ids = torch.arange(0, query_size)
    k_ids = torch.arange(0, key_size)
    rel_pos_ids = q_ids[:, None] - k_ids[None, :]
    if bucket_size > 0 and max_position > 0:
        rel_pos_ids = make_log_bucket_position(rel_pos_ids, bucket_size, max_position)
    rel_pos_ids = rel_pos_ids.to(torch.long)
    rel_pos_ids = rel_pos_ids[:query_size, :]
    return rel_pos_ids.unsqueeze(0)


class DisentangledSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.all_head_size = self.num_attention_heads * self.attention_head_size
        self.query_proj = nn.Linear(config.hidden_size, self.all_head_size, bias=True)
        self.key_proj = nn.Linear(config.hidden_size, self.all_head_size, bias=True)
        self.value_proj = nn.Linear(config.hidden_size, self.all_head_size, bias=True)
        self.share_att_key = config.share_att_key
        self.pos_att_type = config.pos_att_type
        self.position_buckets = config.position_buckets
        self.max_relative_positions = config.max_relative_positions
        self.pos_ebd_size = self.position_buckets if self.position_buckets > 0 else self.max_relative_positions
        # share_att_key: no pos_key_proj / pos_query_proj (DeBERTa-v3)

    def transpose_for_scores(self, x, attention_heads):
        new_x_shape = x.size()[:-1] + (attention_heads, -1)
        x = x.view(new_x_shape)
        return x.permute(0, 2, 1, 3).contiguous().view(-1, x.size(1), x.size(-1))

    def forward(self, hidden_states, attention_mask, relative_pos=None, rel_embeddings=None):
        query_layer = self.transpose_for_scores(self.query_proj(hidden_states), self.num_attention_heads)
        key_layer = self.transpose_for_scores(self.key_proj(hidden_states), self.num_attention_heads)
        value_layer = self.transpose_for_scores(self.value_proj(hidden_states), self.num_attention_heads)
        scale_factor = 1 + ("c2p" in self.pos_att_type) + ("p2c" in self.pos_att_type)
        scale = torch.sqrt(torch.tensor(query_layer.size(-1), dtype=torch.float) * scale_factor)
        attention_scores = torch.bmm(query_layer, key_layer.transpose(-1, -2)) / torch.tensor(scale, dtype=query_layer.dtype)
        rel_att = self.disentangled_attention_bias(query_layer, key_layer, relative_pos, rel_embeddings, scale_factor)
        attention_scores = attention_scores + rel_att
        attention_scores = attention_scores.view(-1, self.num_attention_heads, attention_scores.size(-2), attention_scores.size(-1))
        attention_probs = XSoftmax.apply(attention_scores, attention_mask, -1)
        context_layer = torch.bmm(attention_probs.view(-1, attention_probs.size(-2), attention_probs.size(-1)), value_layer)
        context_layer = context_layer.view(-1, self.num_attention_heads, context_layer.size(-2), context_layer.size(-1)).permute(0, 2, 1, 3).contiguous()
        return context_layer.view(context_layer.size()[:-2] + (-1,))

    def disentangled_attention_bias(self, query_layer, key_layer, relative_pos, rel_embeddings, scale_factor):
        relative_pos = relative_pos.unsqueeze(1)  # [1, q, k] -> [1, 1, q, k]
        att_span = self.pos_ebd_size
        relative_pos = relative_pos.long().to(query_layer.device)
        rel_embeddings = rel_embeddings[0: att_span * 2, :].unsqueeze(0)
        pos_query_layer = self.transpose_for_scores(self.query_proj(rel_embeddings), self.num_attention_heads).repeat(query_layer.size(0) // self.num_attention_heads, 1, 1)
        pos_key_layer = self.transpose_for_scores(self.key_proj(rel_embeddings), self.num_attention_heads).repeat(query_layer.size(0) // self.num_attention_heads, 1, 1)
        score = 0
        # content -> position
        scale = torch.sqrt(torch.tensor(pos_key_layer.size(-1), dtype=torch.float) * scale_factor)
        c2p_att = torch.bmm(query_layer, pos_key_layer.transpose(-1, -2))
        c2p_pos = torch.clamp(relative_pos + att_span, 0, att_span * 2 - 1)
        c2p_att = torch.gather(c2p_att, dim=-1, index=c2p_pos.squeeze(0).expand([query_layer.size(0), query_layer.size(1), relative_pos.size(-1)]))
        score += c2p_att / torch.tensor(scale, dtype=c2p_att.dtype)
        # position -> content (query and key lengths are equal: r_pos is relative_pos)
        scale = torch.sqrt(torch.tensor(pos_query_layer.size(-1), dtype=torch.float) * scale_factor)
        p2c_pos = torch.clamp(-relative_pos + att_span, 0, att_span * 2 - 1)
        p2c_att = torch.bmm(key_layer, pos_query_layer.transpose(-1, -2))
        p2c_att = torch.gather(p2c_att, dim=-1, index=p2c_pos.squeeze(0).expand([query_layer.size(0), key_layer.size(-2), key_layer.size(-2)])).transpose(-1, -2)
        score += p2c_att / torch.tensor(scale, dtype=p2c_att.dtype)
        return score


class DebertaV2SelfOutput(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dense(hidden_states) + input_tensor)


class DebertaV2Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self = DisentangledSelfAttention(config)
        self.output = DebertaV2SelfOutput(config)

    def forward(self, hidden_states, attention_mask, relative_pos=None, rel_embeddings=None):
        return self.output(self.self(hidden_states, attention_mask, relative_pos=relative_pos, rel_embeddings=rel_embeddings), hidden_states)


class DebertaV2Intermediate(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, hidden_states):
        return F.gelu(self.dense(hidden_states))  # ACT2FN["gelu"]: the exact (erf) GELU


class DebertaV2Output(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dense(hidden_states) + input_tensor)


class DebertaV2Layer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attention = DebertaV2Attention(config)
        self.intermediate = DebertaV2Intermediate(config)
        self.output = DebertaV2Output(config)

    def forward(self, hidden_states, attention_mask, relative_pos=None, rel_embeddings=None):
        attention_output = self.attention(hidden_states, attention_mask, relative_pos=relative_pos, rel_embeddings=rel_embeddings)
        return self.output(self.intermediate(attention_output), attention_output)


class DebertaV2Encoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.ModuleList([DebertaV2Layer(config) for _ in range(config.num_hidden_layers)])
        self.max_relative_positions = config.max_relative_positions
        self.position_buckets = config.position_buckets
        self.rel_embeddings = nn.Embedding(self.position_buckets * 2, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps, elementwise_affine=True)  # norm_rel_ebd="layer_norm"

    def get_rel_embedding(self):
        return self.LayerNorm(self.rel_embeddings.weight)

    def get_attention_mask(self, attention_mask):
        extended_attention_mask = attention_mask.unsqueeze(1).unsqueeze(2)
        attention_mask = extended_attention_mask * extended_attention_mask.squeeze(-2).unsqueeze(-1)
        return attention_mask.byte()

    def forward(self, hidden_states, attention_mask):
        attention_mask = self.get_attention_mask(attention_mask)
        relative_pos = build_relative_position(hidden_states.size(-2), hidden_states.size(-2), bucket_size=self.position_buckets, max_position=self.max_relative_positions)
        rel_embeddings = self.get_rel_embedding()
        for layer_module in self.layer:
            hidden_states = layer_module(hidden_states, attention_mask, relative_pos=relative_pos, rel_embeddings=rel_embeddings)
        return hidden_states


class DebertaV2Embeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)

    def forward(self, input_ids, mask):
        embeddings = self.LayerNorm(self.word_embeddings(input_ids))  # position_biased_input=False, type_vocab_size=0
        return embeddings * mask.unsqueeze(2).to(embeddings.dtype)


class DebertaV2Model(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embeddings = DebertaV2Embeddings(config)
        self.encoder = DebertaV2Encoder(config)

    def forward(self, input_ids, attention_mask):
        return self.encoder(self.embeddings(input_ids, attention_mask), attention_mask)


class ContextPooler(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states):
        return F.gelu(self.dense(hidden_states[:, 0]))


class DebertaV2ForSequenceClassification(nn.Module):
    def __init__(self, config=DebertaV3Config):
        super().__init__()
        self.deberta = DebertaV2Model(config)
        self.pooler = ContextPooler(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        for m in self.modules():  # transformers' _init_weights (normal, std initializer_range 0.02; the pad row zero),
            # but trained-looking: projections of std 0.2 (attention far from uniform, so the relative
            # position terms carry gradient) and random biases (fresh zeros would make initializers coincide)
            if isinstance(m, nn.Linear):
                m.weight.data.normal_(0.0, 0.2)
                m.bias.data.normal_(0.0, 0.02)
            elif isinstance(m, nn.Embedding):
                m.weight.data.normal_(0.0, 0.02)
                if m.padding_idx is not None:
                    m.weight.data[m.padding_idx].zero_()

    def forward(self, input_ids, attention_mask):
        return self.classifier(self.pooler(self.deberta(input_ids, attention_mask)))


def deberta_v3_case():
    ids = torch.randint(3, 100, (2, 12))
    ids[:, 0], ids[0, 11], ids[1, 7] = 1, 2, 2  # [CLS] ... [SEP]
    ids[1, 8:] = 0  # [PAD]
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 8:] = 0
    return dict(model=DebertaV2ForSequenceClassification(), inputs={"input_ids": ids, "attention_mask": mask}, outputs=["logits"], opset=12,
                dynamic={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}},
                target=lambda out: torch.tensor([0, 2]),
                loss=lambda out, y: F.cross_entropy(out[0], y))


CASES = {"deberta_v3": deberta_v3_case}
