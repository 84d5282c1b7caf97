#!/usr/bin/env python3
"""Architectures people deploy with onnxruntime that no other bench holds, written after their
reference code (width-reduced, the same module structure and ops) and exported as their tools
export them, random weights, with PyTorch's loss and every parameter's gradient for one batch,
for bench/popular-architectures.ts:

- yolov8: ultralytics' YOLOv8 layout (Conv-BN-SiLU, C2f with chunk, SPPF, nearest upsampling, the
  Detect head with DFL and anchors made from the feature shapes), opset 12 with batch, height and
  width dynamic (`yolo export format=onnx dynamic=True opset=12`); loss: MSE of the decoded
  output [N, 4 + classes, anchors] to a fixed target (a stand-in for YOLO's assigned loss).
- unet2d: diffusers' UNet2DModel layout (sinusoidal timestep embedding, ResnetBlock2D with
  GroupNorm and the time projection, attention blocks, skip concatenations), opset 17, inputs
  sample and timestep; loss: MSE to the noise (the denoising objective).
- clip: CLIP's dual encoder (causal text transformer pooled at the argmax token, ViT with a class
  embedding and pre-LayerNorm, L2-normalised projections, exp of a learned logit scale), opset 14,
  batch and sequence dynamic; loss: the symmetric contrastive cross-entropy.
- segformer: SegFormer-B0's layout (overlapping patch embeddings, efficient self-attention with
  spatial reduction, Mix-FFN's depthwise convolution, the all-MLP decoder with bilinear
  upsampling), opset 14, batch, height and width dynamic; loss: per-pixel cross-entropy at 1/4 size.
- depth_anything: Depth Anything's layout (a DINOv2 ViT whose position embeddings are resized
  bicubically to the input's patch grid, LayerScale; the DPT head with ConvTranspose reassembly
  and bilinear align_corners fusion), opset 14, batch, height and width dynamic, input 70×84 (a
  5×6 grid of 14-pixel patches, position table 4×4); loss: MSE of the depth map to a target.
- t5: T5's encoder-decoder in one graph (relative position buckets computed from the lengths by
  log, Min and Where, the bias table shared by every layer; RMS norms; Flan-T5's gated GELU; the
  tied embedding as the output projection), opset 14, batch and both lengths dynamic; loss:
  token cross-entropy on the decoder's logits.
- sam_encoder: segment-anything's ImageEncoderViT (windowed attention with the grid padded to whole
  windows, decomposed relative positions gathered from tables and applied by Einsum, a global
  block, the neck's LayerNorm2d), opset 16 (as SAM's exporters use), batch dynamic; loss: MSE of
  the image embeddings to a target.
- sam_decoder: segment-anything's PromptEncoder (points: random Fourier features of the
  coordinates, a label-selected embedding by Where) and MaskDecoder (two-way transformer,
  ConvTranspose upscaling with LayerNorm2d, per-mask hypernetworks, the IoU head), opset 16, batch
  and point count dynamic, as transformers.js's prompt_encoder_mask_decoder takes them; loss:
  binary cross-entropy of the masks (MedSAM's fine-tuning objective, with its Dice term left out)
  plus MSE of the IoU scores to 0.5.
- convnextv2: ConvNeXt V2's layout (depthwise 7×7, channels-last LayerNorm, GRN: an L2 norm over
  height and width divided by its channel mean), opset 14, batch dynamic; loss: cross-entropy.

    /usr/bin/python3 bench/popular_architectures.py --out tmp/popular-architectures [--only yolov8,clip]

Writes <name>.onnx, <name>.<input>.npy per graph input, <name>.y.npy (target or labels),
<name>.grads.safetensors and <name>.json (loss, inputs) per model.
"""
import json
import math
import os
import sys
import warnings

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torchvision_extra import bench_args, onnx_names, write_grads  # noqa: E402

warnings.filterwarnings("ignore")


# ---------------------------------------------------------------- YOLOv8 (ultralytics' modules)
class Conv(nn.Module):
    def __init__(self, c1, c2, k=1, s=1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=0.001, momentum=0.03)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c1, c2, shortcut=True):
        super().__init__()
        self.cv1, self.cv2 = Conv(c1, c2, 3), Conv(c2, c2, 3)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class C2f(nn.Module):
    def __init__(self, c1, c2, n=1, shortcut=False):
        super().__init__()
        self.c = c2 // 2
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, c1, c2, k=5):
        super().__init__()
        c_ = c1 // 2
        self.cv1, self.cv2 = Conv(c1, c_, 1), Conv(c_ * 4, c2, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class DFL(nn.Module):
    """The distribution focal loss's integral: a frozen 1×1 convolution with weights 0..15."""

    def __init__(self, c1=16):
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1

    def forward(self, x):
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


def make_anchors(feats, strides, offset=0.5):
    points, stride_tensor = [], []
    for f, stride in zip(feats, strides):
        _, _, h, w = f.shape
        sx = torch.arange(end=w, dtype=f.dtype) + offset
        sy = torch.arange(end=h, dtype=f.dtype) + offset
        sy, sx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_tensor.append(torch.full((h * w, 1), stride, dtype=f.dtype))
    return torch.cat(points), torch.cat(stride_tensor)


class Detect(nn.Module):
    def __init__(self, nc, ch, strides=(8, 16, 32), reg_max=16):
        super().__init__()
        self.nc, self.reg_max, self.no, self.stride = nc, reg_max, nc + reg_max * 4, strides
        c2, c3 = max(16, ch[0] // 4, reg_max * 4), max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1)) for x in ch)
        self.cv3 = nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch)
        self.dfl = DFL(reg_max)

    def forward(self, x):
        x = [torch.cat((self.cv2[i](xi), self.cv3[i](xi)), 1) for i, xi in enumerate(x)]
        anchors, strides = (t.transpose(0, 1) for t in make_anchors(x, self.stride))
        x_cat = torch.cat([xi.view(x[0].shape[0], self.no, -1) for xi in x], 2)
        box, cls = x_cat.split((self.reg_max * 4, self.nc), 1)
        lt, rb = self.dfl(box).chunk(2, 1)
        a = anchors.unsqueeze(0)
        x1y1, x2y2 = a - lt, a + rb
        dbox = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * strides
        return torch.cat((dbox, cls.sigmoid()), 1)


class YOLOv8(nn.Module):
    """yolov8n.yaml's graph at half its width (channels 8..128), 10 classes."""

    def __init__(self, nc=10, w=(8, 16, 32, 64, 128)):
        super().__init__()
        a, b, c, d, e = w
        self.b0, self.b1, self.b2 = Conv(3, a, 3, 2), Conv(a, b, 3, 2), C2f(b, b, 1, True)
        self.b3, self.b4 = Conv(b, c, 3, 2), C2f(c, c, 2, True)
        self.b5, self.b6 = Conv(c, d, 3, 2), C2f(d, d, 2, True)
        self.b7, self.b8, self.b9 = Conv(d, e, 3, 2), C2f(e, e, 1, True), SPPF(e, e)
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.h12, self.h15 = C2f(e + d, d), C2f(d + c, c)
        self.h16, self.h18 = Conv(c, c, 3, 2), C2f(c + d, d)
        self.h19, self.h21 = Conv(d, d, 3, 2), C2f(d + e, e)
        self.detect = Detect(nc, (c, d, e))

    def forward(self, x):
        p4 = self.b4(self.b3(self.b2(self.b1(self.b0(x)))))
        p6 = self.b6(self.b5(p4))
        p9 = self.b9(self.b8(self.b7(p6)))
        h12 = self.h12(torch.cat((self.up(p9), p6), 1))
        h15 = self.h15(torch.cat((self.up(h12), p4), 1))
        h18 = self.h18(torch.cat((self.h16(h15), h12), 1))
        h21 = self.h21(torch.cat((self.h19(h18), p9), 1))
        return self.detect([h15, h18, h21])


# ---------------------------------------------------------------- UNet2DModel (diffusers' modules)
def timestep_embedding(t, dim, max_period=10000):
    """diffusers' get_timestep_embedding with flip_sin_to_cos=True, downscale_freq_shift=0."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(0, half, dtype=torch.float32) / half
    emb = t[:, None].float() * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    return torch.cat([emb[:, half:], emb[:, :half]], dim=-1)


class ResnetBlock2D(nn.Module):
    def __init__(self, cin, cout, temb, groups=8):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, cin, eps=1e-5), nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2, self.conv2 = nn.GroupNorm(groups, cout, eps=1e-5), nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.conv_shortcut(x) if self.conv_shortcut is not None else x) + h


class AttnBlock(nn.Module):
    """diffusers' Attention as UNet2DModel's attention blocks use it (group norm, residual)."""

    def __init__(self, c, head_dim=8, groups=8):
        super().__init__()
        self.heads, self.scale = c // head_dim, head_dim ** -0.5
        self.group_norm = nn.GroupNorm(groups, c, eps=1e-5)
        self.to_q, self.to_k, self.to_v = nn.Linear(c, c), nn.Linear(c, c), nn.Linear(c, c)
        self.to_out = nn.ModuleList([nn.Linear(c, c)])

    def forward(self, x):
        b, c, h, w = x.shape
        y = self.group_norm(x).view(b, c, h * w).transpose(1, 2)
        q, k, v = (t.view(b, -1, self.heads, c // self.heads).transpose(1, 2) for t in (self.to_q(y), self.to_k(y), self.to_v(y)))
        p = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)
        y = (p @ v).transpose(1, 2).reshape(b, -1, c)
        return self.to_out[0](y).transpose(-1, -2).reshape(b, c, h, w) + x


class UNet2D(nn.Module):
    """Two resolutions down and up (channels 32, 64), attention at the lower one and in the middle."""

    def __init__(self, c=(32, 64)):
        super().__init__()
        t = c[0] * 4
        self.c0 = c[0]
        self.time_linear_1, self.time_linear_2 = nn.Linear(c[0], t), nn.Linear(t, t)
        self.conv_in = nn.Conv2d(3, c[0], 3, padding=1)
        self.down0, self.downsample0 = ResnetBlock2D(c[0], c[0], t), nn.Conv2d(c[0], c[0], 3, stride=2, padding=1)
        self.down1, self.down1_attn = ResnetBlock2D(c[0], c[1], t), AttnBlock(c[1])
        self.mid0, self.mid_attn, self.mid1 = ResnetBlock2D(c[1], c[1], t), AttnBlock(c[1]), ResnetBlock2D(c[1], c[1], t)
        self.up1, self.up1_attn = ResnetBlock2D(c[1] + c[1], c[1], t), AttnBlock(c[1])
        self.up1b, self.up1b_attn = ResnetBlock2D(c[1] + c[0], c[1], t), AttnBlock(c[1])
        self.upsample1 = nn.Conv2d(c[1], c[1], 3, padding=1)
        self.up0, self.up0b = ResnetBlock2D(c[1] + c[0], c[0], t), ResnetBlock2D(c[0] + c[0], c[0], t)
        self.conv_norm_out, self.conv_out = nn.GroupNorm(8, c[0], eps=1e-5), nn.Conv2d(c[0], 3, 3, padding=1)

    def forward(self, sample, timestep):
        temb = self.time_linear_2(F.silu(self.time_linear_1(timestep_embedding(timestep, self.c0))))
        x = self.conv_in(sample)
        s0 = x
        x = self.down0(x, temb)
        s1 = x
        x = self.downsample0(x)
        s2 = x
        x = self.down1_attn(self.down1(x, temb))
        s3 = x
        x = self.mid1(self.mid_attn(self.mid0(x, temb)), temb)
        x = self.up1_attn(self.up1(torch.cat((x, s3), 1), temb))
        x = self.up1b_attn(self.up1b(torch.cat((x, s2), 1), temb))
        x = self.upsample1(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        x = self.up0(torch.cat((x, s1), 1), temb)
        x = self.up0b(torch.cat((x, s0), 1), temb)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


# ---------------------------------------------------------------- CLIP (transformers' CLIPModel layout)
class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class EncoderLayer(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.layer_norm1, self.layer_norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))
        self.fc1, self.act, self.fc2 = nn.Linear(d, 4 * d), QuickGELU(), nn.Linear(4 * d, d)

    def attention(self, x, mask):
        b, s, d = x.shape
        hd = d // self.heads
        q, k, v = (p(x).view(b, s, self.heads, hd).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        w = (q * hd ** -0.5) @ k.transpose(-1, -2)
        if mask is not None:
            w = w + mask
        return self.out_proj((torch.softmax(w, -1) @ v).transpose(1, 2).reshape(b, s, d))

    def forward(self, x, mask=None):
        x = x + self.attention(self.layer_norm1(x), mask)
        return x + self.fc2(self.act(self.fc1(self.layer_norm2(x))))


class CLIP(nn.Module):
    def __init__(self, vocab=100, d=32, heads=2, layers=2, patch=8, image=32, proj=24):
        super().__init__()
        self.token_embedding, self.position_embedding = nn.Embedding(vocab, d), nn.Embedding(77, d)
        self.text_layers = nn.ModuleList(EncoderLayer(d, heads) for _ in range(layers))
        self.final_layer_norm = nn.LayerNorm(d)
        self.class_embedding = nn.Parameter(torch.randn(d))
        self.patch_embedding = nn.Conv2d(3, d, patch, stride=patch, bias=False)
        self.vision_position_embedding = nn.Embedding((image // patch) ** 2 + 1, d)
        self.pre_layrnorm, self.post_layernorm = nn.LayerNorm(d), nn.LayerNorm(d)
        self.vision_layers = nn.ModuleList(EncoderLayer(d, heads) for _ in range(layers))
        self.text_projection, self.visual_projection = nn.Linear(d, proj, bias=False), nn.Linear(d, proj, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, input_ids, pixel_values):
        b, s = input_ids.shape
        x = self.token_embedding(input_ids) + self.position_embedding(torch.arange(s)[None])
        mask = torch.full((s, s), float("-inf")).triu(1)[None, None]
        for layer in self.text_layers:
            x = layer(x, mask)
        x = self.final_layer_norm(x)
        text = self.text_projection(x[torch.arange(b), input_ids.argmax(dim=-1)])
        p = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        v = torch.cat([self.class_embedding.expand(p.shape[0], 1, -1), p], 1)
        v = self.pre_layrnorm(v + self.vision_position_embedding.weight[None])
        for layer in self.vision_layers:
            v = layer(v)
        image = self.visual_projection(self.post_layernorm(v[:, 0]))
        image = image / image.norm(p=2, dim=-1, keepdim=True)
        text = text / text.norm(p=2, dim=-1, keepdim=True)
        logits_per_text = self.logit_scale.exp() * text @ image.t()
        return logits_per_text.t(), logits_per_text


# ---------------------------------------------------------------- SegFormer (transformers' Segformer layout)
class OverlapPatchEmbed(nn.Module):
    def __init__(self, cin, d, k, s):
        super().__init__()
        self.proj, self.layer_norm = nn.Conv2d(cin, d, k, s, k // 2), nn.LayerNorm(d)

    def forward(self, x):
        x = self.proj(x)
        _, _, h, w = x.shape
        return self.layer_norm(x.flatten(2).transpose(1, 2)), h, w


class SegformerLayer(nn.Module):
    def __init__(self, d, heads, sr):
        super().__init__()
        self.heads, self.sr = heads, sr
        self.layer_norm_1, self.layer_norm_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.query, self.key, self.value, self.output = (nn.Linear(d, d) for _ in range(4))
        if sr > 1:
            self.sr_conv, self.sr_norm = nn.Conv2d(d, d, sr, sr), nn.LayerNorm(d)
        self.dense1, self.dwconv, self.dense2 = nn.Linear(d, 4 * d), nn.Conv2d(4 * d, 4 * d, 3, 1, 1, groups=4 * d), nn.Linear(4 * d, d)

    def forward(self, x, h, w):
        b, n, d = x.shape
        y = self.layer_norm_1(x)
        kv = y
        if self.sr > 1:
            kv = self.sr_norm(self.sr_conv(y.transpose(1, 2).reshape(b, d, h, w)).reshape(b, d, -1).transpose(1, 2))
        hd = d // self.heads
        q = self.query(y).view(b, -1, self.heads, hd).transpose(1, 2)
        k, v = (p(kv).view(b, -1, self.heads, hd).transpose(1, 2) for p in (self.key, self.value))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), -1) @ v
        x = x + self.output(a.transpose(1, 2).reshape(b, n, d))
        y = self.dense1(self.layer_norm_2(x))
        y = self.dwconv(y.transpose(1, 2).view(b, -1, h, w)).flatten(2).transpose(1, 2)
        return x + self.dense2(F.gelu(y))


class Segformer(nn.Module):
    """SegFormer-B0's stages (hidden 32, 64, 160, 256; reductions 8, 4, 2, 1) one layer each, 5 classes."""

    def __init__(self, dims=(32, 64, 160, 256), heads=(1, 2, 5, 8), srs=(8, 4, 2, 1), dec=64, classes=5):
        super().__init__()
        cins = (3,) + dims[:-1]
        self.patch = nn.ModuleList(OverlapPatchEmbed(ci, d, 7 if i == 0 else 3, 4 if i == 0 else 2) for i, (ci, d) in enumerate(zip(cins, dims)))
        self.block = nn.ModuleList(SegformerLayer(d, h, s) for d, h, s in zip(dims, heads, srs))
        self.norm = nn.ModuleList(nn.LayerNorm(d) for d in dims)
        self.linear_c = nn.ModuleList(nn.Linear(d, dec) for d in dims)
        self.linear_fuse = nn.Conv2d(4 * dec, dec, 1, bias=False)
        self.batch_norm = nn.BatchNorm2d(dec)
        self.classifier = nn.Conv2d(dec, classes, 1)

    def forward(self, x):
        feats = []
        for pe, blk, ln in zip(self.patch, self.block, self.norm):
            t, h, w = pe(x)
            t = ln(blk(t, h, w))
            x = t.transpose(1, 2).reshape(t.shape[0], -1, h, w)
            feats.append(x)
        size = feats[0].shape[2:]
        ups = [F.interpolate(lin(f.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(f.shape[0], -1, f.shape[2], f.shape[3]), size=size, mode="bilinear", align_corners=False)
               for f, lin in zip(feats, self.linear_c)]
        y = torch.relu(self.batch_norm(self.linear_fuse(torch.cat(ups[::-1], 1))))
        return self.classifier(y)


# ---------------------------------------------------------------- Depth Anything (DINOv2 backbone + DPT head)
class LayerScale(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.gamma = nn.Parameter(1e-1 * torch.ones(d) + 1e-2 * torch.randn(d))

    def forward(self, x):
        return x * self.gamma


class Dinov2Layer(nn.Module):
    """DINOv2's block: pre-norm, fused qkv, LayerScale on both branches, GELU MLP."""

    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d, eps=1e-6), nn.LayerNorm(d, eps=1e-6)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ls1, self.ls2 = LayerScale(d), LayerScale(d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5, -1) @ v
        x = x + self.ls1(self.proj(a.transpose(1, 2).reshape(b, n, d)))
        return x + self.ls2(self.fc2(F.gelu(self.fc1(self.norm2(x)))))


class ResidualConvUnit(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.res1, self.res2, self.out = ResidualConvUnit(c), ResidualConvUnit(c), nn.Conv2d(c, c, 1)

    def forward(self, x, skip=None, size=None):
        if skip is not None:
            x = x + self.res1(skip)
        x = self.res2(x)
        x = F.interpolate(x, size=size, scale_factor=None if size else 2.0, mode="bilinear", align_corners=True)
        return self.out(x)


class DepthAnything(nn.Module):
    """Depth Anything's layout, small: a DINOv2 ViT (patch 14, position embeddings resized bicubically
    to the input's grid, as DINOv2 interpolate_pos_encoding does) and the DPT head (four layers
    reassembled at 4, 2, 1 and 1/2 of the grid by ConvTranspose and a strided conv, fused
    coarse-to-fine with bilinear upsampling, a ReLU depth map at the input's size)."""

    def __init__(self, d=48, heads=3, layers=4, feat=(24, 48, 96, 96), c=32, grid=4):
        super().__init__()
        self.grid = grid
        self.patch_embed = nn.Conv2d(3, d, 14, stride=14)
        self.cls_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, grid * grid + 1, d) * 0.02)
        self.blocks = nn.ModuleList(Dinov2Layer(d, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.projects = nn.ModuleList(nn.Conv2d(d, f, 1) for f in feat)
        self.resize = nn.ModuleList([nn.ConvTranspose2d(feat[0], feat[0], 4, 4), nn.ConvTranspose2d(feat[1], feat[1], 2, 2), nn.Identity(), nn.Conv2d(feat[3], feat[3], 3, 2, 1)])
        self.layer_rn = nn.ModuleList(nn.Conv2d(f, c, 3, padding=1, bias=False) for f in feat)
        self.fusion = nn.ModuleList(FusionBlock(c) for _ in feat)
        self.head1, self.head2, self.head3 = nn.Conv2d(c, c // 2, 3, padding=1), nn.Conv2d(c // 2, 16, 3, padding=1), nn.Conv2d(16, 1, 1)
        nn.init.constant_(self.head3.bias, 1.0)  # positive depths: random weights would leave the ReLU shut

    def forward(self, pixel_values):
        b, _, H, W = pixel_values.shape
        h, w = H // 14, W // 14
        x = self.patch_embed(pixel_values).flatten(2).transpose(1, 2)
        pos = self.pos_embed[:, 1:].reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=(h, w), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, h * w, -1)
        x = torch.cat((self.cls_token.expand(b, -1, -1), x), 1) + torch.cat((self.pos_embed[:, :1], pos), 1)
        feats = []
        for blk in self.blocks:
            x = blk(x)
            feats.append(self.norm(x)[:, 1:].transpose(1, 2).reshape(b, -1, h, w))
        maps = [rn(rs(pr(f))) for f, pr, rs, rn in zip(feats, self.projects, self.resize, self.layer_rn)]
        y = self.fusion[3](maps[3], size=maps[2].shape[2:])
        y = self.fusion[2](y, maps[2], size=maps[1].shape[2:])
        y = self.fusion[1](y, maps[1], size=maps[0].shape[2:])
        y = self.fusion[0](y, maps[0])
        y = F.interpolate(self.head1(y), size=(H, W), mode="bilinear", align_corners=True)
        return F.relu(self.head3(F.relu(self.head2(y)))).squeeze(1)


# ---------------------------------------------------------------- T5 (transformers' T5 / Flan-T5 layout)
class T5LayerNorm(nn.Module):
    """RMS norm without mean or bias, as T5 writes it."""

    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(d)), eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def relative_bucket(rel, bidirectional, buckets=32, max_distance=128):
    """transformers' T5Attention._relative_position_bucket."""
    out = 0
    if bidirectional:
        buckets //= 2
        out = (rel > 0).to(torch.long) * buckets
        rel = torch.abs(rel)
    else:
        rel = -torch.min(rel, torch.zeros_like(rel))
    exact = buckets // 2
    large = exact + (torch.log(rel.float() / exact) / math.log(max_distance / exact) * (buckets - exact)).to(torch.long)
    large = torch.min(large, torch.full_like(large, buckets - 1))
    return out + torch.where(rel < exact, rel, large)


class T5Attention(nn.Module):
    def __init__(self, d, heads, kv, bias=False, bidirectional=True):
        super().__init__()
        self.heads, self.kv, self.bidirectional = heads, kv, bidirectional
        self.q, self.k, self.v, self.o = nn.Linear(d, heads * kv, bias=False), nn.Linear(d, heads * kv, bias=False), nn.Linear(d, heads * kv, bias=False), nn.Linear(heads * kv, d, bias=False)
        self.relative_attention_bias = nn.Embedding(32, heads) if bias else None

    def position_bias(self, q_len, k_len):
        rel = torch.arange(k_len)[None, :] - torch.arange(q_len)[:, None]
        return self.relative_attention_bias(relative_bucket(rel, self.bidirectional)).permute(2, 0, 1)[None]

    def forward(self, x, kv=None, bias=None, mask=None):
        b, n, _ = x.shape
        kv = x if kv is None else kv
        split = lambda t: t.view(b, -1, self.heads, self.kv).transpose(1, 2)
        q, k, v = split(self.q(x)), split(self.k(kv)), split(self.v(kv))
        if bias is None:
            bias = self.position_bias(n, kv.shape[1]) if self.relative_attention_bias is not None else torch.zeros(1, self.heads, n, kv.shape[1])
            if mask is not None:
                bias = bias + mask
        a = torch.softmax(q @ k.transpose(-1, -2) + bias, -1)  # T5 does not scale by 1/sqrt(d)
        return self.o((a @ v).transpose(1, 2).reshape(b, n, -1)), bias


class T5Block(nn.Module):
    def __init__(self, d, heads, kv, ff, first, decoder):
        super().__init__()
        self.decoder = decoder
        self.ln_self, self.self_attn = T5LayerNorm(d), T5Attention(d, heads, kv, bias=first, bidirectional=not decoder)
        if decoder:
            self.ln_cross, self.cross_attn = T5LayerNorm(d), T5Attention(d, heads, kv)
        self.ln_ff, self.wi_0, self.wi_1, self.wo = T5LayerNorm(d), nn.Linear(d, ff, bias=False), nn.Linear(d, ff, bias=False), nn.Linear(ff, d, bias=False)

    def forward(self, x, bias=None, mask=None, enc=None):
        h, bias = self.self_attn(self.ln_self(x), bias=bias, mask=mask)
        x = x + h
        if self.decoder:
            x = x + self.cross_attn(self.ln_cross(x), kv=enc)[0]
        y = self.ln_ff(x)
        return x + self.wo(F.gelu(self.wi_0(y), approximate="tanh") * self.wi_1(y)), bias  # Flan-T5's gated-gelu


class T5(nn.Module):
    """T5's encoder-decoder with Flan-T5's gated-GELU feed-forward, tied embeddings scaled by d^-0.5."""

    def __init__(self, vocab=100, d=32, heads=4, kv=8, ff=64, layers=2):
        super().__init__()
        self.d = d
        self.shared = nn.Embedding(vocab, d)
        self.encoder = nn.ModuleList(T5Block(d, heads, kv, ff, i == 0, False) for i in range(layers))
        self.decoder = nn.ModuleList(T5Block(d, heads, kv, ff, i == 0, True) for i in range(layers))
        self.enc_norm, self.dec_norm = T5LayerNorm(d), T5LayerNorm(d)

    def forward(self, input_ids, decoder_input_ids):
        x, bias = self.shared(input_ids), None
        for blk in self.encoder:
            x, bias = blk(x, bias)
        enc = self.enc_norm(x)
        t = decoder_input_ids.shape[1]
        causal = torch.triu(torch.full((t, t), -1e9), 1)[None, None]
        y, bias = self.shared(decoder_input_ids), None
        for blk in self.decoder:
            y, bias = blk(y, bias, mask=causal, enc=enc)
        return (self.dec_norm(y) * self.d ** -0.5) @ self.shared.weight.t()


# ---------------------------------------------------------------- SAM's image encoder (segment-anything's ImageEncoderViT)
def get_rel_pos(q_size, k_size, rel_pos):
    """segment-anything's get_rel_pos: the table resized linearly when it does not fit, then gathered."""
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_rel_dist:
        rel_pos = F.interpolate(rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=max_rel_dist, mode="linear").reshape(-1, max_rel_dist).permute(1, 0)
    q_coords = torch.arange(q_size)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size)[None, :] * max(q_size / k_size, 1.0)
    rel = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[rel.long()]


class SamAttention(nn.Module):
    def __init__(self, d, heads, size):
        super().__init__()
        self.heads, self.scale = heads, (d // heads) ** -0.5
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        hd = d // heads
        self.rel_pos_h, self.rel_pos_w = nn.Parameter(torch.randn(2 * size - 1, hd) * 0.02), nn.Parameter(torch.randn(2 * size - 1, hd) * 0.02)

    def forward(self, x):
        B, H, W, _ = x.shape
        qkv = self.qkv(x).reshape(B, H * W, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, B * self.heads, H * W, -1).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        Rh, Rw = get_rel_pos(H, H, self.rel_pos_h), get_rel_pos(W, W, self.rel_pos_w)
        r_q = q.reshape(B * self.heads, H, W, -1)
        rel_h, rel_w = torch.einsum("bhwc,hkc->bhwk", r_q, Rh), torch.einsum("bhwc,wkc->bhwk", r_q, Rw)
        attn = (attn.view(B * self.heads, H, W, H, W) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).view(B * self.heads, H * W, H * W)
        x = (attn.softmax(dim=-1) @ v).view(B, self.heads, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1)
        return self.proj(x)


class SamBlock(nn.Module):
    """A ViT block with windowed attention (window 0: global), padding the grid to whole windows."""

    def __init__(self, d, heads, window, grid):
        super().__init__()
        self.window = window
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = SamAttention(d, heads, window if window > 0 else grid)
        self.lin1, self.lin2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        shortcut = x
        x = self.norm1(x)
        if self.window > 0:
            B, H, W, C = x.shape
            ws = self.window
            ph, pw = (ws - H % ws) % ws, (ws - W % ws) % ws
            x = F.pad(x, (0, 0, 0, pw, 0, ph))
            Hp, Wp = H + ph, W + pw
            x = x.view(B, Hp // ws, ws, Wp // ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, C)
            x = self.attn(x)
            x = x.view(B, Hp // ws, Wp // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, -1)[:, :H, :W, :].contiguous()
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.lin2(F.gelu(self.lin1(self.norm2(x))))


class LayerNorm2d(nn.Module):
    def __init__(self, c, eps=1e-6):
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(torch.ones(c)), nn.Parameter(torch.zeros(c)), eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * ((x - u) / torch.sqrt(s + self.eps)) + self.bias[:, None, None]


class SamImageEncoder(nn.Module):
    """ImageEncoderViT's layout, small: patch 8 on 80×80 (a 10×10 grid), windows of 4 (padded to 12)
    with a global block last, absolute position embeddings, the neck (1×1 and 3×3 convs, LayerNorm2d)."""

    def __init__(self, d=32, heads=2, out=16, grid=10, window=4):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, d, 8, 8)
        self.pos_embed = nn.Parameter(torch.randn(1, grid, grid, d) * 0.02)
        self.blocks = nn.ModuleList([SamBlock(d, heads, window, grid), SamBlock(d, heads, 0, grid)])
        self.neck = nn.Sequential(nn.Conv2d(d, out, 1, bias=False), LayerNorm2d(out), nn.Conv2d(out, out, 3, padding=1, bias=False), LayerNorm2d(out))

    def forward(self, pixel_values):
        x = self.patch_embed(pixel_values).permute(0, 2, 3, 1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x.permute(0, 3, 1, 2))


# ---------------------------------------------------------------- SAM's prompt encoder and mask decoder (segment-anything)
class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of normalised coordinates (a buffer: PyTorch never trains it)."""

    def __init__(self, feats):
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, feats))

    def encode(self, coords):
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix * (2 * math.pi)
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)


class TwoWayAttention(nn.Module):
    def __init__(self, d, heads, downsample=1):
        super().__init__()
        self.heads, inner = heads, d // downsample
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = nn.Linear(d, inner), nn.Linear(d, inner), nn.Linear(d, inner), nn.Linear(inner, d)

    def forward(self, q, k, v):
        split = lambda x: x.reshape(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)
        q, k, v = split(self.q_proj(q)), split(self.k_proj(k)), split(self.v_proj(v))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1) @ v
        return self.out_proj(a.transpose(1, 2).reshape(a.shape[0], a.shape[2], -1))


class TwoWayBlock(nn.Module):
    def __init__(self, d, heads, skip_first_pe):
        super().__init__()
        self.skip_first_pe = skip_first_pe
        self.self_attn, self.norm1 = TwoWayAttention(d, heads), nn.LayerNorm(d)
        self.cross_token_to_image, self.norm2 = TwoWayAttention(d, heads, 2), nn.LayerNorm(d)
        self.mlp1, self.mlp2, self.norm3 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d), nn.LayerNorm(d)
        self.cross_image_to_token, self.norm4 = TwoWayAttention(d, heads, 2), nn.LayerNorm(d)

    def forward(self, queries, keys, query_pe, key_pe):
        queries = self.self_attn(queries, queries, queries) if self.skip_first_pe else queries + self.self_attn(queries + query_pe, queries + query_pe, queries)
        queries = self.norm1(queries)
        queries = self.norm2(queries + self.cross_token_to_image(queries + query_pe, keys + key_pe, keys))
        queries = self.norm3(queries + self.mlp2(F.relu(self.mlp1(queries))))
        keys = self.norm4(keys + self.cross_image_to_token(keys + key_pe, queries + query_pe, queries))
        return queries, keys


class SamMaskDecoder(nn.Module):
    """PromptEncoder (points) + MaskDecoder as segment-anything writes them, small (d 32, 4 mask
    tokens, a 8×8 embedding), taking what transformers.js's prompt_encoder_mask_decoder takes:
    image embeddings, point coordinates in pixels and point labels (1 foreground, 0 background,
    -1 padding)."""

    def __init__(self, d=32, heads=2, grid=8, image=64, masks=3):
        super().__init__()
        self.grid, self.image, self.masks = grid, image, masks + 1
        self.pe_layer = PositionEmbeddingRandom(d // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, d) for _ in range(2))
        self.not_a_point_embed, self.no_mask_embed = nn.Embedding(1, d), nn.Embedding(1, d)
        self.iou_token, self.mask_tokens = nn.Embedding(1, d), nn.Embedding(self.masks, d)
        self.layers = nn.ModuleList([TwoWayBlock(d, heads, True), TwoWayBlock(d, heads, False)])
        self.final_attn_token_to_image, self.norm_final_attn = TwoWayAttention(d, heads, 2), nn.LayerNorm(d)
        self.upscale1, self.upscale_norm, self.upscale2 = nn.ConvTranspose2d(d, d // 4, 2, 2), LayerNorm2d(d // 4), nn.ConvTranspose2d(d // 4, d // 8, 2, 2)
        self.hypernetworks = nn.ModuleList(nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d // 8)) for _ in range(self.masks))
        self.iou_head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, self.masks))

    def forward(self, image_embeddings, point_coords, point_labels):
        b = point_coords.shape[0]
        # prompt encoder: Fourier features of the shifted, normalised points; the label picks an embedding
        pe = self.pe_layer.encode((point_coords + 0.5) / self.image)
        labels = point_labels[..., None]
        pe = torch.where(labels == -1, torch.zeros_like(pe) + self.not_a_point_embed.weight, pe)
        pe = pe + torch.where(labels == 0, self.point_embeddings[0].weight.expand_as(pe), torch.zeros_like(pe))
        sparse = pe + torch.where(labels == 1, self.point_embeddings[1].weight.expand_as(pe), torch.zeros_like(pe))
        dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(b, -1, self.grid, self.grid)
        ys, xs = torch.meshgrid((torch.arange(self.grid) + 0.5) / self.grid, (torch.arange(self.grid) + 0.5) / self.grid, indexing="ij")
        image_pe = self.pe_layer.encode(torch.stack([xs, ys], -1)).permute(2, 0, 1)[None]
        # mask decoder
        tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], 0)[None].expand(b, -1, -1)
        tokens = torch.cat([tokens, sparse], 1)
        src = image_embeddings + dense
        c, h, w = src.shape[1:]
        keys = src.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.expand(b, -1, -1, -1).flatten(2).permute(0, 2, 1)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(queries + tokens, keys + key_pe, keys))
        iou_out, mask_out = queries[:, 0], queries[:, 1:1 + self.masks]
        up = F.gelu(self.upscale2(F.gelu(self.upscale_norm(self.upscale1(keys.transpose(1, 2).reshape(b, c, h, w))))))
        hyper = torch.stack([mlp(mask_out[:, i]) for i, mlp in enumerate(self.hypernetworks)], 1)
        masks = (hyper @ up.flatten(2)).reshape(b, -1, up.shape[2], up.shape[3])
        return masks[:, 1:], self.iou_head(iou_out)[:, 1:]  # multimask output: the three masks and their scores


# ---------------------------------------------------------------- ConvNeXt V2 (its GRN block)
class GRN(nn.Module):
    """ConvNeXt V2's global response normalisation over channels-last activations."""

    def __init__(self, d):
        super().__init__()
        self.gamma, self.beta = nn.Parameter(0.1 * torch.randn(1, 1, 1, d)), nn.Parameter(0.1 * torch.randn(1, 1, 1, d))

    def forward(self, x):
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class ConvNeXtV2Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.dwconv, self.norm = nn.Conv2d(d, d, 7, padding=3, groups=d), nn.LayerNorm(d, eps=1e-6)
        self.pwconv1, self.grn, self.pwconv2 = nn.Linear(d, 4 * d), GRN(4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        return x + self.pwconv2(self.grn(F.gelu(self.pwconv1(y)))).permute(0, 3, 1, 2)


class ConvNeXtV2(nn.Module):
    """ConvNeXt V2's layout, two stages (channels 24, 48): a 4×4 stem with LayerNorm2d, a
    downsampling LayerNorm2d + 2×2 conv, blocks with GRN, a pooled LayerNorm head, 10 classes."""

    def __init__(self, dims=(24, 48), classes=10):
        super().__init__()
        self.stem, self.stem_norm = nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0])
        self.stage0 = nn.Sequential(ConvNeXtV2Block(dims[0]), ConvNeXtV2Block(dims[0]))
        self.down_norm, self.down = LayerNorm2d(dims[0]), nn.Conv2d(dims[0], dims[1], 2, 2)
        self.stage1 = nn.Sequential(ConvNeXtV2Block(dims[1]), ConvNeXtV2Block(dims[1]))
        self.head_norm, self.head = nn.LayerNorm(dims[1], eps=1e-6), nn.Linear(dims[1], classes)

    def forward(self, x):
        x = self.stage0(self.stem_norm(self.stem(x)))
        x = self.stage1(self.down(self.down_norm(x)))
        return self.head(self.head_norm(x.mean([-2, -1])))


# ---------------------------------------------------------------- export and reference
def yolov8_case():
    x = torch.rand(2, 3, 64, 96)
    return dict(model=YOLOv8(), inputs={"images": x}, outputs=["output0"], opset=12,
                dynamic={"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 2: "anchors"}},
                target=lambda out: torch.rand_like(out[0]) * 10,
                loss=lambda out, y: F.mse_loss(out[0], y))


def unet2d_case():
    return dict(model=UNet2D(), inputs={"sample": torch.randn(2, 3, 16, 16), "timestep": torch.tensor([10, 700])}, outputs=["noise_pred"], opset=17,
                dynamic={"sample": {0: "batch"}, "timestep": {0: "batch"}, "noise_pred": {0: "batch"}},
                target=lambda out: torch.randn_like(out[0]),
                loss=lambda out, y: F.mse_loss(out[0], y))


def clip_case():
    ids = torch.randint(1, 98, (4, 7))
    ids[torch.arange(4), torch.tensor([6, 4, 5, 3])] = 99  # the end-of-text token, the largest id, where CLIP pools
    return dict(model=CLIP(), inputs={"input_ids": ids, "pixel_values": torch.randn(4, 3, 32, 32)}, outputs=["logits_per_image", "logits_per_text"], opset=14,
                dynamic={"input_ids": {0: "batch", 1: "sequence"}, "pixel_values": {0: "batch"}, "logits_per_image": {0: "batch", 1: "batch"}, "logits_per_text": {0: "batch", 1: "batch"}},
                target=lambda out: torch.arange(4),
                loss=lambda out, y: (F.cross_entropy(out[0], y) + F.cross_entropy(out[1], y)) / 2)


def segformer_case():
    x = torch.randn(2, 3, 64, 64)
    return dict(model=Segformer(), inputs={"pixel_values": x}, outputs=["logits"], opset=14,
                dynamic={"pixel_values": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch", 2: "h", 3: "w"}},
                target=lambda out: torch.randint(0, 5, (2, out[0].shape[2], out[0].shape[3])),
                loss=lambda out, y: F.cross_entropy(out[0], y))


def depth_anything_case():
    # torch.onnx folds the position table into two initializers: the class token's row, and the
    # grid permuted for the bicubic Resize. Their gradients are the table's, cut the same way.
    grid = lambda P: P["pos_embed"][:, 1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    return dict(model=DepthAnything(), derived=[lambda P: P["pos_embed"][:, :1], grid], inputs={"pixel_values": torch.randn(2, 3, 70, 84)}, outputs=["predicted_depth"], opset=14,
                dynamic={"pixel_values": {0: "batch", 2: "height", 3: "width"}, "predicted_depth": {0: "batch", 1: "height", 2: "width"}},
                target=lambda out: torch.rand_like(out[0]),
                loss=lambda out, y: F.mse_loss(out[0], y))


def t5_case():
    ids, dec = torch.randint(0, 100, (2, 9)), torch.randint(0, 100, (2, 6))
    return dict(model=T5(), inputs={"input_ids": ids, "decoder_input_ids": dec}, outputs=["logits"], opset=14,
                dynamic={"input_ids": {0: "batch", 1: "encoder_sequence"}, "decoder_input_ids": {0: "batch", 1: "decoder_sequence"}, "logits": {0: "batch", 1: "decoder_sequence"}},
                target=lambda out: torch.randint(0, 100, out[0].shape[:2]),
                loss=lambda out, y: F.cross_entropy(out[0].flatten(0, 1), y.flatten()))


def sam_encoder_case():
    return dict(model=SamImageEncoder(), inputs={"pixel_values": torch.randn(2, 3, 80, 80)}, outputs=["image_embeddings"], opset=16,
                dynamic={"pixel_values": {0: "batch"}, "image_embeddings": {0: "batch"}},
                target=lambda out: torch.randn_like(out[0]),
                loss=lambda out, y: F.mse_loss(out[0], y))


def sam_decoder_case():
    coords = torch.tensor([[[10.0, 20.0], [40.0, 33.0], [0.0, 0.0]], [[50.0, 8.0], [22.0, 60.0], [5.0, 5.0]]])
    labels = torch.tensor([[1, 0, -1], [1, 1, 0]])
    # torch.onnx folds the IoU token and the mask tokens into one [1, 5, d] tensor
    return dict(model=SamMaskDecoder(), derived=[lambda P: torch.cat([P["iou_token.weight"], P["mask_tokens.weight"]], 0)[None]], inputs={"image_embeddings": torch.randn(2, 32, 8, 8), "point_coords": coords, "point_labels": labels},
                outputs=["pred_masks", "iou_scores"], opset=16,
                dynamic={"image_embeddings": {0: "batch"}, "point_coords": {0: "batch", 1: "points"}, "point_labels": {0: "batch", 1: "points"}, "pred_masks": {0: "batch"}, "iou_scores": {0: "batch"}},
                target=lambda out: (torch.rand_like(out[0]) > 0.5).float(),
                loss=lambda out, y: F.binary_cross_entropy_with_logits(out[0], y) + F.mse_loss(out[1], torch.full_like(out[1], 0.5)))


def convnextv2_case():
    return dict(model=ConvNeXtV2(), inputs={"pixel_values": torch.randn(2, 3, 64, 64)}, outputs=["logits"], opset=14,
                dynamic={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
                target=lambda out: torch.tensor([3, 7]),
                loss=lambda out, y: F.cross_entropy(out[0], y))


CASES = {"yolov8": yolov8_case, "unet2d": unet2d_case, "clip": clip_case, "segformer": segformer_case, "depth_anything": depth_anything_case, "t5": t5_case, "sam_encoder": sam_encoder_case, "sam_decoder": sam_decoder_case, "convnextv2": convnextv2_case}
# More families, one module each, with CASES of the same form (a case may add "norms": its own
# normalisation classes, perturbed like the ones below).
for family in ("arch_text", "arch_detection", "arch_vision", "arch_levit", "arch_lm", "arch_lm2", "arch_speech", "arch_bit", "arch_restore", "arch_vl", "arch_moe", "arch_graph", "arch_points", "arch_tts", "arch_seq", "arch_gan", "arch_volume", "arch_tabular", "arch_hf", "arch_timm"):
    CASES.update(__import__(family).CASES)


def main():
    out_dir, names = bench_args(CASES)
    for name in names:
        torch.manual_seed(0)
        case = CASES[name]()
        m = case["model"].eval()
        for mod in m.modules():  # trained-looking norms: a fresh one's ones and zeros match each other's initializers
            if isinstance(mod, (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d, T5LayerNorm, LayerNorm2d) + tuple(case.get("norms", ()))):
                with torch.no_grad():
                    mod.weight.add_(0.1 * torch.randn_like(mod.weight))
                    if getattr(mod, "bias", None) is not None:
                        mod.bias.add_(0.1 * torch.randn_like(mod.bias))
        inputs = case["inputs"]
        if "after_norms" in case:  # a case's own statistics, measured with the perturbed norms (arch_timm.py)
            case["after_norms"](m)
        path = os.path.join(out_dir, name)
        # a case may export with other inputs than its reference runs (a decoder's non-empty past)
        torch.onnx.export(m, tuple(case.get("export_inputs", inputs).values()), f"{path}.onnx", opset_version=case["opset"], input_names=list(inputs), output_names=case["outputs"],
                          dynamic_axes=case["dynamic"], training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=True)
        m.zero_grad(set_to_none=True)
        # a case may compute its reference without oneDNN, whose Conv1d weight gradients in
        # Debian's torch 1.13 can be wrong and vary from run to run (arch_hf.py's Whisper)
        onednn = torch.backends.mkldnn.flags(enabled=not case.get("reference_without_onednn", False))
        onednn.__enter__()
        # or in float64 (arch_timm.py: on deep ReLU nets PyTorch's float32 gradients differ from its
        # float64 ones by up to 1e-2 where a ReLU input lies within rounding of 0)
        f64 = case.get("reference_float64", False)
        if f64:
            try:
                out = m.double()(*[v.double() if v.is_floating_point() else v for v in inputs.values()])
            except RuntimeError as e:  # a model that makes float32 tensors in its forward (timm's ConViT)
                print(f"  reference in float32: {str(e).splitlines()[0][:100]}", flush=True)
                f64 = False
                m.float().zero_grad(set_to_none=True)
        if not f64:
            out = m(*inputs.values())
        # weight norm (g · v / ‖v‖, computed by a forward pre-hook): torch.onnx folds it into one
        # weight, whose gradient is the computed weight's, kept here
        computed = [mod.weight for mod in m.modules() if hasattr(mod, "weight_g")]
        for w in computed:
            w.retain_grad()
        out = out if isinstance(out, tuple) else (out,)
        y = case["target"](out)
        loss = case["loss"](out, y)
        loss.backward()
        onednn.__exit__(None, None, None)
        for k, v in inputs.items():
            np.save(f"{path}.{k}.npy", v.numpy())
        targets = y if isinstance(y, dict) else {"y": y}  # several loss inputs: one file each
        for k, v in targets.items():
            np.save(f"{path}.{k}.npy", v.numpy())
        proto = onnx.load(f"{path}.onnx")
        grads = onnx_names(proto, m)
        params = dict(m.named_parameters())
        values = {k: p.detach() for k, p in params.items()}
        pgrads = {k: (p.grad if p.grad is not None else torch.zeros_like(p)) for k, p in params.items()}
        for fold in case.get("derived", []):  # parameters the export folded into another tensor: its gradient, folded the same way
            want = fold(values).numpy()
            for i in proto.graph.initializer:
                arr = onnx.numpy_helper.to_array(i)
                if arr.shape == want.shape and np.array_equal(arr, want):
                    grads[i.name] = fold(pgrads).numpy()
        for w in computed:
            want = w.detach().numpy()
            for i in proto.graph.initializer:
                arr = onnx.numpy_helper.to_array(i)
                if arr.shape == want.shape and np.allclose(arr, want, rtol=1e-5, atol=1e-8):
                    grads[i.name] = w.grad.numpy()
        write_grads(path, grads)
        with open(f"{path}.json", "w") as f:
            json.dump({"loss": float(loss), **({"reference": "float64"} if f64 else {}), "inputs": {k: list(v.shape) for k, v in inputs.items()}, "targets": sorted(targets), "outputs": [list(o.shape) for o in out],
                       "params": sum(p.numel() for p in m.parameters() if p.requires_grad), "opset": case["opset"], "torch": torch.__version__, "grads": sorted(grads),
                       **({"stopGradient": case["stop_gradient"](proto)} if "stop_gradient" in case else {})}, f)
        print(f"{name}: loss {float(loss):.5f}, {len(grads)} parameters with gradients, outputs {[list(o.shape) for o in out]}", flush=True)


if __name__ == "__main__":
    main()
