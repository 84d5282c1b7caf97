"""Tabular families for bench/popular_architectures.py, written after their reference code (the same
module structure and ops, in plain PyTorch) and exported with torch.onnx:

- tabnet: pytorch-tabnet's TabNetNoEmbeddings (dreamquark-ai, tab_network.py, 4.x): an initial
  BatchNorm1d on the features; a feature transformer of GLU layers (Linear without bias, ghost
  BatchNorm over virtual batches of 8 rows, GLU), two shared across the steps and two per step,
  with the (x + GLU(x))·√0.5 residuals; per step an attentive transformer (Linear, ghost
  BatchNorm, times the prior, sparsemax) whose mask, through the group matrix (identity, as
  without groups), multiplies the features; the prior updated as (γ − M)·prior; ReLU of each
  step's decision part summed, then the final Linear. n_d = n_a = 8, 3 steps, γ = 1.3, 10
  features, 3 classes, batch 16 (two virtual batches: the chunk count is fixed at export, so the
  batch is not dynamic). Sparsemax as pytorch-tabnet's forward computes it (sort descending,
  cumsum, support, τ gathered, clamp at 0): there it is a custom autograd Function whose backward
  is sparsemax's Jacobian; PyTorch's autograd through the same forward ops gives that Jacobian
  too (∂τ/∂x_j = 1/|support| on the support), which is what the reference here uses. Opset 13,
  loss: cross-entropy (BatchNorm in eval mode: running statistics, random as a trained model's).
- ft_transformer: Gorishniy et al.'s FT-Transformer (rtdl's FTTransformer): a feature tokenizer
  (numerical features x_i·W_i + b_i, categorical ids offset per column into one embedding table,
  plus a bias per token), a [CLS] token appended last, pre-norm transformer blocks (first block
  without its attention norm, as rtdl), ReGLU feed-forward, the head on [CLS]: LayerNorm, ReLU,
  Linear. d 16, 2 heads, 2 blocks, 6 numerical and 3 categorical features (4, 3 and 5
  categories), 3 classes; batch dynamic, opset 14, loss: cross-entropy.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------- TabNet (pytorch-tabnet)
def sparsemax(x, dim=-1):
    """pytorch-tabnet's SparsemaxFunction.forward, as plain ops."""
    x = x - x.max(dim=dim, keepdim=True)[0]
    srt, _ = torch.sort(x, descending=True, dim=dim)
    cumsum = srt.cumsum(dim) - 1
    d = x.size(dim)
    rhos = torch.arange(1, d + 1, dtype=x.dtype).view(1, -1)
    support = rhos * srt > cumsum
    support_size = support.sum(dim=dim).unsqueeze(dim)
    tau = cumsum.gather(dim, support_size - 1)
    tau = tau / support_size.to(x.dtype)
    return torch.clamp(x - tau, min=0)


class GBN(nn.Module):
    """Ghost BatchNorm: BatchNorm1d over chunks of virtual_batch_size rows."""

    def __init__(self, dim, virtual_batch_size=8, momentum=0.02):
        super().__init__()
        self.vbs = virtual_batch_size
        self.bn = nn.BatchNorm1d(dim, momentum=momentum)

    def forward(self, x):
        chunks = x.chunk(int(math.ceil(x.shape[0] / self.vbs)), 0)
        return torch.cat([self.bn(c) for c in chunks], dim=0)


class GLULayer(nn.Module):
    def __init__(self, input_dim, output_dim, fc=None):
        super().__init__()
        self.output_dim = output_dim
        self.fc = fc if fc is not None else nn.Linear(input_dim, 2 * output_dim, bias=False)
        self.bn = GBN(2 * output_dim)

    def forward(self, x):
        x = self.bn(self.fc(x))
        return x[:, : self.output_dim] * torch.sigmoid(x[:, self.output_dim:])


class GLUBlock(nn.Module):
    def __init__(self, input_dim, output_dim, n_glu, first, shared_layers=None):
        super().__init__()
        self.first = first
        self.layers = nn.ModuleList()
        for i in range(n_glu):
            fc = shared_layers[i] if shared_layers else None
            self.layers.append(GLULayer(input_dim if i == 0 else output_dim, output_dim, fc=fc))

    def forward(self, x):
        scale = math.sqrt(0.5)
        if self.first:
            x = self.layers[0](x)
            rest = self.layers[1:]
        else:
            rest = self.layers
        for layer in rest:
            x = (x + layer(x)) * scale
        return x


class FeatTransformer(nn.Module):
    def __init__(self, input_dim, output_dim, shared_layers, n_independent):
        super().__init__()
        self.shared = GLUBlock(input_dim, output_dim, len(shared_layers), first=True, shared_layers=shared_layers)
        self.specifics = GLUBlock(output_dim, output_dim, n_independent, first=False)

    def forward(self, x):
        return self.specifics(self.shared(x))


class AttentiveTransformer(nn.Module):
    def __init__(self, input_dim, group_dim):
        super().__init__()
        self.fc = nn.Linear(input_dim, group_dim, bias=False)
        self.bn = GBN(group_dim)

    def forward(self, priors, processed_feat):
        x = self.bn(self.fc(processed_feat))
        return sparsemax(x * priors)


class TabNet(nn.Module):
    def __init__(self, input_dim=10, output_dim=3, n_d=8, n_a=8, n_steps=3, gamma=1.3, n_independent=2, n_shared=2):
        super().__init__()
        self.n_d, self.n_steps, self.gamma = n_d, n_steps, gamma
        self.initial_bn = nn.BatchNorm1d(input_dim, momentum=0.01)
        shared = nn.ModuleList([nn.Linear(input_dim if i == 0 else n_d + n_a, 2 * (n_d + n_a), bias=False) for i in range(n_shared)])
        self.initial_splitter = FeatTransformer(input_dim, n_d + n_a, shared, n_independent)
        self.feat_transformers = nn.ModuleList([FeatTransformer(input_dim, n_d + n_a, shared, n_independent) for _ in range(n_steps)])
        self.att_transformers = nn.ModuleList([AttentiveTransformer(n_a, input_dim) for _ in range(n_steps)])
        self.register_buffer("group_attention_matrix", torch.eye(input_dim))
        self.final_mapping = nn.Linear(n_d, output_dim, bias=False)

    def forward(self, x):
        x = self.initial_bn(x)
        prior = torch.ones(x.shape, dtype=x.dtype)
        att = self.initial_splitter(x)[:, self.n_d:]
        res = 0
        for step in range(self.n_steps):
            M = self.att_transformers[step](prior, att)
            prior = (self.gamma - M) * prior
            masked_x = torch.matmul(M, self.group_attention_matrix) * x
            out = self.feat_transformers[step](masked_x)
            res = res + F.relu(out[:, : self.n_d])
            att = out[:, self.n_d:]
        return self.final_mapping(res)


def calibrate_bn(model, x):
    """Running statistics a trained model would have: the batch's own, perturbed."""
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            with torch.no_grad():
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(1 + 0.2 * torch.rand(m.num_features, generator=g))


def tabnet_case():
    torch.manual_seed(0)
    model = TabNet()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 10, generator=g)
    y = torch.randint(0, 3, (16,), generator=g)
    calibrate_bn(model, x)
    return dict(model=model, inputs={"x": x}, outputs=["logits"], opset=13, dynamic={},
                target=lambda out: y, loss=lambda out, y: F.cross_entropy(out[0], y))


# ---------------------------------------------------------------- FT-Transformer (rtdl)
class FeatureTokenizer(nn.Module):
    def __init__(self, n_num, cardinalities, d):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_num, d) / math.sqrt(d))
        self.register_buffer("category_offsets", torch.tensor([0] + cardinalities[:-1]).cumsum(0))
        self.category_embeddings = nn.Embedding(sum(cardinalities), d)
        self.bias = nn.Parameter(torch.randn(n_num + len(cardinalities), d) / math.sqrt(d))

    def forward(self, x_num, x_cat):
        num = self.weight[None] * x_num[:, :, None]
        cat = self.category_embeddings(x_cat + self.category_offsets[None])
        return torch.cat([num, cat], dim=1) + self.bias[None]


class FTBlock(nn.Module):
    def __init__(self, d, heads, first):
        super().__init__()
        self.attention_norm = None if first else nn.LayerNorm(d)
        self.attention = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ffn_norm = nn.LayerNorm(d)
        self.linear_first = nn.Linear(d, 2 * (4 * d // 3))  # ReGLU: d_hidden 4/3·d, doubled for the gate
        self.linear_second = nn.Linear(4 * d // 3, d)

    def forward(self, x):
        h = x if self.attention_norm is None else self.attention_norm(x)
        x = x + self.attention(h, h, h, need_weights=False)[0]
        h = self.linear_first(self.ffn_norm(x))
        a, b = h.chunk(2, dim=-1)
        return x + self.linear_second(a * F.relu(b))


class FTTransformer(nn.Module):
    def __init__(self, n_num=6, cardinalities=(4, 3, 5), d=16, heads=2, blocks=2, classes=3):
        super().__init__()
        self.tokenizer = FeatureTokenizer(n_num, list(cardinalities), d)
        self.cls = nn.Parameter(torch.randn(1, 1, d) / math.sqrt(d))
        self.blocks = nn.ModuleList([FTBlock(d, heads, first=i == 0) for i in range(blocks)])
        self.head_norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x_num, x_cat):
        x = self.tokenizer(x_num, x_cat)
        x = torch.cat([x, self.cls.expand(x.shape[0], -1, -1)], dim=1)  # rtdl appends [CLS] last
        for b in self.blocks:
            x = b(x)
        return self.head(F.relu(self.head_norm(x[:, -1])))


def ft_transformer_case():
    torch.manual_seed(0)
    model = FTTransformer()
    g = torch.Generator().manual_seed(2)
    x_num = torch.randn(8, 6, generator=g)
    x_cat = torch.stack([torch.randint(0, c, (8,), generator=g) for c in (4, 3, 5)], dim=1)
    y = torch.randint(0, 3, (8,), generator=g)
    return dict(model=model, inputs={"x_num": x_num, "x_cat": x_cat}, outputs=["logits"], opset=14,
                dynamic={"x_num": {0: "batch"}, "x_cat": {0: "batch"}, "logits": {0: "batch"}},
                target=lambda out: y, loss=lambda out, y: F.cross_entropy(out[0], y))


CASES = {"tabnet": tabnet_case, "ft_transformer": ft_transformer_case}
