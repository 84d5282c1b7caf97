"""Speech families for bench/popular_architectures.py, written after their reference code
(width-reduced, the same module structure and ops) and exported as their tools export them:

- whisper: transformers' WhisperForConditionalGeneration in ONE graph (as the T5 case): the
  encoder's two Conv1d (kernel 3, the second stride 2) with GELU on log-mel input_features
  [N, 16 mel bins, 40 frames], the sinusoidal embed_positions (an nn.Embedding frozen with
  requires_grad_(False) and filled with Whisper's sinusoids, added whole as
  `self.embed_positions.weight`), pre-LN layers (WhisperAttention: q_proj scaled by head_dim^-0.5,
  k_proj without bias, bmm, the mask added before softmax; fc1, exact GELU, fc2), the final
  LayerNorm; the decoder's token embedding plus learned positions sliced to the length
  (WhisperPositionalEmbedding), the causal mask as transformers' _make_causal_mask builds it
  (finfo.min, masked_fill, expand), self-attention, cross-attention on the encoder output, the
  final LayerNorm, and proj_out tied to the token embedding (one Parameter). d 32, 2 heads,
  2 + 2 layers, ffn 128, vocabulary 60, 20 source / 16 target positions; opset 14, batch and
  decoder sequence dynamic (frames fixed, as Whisper's 3000); loss: token cross-entropy on the
  decoder ids shifted left (the last label -100, ignored). Weights: PyTorch's default init, the
  token embedding and decoder positions with std 0.2 (transformers' 0.02 leaves attention uniform).
  torch.onnx keeps the frozen sinusoid table as an initializer (a Parameter, frozen or not, is
  exported as one): PyTorch gives it no gradient, refit's 'all' trains it (in ONNX it cannot be
  told from a parameter). The tie: the Gather reads the embedding, constant folding writes its
  transpose for proj_out's MatMul, and loadModel re-ties the transposed copy (one parameter).
  PyTorch's reference writes GELU out (`gelu` below; the export keeps F.gelu): Debian's torch
  1.13.1 gets F.gelu's float32 backward wrong when the incoming gradient is not contiguous, as it
  is for the encoder's second GELU (a permute follows), which made the convolutions' gradients
  garbage (1e10 to 1e34, different each run).
- silero_vad: Silero VAD (snakers4/silero-vad) with the v4 ONNX interface (input [N, 512] at
  16 kHz, h and c [2, N, H] in, output [N, 1], hn, cn out) around the v5 body: the STFT as a
  Conv1d of a fixed, Hann-windowed Fourier basis (a buffer) on the audio reflect-padded 64 samples
  on the right, the magnitude sqrt(re^2 + im^2), four SileroVadBlocks (Conv1d kernel 3 + ReLU, the
  middle two stride 2), a two-layer LSTM over the frames with the state in and out (v4's; v5 uses
  one LSTMCell on its single frame), the decoder (ReLU, Conv1d 1x1, Sigmoid) and the mean over
  time. Width-reduced: filter 128 / hop 64 (65 bins, 8 frames), channels 32-16-16-16, hidden 16.
  Opset 13, batch dynamic; loss: binary cross-entropy of the probability to random 0/1 labels.
  The real ONNX also takes `sr` and branches on it with an If (16 kHz vs 8 kHz models):
  silero_vad_if_case (not in CASES) is that export, scripted; the case is the 16 kHz path alone.
  torch.onnx folds each LSTM layer's weights into ONNX's W [1, 4H, in], R [1, 4H, H] and
  B [1, 8H] with the gates reordered (PyTorch i f g o, ONNX i o f c): `derived` folds PyTorch's
  gradients the same way. The Fourier basis is an initializer too: refit's 'all' trains it.
  The released model has no normalization layer (its blocks are plain `reparam_conv`
  convolutions, re-parameterized before release), so norm-affine has nothing to train.
- quartznet: NVIDIA NeMo's QuartzNet (ConvASREncoder of JasperBlocks: time-channel separable
  convolutions, i.e. a depthwise Conv1d of a long kernel, 33 to 87 taps, then a pointwise Conv1d
  and BatchNorm1d; residual 1×1 + BN; ReLU, dropout), width-reduced, BatchNorm statistics measured,
  the 1×1 decoder giving frame logits [N, frames, vocab]. Input `audio_signal` [2, 16 features, 60
  frames] (30 after the stride-2 prolog); opset 13, batch and frames dynamic; loss: CTC over every
  frame (blank 0; labels padded with -100, clamped for PyTorch's call).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from arch_vision import calibrated


# ---------------------------------------------------------------- Whisper (transformers' modeling_whisper)
class WhisperConfig:
    vocab_size, num_mel_bins, d_model, heads, ffn = 60, 16, 32, 2, 128
    encoder_layers, decoder_layers, max_source_positions, max_target_positions = 2, 2, 20, 16
    pad_token_id = 0


def gelu(x):
    """F.gelu (exact) in the export; in PyTorch's own step the same function written out (see the
    module's docstring: Debian's torch 1.13.1 float32 GELU backward and non-contiguous gradients)."""
    if torch.onnx.is_in_onnx_export():
        return F.gelu(x)
    return x * 0.5 * (1.0 + torch.erf(x * 0.7071067811865476))


def sinusoids(length, channels, max_timescale=10000):
    """Whisper's sinusoidal position table: sin of the first half of the channels, cos of the second."""
    log_timescale_increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_timescale_increment * torch.arange(channels // 2))
    scaled_time = torch.arange(length)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)


class WhisperAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.embed_dim, self.num_heads, self.head_dim = d, heads, d // heads
        self.scaling = self.head_dim ** -0.5
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d)
        self.q_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def _shape(self, tensor, seq_len, bsz):
        return tensor.view(bsz, seq_len, self.num_heads, self.head_dim).transpose(1, 2).contiguous()

    def forward(self, hidden_states, key_value_states=None, attention_mask=None):
        bsz, tgt_len, _ = hidden_states.size()
        query_states = self.q_proj(hidden_states) * self.scaling
        kv = hidden_states if key_value_states is None else key_value_states
        key_states = self._shape(self.k_proj(kv), -1, bsz)
        value_states = self._shape(self.v_proj(kv), -1, bsz)
        proj_shape = (bsz * self.num_heads, -1, self.head_dim)
        query_states = self._shape(query_states, tgt_len, bsz).view(*proj_shape)
        key_states = key_states.reshape(*proj_shape)
        value_states = value_states.reshape(*proj_shape)
        src_len = key_states.size(1)
        attn_weights = torch.bmm(query_states, key_states.transpose(1, 2))
        if attention_mask is not None:
            attn_weights = attn_weights.view(bsz, self.num_heads, tgt_len, src_len) + attention_mask
            attn_weights = attn_weights.view(bsz * self.num_heads, tgt_len, src_len)
        attn_weights = F.softmax(attn_weights, dim=-1)
        attn_output = torch.bmm(attn_weights, value_states)
        attn_output = attn_output.view(bsz, self.num_heads, tgt_len, self.head_dim).transpose(1, 2)
        attn_output = attn_output.reshape(bsz, tgt_len, self.embed_dim)
        return self.out_proj(attn_output)


class WhisperEncoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = WhisperAttention(c.d_model, c.heads)
        self.self_attn_layer_norm = nn.LayerNorm(c.d_model)
        self.fc1, self.fc2 = nn.Linear(c.d_model, c.ffn), nn.Linear(c.ffn, c.d_model)
        self.final_layer_norm = nn.LayerNorm(c.d_model)

    def forward(self, hidden_states):
        hidden_states = hidden_states + self.self_attn(self.self_attn_layer_norm(hidden_states))
        return hidden_states + self.fc2(gelu(self.fc1(self.final_layer_norm(hidden_states))))


class WhisperDecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = WhisperAttention(c.d_model, c.heads)
        self.self_attn_layer_norm = nn.LayerNorm(c.d_model)
        self.encoder_attn = WhisperAttention(c.d_model, c.heads)
        self.encoder_attn_layer_norm = nn.LayerNorm(c.d_model)
        self.fc1, self.fc2 = nn.Linear(c.d_model, c.ffn), nn.Linear(c.ffn, c.d_model)
        self.final_layer_norm = nn.LayerNorm(c.d_model)

    def forward(self, hidden_states, attention_mask, encoder_hidden_states):
        hidden_states = hidden_states + self.self_attn(self.self_attn_layer_norm(hidden_states), attention_mask=attention_mask)
        hidden_states = hidden_states + self.encoder_attn(self.encoder_attn_layer_norm(hidden_states), key_value_states=encoder_hidden_states)
        return hidden_states + self.fc2(gelu(self.fc1(self.final_layer_norm(hidden_states))))


class WhisperEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv1d(c.num_mel_bins, c.d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(c.d_model, c.d_model, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(c.max_source_positions, c.d_model)
        self.embed_positions.requires_grad_(False)
        with torch.no_grad():
            self.embed_positions.weight.copy_(sinusoids(c.max_source_positions, c.d_model))
        self.layers = nn.ModuleList(WhisperEncoderLayer(c) for _ in range(c.encoder_layers))
        self.layer_norm = nn.LayerNorm(c.d_model)

    def forward(self, input_features):
        inputs_embeds = gelu(self.conv1(input_features))
        inputs_embeds = gelu(self.conv2(inputs_embeds))
        inputs_embeds = inputs_embeds.permute(0, 2, 1)
        hidden_states = inputs_embeds + self.embed_positions.weight
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return self.layer_norm(hidden_states)


class WhisperPositionalEmbedding(nn.Embedding):
    def forward(self, input_ids, past_key_values_length=0):
        return self.weight[past_key_values_length: past_key_values_length + input_ids.shape[1]]


def make_causal_mask(input_ids_shape, dtype):
    """transformers' _make_causal_mask (no cache): finfo.min above the diagonal, expanded per batch."""
    bsz, tgt_len = input_ids_shape
    mask = torch.full((tgt_len, tgt_len), torch.tensor(torch.finfo(dtype).min))
    mask_cond = torch.arange(mask.size(-1))
    mask.masked_fill_(mask_cond < (mask_cond + 1).view(mask.size(-1), 1), 0)
    mask = mask.to(dtype)
    return mask[None, None, :, :].expand(bsz, 1, tgt_len, tgt_len)


class WhisperDecoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.d_model, c.pad_token_id)
        self.embed_positions = WhisperPositionalEmbedding(c.max_target_positions, c.d_model)
        self.layers = nn.ModuleList(WhisperDecoderLayer(c) for _ in range(c.decoder_layers))
        self.layer_norm = nn.LayerNorm(c.d_model)

    def forward(self, input_ids, encoder_hidden_states):
        inputs_embeds = self.embed_tokens(input_ids)
        attention_mask = make_causal_mask(input_ids.size(), inputs_embeds.dtype)
        hidden_states = inputs_embeds + self.embed_positions(input_ids)
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask, encoder_hidden_states)
        return self.layer_norm(hidden_states)


class WhisperModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.encoder, self.decoder = WhisperEncoder(c), WhisperDecoder(c)


class WhisperForConditionalGeneration(nn.Module):
    def __init__(self, c=WhisperConfig):
        super().__init__()
        self.model = WhisperModel(c)
        self.proj_out = nn.Linear(c.d_model, c.vocab_size, bias=False)
        with torch.no_grad():  # trained-looking scales: logits of order 1 through the tied projection
            self.model.decoder.embed_tokens.weight.normal_(0.0, 0.2)
            self.model.decoder.embed_positions.weight.normal_(0.0, 0.2)
        self.proj_out.weight = self.model.decoder.embed_tokens.weight  # tie_word_embeddings

    def forward(self, input_features, decoder_input_ids):
        encoder_hidden_states = self.model.encoder(input_features)
        return self.proj_out(self.model.decoder(decoder_input_ids, encoder_hidden_states))


def whisper_case():
    feats = torch.randn(2, 16, 40)
    dec = torch.randint(1, 60, (2, 7))
    dec[:, 0] = 59  # <|startoftranscript|>
    labels = torch.cat([dec[:, 1:], torch.full((2, 1), -100)], 1)  # the ids shifted left; the last position ignored
    return dict(model=WhisperForConditionalGeneration(), inputs={"input_features": feats, "decoder_input_ids": dec}, outputs=["logits"], opset=14,
                dynamic={"input_features": {0: "batch"}, "decoder_input_ids": {0: "batch", 1: "decoder_sequence"}, "logits": {0: "batch", 1: "decoder_sequence"}},
                target=lambda out: labels,
                loss=lambda out, y: F.cross_entropy(out[0].flatten(0, 1), y.flatten(), ignore_index=-100))


# ---------------------------------------------------------------- Silero VAD (snakers4/silero-vad)
class STFT(nn.Module):
    """The STFT as a strided Conv1d of a fixed Fourier basis (real rows, then imaginary rows)."""

    def __init__(self, filter_length=128, hop_length=64, pad_length=64):
        super().__init__()
        self.filter_length, self.hop_length = filter_length, hop_length
        self.padding = nn.ReflectionPad1d((0, pad_length))
        bins = filter_length // 2 + 1
        n, k = torch.arange(filter_length).float(), torch.arange(bins).float()[:, None]
        window = torch.hann_window(filter_length, periodic=True)
        angle = 2 * math.pi * k * n / filter_length
        basis = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window], 0)
        self.register_buffer("forward_basis_buffer", basis[:, None, :])  # [2 * bins, 1, filter_length]

    def forward(self, input_data):
        input_data = self.padding(input_data).unsqueeze(1)
        forward_transform = F.conv1d(input_data, self.forward_basis_buffer, stride=self.hop_length, padding=0)
        cutoff = int(self.filter_length / 2 + 1)
        real_part, imag_part = forward_transform[:, :cutoff, :], forward_transform[:, cutoff:, :]
        return torch.sqrt(real_part ** 2 + imag_part ** 2)


class SileroVadBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.se = nn.Identity()
        self.activation = nn.ReLU()
        self.reparam_conv = nn.Conv1d(cin, cout, kernel_size=3, stride=stride, padding=1)

    def forward(self, x):
        return self.activation(self.se(self.reparam_conv(x)))


class VADDecoderRNN(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.rnn = nn.LSTM(hidden, hidden, num_layers=2)
        self.decoder = nn.Sequential(nn.Dropout(0.1), nn.ReLU(), nn.Conv1d(hidden, 1, kernel_size=1), nn.Sigmoid())

    def forward(self, x, h, c):
        x, (hn, cn) = self.rnn(x.permute(2, 0, 1), (h, c))  # [frames, N, hidden]
        return self.decoder(x.permute(1, 2, 0)), hn, cn


class VADRNN(nn.Module):
    """One sample rate's model: STFT magnitude, the conv encoder, the LSTM decoder, the mean over time."""

    def __init__(self, filter_length=128, hop_length=64, bins_to=32, hidden=16):
        super().__init__()
        self.stft = STFT(filter_length, hop_length)
        bins = filter_length // 2 + 1
        self.encoder = nn.Sequential(SileroVadBlock(bins, bins_to), SileroVadBlock(bins_to, hidden, 2), SileroVadBlock(hidden, hidden, 2), SileroVadBlock(hidden, hidden))
        self.decoder = VADDecoderRNN(hidden)

    def forward(self, x, h, c):
        out, hn, cn = self.decoder(self.encoder(self.stft(x)), h, c)
        return out.squeeze(1).mean(dim=1).unsqueeze(1), hn, cn


def _silero_feeds(n=2, samples=512, hidden=16):
    return {"input": torch.randn(n, samples) * 0.1, "h": torch.randn(2, n, hidden) * 0.5, "c": torch.randn(2, n, hidden) * 0.5}


def _lstm_fold(prefix, layer, kind):
    """torch.onnx's LSTM weights for one layer: W or R [1, 4H, *] or B [1, 8H], gates reordered
    from PyTorch's (i, f, g, o) to ONNX's (i, o, f, c)."""
    def reorder(t):
        i, f, g, o = t.chunk(4, 0)
        return torch.cat([i, o, f, g], 0)

    def fold(P):
        if kind == "W":
            return reorder(P[f"{prefix}.weight_ih_l{layer}"])[None]
        if kind == "R":
            return reorder(P[f"{prefix}.weight_hh_l{layer}"])[None]
        return torch.cat([reorder(P[f"{prefix}.bias_ih_l{layer}"]), reorder(P[f"{prefix}.bias_hh_l{layer}"])], 0)[None]
    return fold


def silero_vad_case():
    folds = [_lstm_fold("decoder.rnn", l, k) for l in range(2) for k in "WRB"]
    return dict(model=VADRNN(), derived=folds, inputs=_silero_feeds(), outputs=["output", "hn", "cn"], opset=13,
                dynamic={"input": {0: "batch"}, "h": {1: "batch"}, "c": {1: "batch"}, "output": {0: "batch"}, "hn": {1: "batch"}, "cn": {1: "batch"}},
                target=lambda out: (torch.rand(out[0].shape[0], 1) > 0.5).float(),
                loss=lambda out, y: F.binary_cross_entropy(out[0], y))


class SileroVadWithRate(nn.Module):
    """The deployed file's top level: `sr` picks the 16 kHz or the 8 kHz model (an If in ONNX).
    Each rate's model is traced, the branch scripted around them."""

    def __init__(self):
        super().__init__()
        feeds, feeds8 = _silero_feeds(), _silero_feeds(samples=256)
        self._model = torch.jit.trace(VADRNN().eval(), tuple(feeds.values()))
        self._model_8k = torch.jit.trace(VADRNN(filter_length=64, hop_length=32).eval(), tuple(feeds8.values()))

    def forward(self, x, sr, h, c):
        if bool(sr == 16000):
            out, hn, cn = self._model(x, h, c)
        else:
            out, hn, cn = self._model_8k(x, h, c)
        return out, hn, cn


def silero_vad_if_case():
    """The export with `sr` and the If, as Silero's own files take it: refit trains it once `sr` is fixed (withFixedInputs)."""
    feeds = _silero_feeds()
    inputs = {"input": feeds["input"], "sr": torch.tensor(16000), "h": feeds["h"], "c": feeds["c"]}
    return dict(model=torch.jit.script(SileroVadWithRate()), inputs=inputs, outputs=["output", "hn", "cn"], opset=13,
                dynamic={"input": {0: "batch", 1: "samples"}, "h": {1: "batch"}, "c": {1: "batch"}, "output": {0: "batch"}, "hn": {1: "batch"}, "cn": {1: "batch"}},
                target=lambda out: (torch.rand(out[0].shape[0], 1) > 0.5).float(),
                loss=lambda out, y: F.binary_cross_entropy(out[0], y))


# ---------------------------------------------------------------- QuartzNet (NVIDIA NeMo's ConvASREncoder / JasperBlock)
class SeparableConvBN(nn.Module):
    """NeMo's time-channel separable convolution: a depthwise Conv1d of a long kernel, a pointwise
    Conv1d (no biases), BatchNorm1d."""

    def __init__(self, cin, cout, k, stride=1, dilation=1):
        super().__init__()
        self.dw = nn.Conv1d(cin, cin, k, stride=stride, dilation=dilation, padding=dilation * (k - 1) // 2, groups=cin, bias=False)
        self.pw = nn.Conv1d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm1d(cout, eps=1e-3)

    def forward(self, x):
        return self.bn(self.pw(self.dw(x)))


class JasperBlock(nn.Module):
    """R separable sub-blocks (ReLU and dropout between), a 1×1 conv + BN residual added before the last ReLU."""

    def __init__(self, cin, cout, k, repeat=2):
        super().__init__()
        self.mconv = nn.ModuleList([SeparableConvBN(cin if r == 0 else cout, cout, k) for r in range(repeat)])
        self.res = nn.Sequential(nn.Conv1d(cin, cout, 1, bias=False), nn.BatchNorm1d(cout, eps=1e-3))
        self.drop = nn.Dropout(0.1)

    def forward(self, x):
        out = x
        for i, conv in enumerate(self.mconv):
            out = conv(out)
            if i < len(self.mconv) - 1:
                out = self.drop(F.relu(out))
        return self.drop(F.relu(out + self.res(x)))


class QuartzNet(nn.Module):
    """QuartzNet 5x2 laid out small: prolog (separable, k 33, stride 2), blocks of kernels 33, 39,
    51, the epilog (separable k 87, dilation 2; then 1×1), the 1×1 decoder to the vocabulary,
    frame logits [N, frames, vocab] (NeMo's ConvASRDecoder's layout)."""

    def __init__(self, feats=16, c=24, vocab=12):
        super().__init__()
        self.prolog = SeparableConvBN(feats, c, 33, stride=2)
        self.blocks = nn.Sequential(JasperBlock(c, c, 33), JasperBlock(c, c, 39), JasperBlock(c, 32, 51))
        self.epilog = SeparableConvBN(32, 40, 87, dilation=2)
        self.post = nn.Sequential(nn.Conv1d(40, 48, 1, bias=False), nn.BatchNorm1d(48, eps=1e-3))
        self.decoder = nn.Conv1d(48, vocab, 1)

    def forward(self, audio_signal):
        x = F.relu(self.prolog(audio_signal))
        x = self.blocks(x)
        x = F.relu(self.epilog(x))
        x = F.relu(self.post(x))
        return self.decoder(x).transpose(1, 2)


def quartznet_case():
    labels = torch.tensor([[3, 5, 5, 2, 7, -100], [1, 4, 9, 9, 2, 6]])  # the second row's repeats need blanks between
    lengths = (labels >= 0).sum(1)
    return dict(model=calibrated(QuartzNet(), torch.randn(4, 16, 60), kinds=(nn.BatchNorm1d,), mean_square=False), inputs={"audio_signal": torch.randn(2, 16, 60)}, outputs=["logits"], opset=13,
                dynamic={"audio_signal": {0: "batch", 2: "frames"}, "logits": {0: "batch", 1: "steps"}},
                target=lambda out: labels,
                loss=lambda out, y: F.ctc_loss(out[0].log_softmax(-1).transpose(0, 1), y.clamp(min=0), torch.full((2,), out[0].shape[1], dtype=torch.long), lengths, blank=0))


CASES = {"whisper": whisper_case, "silero_vad": silero_vad_case, "silero_vad_if": silero_vad_if_case, "quartznet": quartznet_case}
