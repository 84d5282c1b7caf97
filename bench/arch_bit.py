"""Big Transfer (BiT), for bench/popular_architectures.py (cases of the same form):

- bit_resnet: timm's resnetv2_50x1_bit (ResNetV2, `_create_resnetv2_bit`), width- and depth-reduced:
  StdConv2d (weight standardization in forward, as timm writes it: F.batch_norm in training mode
  over the weight reshaped to [1, out, fan_in], then F.conv2d; eps 1e-8 as `_create_resnetv2_bit`
  passes it, timm's StdConv2d default being 1e-6; padding timm's get_padding, no bias),
  GroupNormAct (GroupNorm then ReLU; 4 groups here, 32 in BiT), the 'fixed' stem (StdConv 7×7 s2,
  ConstantPad2d(1, 0), MaxPool 3×3 s2), PreActBottleneck blocks (norm1 → conv1 1×1, norm2 → conv2
  3×3 with the stride, norm3 → conv3 1×1, the first block of each stage projecting the
  pre-activated input by DownsampleConv's StdConv 1×1), the final norm, ClassifierHead with
  use_conv (global average pool, 1×1 conv `head.fc` with bias, flatten). Four stages (stem 16,
  channels 32, 64, 128, 256, depths 2, 1, 1, 1: an identity shortcut in stage 0, timm's
  bottle_ratio 0.25), timm's _init_weights, 10 classes, input 64×64, opset 13 (14 and 17
  export it the same way, below), batch dynamic; loss: cross-entropy.

  The weight standardization is a training-mode batch norm of a parameter. torch.onnx (1.13) writes
  each as a BatchNormalization with its training outputs (opset 13: five outputs; 14 and later:
  training_mode=1 and three), scale and bias Constant ones and zeros, and as its "running" mean and
  variance the moments it computes itself (symbolic_helper._batchnorm_helper's _var_mean for a
  batch norm without running statistics: ReduceMean, Sub, Mul, ReduceMean) over a transposed copy
  of the weight that constant folding stores as an initializer of its own (onnx::ReduceMean_N,
  [1, fan_in, out]). The weight itself is the initializer onnx::BatchNormalization_N, [1, out,
  fan_in] (Reshape folded), under which the bench compares its gradient; the copies are no
  PyTorch parameter.
"""
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F


def get_padding(kernel_size, stride=1, dilation=1):
    return ((stride - 1) + dilation * (kernel_size - 1)) // 2


def make_divisible(v, divisor=8, min_value=None, round_limit=.9):
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


class StdConv2d(nn.Conv2d):
    """timm.layers.StdConv2d."""

    def __init__(self, in_channel, out_channels, kernel_size, stride=1, padding=None, dilation=1, groups=1, bias=False, eps=1e-6):
        if padding is None:
            padding = get_padding(kernel_size, stride, dilation)
        super().__init__(in_channel, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=bias)
        self.eps = eps

    def forward(self, x):
        weight = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True, momentum=0., eps=self.eps).reshape_as(self.weight)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class GroupNormAct(nn.GroupNorm):
    """timm.layers.GroupNormAct with ReLU (a GroupNorm subclass, so the bench perturbs its affine)."""

    def __init__(self, num_channels, num_groups=32, eps=1e-5, affine=True, apply_act=True):
        super().__init__(num_groups, num_channels, eps=eps, affine=affine)
        self.act = nn.ReLU(inplace=True) if apply_act else nn.Identity()

    def forward(self, x):
        return self.act(F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps))


class DownsampleConv(nn.Module):
    def __init__(self, in_chs, out_chs, stride=1, preact=True, conv_layer=None, norm_layer=None):
        super().__init__()
        self.conv = conv_layer(in_chs, out_chs, 1, stride=stride)
        self.norm = nn.Identity() if preact else norm_layer(out_chs, apply_act=False)

    def forward(self, x):
        return self.norm(self.conv(x))


class PreActBottleneck(nn.Module):
    def __init__(self, in_chs, out_chs, bottle_ratio=0.25, stride=1, conv_layer=None, norm_layer=None, proj_layer=None):
        super().__init__()
        mid_chs = make_divisible(out_chs * bottle_ratio)
        self.downsample = proj_layer(in_chs, out_chs, stride=stride, preact=True, conv_layer=conv_layer, norm_layer=norm_layer) if proj_layer is not None else None
        self.norm1 = norm_layer(in_chs)
        self.conv1 = conv_layer(in_chs, mid_chs, 1)
        self.norm2 = norm_layer(mid_chs)
        self.conv2 = conv_layer(mid_chs, mid_chs, 3, stride=stride)
        self.norm3 = norm_layer(mid_chs)
        self.conv3 = conv_layer(mid_chs, out_chs, 1)
        self.drop_path = nn.Identity()

    def forward(self, x):
        x_preact = self.norm1(x)
        shortcut = x
        if self.downsample is not None:
            shortcut = self.downsample(x_preact)
        x = self.conv1(x_preact)
        x = self.conv2(self.norm2(x))
        x = self.conv3(self.norm3(x))
        return self.drop_path(x) + shortcut


class ResNetStage(nn.Module):
    def __init__(self, in_chs, out_chs, stride, depth, conv_layer, norm_layer):
        super().__init__()
        self.blocks = nn.Sequential()
        proj_layer, prev = DownsampleConv, in_chs
        for i in range(depth):
            self.blocks.add_module(str(i), PreActBottleneck(prev, out_chs, stride=stride if i == 0 else 1, conv_layer=conv_layer, norm_layer=norm_layer, proj_layer=proj_layer))
            prev, proj_layer = out_chs, None

    def forward(self, x):
        return self.blocks(x)


class ClassifierHead(nn.Module):
    """timm's ClassifierHead(pool_type='avg', use_conv=True): pool keeping 1×1, 1×1 conv, flatten."""

    def __init__(self, in_features, num_classes):
        super().__init__()
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.)
        self.fc = nn.Conv2d(in_features, num_classes, 1, bias=True)
        self.flatten = nn.Flatten(1)

    def forward(self, x):
        return self.flatten(self.fc(self.drop(self.global_pool(x))))


class ResNetV2Bit(nn.Module):
    """ResNetV2 as `_create_resnetv2_bit` builds it (stem_type 'fixed', StdConv2d eps 1e-8, preact)."""

    def __init__(self, layers=(2, 1, 1, 1), channels=(32, 64, 128, 256), stem_chs=16, groups=4, num_classes=10):
        super().__init__()
        conv_layer = partial(StdConv2d, eps=1e-8)
        norm_layer = partial(GroupNormAct, num_groups=groups)
        self.stem = nn.Sequential()
        self.stem.add_module("conv", conv_layer(3, stem_chs, kernel_size=7, stride=2))
        self.stem.add_module("pad", nn.ConstantPad2d(1, 0.))
        self.stem.add_module("pool", nn.MaxPool2d(kernel_size=3, stride=2, padding=0))
        self.stages = nn.Sequential()
        prev = stem_chs
        for i, (d, c) in enumerate(zip(layers, channels)):
            self.stages.add_module(str(i), ResNetStage(prev, c, 1 if i == 0 else 2, d, conv_layer, norm_layer))
            prev = c
        self.norm = norm_layer(prev)
        self.head = ClassifierHead(prev, num_classes)
        for name, m in self.named_modules():  # timm's _init_weights (zero_init_last False)
            if "head.fc" in name and isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.head(self.norm(self.stages(self.stem(x))))


def bit_resnet_case():
    return dict(model=ResNetV2Bit(), inputs={"pixel_values": torch.randn(2, 3, 64, 64)}, outputs=["logits"], opset=13,
                dynamic={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
                target=lambda out: torch.tensor([3, 7]),
                loss=lambda out, y: F.cross_entropy(out[0], y))


CASES = {"bit_resnet": bit_resnet_case}
