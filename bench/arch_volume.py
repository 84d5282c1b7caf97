"""Volumetric models (medical imaging: CT and MRI segmentation, as MONAI builds and exports them)
for bench/popular_architectures.py (cases of the same form):

- unet3d: MONAI's BasicUNet layout, width-reduced (TwoConv: Conv3d 3×3×3 + InstanceNorm3d with
  affine parameters + LeakyReLU 0.1, twice; Down: MaxPool3d 2 then TwoConv; UpCat: ConvTranspose3d
  2×2×2 stride 2, concatenation with the skip, TwoConv; a 1×1×1 head to the classes), features
  8, 8, 16, 32. Input `image` [1, 1, 16, 16, 16]; opset 13, batch dynamic; loss: per-voxel
  cross-entropy (MONAI's DiceCE without its Dice term).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class TwoConv(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__()
        for i, (a, b) in enumerate(((cin, cout), (cout, cout))):
            self.add_module(f"conv_{i}", nn.Sequential(nn.Conv3d(a, b, 3, padding=1), nn.InstanceNorm3d(b, affine=True), nn.LeakyReLU(0.1)))


class Down(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__()
        self.add_module("max_pooling", nn.MaxPool3d(2))
        self.add_module("convs", TwoConv(cin, cout))


class UpCat(nn.Module):
    def __init__(self, cin, ccat, cout):
        super().__init__()
        self.upsample = nn.ConvTranspose3d(cin, cin // 2, 2, stride=2)
        self.convs = TwoConv(ccat + cin // 2, cout)

    def forward(self, x, x_e):
        return self.convs(torch.cat([x_e, self.upsample(x)], dim=1))


class BasicUNet(nn.Module):
    def __init__(self, cin=1, classes=3, f=(8, 8, 16, 32)):
        super().__init__()
        self.conv_0 = TwoConv(cin, f[0])
        self.down_1, self.down_2, self.down_3 = Down(f[0], f[1]), Down(f[1], f[2]), Down(f[2], f[3])
        self.upcat_3, self.upcat_2, self.upcat_1 = UpCat(f[3], f[2], f[2]), UpCat(f[2], f[1], f[1]), UpCat(f[1], f[0], f[0])
        self.final_conv = nn.Conv3d(f[0], classes, 1)

    def forward(self, image):
        x0 = self.conv_0(image)
        x1 = self.down_1(x0)
        x2 = self.down_2(x1)
        x3 = self.down_3(x2)
        u3 = self.upcat_3(x3, x2)
        u2 = self.upcat_2(u3, x1)
        u1 = self.upcat_1(u2, x0)
        return self.final_conv(u1)


def unet3d_case():
    return dict(model=BasicUNet(), inputs={"image": torch.randn(1, 1, 16, 16, 16)}, outputs=["logits"], opset=13,
                dynamic={"image": {0: "batch"}, "logits": {0: "batch"}},
                target=lambda out: torch.randint(0, 3, (1, 16, 16, 16)),
                loss=lambda out, y: F.cross_entropy(out[0], y),
                norms=(nn.InstanceNorm3d,))


CASES = {"unet3d": unet3d_case}
