"""Image-to-image generators people export for browsers and apps (style transfer, photo-to-anime,
day-to-night), for bench/popular_architectures.py (cases of the same form), written after their
reference code, width-reduced, random weights:

- cyclegan: junyanz/pytorch-CycleGAN-and-pix2pix's ResnetGenerator (models/networks.py) with its
  defaults: ReflectionPad2d(3) + 7×7 conv, InstanceNorm2d without affine parameters or running
  statistics, two stride-2 downsampling convs, ResnetBlocks with padding_type 'reflect' (pad, conv,
  norm, ReLU, pad, conv, norm), two ConvTranspose2d upsampling layers (output_padding 1), a final
  ReflectionPad2d(3) + 7×7 conv and tanh. ngf 8, 2 blocks, input 32×32, opset 13, batch, height and
  width dynamic; loss: L1 to a target (CycleGAN's cycle and identity terms are L1).
- fast_style: pytorch/examples' fast_neural_style TransformerNet (ConvLayer = ReflectionPad2d +
  Conv2d; InstanceNorm2d with affine parameters; ResidualBlocks; UpsampleConvLayer = nearest
  interpolate ×2 + ReflectionPad2d + Conv2d), widths 8/16/32, 2 residual blocks, input 32×32,
  opset 13, batch, height and width dynamic; loss: MSE to a target (the content term on the output
  itself, its VGG features left out).
- pix2pix: the same repository's UnetGenerator (UnetSkipConnectionBlock: LeakyReLU 0.2 and a
  stride-2 4×4 conv down, ReLU and ConvTranspose2d up, BatchNorm2d, skip concatenations, tanh),
  ngf 8, 4 levels, input 32×32, opset 13, batch dynamic; loss: L1 to a target (pix2pix's L1 term).
"""
import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from arch_vision import calibrated


# ---------------------------------------------------------------- CycleGAN's ResnetGenerator
class ResnetBlock(nn.Module):
    def __init__(self, dim, norm_layer, use_bias):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias), norm_layer(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias), norm_layer(dim))

    def forward(self, x):
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    def __init__(self, input_nc=3, output_nc=3, ngf=8, n_blocks=2):
        super().__init__()
        norm_layer = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)  # get_norm_layer('instance')
        use_bias = True  # norm_layer.func == nn.InstanceNorm2d
        model = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=use_bias), norm_layer(ngf), nn.ReLU(True)]
        for i in range(2):
            mult = 2 ** i
            model += [nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=use_bias), norm_layer(ngf * mult * 2), nn.ReLU(True)]
        mult = 4
        for _ in range(n_blocks):
            model += [ResnetBlock(ngf * mult, norm_layer, use_bias)]
        for i in range(2):
            mult = 2 ** (2 - i)
            model += [nn.ConvTranspose2d(ngf * mult, int(ngf * mult / 2), kernel_size=3, stride=2, padding=1, output_padding=1, bias=use_bias),
                      norm_layer(int(ngf * mult / 2)), nn.ReLU(True)]
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        return self.model(x)


def cyclegan_case():
    axes = {0: "batch", 2: "height", 3: "width"}
    return dict(model=ResnetGenerator(), inputs={"image": torch.randn(2, 3, 32, 32)}, outputs=["output"], opset=13,
                dynamic={"image": axes, "output": axes},
                target=lambda out: 0.5 * torch.randn_like(out[0]),
                loss=lambda out, y: F.l1_loss(out[0], y))


# ---------------------------------------------------------------- fast-neural-style's TransformerNet
class ConvLayer(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride):
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x):
        return self.conv2d(self.reflection_pad(x))


class ResidualBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1, self.in1 = ConvLayer(channels, channels, 3, 1), nn.InstanceNorm2d(channels, affine=True)
        self.conv2, self.in2 = ConvLayer(channels, channels, 3, 1), nn.InstanceNorm2d(channels, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.relu(self.in1(self.conv1(x)))
        return self.in2(self.conv2(out)) + x


class UpsampleConvLayer(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride, upsample=None):
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x):
        if self.upsample:
            x = F.interpolate(x, mode="nearest", scale_factor=self.upsample)
        return self.conv2d(self.reflection_pad(x))


class TransformerNet(nn.Module):
    def __init__(self, w=(8, 16, 32), blocks=2):
        super().__init__()
        self.conv1, self.in1 = ConvLayer(3, w[0], 9, 1), nn.InstanceNorm2d(w[0], affine=True)
        self.conv2, self.in2 = ConvLayer(w[0], w[1], 3, 2), nn.InstanceNorm2d(w[1], affine=True)
        self.conv3, self.in3 = ConvLayer(w[1], w[2], 3, 2), nn.InstanceNorm2d(w[2], affine=True)
        self.res = nn.Sequential(*[ResidualBlock(w[2]) for _ in range(blocks)])
        self.deconv1, self.in4 = UpsampleConvLayer(w[2], w[1], 3, 1, upsample=2), nn.InstanceNorm2d(w[1], affine=True)
        self.deconv2, self.in5 = UpsampleConvLayer(w[1], w[0], 3, 1, upsample=2), nn.InstanceNorm2d(w[0], affine=True)
        self.deconv3 = ConvLayer(w[0], 3, 9, 1)
        self.relu = nn.ReLU()

    def forward(self, X):
        y = self.relu(self.in1(self.conv1(X)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res(y)
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


def fast_style_case():
    axes = {0: "batch", 2: "height", 3: "width"}
    return dict(model=TransformerNet(), inputs={"image": torch.randn(2, 3, 32, 32)}, outputs=["stylized"], opset=13,
                dynamic={"image": axes, "stylized": axes},
                target=lambda out: torch.randn_like(out[0]),
                loss=lambda out, y: F.mse_loss(out[0], y),
                norms=(nn.InstanceNorm2d,))


# ---------------------------------------------------------------- pix2pix's UnetGenerator
class UnetSkipConnectionBlock(nn.Module):
    def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False, innermost=False, norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.outermost = outermost
        use_bias = False  # norm_layer is BatchNorm2d
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        downrelu, downnorm = nn.LeakyReLU(0.2, True), norm_layer(inner_nc)
        uprelu, upnorm = nn.ReLU(True), norm_layer(outer_nc)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            model = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            model = [downrelu, downconv, uprelu, upconv, upnorm]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            model = [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)  # add skip connections


class UnetGenerator(nn.Module):
    def __init__(self, input_nc=3, output_nc=3, num_downs=4, ngf=8):
        super().__init__()
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 4, innermost=True)
        for _ in range(num_downs - 4):
            block = UnetSkipConnectionBlock(ngf * 4, ngf * 4, submodule=block)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block)
        self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True)

    def forward(self, x):
        return self.model(x)


def pix2pix_case():
    return dict(model=calibrated(UnetGenerator(), torch.randn(8, 3, 32, 32), mean_square=False), inputs={"image": torch.randn(2, 3, 32, 32)}, outputs=["output"], opset=13,
                dynamic={"image": {0: "batch"}, "output": {0: "batch"}},
                target=lambda out: 0.5 * torch.randn_like(out[0]),
                loss=lambda out, y: F.l1_loss(out[0], y))


CASES = {"cyclegan": cyclegan_case, "fast_style": fast_style_case, "pix2pix": pix2pix_case}
