#!/usr/bin/env python3
"""Speech models from torchaudio (Debian's python3-torchaudio 0.13) exported as a user exports them
(torch.onnx, opset 14, dynamic batch, random weights): wav2vec 2.0 and HuBERT base with a CTC head
and the CTC loss (what ASR fine-tuning trains), a Conformer encoder on 80 log-mel features, DeepSpeech (an LSTM over
feature frames), Wav2Letter (1-d convolutions) and Conv-TasNet (waveform source separation). For each:
PyTorch's loss and every parameter's gradient on one batch, for bench/torchaudio-models.ts, computed
in float64 (the model and batch cast up after the float32 export): the reference is the exact
gradient, not PyTorch's float32 one, which is far from it on wav2vec 2.0 (99 % off: Debian's
torch 1.13 computes F.gelu's float32 backward wrongly when the incoming gradient is not
contiguous, as after the feature extractor's transpose; docs/real-models.md). PyTorch's own
float32 error against it is saved too (`torch32_worst`).
The CTC models take F.ctc_loss on label sequences, the other frame classifiers frame-level
cross-entropy (F.cross_entropy over every frame), Conv-TasNet the mean squared error against target
sources.

    /usr/bin/python3 bench/torchaudio_models.py --out tmp/torchaudio [--only wav2vec2_base,conformer]

Writes <name>.onnx, <name>.x.npy, <name>.y.npy, <name>.grads.safetensors and <name>.json per model.
"""
import json
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
import torchaudio.models as A

import onnx  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from torchvision_extra import bench_args, onnx_names, write_grads  # noqa: E402

warnings.filterwarnings("ignore")


class First(torch.nn.Module):
    """The first output of a model that returns (values, lengths)."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x)[0]


class ConformerHead(torch.nn.Module):
    """torchaudio's Conformer encoder (every frame valid) with a Linear classifier per frame."""

    def __init__(self):
        super().__init__()
        self.encoder = A.Conformer(input_dim=80, num_heads=4, ffn_dim=256, num_layers=4, depthwise_conv_kernel_size=31)
        self.head = torch.nn.Linear(80, 32)

    def forward(self, x):
        lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.int64)
        return self.head(self.encoder(x, lengths)[0])


# name: (constructor, input shape, kind): 'ctc' = [N, T, C] logits with CTC over label sequences
# (blank 0, rows of 12 and 7 labels padded with -100); 'frames' = [N, T, C] logits with frame
# labels; 'channels' = [N, C, T] logits with frame labels; 'mse' = a waveform output
MODELS = {
    "wav2vec2_base": (lambda: First(A.wav2vec2_base(aux_num_out=32)), (2, 16000), "ctc"),
    "hubert_base": (lambda: First(A.hubert_base(aux_num_out=32)), (2, 16000), "ctc"),
    "conformer": (lambda: ConformerHead(), (2, 64, 80), "frames"),
    "deepspeech": (lambda: A.DeepSpeech(n_feature=80, n_hidden=256, n_class=32), (2, 1, 50, 80), "frames"),
    "wav2letter": (lambda: A.Wav2Letter(num_classes=32, input_type="mfcc", num_features=13), (2, 13, 200), "channels"),
    "conv_tasnet": (lambda: A.conv_tasnet_base(num_sources=2), (2, 1, 8000), "mse"),
}


def main():
    out_dir, names = bench_args(MODELS)
    for name in names:
        make, shape, kind = MODELS[name]
        torch.manual_seed(0)
        m = make().eval()
        x = torch.randn(*shape)
        path = os.path.join(out_dir, name)
        torch.onnx.export(m, (x,), f"{path}.onnx", opset_version=14, input_names=["x"], output_names=["out"],
                          dynamic_axes={"x": {0: "batch"}, "out": {0: "batch"}})
        with torch.no_grad():
            out = m(x)
        if kind == "mse":
            y = torch.randn(*out.shape)
        elif kind == "ctc":
            y = torch.full((out.shape[0], 12), -100, dtype=torch.int64)
            y[0, :12] = torch.randint(1, out.shape[-1], (12,))
            y[1, :7] = torch.randint(1, out.shape[-1], (7,))
        elif kind == "channels":  # Wav2Letter: [N, classes, frames]
            y = torch.randint(0, out.shape[1], (out.shape[0], out.shape[2]))
        else:
            y = torch.randint(0, out.shape[-1], out.shape[:-1])

        def step(dtype):
            mm = m.to(dtype)
            mm.zero_grad(set_to_none=True)
            o = mm(x.to(dtype))
            yy = y.to(dtype) if kind == "mse" else y
            if kind == "ctc":
                lens = (yy != -100).sum(1)
                loss = F.ctc_loss(o.log_softmax(-1).transpose(0, 1), yy[yy != -100], torch.full((o.shape[0],), o.shape[1]), lens)
            else:
                loss = F.mse_loss(o, yy) if kind == "mse" else F.cross_entropy(o, yy) if kind == "channels" else F.cross_entropy(o.flatten(0, -2), yy.flatten())
            loss.backward()
            return float(loss), {k: p.grad.double().clone() for k, p in mm.named_parameters() if p.grad is not None}

        loss32, g32 = step(torch.float32)
        loss, g64 = step(torch.float64)
        big = [k for k in g64 if float(g64[k].norm()) >= 1e-6]
        torch32_worst = max(float((g32[k] - g64[k]).norm() / g64[k].norm()) for k in big)
        np.save(f"{path}.x.npy", x.numpy())
        np.save(f"{path}.y.npy", y.numpy())
        m.float()  # onnx_names matches initializers by value: the float32 weights the export holds
        for k, p in m.named_parameters():
            p.grad = g64[k].float() if k in g64 else None
        matched = set()
        grads = onnx_names(onnx.load(f"{path}.onnx"), m, matched)
        write_grads(path, grads)
        with open(f"{path}.json", "w") as f:
            json.dump({"loss": loss, "loss32": loss32, "torch32_worst": torch32_worst, "kind": kind, "shape": list(x.shape), "out": list(out.shape),
                       "params": sum(p.numel() for p in m.parameters()), "torch": torch.__version__,
                       "torchaudio": torchaudio.__version__, "grads": sorted(grads),
                       "missing": sorted(k for k in g64 if k not in matched)}, f)
        print(f"{name}: loss {float(loss):.5f}, {len(grads)} of {sum(1 for p in m.parameters() if p.grad is not None)} gradients named", flush=True)


if __name__ == "__main__":
    main()
