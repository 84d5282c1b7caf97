"""Sequence models people write with torch.nn's own layers, for bench/popular_architectures.py
(cases of the same form): the layers users reach for before any model hub, width-reduced, random
weights.

- translator: PyTorch's translation tutorial on nn.Transformer (√d-scaled embeddings plus a
  sinusoidal buffer, 2 + 2 post-norm layers, the causal mask built in the forward pass by
  generate_square_subsequent_mask, key-padding masks from pad id 1, a generator Linear). Inputs
  `src` [2, 9] and `tgt` [2, 7]; opset 14, batch and both lengths dynamic; loss: token
  cross-entropy (padded labels -100).
- ts_transformer: a time-series classifier on nn.TransformerEncoder (batch_first, two post-norm
  layers with GELU, nn.MultiheadAttention's packed in_proj, a key-padding mask fed as a bool input,
  a learned position table, mean pooling over the unpadded steps, a Linear head). The encoder's
  layers are deep copies of one layer (`_get_clones`), so a fresh model's two layers are equal and
  torch.onnx writes the second as Identity nodes of the first: PyTorch trains them as separate
  parameters. Input `x` [2, 12, 6] and `padding_mask` [2, 12] (row 2 padded after 9 steps); opset
  14, batch and length dynamic; loss: cross-entropy.
- tcn: Bai et al.'s temporal convolutional network (locuslab/TCN's TemporalBlock: weight-normed
  dilated causal Conv1d, Chomp1d, ReLU, dropout, a 1×1 downsample on the residual where the width
  changes), dilations 1, 2, 4, the last step to a Linear head. torch.onnx folds each weight norm
  (g · v / ‖v‖) into one weight; its gradient is compared with PyTorch's gradient of the computed
  weight. Input `x` [2, 3, 32]; opset 13, batch and length dynamic; loss: cross-entropy.
- hifigan: HiFi-GAN V1's generator (jik876/hifi-gan's models.py, width-reduced): weight-normed
  conv_pre, ConvTranspose1d upsampling (×4, ×4) with LeakyReLU 0.1, the multi-receptive-field
  fusion of ResBlock1s (kernels 3 and 7, dilations 1, 3, 5), conv_post and tanh. Input `mel`
  [2, 8, 10]; opset 13, batch and frames dynamic; loss: L1 of the waveform to a target (the
  reconstruction term of HiFi-GAN's generator loss, on the waveform rather than its mel).
- gru_tagger: a token tagger: nn.Embedding (padding_idx 0), a two-layer bidirectional nn.GRU
  (batch_first), LayerNorm, a Linear per token. Input `input_ids` [2, 9]; opset 13, batch and
  length dynamic; loss: token cross-entropy. torch.onnx writes each layer as one GRU node whose
  W, R and B stack both directions with the gates reordered; PyTorch's gradients are folded the
  same way to compare.
- lstm_packed: a text classifier on `pack_padded_sequence` (unsorted lengths [5, 8, 2] fed as an
  input), a bidirectional nn.LSTM and its two final hidden states; torch.onnx sorts the batch by
  TopK, passes the lengths as the LSTM's sequence_lens and unsorts by ScatterElements. Input
  `input_ids` [3, 8] and `lengths` [3]; opset 13, batch and length dynamic; loss: cross-entropy.
- embedding_bag: a DLRM-style click model (a bottom MLP on dense features, nn.EmbeddingBag sum,
  mean and max over `offsets`, one bag empty, pairwise dot interactions, a top MLP); torch.onnx
  writes each EmbeddingBag as a Loop over the bags whose body slices the ids at offsets[i] …
  offsets[i + 1].
  Opset 13, batch and id counts dynamic; loss: binary cross-entropy on the click logit.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import weight_norm


# ---------------------------------------------------------------- a time-series transformer
class TimeSeriesTransformer(nn.Module):
    def __init__(self, features=6, d=32, heads=4, layers=2, classes=5, max_len=64):
        super().__init__()
        self.embed = nn.Linear(features, d)
        self.pos = nn.Parameter(0.1 * torch.randn(1, max_len, d))
        layer = nn.TransformerEncoderLayer(d, heads, 64, dropout=0.1, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, x, padding_mask):
        h = self.embed(x) + self.pos[:, : x.shape[1]]
        h = self.encoder(h, src_key_padding_mask=padding_mask)
        keep = (~padding_mask).unsqueeze(-1).to(h.dtype)
        return self.head((h * keep).sum(1) / keep.sum(1))


def ts_transformer_case():
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[1, 9:] = True
    axes = {0: "batch", 1: "steps"}
    return dict(model=TimeSeriesTransformer(), inputs={"x": torch.randn(2, 12, 6), "padding_mask": mask}, outputs=["logits"], opset=14,
                dynamic={"x": axes, "padding_mask": axes, "logits": {0: "batch"}},
                target=lambda out: torch.tensor([1, 3]),
                loss=lambda out, y: F.cross_entropy(out[0], y))


# ---------------------------------------------------------------- TCN (locuslab/TCN, TCN/tcn.py)
class Chomp1d(nn.Module):
    def __init__(self, chomp_size):
        super().__init__()
        self.chomp_size = chomp_size

    def forward(self, x):
        return x[:, :, : -self.chomp_size].contiguous()


class TemporalBlock(nn.Module):
    def __init__(self, n_inputs, n_outputs, kernel_size, stride, dilation, padding, dropout=0.2):
        super().__init__()
        self.conv1 = weight_norm(nn.Conv1d(n_inputs, n_outputs, kernel_size, stride=stride, padding=padding, dilation=dilation))
        self.chomp1, self.relu1, self.dropout1 = Chomp1d(padding), nn.ReLU(), nn.Dropout(dropout)
        self.conv2 = weight_norm(nn.Conv1d(n_outputs, n_outputs, kernel_size, stride=stride, padding=padding, dilation=dilation))
        self.chomp2, self.relu2, self.dropout2 = Chomp1d(padding), nn.ReLU(), nn.Dropout(dropout)
        self.net = nn.Sequential(self.conv1, self.chomp1, self.relu1, self.dropout1, self.conv2, self.chomp2, self.relu2, self.dropout2)
        self.downsample = nn.Conv1d(n_inputs, n_outputs, 1) if n_inputs != n_outputs else None
        self.relu = nn.ReLU()
        self.conv1.weight_v.data.normal_(0, 0.01)  # locuslab's init_weights (weight_g stays the norm at wrap time)
        self.conv2.weight_v.data.normal_(0, 0.01)
        if self.downsample is not None:
            self.downsample.weight.data.normal_(0, 0.01)

    def forward(self, x):
        out = self.net(x)
        res = x if self.downsample is None else self.downsample(x)
        return self.relu(out + res)


class TCN(nn.Module):
    def __init__(self, inputs=3, channels=(16, 16, 24), kernel_size=3, classes=4):
        super().__init__()
        layers = []
        for i, c in enumerate(channels):
            d = 2 ** i
            layers.append(TemporalBlock(inputs if i == 0 else channels[i - 1], c, kernel_size, 1, d, (kernel_size - 1) * d))
        self.network = nn.Sequential(*layers)
        self.linear = nn.Linear(channels[-1], classes)

    def forward(self, x):
        return self.linear(self.network(x)[:, :, -1])


def tcn_case():
    return dict(model=TCN(), inputs={"x": torch.randn(2, 3, 32)}, outputs=["logits"], opset=13,
                dynamic={"x": {0: "batch", 2: "steps"}, "logits": {0: "batch"}},
                target=lambda out: torch.tensor([0, 2]),
                loss=lambda out, y: F.cross_entropy(out[0], y))


# ---------------------------------------------------------------- HiFi-GAN V1 generator (jik876/hifi-gan, models.py)
LRELU_SLOPE = 0.1


def get_padding(kernel_size, dilation=1):
    return int((kernel_size * dilation - dilation) / 2)


def init_weights(m, mean=0.0, std=0.01):
    if "Conv" in m.__class__.__name__:
        m.weight.data.normal_(mean, std)


class ResBlock1(nn.Module):
    def __init__(self, channels, kernel_size=3, dilation=(1, 3, 5)):
        super().__init__()
        self.convs1 = nn.ModuleList([weight_norm(nn.Conv1d(channels, channels, kernel_size, 1, dilation=d, padding=get_padding(kernel_size, d))) for d in dilation])
        self.convs1.apply(init_weights)
        self.convs2 = nn.ModuleList([weight_norm(nn.Conv1d(channels, channels, kernel_size, 1, dilation=1, padding=get_padding(kernel_size, 1))) for _ in dilation])
        self.convs2.apply(init_weights)

    def forward(self, x):
        for c1, c2 in zip(self.convs1, self.convs2):
            xt = F.leaky_relu(x, LRELU_SLOPE)
            xt = c1(xt)
            xt = F.leaky_relu(xt, LRELU_SLOPE)
            xt = c2(xt)
            x = xt + x
        return x


class Generator(nn.Module):
    def __init__(self, mels=8, initial=32, rates=(4, 4), kernels=(8, 8), rb_kernels=(3, 7), rb_dilations=((1, 3, 5), (1, 3, 5))):
        super().__init__()
        self.num_kernels, self.num_upsamples = len(rb_kernels), len(rates)
        self.conv_pre = weight_norm(nn.Conv1d(mels, initial, 7, 1, padding=3))
        self.ups = nn.ModuleList()
        for i, (u, k) in enumerate(zip(rates, kernels)):
            self.ups.append(weight_norm(nn.ConvTranspose1d(initial // (2 ** i), initial // (2 ** (i + 1)), k, u, padding=(k - u) // 2)))
        self.resblocks = nn.ModuleList()
        for i in range(len(self.ups)):
            ch = initial // (2 ** (i + 1))
            for k, d in zip(rb_kernels, rb_dilations):
                self.resblocks.append(ResBlock1(ch, k, d))
        self.conv_post = weight_norm(nn.Conv1d(ch, 1, 7, 1, padding=3))
        # as jik876's code does; on a weight-normed conv this writes the computed weight, which the
        # next forward recomputes from g and v, so the default init stands
        self.ups.apply(init_weights)
        self.conv_post.apply(init_weights)
        # varied scales, kept small enough that the tanh does not saturate (12 residual blocks)
        for m in self.modules():
            if hasattr(m, "weight_g"):
                m.weight_g.data.mul_(1.4 * (1 + 0.2 * torch.rand_like(m.weight_g)))

    def forward(self, mel):
        x = self.conv_pre(mel)
        for i in range(self.num_upsamples):
            x = F.leaky_relu(x, LRELU_SLOPE)
            x = self.ups[i](x)
            xs = None
            for j in range(self.num_kernels):
                r = self.resblocks[i * self.num_kernels + j](x)
                xs = r if xs is None else xs + r
            x = xs / self.num_kernels
        x = F.leaky_relu(x)
        return torch.tanh(self.conv_post(x))


def hifigan_case():
    return dict(model=Generator(), inputs={"mel": torch.randn(2, 8, 10)}, outputs=["waveform"], opset=13,
                dynamic={"mel": {0: "batch", 2: "frames"}, "waveform": {0: "batch", 2: "samples"}},
                target=lambda out: 0.5 * torch.randn_like(out[0]),
                loss=lambda out, y: F.l1_loss(out[0], y))


# ---------------------------------------------------------------- a bidirectional GRU tagger
class GRUTagger(nn.Module):
    def __init__(self, vocab=40, d=16, hidden=12, tags=7):
        super().__init__()
        self.embed = nn.Embedding(vocab, d, padding_idx=0)
        self.gru = nn.GRU(d, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.norm = nn.LayerNorm(2 * hidden)
        self.out = nn.Linear(2 * hidden, tags)

    def forward(self, input_ids):
        h, _ = self.gru(self.embed(input_ids))
        return self.out(self.norm(h))


def _gates_zrn(t):
    """PyTorch stacks a GRU's gates r, z, n; ONNX's GRU takes z, r, h."""
    h = t.shape[0] // 3
    return torch.cat([t[h:2 * h], t[:h], t[2 * h:]])


def _gru_folds(layer):
    """The GRU's W, R and B as torch.onnx folds them (both directions stacked, gates reordered, the
    input and hidden biases concatenated), applied to values or to gradients alike."""
    def per_direction(p, f):
        return torch.stack([f(p, f"l{layer}"), f(p, f"l{layer}_reverse")])
    return [
        lambda p: per_direction(p, lambda q, s: _gates_zrn(q[f"gru.weight_ih_{s}"])),
        lambda p: per_direction(p, lambda q, s: _gates_zrn(q[f"gru.weight_hh_{s}"])),
        lambda p: per_direction(p, lambda q, s: torch.cat([_gates_zrn(q[f"gru.bias_ih_{s}"]), _gates_zrn(q[f"gru.bias_hh_{s}"])])),
    ]


def gru_tagger_case():
    ids = torch.randint(1, 40, (2, 9))
    ids[1, 7:] = 0
    axes = {0: "batch", 1: "tokens"}
    return dict(model=GRUTagger(), inputs={"input_ids": ids}, outputs=["logits"], opset=13,
                dynamic={"input_ids": axes, "logits": axes},
                target=lambda out: torch.randint(0, 7, out[0].shape[:2]),
                loss=lambda out, y: F.cross_entropy(out[0].transpose(1, 2), y),
                derived=_gru_folds(0) + _gru_folds(1))


# ---------------------------------------------------------------- an LSTM text classifier on packed sequences
def _gates_iofc(t):
    """PyTorch stacks an LSTM's gates i, f, g, o; ONNX's LSTM takes i, o, f, c."""
    h = t.shape[0] // 4
    return torch.cat([t[:h], t[3 * h:], t[h:2 * h], t[2 * h:3 * h]])


class PackedLSTMClassifier(nn.Module):
    """The usual text classifier on variable-length batches: pack_padded_sequence (unsorted
    lengths), a bidirectional nn.LSTM, the two final hidden states concatenated, a Linear."""

    def __init__(self, vocab=50, d=12, hidden=10, classes=3):
        super().__init__()
        self.embed = nn.Embedding(vocab, d, padding_idx=0)
        self.lstm = nn.LSTM(d, hidden, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, classes)

    def forward(self, input_ids, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(input_ids), lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        return self.fc(torch.cat([h[-2], h[-1]], 1))


def lstm_packed_case():
    ids = torch.randint(1, 50, (3, 8))
    lengths = torch.tensor([5, 8, 2])
    for b, n in enumerate(lengths.tolist()):
        ids[b, n:] = 0
    per_direction = lambda key: (lambda p: torch.stack([key(p, "l0"), key(p, "l0_reverse")]))
    return dict(model=PackedLSTMClassifier(), inputs={"input_ids": ids, "lengths": lengths}, outputs=["logits"], opset=13,
                dynamic={"input_ids": {0: "batch", 1: "tokens"}, "lengths": {0: "batch"}, "logits": {0: "batch"}},
                target=lambda out: torch.tensor([0, 2, 1]),
                loss=lambda out, y: F.cross_entropy(out[0], y),
                derived=[per_direction(lambda p, s: _gates_iofc(p[f"lstm.weight_ih_{s}"])),
                         per_direction(lambda p, s: _gates_iofc(p[f"lstm.weight_hh_{s}"])),
                         per_direction(lambda p, s: torch.cat([_gates_iofc(p[f"lstm.bias_ih_{s}"]), _gates_iofc(p[f"lstm.bias_hh_{s}"])]))])


# ---------------------------------------------------------------- a DLRM-style click model on EmbeddingBags
class BagCTR(nn.Module):
    """facebookresearch/dlrm's layout, width-reduced: dense features through a bottom MLP, three
    sparse features pooled by nn.EmbeddingBag (sum, mean, and max, which DLRM does not use but
    users do) over `offsets`, pairwise dot interactions, a top MLP to one click logit."""

    def __init__(self, dense=4, d=6, rows=(30, 20)):
        super().__init__()
        self.bot = nn.Sequential(nn.Linear(dense, 8), nn.ReLU(), nn.Linear(8, d), nn.ReLU())
        self.emb_sum = nn.EmbeddingBag(rows[0], d, mode="sum")
        self.emb_mean = nn.EmbeddingBag(rows[1], d, mode="mean")
        self.emb_max = nn.EmbeddingBag(rows[1], d, mode="max")
        self.top = nn.Sequential(nn.Linear(d + 6, 8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, dense, ids_a, offsets_a, ids_b, offsets_b, ids_c, offsets_c):
        x = self.bot(dense)
        a, b, c = self.emb_sum(ids_a, offsets_a), self.emb_mean(ids_b, offsets_b), self.emb_max(ids_c, offsets_c)
        t = torch.stack([x, a, b, c], 1)  # [N, 4, d]
        z = torch.bmm(t, t.transpose(1, 2))  # the pairwise dots
        li, lj = torch.tril_indices(4, 4, offset=-1)
        return self.top(torch.cat([x, z[:, li, lj]], 1))


def embedding_bag_case():
    ids_a, offsets_a = torch.tensor([3, 7, 7, 1, 29, 4, 5]), torch.tensor([0, 3, 4])  # bags of 3, 1 and 3
    ids_b, offsets_b = torch.tensor([2, 19, 0, 8, 8]), torch.tensor([0, 1, 1])  # bags of 1, 0 (empty: its mean is 0) and 4
    ids_c, offsets_c = torch.tensor([5, 11, 3, 17, 6, 2]), torch.tensor([0, 2, 3])  # bags of 2, 1 and 3
    return dict(model=BagCTR(), inputs={"dense": torch.randn(3, 4), "ids_a": ids_a, "offsets_a": offsets_a, "ids_b": ids_b, "offsets_b": offsets_b, "ids_c": ids_c, "offsets_c": offsets_c},
                outputs=["logit"], opset=13,
                dynamic={"dense": {0: "batch"}, "ids_a": {0: "ids_a"}, "offsets_a": {0: "batch"}, "ids_b": {0: "ids_b"}, "offsets_b": {0: "batch"},
                         "ids_c": {0: "ids_c"}, "offsets_c": {0: "batch"}, "logit": {0: "batch"}},
                target=lambda out: torch.tensor([[1.0], [0.0], [1.0]]),
                loss=lambda out, y: F.binary_cross_entropy_with_logits(out[0], y))


# ---------------------------------------------------------------- nn.Transformer for translation
class Translator(nn.Module):
    """PyTorch's translation tutorial layout: token embeddings scaled by √d plus a sinusoidal
    table (a buffer), nn.Transformer (post-norm, 2 + 2 layers, ReLU) with the causal target mask
    from generate_square_subsequent_mask (0 / −inf, built in the forward pass) and key-padding
    masks from the pad id, a generator Linear to the target vocabulary."""

    def __init__(self, src_vocab=40, tgt_vocab=36, d=32, heads=4, max_len=32):
        super().__init__()
        self.src_emb, self.tgt_emb = nn.Embedding(src_vocab, d), nn.Embedding(tgt_vocab, d)
        pos = torch.arange(max_len).unsqueeze(1) * torch.exp(-torch.arange(0, d, 2) * (9.210340371976184 / d))
        pe = torch.zeros(max_len, d)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos), torch.cos(pos)
        self.register_buffer("pe", pe)
        self.transformer = nn.Transformer(d, heads, 2, 2, 64, dropout=0.1, batch_first=True)
        self.generator = nn.Linear(d, tgt_vocab)
        self.d = d

    def forward(self, src, tgt):
        s = self.src_emb(src) * self.d ** 0.5 + self.pe[: src.shape[1]]
        t = self.tgt_emb(tgt) * self.d ** 0.5 + self.pe[: tgt.shape[1]]
        mask = self.transformer.generate_square_subsequent_mask(tgt.shape[1])
        out = self.transformer(s, t, tgt_mask=mask, src_key_padding_mask=src == 1, tgt_key_padding_mask=tgt == 1, memory_key_padding_mask=src == 1)
        return self.generator(out)


def translator_case():
    src = torch.randint(2, 40, (2, 9))
    src[1, 6:] = 1  # pad id 1
    tgt = torch.randint(2, 36, (2, 7))
    tgt[0, 5:] = 1
    labels = torch.randint(2, 36, (2, 7))
    labels[0, 5:] = -100
    axes_s, axes_t = {0: "batch", 1: "src"}, {0: "batch", 1: "tgt"}
    return dict(model=Translator(), inputs={"src": src, "tgt": tgt}, outputs=["logits"], opset=14,
                dynamic={"src": axes_s, "tgt": axes_t, "logits": axes_t},
                target=lambda out: labels,
                loss=lambda out, y: F.cross_entropy(out[0].transpose(1, 2), y))


CASES = {"translator": translator_case, "ts_transformer": ts_transformer_case, "tcn": tcn_case, "hifigan": hifigan_case, "gru_tagger": gru_tagger_case, "lstm_packed": lstm_packed_case,
         "embedding_bag": embedding_bag_case}
