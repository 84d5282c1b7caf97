"""Text-to-speech families for bench/popular_architectures.py, written after their reference code
(width-reduced, the same module structure and ops) and exported with torch.onnx:

- fastspeech2: ming024/FastSpeech2's layout: the phoneme embedding (padding_idx 0) plus a
  sinusoidal position table (a buffer), an encoder of FFT blocks (MultiHeadAttention with
  w_qs/w_ks/w_vs and fc, heads folded into the batch by repeat, the key-padding mask filled with
  -inf, post-LayerNorm; PositionwiseFeedForward of two Conv1d with kernels 9 and 1), the variance
  adaptor's duration predictor (Conv1d+ReLU+LayerNorm twice, Linear -> log duration, masked) and
  the length regulator driven by the ground-truth durations fed as an input (as in training),
  then a decoder of FFT blocks on the mel frames and mel_linear to 8 mel bins; pitch and energy
  are left out. ming024's LengthRegulator repeats each phoneme's vector `duration` times by a
  Python loop (`.item()`, `vec.expand`, `torch.cat`, pad), which tracing freezes to the example's
  durations; exported FastSpeech2s regulate by index instead, as here: the cumulative durations,
  each mel frame's phoneme = how many cumulative ends lie at or before it (arange(total) against
  cumsum), a Gather, and the frames past a row's total zeroed. The mel length is the batch max of
  the summed durations, so the output's shape depends on the VALUES of duration_target (Range
  on a ReduceMax of a CumSum). Inputs texts [2, 6] and duration_target [2, 6] (values 0-3, row 2
  padded; totals 9 and 7); opset 14, batch and text length dynamic, mel length dynamic on the
  outputs. Outputs mel [N, frames, 8] and log_duration [N, T] (the predictor's, kept so its
  parameters stay in the graph); loss: MSE of the mel to a target (the duration term left out,
  so PyTorch gives the predictor no gradient and it is not compared).
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def get_sinusoid_encoding_table(n_position, d_hid):
    """ming024's transformer/Models.py table."""
    pos = np.arange(n_position)[:, None] / np.power(10000, 2 * (np.arange(d_hid) // 2) / d_hid)[None, :]
    pos[:, 0::2], pos[:, 1::2] = np.sin(pos[:, 0::2]), np.cos(pos[:, 1::2])
    return torch.FloatTensor(pos)


class ScaledDotProductAttention(nn.Module):
    def __init__(self, temperature):
        super().__init__()
        self.temperature = temperature
        self.softmax = nn.Softmax(dim=2)

    def forward(self, q, k, v, mask=None):
        attn = torch.bmm(q, k.transpose(1, 2)) / self.temperature
        if mask is not None:
            attn = attn.masked_fill(mask, -np.inf)
        attn = self.softmax(attn)
        return torch.bmm(attn, v), attn


class MultiHeadAttention(nn.Module):
    def __init__(self, n_head, d_model, d_k, d_v):
        super().__init__()
        self.n_head, self.d_k, self.d_v = n_head, d_k, d_v
        self.w_qs = nn.Linear(d_model, n_head * d_k)
        self.w_ks = nn.Linear(d_model, n_head * d_k)
        self.w_vs = nn.Linear(d_model, n_head * d_v)
        self.attention = ScaledDotProductAttention(temperature=np.power(d_k, 0.5))
        self.layer_norm = nn.LayerNorm(d_model)
        self.fc = nn.Linear(n_head * d_v, d_model)

    def forward(self, q, k, v, mask=None):
        d_k, d_v, n_head = self.d_k, self.d_v, self.n_head
        sz_b, len_q, _ = q.size()
        sz_b, len_k, _ = k.size()
        sz_b, len_v, _ = v.size()
        residual = q
        q = self.w_qs(q).view(sz_b, len_q, n_head, d_k)
        k = self.w_ks(k).view(sz_b, len_k, n_head, d_k)
        v = self.w_vs(v).view(sz_b, len_v, n_head, d_v)
        q = q.permute(2, 0, 1, 3).contiguous().view(-1, len_q, d_k)
        k = k.permute(2, 0, 1, 3).contiguous().view(-1, len_k, d_k)
        v = v.permute(2, 0, 1, 3).contiguous().view(-1, len_v, d_v)
        mask = mask.repeat(n_head, 1, 1)
        output, attn = self.attention(q, k, v, mask=mask)
        output = output.view(n_head, sz_b, len_q, d_v)
        output = output.permute(1, 2, 0, 3).contiguous().view(sz_b, len_q, -1)
        output = self.layer_norm(self.fc(output) + residual)
        return output, attn


class PositionwiseFeedForward(nn.Module):
    def __init__(self, d_in, d_hid, kernel_size):
        super().__init__()
        self.w_1 = nn.Conv1d(d_in, d_hid, kernel_size=kernel_size[0], padding=(kernel_size[0] - 1) // 2)
        self.w_2 = nn.Conv1d(d_hid, d_in, kernel_size=kernel_size[1], padding=(kernel_size[1] - 1) // 2)
        self.layer_norm = nn.LayerNorm(d_in)

    def forward(self, x):
        residual = x
        output = self.w_2(F.relu(self.w_1(x.transpose(1, 2)))).transpose(1, 2)
        return self.layer_norm(output + residual)


class FFTBlock(nn.Module):
    def __init__(self, d_model, n_head, d_k, d_v, d_inner, kernel_size):
        super().__init__()
        self.slf_attn = MultiHeadAttention(n_head, d_model, d_k, d_v)
        self.pos_ffn = PositionwiseFeedForward(d_model, d_inner, kernel_size)

    def forward(self, enc_input, mask=None, slf_attn_mask=None):
        enc_output, _ = self.slf_attn(enc_input, enc_input, enc_input, mask=slf_attn_mask)
        enc_output = enc_output.masked_fill(mask.unsqueeze(-1), 0)
        enc_output = self.pos_ffn(enc_output)
        return enc_output.masked_fill(mask.unsqueeze(-1), 0)


class TTSConfig:
    n_src_vocab, d_model, n_head, d_inner, kernel_size, n_layers, n_position = 20, 16, 2, 32, (9, 1), 1, 64
    filter_size, predictor_kernel, n_mel_channels = 16, 3, 8


class Encoder(nn.Module):
    def __init__(self, c=TTSConfig):
        super().__init__()
        d_k = c.d_model // c.n_head
        self.src_word_emb = nn.Embedding(c.n_src_vocab, c.d_model, padding_idx=0)
        self.register_buffer("position_enc", get_sinusoid_encoding_table(c.n_position, c.d_model).unsqueeze(0))
        self.layer_stack = nn.ModuleList([FFTBlock(c.d_model, c.n_head, d_k, d_k, c.d_inner, c.kernel_size) for _ in range(c.n_layers)])

    def forward(self, src_seq, mask):
        batch_size, max_len = src_seq.shape[0], src_seq.shape[1]
        slf_attn_mask = mask.unsqueeze(1).expand(-1, max_len, -1)
        enc_output = self.src_word_emb(src_seq) + self.position_enc[:, :max_len, :].expand(batch_size, -1, -1)
        for enc_layer in self.layer_stack:
            enc_output = enc_layer(enc_output, mask=mask, slf_attn_mask=slf_attn_mask)
        return enc_output


class Decoder(nn.Module):
    def __init__(self, c=TTSConfig):
        super().__init__()
        d_k = c.d_model // c.n_head
        self.register_buffer("position_enc", get_sinusoid_encoding_table(c.n_position, c.d_model).unsqueeze(0))
        self.layer_stack = nn.ModuleList([FFTBlock(c.d_model, c.n_head, d_k, d_k, c.d_inner, c.kernel_size) for _ in range(c.n_layers)])

    def forward(self, enc_seq, mask):
        batch_size, max_len = enc_seq.shape[0], enc_seq.shape[1]
        dec_output = enc_seq + self.position_enc[:, :max_len, :].expand(batch_size, -1, -1)
        slf_attn_mask = mask.unsqueeze(1).expand(-1, max_len, -1)
        for dec_layer in self.layer_stack:
            dec_output = dec_layer(dec_output, mask=mask, slf_attn_mask=slf_attn_mask)
        return dec_output, mask


class Conv(nn.Module):
    """ming024's model/modules.py Conv: a Conv1d on [N, T, C]."""
    def __init__(self, in_channels, out_channels, kernel_size=1, padding=0):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size=kernel_size, padding=padding)

    def forward(self, x):
        return self.conv(x.contiguous().transpose(1, 2)).contiguous().transpose(1, 2)


class VariancePredictor(nn.Module):
    def __init__(self, c=TTSConfig):
        super().__init__()
        k = c.predictor_kernel
        self.conv_layer = nn.Sequential()
        self.conv_layer.add_module("conv1d_1", Conv(c.d_model, c.filter_size, kernel_size=k, padding=(k - 1) // 2))
        self.conv_layer.add_module("relu_1", nn.ReLU())
        self.conv_layer.add_module("layer_norm_1", nn.LayerNorm(c.filter_size))
        self.conv_layer.add_module("conv1d_2", Conv(c.filter_size, c.filter_size, kernel_size=k, padding=1))
        self.conv_layer.add_module("relu_2", nn.ReLU())
        self.conv_layer.add_module("layer_norm_2", nn.LayerNorm(c.filter_size))
        self.linear_layer = nn.Linear(c.filter_size, 1)

    def forward(self, encoder_output, mask):
        out = self.linear_layer(self.conv_layer(encoder_output)).squeeze(-1)
        return out.masked_fill(mask, 0.0)


class LengthRegulator(nn.Module):
    """Each phoneme's vector repeated duration times, rows padded with zeros to the batch's most
    frames: by index (what exports), not ming024's per-phoneme expand/cat loop (which tracing
    freezes to the example's durations)."""
    def forward(self, x, duration):
        cum = torch.cumsum(duration, dim=1)  # [N, T]: each phoneme's end frame
        mel_len = cum[:, -1]  # [N]
        pos = torch.arange(mel_len.max())  # [M], M depends on the durations' values
        idx = (cum.unsqueeze(1) <= pos.view(1, -1, 1)).long().sum(-1)  # [N, M]: the phoneme of each frame
        idx = torch.clamp(idx, max=x.shape[1] - 1)
        out = torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[2]))
        mel_mask = pos.unsqueeze(0) >= mel_len.unsqueeze(1)  # [N, M]: padding frames
        return out.masked_fill(mel_mask.unsqueeze(-1), 0.0), mel_len, mel_mask


class VarianceAdaptor(nn.Module):
    def __init__(self, c=TTSConfig):
        super().__init__()
        self.duration_predictor = VariancePredictor(c)
        self.length_regulator = LengthRegulator()

    def forward(self, x, src_mask, duration_target):
        log_duration_prediction = self.duration_predictor(x, src_mask)
        x, mel_len, mel_mask = self.length_regulator(x, duration_target)
        return x, log_duration_prediction, mel_len, mel_mask


class FastSpeech2(nn.Module):
    def __init__(self, c=TTSConfig):
        super().__init__()
        self.encoder = Encoder(c)
        self.variance_adaptor = VarianceAdaptor(c)
        self.decoder = Decoder(c)
        self.mel_linear = nn.Linear(c.d_model, c.n_mel_channels)
        for m in self.modules():  # trained-looking: std 0.2 weights, random biases
            if isinstance(m, (nn.Linear, nn.Conv1d)):
                m.weight.data.normal_(0.0, 0.2)
                m.bias.data.normal_(0.0, 0.05)
            elif isinstance(m, nn.Embedding):
                m.weight.data.normal_(0.0, 0.5)
                m.weight.data[0].zero_()

    def forward(self, texts, duration_target):
        src_masks = texts == 0  # ming024 builds it from src_lens; padding id 0 here
        output = self.encoder(texts, src_masks)
        output, log_d_predictions, mel_lens, mel_masks = self.variance_adaptor(output, src_masks, duration_target)
        output, mel_masks = self.decoder(output, mel_masks)
        return self.mel_linear(output), log_d_predictions


def fastspeech2_case():
    texts = torch.randint(1, 20, (2, 6))
    texts[1, 4:] = 0  # row 2: four phonemes, then padding
    durations = torch.tensor([[1, 2, 3, 0, 2, 1], [2, 1, 3, 1, 0, 0]])  # totals 9 and 7: mel length 9, row 2's last 2 frames padding
    axes = {0: "batch", 1: "text"}
    return dict(model=FastSpeech2(), inputs={"texts": texts, "duration_target": durations}, outputs=["mel", "log_duration"], opset=14,
                dynamic={"texts": axes, "duration_target": axes, "mel": {0: "batch", 1: "frames"}, "log_duration": axes},
                target=lambda out: torch.randn_like(out[0]),
                loss=lambda out, y: F.mse_loss(out[0], y))


CASES = {"fastspeech2": fastspeech2_case}
