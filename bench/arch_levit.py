"""LeViT for bench/popular_architectures.py, written after transformers' modeling_levit
(LevitForImageClassificationWithTeacher, the layout of timm's LeViT-128S), width-reduced:

- levit: a 64×64 image; the patch embedding's four stride-2 3×3 Conv+BatchNorm with Hardswish
  between (4 → 8 → 16 → 32 channels, a 4×4 grid of 16-pixel patches); stage 0 (32 wide, 2 heads,
  key_dim 8, attention ratio 2, MLP ratio 2) of LevitAttention (queries, keys and values from one
  MLPLayerWithBN: a bias-free Linear and a BatchNorm1d over the flattened [B·N, C]; learned
  attention biases [heads, offsets] gathered by the registered attention_bias_idxs; Hardswish
  before the projection) and a residual MLP; LevitAttentionSubsample to stage 1 (queries from
  the stride-2 subsampled 2×2 grid, 4 heads, attention ratio 4) and its MLP; stage 1 (48 wide,
  3 heads); mean over tokens; the classifier and distillation heads (BatchNorm1d + Linear each)
  averaged, as the model does at inference. Opset 13, batch dynamic; loss: cross-entropy.

transformers caches the gathered attention biases in eval mode (attention_bias_cache, keyed by
device), as this module does. The export (eval, empty cache) traces the gather itself: torch.onnx
writes Gather(attention_biases, attention_bias_idxs, axis=1), and its constant folding leaves it
(torch 1.13 folds a Gather only with indices of rank ≤ 1; these are [queries, keys]), so the table
stays a parameter and its gradient is compared directly. (A model run once in eval under no_grad
before its export exports the cached table instead, as a Constant: no parameter at all.) On stage
1's 2×2 grid every query row holds each offset once and the table's gradient nearly cancels
(norm ~4e-6): its relative error is float32 rounding (~1e-3, PyTorch's own float32 against float64).
Weights are drawn at unit gain, BatchNorm running statistics and attention biases random (a trained
model's, not transformers' fresh ones and zeros).
"""
import itertools

import torch
import torch.nn as nn
import torch.nn.functional as F


class LevitConfig:
    image_size, num_channels, kernel_size, stride, padding, patch_size = 64, 3, 3, 2, 1, 16
    hidden_sizes, num_attention_heads, depths, key_dim = [32, 48], [2, 3], [1, 1], [8, 8]
    drop_path_rate, mlp_ratio, attention_ratio, num_labels = 0.0, [2, 2], [2, 2], 10
    # ["Subsample", key_dim, heads = hidden_sizes[0] // key_dim, attention_ratio, mlp_ratio, stride]
    down_ops = [["Subsample", 8, 32 // 8, 4, 2, 2]]


class LevitConvEmbeddings(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation=1, groups=1, bn_weight_init=1):
        super().__init__()
        self.convolution = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation=dilation, groups=groups, bias=False)
        self.batch_norm = nn.BatchNorm2d(out_channels)

    def forward(self, embeddings):
        return self.batch_norm(self.convolution(embeddings))


class LevitPatchEmbeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        h = config.hidden_sizes[0]
        self.embedding_layer_1 = LevitConvEmbeddings(config.num_channels, h // 8, config.kernel_size, config.stride, config.padding)
        self.activation_layer_1 = nn.Hardswish()
        self.embedding_layer_2 = LevitConvEmbeddings(h // 8, h // 4, config.kernel_size, config.stride, config.padding)
        self.activation_layer_2 = nn.Hardswish()
        self.embedding_layer_3 = LevitConvEmbeddings(h // 4, h // 2, config.kernel_size, config.stride, config.padding)
        self.activation_layer_3 = nn.Hardswish()
        self.embedding_layer_4 = LevitConvEmbeddings(h // 2, h, config.kernel_size, config.stride, config.padding)

    def forward(self, pixel_values):
        embeddings = self.activation_layer_1(self.embedding_layer_1(pixel_values))
        embeddings = self.activation_layer_2(self.embedding_layer_2(embeddings))
        embeddings = self.activation_layer_3(self.embedding_layer_3(embeddings))
        embeddings = self.embedding_layer_4(embeddings)
        return embeddings.flatten(2).transpose(1, 2)


class MLPLayerWithBN(nn.Module):
    def __init__(self, input_dim, output_dim, bn_weight_init=1):
        super().__init__()
        self.linear = nn.Linear(in_features=input_dim, out_features=output_dim, bias=False)
        self.batch_norm = nn.BatchNorm1d(output_dim)

    def forward(self, hidden_state):
        hidden_state = self.linear(hidden_state)
        return self.batch_norm(hidden_state.flatten(0, 1)).reshape_as(hidden_state)


class LevitSubsample(nn.Module):
    def __init__(self, stride, resolution):
        super().__init__()
        self.stride, self.resolution = stride, resolution

    def forward(self, hidden_state):
        batch_size, _, channels = hidden_state.shape
        return hidden_state.view(batch_size, self.resolution, self.resolution, channels)[:, :: self.stride, :: self.stride].reshape(batch_size, -1, channels)


class CachedAttentionBiases:
    """transformers' get_attention_biases: gathered on every call in training, cached per device in
    eval (the cache cleared by train())."""

    def train(self, mode=True):
        nn.Module.train(self, mode)
        if mode and self.attention_bias_cache:
            self.attention_bias_cache = {}
        return self

    def get_attention_biases(self, device):
        if self.training:
            return self.attention_biases[:, self.attention_bias_idxs]
        device_key = str(device)
        if device_key not in self.attention_bias_cache:
            self.attention_bias_cache[device_key] = self.attention_biases[:, self.attention_bias_idxs]
        return self.attention_bias_cache[device_key]


class LevitAttention(CachedAttentionBiases, nn.Module):
    def __init__(self, hidden_sizes, key_dim, num_attention_heads, attention_ratio, resolution):
        super().__init__()
        self.num_attention_heads = num_attention_heads
        self.scale = key_dim ** -0.5
        self.key_dim = key_dim
        self.attention_ratio = attention_ratio
        self.out_dim_keys_values = attention_ratio * key_dim * num_attention_heads + key_dim * num_attention_heads * 2
        self.out_dim_projection = attention_ratio * key_dim * num_attention_heads
        self.queries_keys_values = MLPLayerWithBN(hidden_sizes, self.out_dim_keys_values)
        self.activation = nn.Hardswish()
        self.projection = MLPLayerWithBN(self.out_dim_projection, hidden_sizes, bn_weight_init=0)
        points = list(itertools.product(range(resolution), range(resolution)))
        attention_offsets, indices = {}, []
        for p1 in points:
            for p2 in points:
                offset = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
                if offset not in attention_offsets:
                    attention_offsets[offset] = len(attention_offsets)
                indices.append(attention_offsets[offset])
        self.attention_bias_cache = {}
        self.attention_biases = nn.Parameter(torch.zeros(num_attention_heads, len(attention_offsets)))
        self.register_buffer("attention_bias_idxs", torch.LongTensor(indices).view(len(points), len(points)))

    def forward(self, hidden_state):
        batch_size, seq_length, _ = hidden_state.shape
        queries_keys_values = self.queries_keys_values(hidden_state)
        query, key, value = queries_keys_values.view(batch_size, seq_length, self.num_attention_heads, -1).split(
            [self.key_dim, self.key_dim, self.attention_ratio * self.key_dim], dim=3)
        query, key, value = query.permute(0, 2, 1, 3), key.permute(0, 2, 1, 3), value.permute(0, 2, 1, 3)
        attention = query @ key.transpose(-2, -1) * self.scale + self.get_attention_biases(hidden_state.device)
        attention = attention.softmax(dim=-1)
        hidden_state = (attention @ value).transpose(1, 2).reshape(batch_size, seq_length, self.out_dim_projection)
        return self.projection(self.activation(hidden_state))


class LevitAttentionSubsample(CachedAttentionBiases, nn.Module):
    def __init__(self, input_dim, output_dim, key_dim, num_attention_heads, attention_ratio, stride, resolution_in, resolution_out):
        super().__init__()
        self.num_attention_heads = num_attention_heads
        self.scale = key_dim ** -0.5
        self.key_dim = key_dim
        self.attention_ratio = attention_ratio
        self.out_dim_keys_values = attention_ratio * key_dim * num_attention_heads + key_dim * num_attention_heads
        self.out_dim_projection = attention_ratio * key_dim * num_attention_heads
        self.resolution_out = resolution_out
        self.keys_values = MLPLayerWithBN(input_dim, self.out_dim_keys_values)
        self.queries_subsample = LevitSubsample(stride, resolution_in)
        self.queries = MLPLayerWithBN(input_dim, key_dim * num_attention_heads)
        self.activation = nn.Hardswish()
        self.projection = MLPLayerWithBN(self.out_dim_projection, output_dim)
        self.attention_bias_cache = {}
        points = list(itertools.product(range(resolution_in), range(resolution_in)))
        points_ = list(itertools.product(range(resolution_out), range(resolution_out)))
        attention_offsets, indices = {}, []
        for p1 in points_:
            for p2 in points:
                size = 1
                offset = (abs(p1[0] * stride - p2[0] + (size - 1) / 2), abs(p1[1] * stride - p2[1] + (size - 1) / 2))
                if offset not in attention_offsets:
                    attention_offsets[offset] = len(attention_offsets)
                indices.append(attention_offsets[offset])
        self.attention_biases = nn.Parameter(torch.zeros(num_attention_heads, len(attention_offsets)))
        self.register_buffer("attention_bias_idxs", torch.LongTensor(indices).view(len(points_), len(points)))

    def forward(self, hidden_state):
        batch_size, seq_length, _ = hidden_state.shape
        key, value = self.keys_values(hidden_state).view(batch_size, seq_length, self.num_attention_heads, -1).split(
            [self.key_dim, self.attention_ratio * self.key_dim], dim=3)
        key, value = key.permute(0, 2, 1, 3), value.permute(0, 2, 1, 3)
        query = self.queries(self.queries_subsample(hidden_state))
        query = query.view(batch_size, self.resolution_out ** 2, self.num_attention_heads, self.key_dim).permute(0, 2, 1, 3)
        attention = query @ key.transpose(-2, -1) * self.scale + self.get_attention_biases(hidden_state.device)
        attention = attention.softmax(dim=-1)
        hidden_state = (attention @ value).transpose(1, 2).reshape(batch_size, -1, self.out_dim_projection)
        return self.projection(self.activation(hidden_state))


class LevitMLPLayer(nn.Module):
    def __init__(self, input_dim, hidden_dim):
        super().__init__()
        self.linear_up = MLPLayerWithBN(input_dim, hidden_dim)
        self.activation = nn.Hardswish()
        self.linear_down = MLPLayerWithBN(hidden_dim, input_dim)

    def forward(self, hidden_state):
        return self.linear_down(self.activation(self.linear_up(hidden_state)))


class LevitResidualLayer(nn.Module):
    def __init__(self, module, drop_rate):
        super().__init__()
        self.module, self.drop_rate = module, drop_rate

    def forward(self, hidden_state):
        return hidden_state + self.module(hidden_state)  # drop path only in training


class LevitStage(nn.Module):
    def __init__(self, config, idx, hidden_sizes, key_dim, depths, num_attention_heads, attention_ratio, mlp_ratio, down_ops, resolution_in):
        super().__init__()
        self.layers = []
        self.resolution_in = resolution_in
        for _ in range(depths):
            self.layers.append(LevitResidualLayer(LevitAttention(hidden_sizes, key_dim, num_attention_heads, attention_ratio, resolution_in), config.drop_path_rate))
            if mlp_ratio > 0:
                self.layers.append(LevitResidualLayer(LevitMLPLayer(hidden_sizes, hidden_sizes * mlp_ratio), config.drop_path_rate))
        if down_ops[0] == "Subsample":
            self.resolution_out = (self.resolution_in - 1) // down_ops[5] + 1
            self.layers.append(LevitAttentionSubsample(*config.hidden_sizes[idx: idx + 2], key_dim=down_ops[1], num_attention_heads=down_ops[2], attention_ratio=down_ops[3],
                                                       stride=down_ops[5], resolution_in=resolution_in, resolution_out=self.resolution_out))
            self.resolution_in = self.resolution_out
            if down_ops[4] > 0:
                self.layers.append(LevitResidualLayer(LevitMLPLayer(config.hidden_sizes[idx + 1], config.hidden_sizes[idx + 1] * down_ops[4]), config.drop_path_rate))
        self.layers = nn.ModuleList(self.layers)

    def get_resolution(self):
        return self.resolution_in

    def forward(self, hidden_state):
        for layer in self.layers:
            hidden_state = layer(hidden_state)
        return hidden_state


class LevitEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        resolution = config.image_size // config.patch_size
        down_ops = config.down_ops + [[""]]
        stages = []
        for i in range(len(config.depths)):
            stage = LevitStage(config, i, config.hidden_sizes[i], config.key_dim[i], config.depths[i], config.num_attention_heads[i], config.attention_ratio[i], config.mlp_ratio[i], down_ops[i], resolution)
            resolution = stage.get_resolution()
            stages.append(stage)
        self.stages = nn.Sequential(*stages)

    def forward(self, embeddings):
        return self.stages(embeddings)


class LevitModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.patch_embeddings = LevitPatchEmbeddings(config)
        self.encoder = LevitEncoder(config)

    def forward(self, pixel_values):
        return self.encoder(self.patch_embeddings(pixel_values))


class LevitClassificationLayer(nn.Module):
    def __init__(self, input_dim, output_dim):
        super().__init__()
        self.batch_norm = nn.BatchNorm1d(input_dim)
        self.linear = nn.Linear(input_dim, output_dim)

    def forward(self, hidden_state):
        return self.linear(self.batch_norm(hidden_state))


class LevitForImageClassificationWithTeacher(nn.Module):
    def __init__(self, config=LevitConfig):
        super().__init__()
        self.levit = LevitModel(config)
        self.classifier = LevitClassificationLayer(config.hidden_sizes[-1], config.num_labels)
        self.classifier_distill = LevitClassificationLayer(config.hidden_sizes[-1], config.num_labels)
        for m in self.modules():  # transformers' _init_weights (normal 0.02, zero biases), made trained-looking: unit gain
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.data.normal_(0.0, m.weight[0].numel() ** -0.5)
                if m.bias is not None:
                    m.bias.data.normal_(0.0, 0.02)
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):  # running statistics of a trained model
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
            elif isinstance(m, CachedAttentionBiases):  # transformers starts them at zero; trained ones are not
                m.attention_biases.data.normal_(0.0, 0.5)

    def forward(self, pixel_values):
        sequence_output = self.levit(pixel_values).mean(1)
        cls_logits, distill_logits = self.classifier(sequence_output), self.classifier_distill(sequence_output)
        return (cls_logits + distill_logits) / 2  # the `logits` of LevitForImageClassificationWithTeacherOutput


def levit_case():
    return dict(model=LevitForImageClassificationWithTeacher(), inputs={"pixel_values": torch.randn(2, 3, 64, 64)}, outputs=["logits"], opset=13,
                dynamic={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
                target=lambda out: torch.tensor([3, 7]),
                loss=lambda out, y: F.cross_entropy(out[0], y))


CASES = {"levit": levit_case}
