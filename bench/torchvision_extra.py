#!/usr/bin/env python3
"""Torchvision models beyond the zoo (googlenet, mnasnet, resnext, vgg, alexnet, efficientnet_v2,
regnet_x, maxvit, inception_v3, the segmentation models deeplabv3, lraspp, fcn, and the video
models r3d_18, mc3_18, r2plus1d_18 and mvit_v2_s on [N, 3, T, H, W] clips) exported as a
user exports them (torch.onnx, opset 13, dynamic batch, BatchNorm kept: TrainingMode.PRESERVE),
random weights, with PyTorch's cross-entropy (per pixel for the segmenters) and every parameter's
gradient for one batch, for bench/torchvision-extra.ts.

    /usr/bin/python3 bench/torchvision_extra.py --out tmp/torchvision-extra [--only googlenet,maxvit]

Writes <name>.onnx, <name>.x.npy, <name>.y.npy, <name>.grads.safetensors (the gradients under the
names refit gives the parameters, transposed like their initializers) and <name>.json (loss,
input size) per model.
"""
import argparse
import json
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models import segmentation as seg

import onnx  # noqa: E402
import onnx.numpy_helper  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "fixtures", "torch"))
from make_fixtures import write_safetensors  # noqa: E402

warnings.filterwarnings("ignore")
M = torchvision.models
V = torchvision.models.video
# name: (constructor, input size, dense labels). Input sizes: the smallest each accepts at opset 13
# (adaptive pools must divide evenly; AlexNet and VGG pool to 7x7, MaxViT needs 224, Inception 75+);
# a tuple is a video clip's (T, H, W) (MViT's positional sizes follow its input: 8x64x64 is set
# in its constructor).
MODELS = {
    "googlenet": (lambda: M.googlenet(weights=None, aux_logits=False, init_weights=True, num_classes=10), 64, False),
    "mnasnet0_5": (lambda: M.mnasnet0_5(num_classes=10), 64, False),
    "resnext50_32x4d": (lambda: M.resnext50_32x4d(num_classes=10), 64, False),
    "vgg11_bn": (lambda: M.vgg11_bn(num_classes=10), 224, False),
    "alexnet": (lambda: M.alexnet(num_classes=10), 224, False),
    "efficientnet_v2_s": (lambda: M.efficientnet_v2_s(num_classes=10), 64, False),
    "regnet_x_400mf": (lambda: M.regnet_x_400mf(num_classes=10), 64, False),
    "maxvit_t": (lambda: M.maxvit_t(num_classes=10), 224, False),
    "inception_v3": (lambda: M.inception_v3(weights=None, aux_logits=False, init_weights=True, num_classes=10), 96, False),
    "deeplabv3_mobilenet_v3_large": (lambda: seg.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5, aux_loss=False), 64, True),
    "lraspp_mobilenet_v3_large": (lambda: seg.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5), 64, True),
    "fcn_resnet50": (lambda: seg.fcn_resnet50(weights=None, weights_backbone=None, num_classes=5, aux_loss=False), 64, True),
    "r3d_18": (lambda: V.r3d_18(num_classes=10), (4, 32, 32), False),
    "mc3_18": (lambda: V.mc3_18(num_classes=10), (4, 32, 32), False),
    "r2plus1d_18": (lambda: V.r2plus1d_18(num_classes=10), (4, 32, 32), False),
    "mvit_v2_s": (lambda: V.MViT(spatial_size=(64, 64), temporal_size=8, num_classes=10, **MVIT_V2_S), (8, 64, 64), False),
}


def _mvit_v2_s_config():
    """mvit_v2_s's block configuration, as torchvision builds it (its builder fixes the input size)."""
    cfg = {"num_heads": [1, 2, 2, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 8, 8],
           "input_channels": [96, 96, 192, 192, 384, 384, 384, 384, 384, 384, 384, 384, 384, 384, 384, 768],
           "output_channels": [96, 192, 192, 384, 384, 384, 384, 384, 384, 384, 384, 384, 384, 384, 768, 768],
           "kernel_q": [[3, 3, 3]] * 16, "kernel_kv": [[3, 3, 3]] * 16,
           "stride_q": [[1, 1, 1], [1, 2, 2]] + [[1, 1, 1]] * 1 + [[1, 2, 2]] + [[1, 1, 1]] * 10 + [[1, 2, 2], [1, 1, 1]],
           "stride_kv": [[1, 8, 8], [1, 4, 4], [1, 4, 4], [1, 2, 2]] + [[1, 2, 2]] * 10 + [[1, 1, 1]] * 2}
    from torchvision.models.video.mvit import MSBlockConfig
    blocks = [MSBlockConfig(**{k: v[i] for k, v in cfg.items()}) for i in range(16)]
    return {"block_setting": blocks, "residual_pool": True, "residual_with_cls_embed": False,
            "rel_pos_embed": True, "proj_after_attn": True, "stochastic_depth_prob": 0.2}


MVIT_V2_S = _mvit_v2_s_config()


def onnx_names(proto, model, matched=None):
    """Each parameter's gradient under the name refit gives it: its own name when the export keeps
    it (an initializer, or an Identity alias of an equal one that refit unties), else the
    initializer holding its values (transposed: the MatMul weights constant folding writes; or
    reshaped: a GroupNorm's weight as [C, 1, 1], a position table as [1, n, d]). Values shared by
    several parameters (a fresh norm's ones) are ambiguous: give such a model random values first."""
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    aliases = {o for n in proto.graph.node if n.op_type == "Identity" for o in n.output}
    out = {}
    for k, p in model.named_parameters():
        if p.grad is None:
            continue
        g, v = p.grad.numpy(), p.detach().numpy()
        if k in inits or k in aliases:
            out[k] = g
            if matched is not None:
                matched.add(k)
            continue
        for name, a in inits.items():
            if name in out:
                continue
            if a.shape == v.shape and np.array_equal(a, v):
                out[name] = g
                break
            if v.ndim == 2 and a.shape == v.T.shape and np.array_equal(a, v.T):
                out[name] = np.ascontiguousarray(g.T)
                break
            if a.size == v.size and a.size > 1 and np.array_equal(a.reshape(-1), v.reshape(-1)):
                out[name] = g.reshape(a.shape)
                break
        else:
            continue
        if matched is not None:
            matched.add(k)
    return out


def bench_args(names):
    """What each bench script's main reads: --out (a folder, created) and --only (default: every name)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", default=",".join(names))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    return a.out, a.only.split(",")


def write_grads(path, grads):
    """<path>.grads.safetensors: the gradients under refit's names, as float32."""
    write_safetensors(f"{path}.grads.safetensors", [(k, np.ascontiguousarray(v, dtype=np.float32)) for k, v in grads.items()])


class Out(torch.nn.Module):
    """A segmentation model's 'out' logits, as an exporter for inference keeps them."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x)["out"]


def main():
    out_dir, names = bench_args(MODELS)
    for name in names:
        make, hw, dense = MODELS[name]
        torch.manual_seed(0)
        m = make().eval()
        if dense:
            m = Out(m).eval()
        x = torch.randn(2, 3, *hw) if isinstance(hw, tuple) else torch.randn(2, 3, hw, hw)
        y = torch.randint(0, 5, (2, hw, hw)) if dense else torch.randint(0, 10, (2,))
        path = os.path.join(out_dir, name)
        torch.onnx.export(m, (x,), f"{path}.onnx", opset_version=13, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, training=torch.onnx.TrainingMode.PRESERVE)
        m.zero_grad(set_to_none=True)
        loss = F.cross_entropy(m(x), y)
        loss.backward()
        np.save(f"{path}.x.npy", x.numpy())
        np.save(f"{path}.y.npy", y.numpy())
        grads = onnx_names(onnx.load(f"{path}.onnx"), m)
        write_grads(path, grads)
        with open(f"{path}.json", "w") as f:
            json.dump({"loss": float(loss), "hw": hw, "shape": list(x.shape), "dense": dense, "params": sum(p.numel() for p in m.parameters()),
                       "torch": torch.__version__, "torchvision": torchvision.__version__, "grads": sorted(grads)}, f)
        print(f"{name}: loss {float(loss):.5f}, {len(grads)} parameters", flush=True)


if __name__ == "__main__":
    main()
