"""Image restoration and matting models people run in browsers with onnxruntime-web, for
bench/popular_architectures.py (cases of the same form):

- esrgan: xinntao's Real-ESRGAN RRDBNet (basicsr/archs/rrdbnet_arch.py), the `scale=2` variant
  (RealESRGAN_x2plus): basicsr's own `pixel_unshuffle` at the input (view, permute, reshape: torch.onnx
  writes Shape/Gather/Div/Reshape/Transpose/Reshape with dynamic height and width, not SpaceToDepth;
  F.pixel_unshuffle exports the same Reshape/Transpose way at opset 11), `conv_first`, RRDB blocks
  of three ResidualDenseBlocks (five 3×3 convs over the dense concatenation, LeakyReLU 0.2, residual
  scaled by 0.2; the RRDB's own residual scaled by 0.2), `conv_body` with the trunk residual, two
  nearest ×2 F.interpolate + conv + LeakyReLU (`conv_up1`, `conv_up2`), `conv_hr`, `conv_last`.
  Width-reduced: num_feat 8, num_grow_ch 4, 2 RRDBs; RDB convs initialised as basicsr does
  (kaiming_normal × 0.1; biases then given small random values, `trained_biases`). Input [2, 3, 32, 32] → pixel_unshuffle [2, 12, 16, 16] → output
  [2, 3, 64, 64] (×2 overall: the body runs at 16×16 as the ×4 model would on a 16×16 input). Opset 11
  (Real-ESRGAN's scripts/pytorch2onnx.py), batch, height and width dynamic; loss: MSE to a target.
- modnet: ZHKKKe/MODNet (src/models/modnet.py, exported as onnx/export_onnx.py does, inference
  mode: only the matte is computed and output). A small MobileNetV2 backbone (MODNet's own
  mobilenetv2.py: conv_bn, InvertedResidual with ReLU6, conv_1x1_bn; encoder features at 1/2, 1/4,
  1/8, 1/16, 1/32), IBNorm (the first half of the channels BatchNorm2d, the second half
  InstanceNorm2d(affine=False), concatenated), Conv2dIBNormRelu, SEBlock (global pool, two bias-free
  Linears, sigmoid scaling), the low-resolution branch (SE on the 1/32 features, bilinear ×2 to lr16x
  and lr8x), the high-resolution branch (the image resized bilinearly to 1/2 and 1/4, the 1/2 and 1/4
  encoder features, lr8x upsampled), the fusion branch, matte = sigmoid [N, 1, H, W]. In inference
  mode the semantic head (`lr_branch.conv_lr`) and the detail head (`hr_branch.conv_hr`) are not in
  the graph: they are frozen here so the parameter count is the deployed graph's. Width-reduced:
  backbone channels 8…24 (last 32), expansion 2, hr_channels 8. Input [2, 3, 64, 64], opset 11,
  batch, height and width dynamic; the image in [-1, 1] as MODNet normalises it; BatchNorm statistics
  measured at scale (arch_vision.calibrated);
  loss: MSE of the matte to a target. torch.onnx writes each InstanceNorm2d(affine=False) as
  InstanceNormalization with constant ones and zeros (initializers, not PyTorch parameters).
- espcn: the super-resolution net of PyTorch's "exporting a model to ONNX and running it with
  onnxruntime" tutorial (ESPCN: conv 5×5/3×3/3×3 with ReLU, a conv to 9 channels, PixelShuffle(3),
  orthogonal init), exported as the tutorial does (opset 10, batch dynamic); input `input`
  [2, 1, 24, 24]; loss: MSE to a target. At opset 10 refit's loadModel upgrades it to 13 first.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from arch_vision import calibrated


# ---------------------------------------------------------------- Real-ESRGAN RRDBNet (basicsr's rrdbnet_arch.py)
def pixel_unshuffle(x, scale):
    """basicsr.archs.arch_util.pixel_unshuffle."""
    b, c, hh, hw = x.size()
    out_channel = c * (scale ** 2)
    assert hh % scale == 0 and hw % scale == 0
    h = hh // scale
    w = hw // scale
    x_view = x.view(b, c, h, scale, w, scale)
    return x_view.permute(0, 1, 3, 5, 2, 4).reshape(b, out_channel, h, w)


def default_init_weights(module_list, scale=1.0, bias_fill=0):
    """basicsr.archs.arch_util.default_init_weights (the Conv2d case)."""
    if not isinstance(module_list, list):
        module_list = [module_list]
    for module in module_list:
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                m.weight.data *= scale
                if m.bias is not None:
                    m.bias.data.fill_(bias_fill)


class ResidualDenseBlock(nn.Module):
    def __init__(self, num_feat=64, num_grow_ch=32):
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        default_init_weights([self.conv1, self.conv2, self.conv3, self.conv4, self.conv5], 0.1)

    def forward(self, x):
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, num_feat, num_grow_ch=32):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x):
        out = self.rdb1(x)
        out = self.rdb2(out)
        out = self.rdb3(out)
        return out * 0.2 + x


class RRDBNet(nn.Module):
    def __init__(self, num_in_ch=3, num_out_ch=3, scale=2, num_feat=8, num_block=2, num_grow_ch=4):
        super().__init__()
        self.scale = scale
        if scale == 2:
            num_in_ch = num_in_ch * 4
        elif scale == 1:
            num_in_ch = num_in_ch * 16
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat=num_feat, num_grow_ch=num_grow_ch) for _ in range(num_block)))  # basicsr's make_layer
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x):
        if self.scale == 2:
            feat = pixel_unshuffle(x, scale=2)
        elif self.scale == 1:
            feat = pixel_unshuffle(x, scale=4)
        else:
            feat = x
        feat = self.conv_first(feat)
        body_feat = self.conv_body(self.body(feat))
        feat = feat + body_feat
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


# ---------------------------------------------------------------- MODNet (ZHKKKe/MODNet src/models)
def _make_divisible(v, divisor, min_value=None):
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def conv_bn(inp, oup, stride):
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup), nn.ReLU6(inplace=True))


def conv_1x1_bn(inp, oup):
    return nn.Sequential(nn.Conv2d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, expansion, dilation=1):
        super().__init__()
        self.stride = stride
        hidden_dim = round(inp * expansion)
        self.use_res_connect = self.stride == 1 and inp == oup
        if expansion == 1:
            self.conv = nn.Sequential(
                nn.Conv2d(hidden_dim, hidden_dim, 3, stride, 1, groups=hidden_dim, dilation=dilation, bias=False),
                nn.BatchNorm2d(hidden_dim), nn.ReLU6(inplace=True),
                nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup))
        else:
            self.conv = nn.Sequential(
                nn.Conv2d(inp, hidden_dim, 1, 1, 0, bias=False), nn.BatchNorm2d(hidden_dim), nn.ReLU6(inplace=True),
                nn.Conv2d(hidden_dim, hidden_dim, 3, stride, 1, groups=hidden_dim, dilation=dilation, bias=False),
                nn.BatchNorm2d(hidden_dim), nn.ReLU6(inplace=True),
                nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup))

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2Backbone(nn.Module):
    """MODNet's MobileNetV2 (num_classes=None) and MobileNetV2Backbone.forward in one: the features
    list and the five encoder outputs. Reference setting (t, c, n, s): (1,16,1,1) (6,24,2,2)
    (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2) (6,320,1,1), stem 32, last 1280; here channels
    8…24, last 32, expansion 2, one or two blocks per stage (still a residual block at 1/4)."""

    def __init__(self, in_channels=3, expansion=2, input_channel=8, last_channel=32,
                 setting=((1, 8, 1, 1), (None, 8, 2, 2), (None, 8, 1, 2), (None, 16, 1, 2), (None, 16, 1, 1), (None, 24, 1, 2), (None, 24, 1, 1))):
        super().__init__()
        features = [conv_bn(in_channels, input_channel, 2)]
        ends = []
        for t, c, n, s in setting:
            output_channel = _make_divisible(int(c), 8)
            for i in range(n):
                features.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, expansion=expansion if t is None else t))
                input_channel = output_channel
            ends.append(len(features))
        features.append(conv_1x1_bn(input_channel, last_channel))
        self.features = nn.Sequential(*features)
        # enc2x after stage 1 (features[1]), enc4x after stage 2, enc8x after 3, enc16x after 5, enc32x after the last conv
        self.taps = (ends[0], ends[1], ends[2], ends[4], len(features))
        self.enc_channels = [setting[0][1], setting[1][1], setting[2][1], setting[4][1], last_channel]

    def forward(self, x):
        out, i = [], 0
        for tap in self.taps:
            while i < tap:
                x = self.features[i](x)
                i += 1
            out.append(x)
        return out


class IBNorm(nn.Module):
    """Combine Instance Norm and Batch Norm into One Layer."""

    def __init__(self, in_channels):
        super().__init__()
        self.bnorm_channels = int(in_channels / 2)
        self.inorm_channels = in_channels - self.bnorm_channels
        self.bnorm = nn.BatchNorm2d(self.bnorm_channels, affine=True)
        self.inorm = nn.InstanceNorm2d(self.inorm_channels, affine=False)

    def forward(self, x):
        bn_x = self.bnorm(x[:, :self.bnorm_channels, ...].contiguous())
        in_x = self.inorm(x[:, self.bnorm_channels:, ...].contiguous())
        return torch.cat((bn_x, in_x), 1)


class Conv2dIBNormRelu(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True, with_ibn=True, with_relu=True):
        super().__init__()
        layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=bias)]
        if with_ibn:
            layers.append(IBNorm(out_channels))
        if with_relu:
            layers.append(nn.ReLU(inplace=True))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


class SEBlock(nn.Module):
    def __init__(self, in_channels, out_channels, reduction=1):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(in_channels, int(in_channels // reduction), bias=False), nn.ReLU(inplace=True),
            nn.Linear(int(in_channels // reduction), out_channels, bias=False), nn.Sigmoid())

    def forward(self, x):
        b, c, _, _ = x.size()
        w = self.pool(x).view(b, c)
        w = self.fc(w).view(b, c, 1, 1)
        return x * w.expand_as(x)


class LRBranch(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        enc_channels = backbone.enc_channels
        self.backbone = backbone
        self.se_block = SEBlock(enc_channels[4], enc_channels[4], reduction=4)
        self.conv_lr16x = Conv2dIBNormRelu(enc_channels[4], enc_channels[3], 5, stride=1, padding=2)
        self.conv_lr8x = Conv2dIBNormRelu(enc_channels[3], enc_channels[2], 5, stride=1, padding=2)
        self.conv_lr = Conv2dIBNormRelu(enc_channels[2], 1, kernel_size=3, stride=2, padding=1, with_ibn=False, with_relu=False)

    def forward(self, img, inference):
        enc_features = self.backbone.forward(img)
        enc2x, enc4x, enc32x = enc_features[0], enc_features[1], enc_features[4]
        enc32x = self.se_block(enc32x)
        lr16x = F.interpolate(enc32x, scale_factor=2, mode="bilinear", align_corners=False)
        lr16x = self.conv_lr16x(lr16x)
        lr8x = F.interpolate(lr16x, scale_factor=2, mode="bilinear", align_corners=False)
        lr8x = self.conv_lr8x(lr8x)
        pred_semantic = None
        if not inference:
            lr = self.conv_lr(lr8x)
            pred_semantic = torch.sigmoid(lr)
        return pred_semantic, lr8x, [enc2x, enc4x]


class HRBranch(nn.Module):
    def __init__(self, hr_channels, enc_channels):
        super().__init__()
        self.tohr_enc2x = Conv2dIBNormRelu(enc_channels[0], hr_channels, 1, stride=1, padding=0)
        self.conv_enc2x = Conv2dIBNormRelu(hr_channels + 3, hr_channels, 3, stride=2, padding=1)
        self.tohr_enc4x = Conv2dIBNormRelu(enc_channels[1], hr_channels, 1, stride=1, padding=0)
        self.conv_enc4x = Conv2dIBNormRelu(2 * hr_channels, 2 * hr_channels, 3, stride=1, padding=1)
        self.conv_hr4x = nn.Sequential(
            Conv2dIBNormRelu(3 * hr_channels + 3, 2 * hr_channels, 3, stride=1, padding=1),
            Conv2dIBNormRelu(2 * hr_channels, 2 * hr_channels, 3, stride=1, padding=1),
            Conv2dIBNormRelu(2 * hr_channels, hr_channels, 3, stride=1, padding=1))
        self.conv_hr2x = nn.Sequential(
            Conv2dIBNormRelu(2 * hr_channels, 2 * hr_channels, 3, stride=1, padding=1),
            Conv2dIBNormRelu(2 * hr_channels, hr_channels, 3, stride=1, padding=1),
            Conv2dIBNormRelu(hr_channels, hr_channels, 3, stride=1, padding=1),
            Conv2dIBNormRelu(hr_channels, hr_channels, 3, stride=1, padding=1))
        self.conv_hr = nn.Sequential(
            Conv2dIBNormRelu(hr_channels + 3, hr_channels, 3, stride=1, padding=1),
            Conv2dIBNormRelu(hr_channels, 1, kernel_size=1, stride=1, padding=0, with_ibn=False, with_relu=False))

    def forward(self, img, enc2x, enc4x, lr8x, inference):
        img2x = F.interpolate(img, scale_factor=1 / 2, mode="bilinear", align_corners=False)
        img4x = F.interpolate(img, scale_factor=1 / 4, mode="bilinear", align_corners=False)
        enc2x = self.tohr_enc2x(enc2x)
        hr4x = self.conv_enc2x(torch.cat((img2x, enc2x), dim=1))
        enc4x = self.tohr_enc4x(enc4x)
        hr4x = self.conv_enc4x(torch.cat((hr4x, enc4x), dim=1))
        lr4x = F.interpolate(lr8x, scale_factor=2, mode="bilinear", align_corners=False)
        hr4x = self.conv_hr4x(torch.cat((hr4x, lr4x, img4x), dim=1))
        hr2x = F.interpolate(hr4x, scale_factor=2, mode="bilinear", align_corners=False)
        hr2x = self.conv_hr2x(torch.cat((hr2x, enc2x), dim=1))
        pred_detail = None
        if not inference:
            hr = F.interpolate(hr2x, scale_factor=2, mode="bilinear", align_corners=False)
            hr = self.conv_hr(torch.cat((hr, img), dim=1))
            pred_detail = torch.sigmoid(hr)
        return pred_detail, hr2x


class FusionBranch(nn.Module):
    def __init__(self, hr_channels, enc_channels):
        super().__init__()
        self.conv_lr4x = Conv2dIBNormRelu(enc_channels[2], hr_channels, 5, stride=1, padding=2)
        self.conv_f2x = Conv2dIBNormRelu(2 * hr_channels, hr_channels, 3, stride=1, padding=1)
        self.conv_f = nn.Sequential(
            Conv2dIBNormRelu(hr_channels + 3, int(hr_channels / 2), 3, stride=1, padding=1),
            Conv2dIBNormRelu(int(hr_channels / 2), 1, 1, stride=1, padding=0, with_ibn=False, with_relu=False))

    def forward(self, img, lr8x, hr2x):
        lr4x = F.interpolate(lr8x, scale_factor=2, mode="bilinear", align_corners=False)
        lr4x = self.conv_lr4x(lr4x)
        lr2x = F.interpolate(lr4x, scale_factor=2, mode="bilinear", align_corners=False)
        f2x = self.conv_f2x(torch.cat((lr2x, hr2x), dim=1))
        f = F.interpolate(f2x, scale_factor=2, mode="bilinear", align_corners=False)
        f = self.conv_f(torch.cat((f, img), dim=1))
        return torch.sigmoid(f)


class MODNet(nn.Module):
    def __init__(self, in_channels=3, hr_channels=8):
        super().__init__()
        self.backbone = MobileNetV2Backbone(in_channels)
        self.lr_branch = LRBranch(self.backbone)
        self.hr_branch = HRBranch(hr_channels, self.backbone.enc_channels)
        self.f_branch = FusionBranch(hr_channels, self.backbone.enc_channels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # MODNet._init_conv
                nn.init.kaiming_uniform_(m.weight, a=0, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.affine:  # MODNet._init_norm
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        # the heads inference mode leaves out of the graph (semantic and detail predictions)
        self.lr_branch.conv_lr.requires_grad_(False)
        self.hr_branch.conv_hr.requires_grad_(False)

    def forward(self, img, inference=True):
        pred_semantic, lr8x, [enc2x, enc4x] = self.lr_branch(img, inference)
        pred_detail, hr2x = self.hr_branch(img, enc2x, enc4x, lr8x, inference)
        pred_matte = self.f_branch(img, lr8x, hr2x)
        return pred_matte if inference else (pred_semantic, pred_detail, pred_matte)


# ---------------------------------------------------------------- cases
def trained_biases(m):
    """Small random conv biases, as a trained checkpoint has them. basicsr's init fills the dense
    blocks' biases with zeros, and torch.onnx (1.13) then keeps one zero [4] and one zero [8]
    initializer and writes the other 28 as Identity aliases of them (refit unties those too)."""
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.Conv2d) and mod.bias is not None:
                mod.bias.add_(0.01 * torch.randn_like(mod.bias))
    return m


def esrgan_case():
    return dict(model=trained_biases(RRDBNet(scale=2)), inputs={"input": torch.rand(2, 3, 32, 32)}, outputs=["output"], opset=11,
                dynamic={"input": {0: "batch", 2: "height", 3: "width"}, "output": {0: "batch", 2: "height", 3: "width"}},
                target=lambda out: torch.rand_like(out[0]),
                loss=lambda out, y: F.mse_loss(out[0], y))


def modnet_case():
    return dict(model=calibrated(MODNet(), torch.rand(4, 3, 64, 64) * 2 - 1), inputs={"input": torch.rand(2, 3, 64, 64) * 2 - 1}, outputs=["matte"], opset=11,
                dynamic={"input": {0: "batch", 2: "height", 3: "width"}, "matte": {0: "batch", 2: "height", 3: "width"}},
                target=lambda out: torch.rand_like(out[0]),
                loss=lambda out, y: F.mse_loss(out[0], y))


# ---------------------------------------------------------------- the PyTorch ONNX tutorial's super-resolution net
class SuperResolutionNet(nn.Module):
    """pytorch/tutorials' super_resolution_with_onnxruntime (ESPCN, Shi et al. 2016): conv 5×5, 3×3,
    3×3 with ReLU, a conv to upscale² channels, PixelShuffle; orthogonal init as the tutorial's."""

    def __init__(self, upscale_factor=3):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv1 = nn.Conv2d(1, 64, (5, 5), (1, 1), (2, 2))
        self.conv2 = nn.Conv2d(64, 64, (3, 3), (1, 1), (1, 1))
        self.conv3 = nn.Conv2d(64, 32, (3, 3), (1, 1), (1, 1))
        self.conv4 = nn.Conv2d(32, upscale_factor ** 2, (3, 3), (1, 1), (1, 1))
        self.pixel_shuffle = nn.PixelShuffle(upscale_factor)
        nn.init.orthogonal_(self.conv1.weight, nn.init.calculate_gain("relu"))
        nn.init.orthogonal_(self.conv2.weight, nn.init.calculate_gain("relu"))
        nn.init.orthogonal_(self.conv3.weight, nn.init.calculate_gain("relu"))
        nn.init.orthogonal_(self.conv4.weight)

    def forward(self, x):
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x))
        x = self.relu(self.conv3(x))
        return self.pixel_shuffle(self.conv4(x))


def espcn_case():
    axes = {0: "batch_size"}  # the tutorial's dynamic_axes
    return dict(model=SuperResolutionNet(), inputs={"input": torch.randn(2, 1, 24, 24)}, outputs=["output"], opset=10,
                dynamic={"input": axes, "output": axes},
                target=lambda out: torch.randn_like(out[0]),
                loss=lambda out, y: F.mse_loss(out[0], y))


CASES = {"esrgan": esrgan_case, "modnet": modnet_case, "espcn": espcn_case}
