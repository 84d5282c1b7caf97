"""Point-cloud and windowed-attention architectures people deploy, for bench/popular_architectures.py
(cases of the same form):

- swin_v2: torchvision's swin_v2_t layout built small (SwinTransformer with SwinTransformerBlockV2 and
  PatchMergingV2: embed 16, depths 2 and 2, heads 2 and 4, window 4): Swin V2's continuous position
  bias (the `cpb_mlp` on log-spaced relative coordinates, gathered by `relative_position_index`,
  16·sigmoid), cosine attention with a clamped learned `logit_scale`, the key bias zeroed, post-norm,
  shifted windows at 8×8 (window 4 < 8) and none at 4×4 (window ≥ map). Input 32×32, opset 14,
  batch dynamic; loss: cross-entropy.
- pointnet: the PointNet classifier (charlesq34/pointnet as fxia22/pointnet.pytorch's PointNetCls
  ports it, width-reduced): the STN3d T-Net (Conv1d 3→16→32→64 with BatchNorm1d and ReLU, max over
  the points, FCs with BN to 9 values plus the flattened identity), `torch.bmm` of the points by
  the 3×3 transform, the shared MLP (Conv1d + BN + ReLU, ReLU on every layer as charlesq34's
  original has it), the global max pool `torch.max(x, 2, keepdim=True)[0]`, the FC head with BN and
  dropout (off in eval) to `logits`. Input `points` [2, 3, 64], opset 13, batch dynamic;
  BatchNorm statistics measured (arch_vision's `calibrated`, BatchNorm1d); loss: cross-entropy. The max pools
  see ties (channels whose 64 ReLU outputs are all 0); those carry no parameter gradient either
  way, since ReLU's derivative at its zero side is 0.
- dgcnn: the DGCNN classifier (WangYueFTD/dgcnn's model.py, width-reduced): EdgeConv blocks whose
  k-NN graph is recomputed in feature space each block (TopK of pairwise distances, neighbours by a
  flattened Gather), max over neighbours, max and mean pooling over points. Input `points`
  [2, 3, 32], k 4; opset 13, batch dynamic; BatchNorm statistics measured; loss: cross-entropy.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2

from arch_vision import calibrated


def _zero(g, self):
    """aten::zero (torch 1.13 has no symbolic for it): zeros of self's shape and type. torchvision's
    ShiftedWindowAttentionV2 zeroes the key third of a clone of the qkv bias in place
    (`qkv_bias[length : 2 * length].zero_()`), which the export rewrites to zero + index_put."""
    return g.op("Mul", self, g.op("Constant", value_t=torch.tensor(0.0)))


def swin_v2_case():
    torch.onnx.register_custom_op_symbolic("aten::zero", _zero, 9)
    m = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4], stochastic_depth_prob=0.0,
                        block=SwinTransformerBlockV2, downsample_layer=PatchMergingV2, num_classes=10)
    return dict(model=m, inputs={"pixel_values": torch.randn(2, 3, 32, 32)}, outputs=["logits"], opset=14,
                dynamic={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
                target=lambda out: torch.tensor([3, 7]),
                loss=lambda out, y: F.cross_entropy(out[0], y))


# ---------------------------------------------------------------- PointNet (fxia22/pointnet.pytorch's model.py)
class STN3d(nn.Module):
    def __init__(self, c=(16, 32, 64), f=(32, 16)):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = nn.Conv1d(3, c[0], 1), nn.Conv1d(c[0], c[1], 1), nn.Conv1d(c[1], c[2], 1)
        self.fc1, self.fc2, self.fc3 = nn.Linear(c[2], f[0]), nn.Linear(f[0], f[1]), nn.Linear(f[1], 9)
        self.relu = nn.ReLU()
        self.bn1, self.bn2, self.bn3 = nn.BatchNorm1d(c[0]), nn.BatchNorm1d(c[1]), nn.BatchNorm1d(c[2])
        self.bn4, self.bn5 = nn.BatchNorm1d(f[0]), nn.BatchNorm1d(f[1])
        self.c = c[2]

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        x = torch.max(x, 2, keepdim=True)[0]
        x = x.view(-1, self.c)
        x = F.relu(self.bn4(self.fc1(x)))
        x = F.relu(self.bn5(self.fc2(x)))
        x = self.fc3(x)
        x = x + torch.eye(3, dtype=x.dtype).flatten().view(1, 9)
        return x.view(-1, 3, 3)


class PointNetfeat(nn.Module):
    def __init__(self, c=(16, 32, 64)):
        super().__init__()
        self.stn = STN3d()
        self.conv1, self.conv2, self.conv3 = nn.Conv1d(3, c[0], 1), nn.Conv1d(c[0], c[1], 1), nn.Conv1d(c[1], c[2], 1)
        self.bn1, self.bn2, self.bn3 = nn.BatchNorm1d(c[0]), nn.BatchNorm1d(c[1]), nn.BatchNorm1d(c[2])
        self.c = c[2]

    def forward(self, x):
        trans = self.stn(x)
        x = torch.bmm(x.transpose(2, 1), trans).transpose(2, 1)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        x = torch.max(x, 2, keepdim=True)[0]
        return x.view(-1, self.c), trans


class PointNetCls(nn.Module):
    def __init__(self, k=10, c=64, f=(32, 16)):
        super().__init__()
        self.feat = PointNetfeat()
        self.fc1, self.fc2, self.fc3 = nn.Linear(c, f[0]), nn.Linear(f[0], f[1]), nn.Linear(f[1], k)
        self.dropout = nn.Dropout(p=0.3)
        self.bn1, self.bn2 = nn.BatchNorm1d(f[0]), nn.BatchNorm1d(f[1])

    def forward(self, points):
        x, _ = self.feat(points)
        x = F.relu(self.bn1(self.fc1(x)))
        x = F.relu(self.bn2(self.dropout(self.fc2(x))))
        return self.fc3(x)  # logits (fxia22 returns their log_softmax, trained with nll_loss: the same loss)


def pointnet_case():
    return dict(model=calibrated(PointNetCls(), torch.randn(8, 3, 64), kinds=(nn.BatchNorm1d,)), inputs={"points": torch.randn(2, 3, 64)}, outputs=["logits"], opset=13,
                dynamic={"points": {0: "batch"}, "logits": {0: "batch"}},
                target=lambda out: torch.tensor([3, 7]),
                loss=lambda out, y: F.cross_entropy(out[0], y))


# ---------------------------------------------------------------- DGCNN (WangYueFTD/dgcnn, pytorch/model.py)
def knn(x, k):
    inner = -2 * torch.matmul(x.transpose(2, 1), x)
    xx = torch.sum(x ** 2, dim=1, keepdim=True)
    pairwise_distance = -xx - inner - xx.transpose(2, 1)
    return pairwise_distance.topk(k=k, dim=-1)[1]  # (batch_size, num_points, k)


def get_graph_feature(x, k=4):
    batch_size, num_dims, num_points = x.size(0), x.size(1), x.size(2)
    idx = knn(x, k=k)
    idx_base = torch.arange(0, batch_size).view(-1, 1, 1) * num_points
    idx = (idx + idx_base).view(-1)
    x = x.transpose(2, 1).contiguous()
    feature = x.view(batch_size * num_points, -1)[idx, :].view(batch_size, num_points, k, num_dims)
    x = x.view(batch_size, num_points, 1, num_dims).repeat(1, 1, k, 1)
    return torch.cat((feature - x, x), dim=3).permute(0, 3, 1, 2).contiguous()


class DGCNN(nn.Module):
    """The DGCNN classifier, width-reduced: EdgeConv blocks (k-NN by TopK on pairwise distances in
    feature space, neighbours gathered by flattened index, Conv2d + BatchNorm2d + LeakyReLU 0.2,
    max over the neighbours), a Conv1d + BN embedding, max and mean pooling over the points, an MLP
    head with BatchNorm1d and dropout."""

    def __init__(self, k=4, c=(16, 16, 32), emb=64, classes=10):
        super().__init__()
        self.k = k
        self.conv1 = nn.Sequential(nn.Conv2d(6, c[0], 1, bias=False), nn.BatchNorm2d(c[0]), nn.LeakyReLU(0.2))
        self.conv2 = nn.Sequential(nn.Conv2d(c[0] * 2, c[1], 1, bias=False), nn.BatchNorm2d(c[1]), nn.LeakyReLU(0.2))
        self.conv3 = nn.Sequential(nn.Conv2d(c[1] * 2, c[2], 1, bias=False), nn.BatchNorm2d(c[2]), nn.LeakyReLU(0.2))
        self.conv5 = nn.Sequential(nn.Conv1d(sum(c), emb, 1, bias=False), nn.BatchNorm1d(emb), nn.LeakyReLU(0.2))
        self.linear1, self.bn6, self.dp1 = nn.Linear(emb * 2, 32, bias=False), nn.BatchNorm1d(32), nn.Dropout(0.5)
        self.linear2 = nn.Linear(32, classes)

    def forward(self, points):
        x1 = self.conv1(get_graph_feature(points, self.k)).max(dim=-1, keepdim=False)[0]
        x2 = self.conv2(get_graph_feature(x1, self.k)).max(dim=-1, keepdim=False)[0]
        x3 = self.conv3(get_graph_feature(x2, self.k)).max(dim=-1, keepdim=False)[0]
        x = self.conv5(torch.cat((x1, x2, x3), dim=1))
        x = torch.cat((F.adaptive_max_pool1d(x, 1).view(x.size(0), -1), F.adaptive_avg_pool1d(x, 1).view(x.size(0), -1)), 1)
        x = self.dp1(F.leaky_relu(self.bn6(self.linear1(x)), negative_slope=0.2))
        return self.linear2(x)


def dgcnn_case():
    return dict(model=calibrated(DGCNN(), torch.randn(8, 3, 32), kinds=(nn.BatchNorm1d, nn.BatchNorm2d)), inputs={"points": torch.randn(2, 3, 32)}, outputs=["logits"], opset=13,
                dynamic={"points": {0: "batch"}, "logits": {0: "batch"}},
                target=lambda out: torch.tensor([3, 7]),
                loss=lambda out, y: F.cross_entropy(out[0], y))


CASES = {"swin_v2": swin_v2_case, "pointnet": pointnet_case, "dgcnn": dgcnn_case}
