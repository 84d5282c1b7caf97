"""PyTorch reference models for the benchmark (same architectures the TS benchmark times via ONNX).

make_cnn(width=32):  ResNet-style CNN on 1x28x28 (Fashion-MNIST), 10 classes, ~303k params at width 32.
make_transformer():  hand-written pre-LN transformer encoder classifier: vocab 1000, T=32, dim 64,
                     4 heads, 2 layers, MLP 4*dim, 10 classes (~144k params).
Both are deterministic given the seed argument.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvBN(nn.Module):
    def __init__(self, cin, cout, k, stride=1, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, momentum=0.1)

    def forward(self, x):
        return self.bn(self.conv(x))


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c1 = ConvBN(c, c, 3)
        self.c2 = ConvBN(c, c, 3)

    def forward(self, x):
        return F.relu(self.c2(F.relu(self.c1(x))) + x)


class DownBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.c1 = ConvBN(cin, cout, 3, stride=2)
        self.c2 = ConvBN(cout, cout, 3)
        self.proj = ConvBN(cin, cout, 1, stride=2)

    def forward(self, x):
        return F.relu(self.c2(F.relu(self.c1(x))) + self.proj(x))


class CNN(nn.Module):
    """x [N,1,28,28] -> stem w@28 -> res w@28 -> down 2w@14 -> res 2w@14 -> down 2w@7 -> res 2w@7 -> GAP -> fc."""

    def __init__(self, width=32, classes=10):
        super().__init__()
        w = width
        self.stem = ConvBN(1, w, 3)
        self.layer1 = ResBlock(w)
        self.down2 = DownBlock(w, 2 * w)
        self.layer2 = ResBlock(2 * w)
        self.down3 = DownBlock(2 * w, 2 * w)
        self.layer3 = ResBlock(2 * w)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2 * w, classes)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = self.layer1(x)
        x = self.layer2(self.down2(x))
        x = self.layer3(self.down3(x))
        return self.head(torch.flatten(self.gap(x), 1))


class Attention(nn.Module):
    def __init__(self, dim, heads, T):
        super().__init__()
        self.T, self.heads, self.dh = T, heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x):
        t, h, dh = self.T, self.heads, self.dh
        q = self.q(x).reshape(-1, t, h, dh).transpose(1, 2)
        k = self.k(x).reshape(-1, t, h, dh).transpose(1, 2)
        v = self.v(x).reshape(-1, t, h, dh).transpose(1, 2)
        a = torch.softmax(torch.matmul(q, k.transpose(2, 3)) * (1.0 / math.sqrt(dh)), dim=-1)
        return self.out(torch.matmul(a, v).transpose(1, 2).reshape(-1, t, h * dh))


class MLPBlock(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, hidden, T):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, T)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    def __init__(self, vocab=1000, T=32, dim=64, heads=4, layers=2, hidden=256, classes=10):
        super().__init__()
        self.vocab, self.T = vocab, T
        self.tok_emb = nn.Embedding(vocab, dim)
        self.pos_emb = nn.Parameter(torch.randn(1, T, dim) * 0.02)
        self.blocks = nn.ModuleList([Block(dim, heads, hidden, T) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens):
        x = self.tok_emb(tokens) + self.pos_emb
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x).mean(dim=1))


def make_cnn(width=32, classes=10, seed=0):
    torch.manual_seed(seed)
    m = CNN(width, classes)
    # Calibrate BN running stats with a few train-mode forwards on random data, so the exported
    # running stats are not the 0/1 defaults (torch.onnx.export de-duplicates initializers with
    # equal values, which would alias running_var with bn.weight etc.).
    # Same reason for perturbing the BN affine params (all-ones weights of equal-sized layers would
    # otherwise be merged into one initializer).
    m.train()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.add_(0.01 * torch.randn(mod.weight.shape))
                mod.bias.add_(0.01 * torch.randn(mod.bias.shape))
        for _ in range(3):
            m(torch.randn(32, 1, 28, 28))
    return m


def make_transformer(vocab=1000, T=32, dim=64, heads=4, layers=2, classes=10, seed=0):
    torch.manual_seed(seed)
    m = Transformer(vocab, T, dim, heads, layers, 4 * dim, classes)
    # Non-default LayerNorm affine params, for the same de-duplication reason as in make_cnn.
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.LayerNorm):
                mod.weight.add_(0.01 * torch.randn(mod.weight.shape))
                mod.bias.add_(0.01 * torch.randn(mod.bias.shape))
    return m


def example_input(model, batch):
    if isinstance(model, Transformer):
        return torch.randint(0, model.vocab, (batch, model.T))
    return torch.randn(batch, 1, 28, 28)


def norm_param_names(model):
    names = set()
    for mn, mod in model.named_modules():
        if isinstance(mod, (nn.BatchNorm2d, nn.LayerNorm)):
            for pn, _ in mod.named_parameters(recurse=False):
                names.add(f"{mn}.{pn}" if mn else pn)
    return names
