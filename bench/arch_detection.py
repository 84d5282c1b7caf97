"""Set-prediction detectors for bench/popular_architectures.py (its CASES take these), written after
their reference code, width-reduced, random weights; input pixel_values [2, 3, 64, 64], outputs
logits [N, Q, C + 1] and pred_boxes [N, Q, 4] (sigmoid, cx cy w h); the loss is DETR's with the
Hungarian matching taken as given: the class cross-entropy over every query row against fixed
labels (the 'no object' class included) plus the boxes' squared error,
F.cross_entropy(logits.flatten(0, 1), y.flatten()) + F.mse_loss(pred_boxes, boxes)
(bench/popular-architectures.ts, `detection`).

- detr: transformers' DetrForObjectDetection at opset 12 (transformers.onnx's DetrOnnxConfig default): a ResNet-style
  backbone with DetrFrozenBatchNorm2d (weight, bias and the statistics are buffers: the export
  folds scale = w·rsqrt(rv + eps) and b − rm·scale into two initializers per norm, which refit's
  'all' trains and PyTorch does not), the pixel mask made inside as ones (HF makes it when none is
  given) and resized nearest to the feature map, DetrSinePositionEmbedding (cumsums of the mask,
  normalised, dim_t by floor division, interleaved sin/cos), the 1×1 input projection, a post-norm
  encoder and decoder of DetrAttention (q_proj/k_proj/v_proj/out_proj, position embeddings added to
  queries and keys, the inverted mask added to the scores), learned query_position_embeddings with
  zero targets, the decoder's final LayerNorm, the class head and the 3-layer box MLP + sigmoid.
  d 32, 2 heads, 2 encoder and 2 decoder layers, 6 queries, 4 classes. Batch, height and width
  dynamic.
- rtdetr: RT-DETR's decoder (transformers' RTDetrDecoder): a tiny backbone with frozen norms giving
  two levels (strides 8 and 16: 8×8 and 4×4), the per-level 1×1 conv + BatchNorm2d input
  projections, flattened and concatenated; learned initial queries (RT-DETR's learn_initial_query)
  and learned unactivated reference boxes (in place of the encoder's top-k selection, which
  RT-DETR detaches and which needs the encoder heads' own loss); per layer: query_pos_head(MLP of
  the sigmoid boxes), self-attention (q_proj/k_proj/v_proj/out_proj, position added to q and k),
  MSDeformableAttention with 4-d references (sampling_offsets / n_points · wh · 0.5 about the
  centre; value_proj, attention_weights softmax over levels·points, output_proj) written as the
  pure-PyTorch multi_scale_deformable_attn_pytorch (the value split per level, F.grid_sample
  bilinear, zeros padding, align_corners False), the FFN, then box refinement
  sigmoid(bbox_embed(h) + inverse_sigmoid(ref)) and class_embed. Two decoder layers
  (DECODER_LAYERS): RT-DETR detaches the refined boxes before the next layer, a cut the ONNX export
  loses, so the case names those Sigmoid outputs for refit's stopGradient (`stop_gradient`); the
  query_pos_head every layer calls reaches the file as folded copies merged into Identity aliases,
  one weight that refit keeps tied. d 32, 2 heads, 2 levels, 4 points, 6 queries, 4 classes; opset
  16 (GridSample), batch dynamic.
- faster_rcnn: torchvision's own FasterRCNN (GeneralizedRCNNTransform, AnchorGenerator, the RPN
  with its top-k and NMS, MultiScaleRoIAlign with sampling_ratio 2, TwoMLPHead, FastRCNNPredictor
  and the postprocess's score filter and per-class NMS) on a two-stage Conv-BN-ReLU backbone, one
  64×64 image, opset 11 (RoiAlign-10 computes torchvision's aligned=False; torchvision 0.14's
  symbolic leaves coordinate_transformation_mode out, so an opset 16 export changes its meaning).
  Its loss is the sum of the kept detections' scores (no target); the proposals are detached in
  torchvision, a cut the export loses, so the case names RoiAlign's boxes for refit's stopGradient.
- mask_rcnn, keypoint_rcnn, retinanet, fcos: torchvision's own MaskRCNN (the mask head's RoiAlign,
  ConvTranspose and the masks pasted into the image), KeypointRCNN (heatmaps to keypoints and their
  scores), RetinaNet and FCOS (anchor decoding, per-level top-k, batched NMS; FCOS's GroupNorm head
  and centerness) on the same tiny backbone (32 channels for FCOS), opset 11; each loss sums the
  kept scores plus what its head adds (the mean of the masks, 0.1 · the keypoints' scores,
  0.01 · the decoded boxes).
"""
import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

CLASSES, QUERIES, D, HEADS = 4, 6, 32, 2


# ---------------------------------------------------------------- DETR (transformers' modeling_detr)
class DetrFrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with every tensor a buffer (torchvision's FrozenBatchNorm2d, HF's copy)."""

    def __init__(self, n):
        super().__init__()
        self.register_buffer("weight", 1 + 0.1 * torch.randn(n))
        self.register_buffer("bias", 0.1 * torch.randn(n))
        self.register_buffer("running_mean", 0.1 * torch.randn(n))
        self.register_buffer("running_var", 0.5 + torch.rand(n))

    def forward(self, x):
        weight = self.weight.reshape(1, -1, 1, 1)
        bias = self.bias.reshape(1, -1, 1, 1)
        running_var = self.running_var.reshape(1, -1, 1, 1)
        running_mean = self.running_mean.reshape(1, -1, 1, 1)
        epsilon = 1e-5
        scale = weight * (running_var + epsilon).rsqrt()
        bias = bias - running_mean * scale
        return x * scale + bias


class BasicBlock(nn.Module):
    """timm's ResNet BasicBlock, its norms frozen (HF's replace_batch_norm)."""

    def __init__(self, c1, c2, stride=1):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c1, c2, 3, stride, 1, bias=False), DetrFrozenBatchNorm2d(c2)
        self.conv2, self.bn2 = nn.Conv2d(c2, c2, 3, 1, 1, bias=False), DetrFrozenBatchNorm2d(c2)
        self.downsample = nn.Sequential(nn.Conv2d(c1, c2, 1, stride, bias=False), DetrFrozenBatchNorm2d(c2)) if stride != 1 or c1 != c2 else None

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + shortcut)


class TinyResNet(nn.Module):
    """A ResNet's stem (7×7 stride 2, max pool) and stages; returns each stage's feature map."""

    def __init__(self, widths=(16, 32), strides=(1, 2)):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), DetrFrozenBatchNorm2d(widths[0])
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c, layers = widths[0], []
        for w, s in zip(widths, strides):
            layers.append(BasicBlock(c, w, s))
            c = w
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


class DetrSinePositionEmbedding(nn.Module):
    def __init__(self, embedding_dim=D // 2, temperature=10000, normalize=True):
        super().__init__()
        self.embedding_dim, self.temperature, self.normalize, self.scale = embedding_dim, temperature, normalize, 2 * math.pi

    def forward(self, pixel_values, pixel_mask):
        y_embed = pixel_mask.cumsum(1, dtype=torch.float32)
        x_embed = pixel_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            y_embed = y_embed / (y_embed[:, -1:, :] + 1e-6) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + 1e-6) * self.scale
        dim_t = torch.arange(self.embedding_dim, dtype=torch.int64, device=pixel_values.device).float()
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.embedding_dim)
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def inverted_mask(mask, tgt_len, dtype=torch.float32):
    """transformers' _prepare_4d_attention_mask: [N, S] of 1 (keep) / 0 → [N, 1, T, S] of 0 / min."""
    bsz, src_len = mask.shape
    expanded = mask[:, None, None, :].expand(bsz, 1, tgt_len, src_len).to(dtype)
    inverted = 1.0 - expanded
    return inverted.masked_fill(inverted.to(torch.bool), torch.finfo(dtype).min)


class DetrAttention(nn.Module):
    def __init__(self, d=D, heads=HEADS):
        super().__init__()
        self.embed_dim, self.num_heads, self.head_dim = d, heads, d // heads
        self.scaling = self.head_dim ** -0.5
        self.k_proj, self.v_proj, self.q_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def _shape(self, tensor, seq_len, batch_size):
        return tensor.view(batch_size, seq_len, self.num_heads, self.head_dim).transpose(1, 2).contiguous()

    def forward(self, hidden_states, attention_mask=None, object_queries=None, key_value_states=None, spatial_position_embeddings=None):
        is_cross_attention = key_value_states is not None
        bsz, tgt_len, embed_dim = hidden_states.size()
        hidden_states_original = hidden_states
        if object_queries is not None:
            hidden_states = hidden_states + object_queries
        if spatial_position_embeddings is not None:
            key_value_states_original = key_value_states
            key_value_states = key_value_states + spatial_position_embeddings
        query_states = self.q_proj(hidden_states) * self.scaling
        if is_cross_attention:
            key_states = self._shape(self.k_proj(key_value_states), -1, bsz)
            value_states = self._shape(self.v_proj(key_value_states_original), -1, bsz)
        else:
            key_states = self._shape(self.k_proj(hidden_states), -1, bsz)
            value_states = self._shape(self.v_proj(hidden_states_original), -1, bsz)
        proj_shape = (bsz * self.num_heads, -1, self.head_dim)
        query_states = self._shape(query_states, tgt_len, bsz).view(*proj_shape)
        key_states = key_states.view(*proj_shape)
        value_states = value_states.view(*proj_shape)
        src_len = key_states.size(1)
        attn_weights = torch.bmm(query_states, key_states.transpose(1, 2))
        if attention_mask is not None:
            attn_weights = attn_weights.view(bsz, self.num_heads, tgt_len, src_len) + attention_mask
            attn_weights = attn_weights.view(bsz * self.num_heads, tgt_len, src_len)
        attn_weights = F.softmax(attn_weights, dim=-1)
        attn_output = torch.bmm(attn_weights, value_states)
        attn_output = attn_output.view(bsz, self.num_heads, tgt_len, self.head_dim).transpose(1, 2).reshape(bsz, tgt_len, embed_dim)
        return self.out_proj(attn_output)


class DetrEncoderLayer(nn.Module):
    def __init__(self, d=D, ffn=2 * D):
        super().__init__()
        self.self_attn, self.self_attn_layer_norm = DetrAttention(d), nn.LayerNorm(d)
        self.fc1, self.fc2, self.final_layer_norm = nn.Linear(d, ffn), nn.Linear(ffn, d), nn.LayerNorm(d)

    def forward(self, hidden_states, attention_mask, object_queries):
        hidden_states = self.self_attn_layer_norm(hidden_states + self.self_attn(hidden_states, attention_mask, object_queries))
        return self.final_layer_norm(hidden_states + self.fc2(F.relu(self.fc1(hidden_states))))


class DetrDecoderLayer(nn.Module):
    def __init__(self, d=D, ffn=2 * D):
        super().__init__()
        self.self_attn, self.self_attn_layer_norm = DetrAttention(d), nn.LayerNorm(d)
        self.encoder_attn, self.encoder_attn_layer_norm = DetrAttention(d), nn.LayerNorm(d)
        self.fc1, self.fc2, self.final_layer_norm = nn.Linear(d, ffn), nn.Linear(ffn, d), nn.LayerNorm(d)

    def forward(self, hidden_states, object_queries, query_position_embeddings, encoder_hidden_states, encoder_attention_mask):
        hidden_states = self.self_attn_layer_norm(hidden_states + self.self_attn(hidden_states, object_queries=query_position_embeddings))
        cross = self.encoder_attn(hidden_states, encoder_attention_mask, query_position_embeddings, encoder_hidden_states, object_queries)
        hidden_states = self.encoder_attn_layer_norm(hidden_states + cross)
        return self.final_layer_norm(hidden_states + self.fc2(F.relu(self.fc1(hidden_states))))


class DetrMLPPredictor(nn.Module):
    def __init__(self, input_dim, hidden_dim, output_dim, num_layers):
        super().__init__()
        self.num_layers = num_layers
        h = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_dim] + h, h + [output_dim]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < self.num_layers - 1 else layer(x)
        return x


class Detr(nn.Module):
    """DetrForObjectDetection, small: backbone → 1×1 projection → encoder (2) → decoder (2) → heads."""

    def __init__(self, d=D, queries=QUERIES, classes=CLASSES, layers=2):
        super().__init__()
        self.backbone = TinyResNet()
        self.position_embedding = DetrSinePositionEmbedding(d // 2)
        self.input_projection = nn.Conv2d(32, d, 1)
        self.query_position_embeddings = nn.Embedding(queries, d)
        self.encoder_layers = nn.ModuleList(DetrEncoderLayer(d) for _ in range(layers))
        self.decoder_layers = nn.ModuleList(DetrDecoderLayer(d) for _ in range(layers))
        self.decoder_layernorm = nn.LayerNorm(d)
        self.class_labels_classifier = nn.Linear(d, classes + 1)
        self.bbox_predictor = DetrMLPPredictor(d, d, 4, 3)

    def forward(self, pixel_values):
        batch_size, _, height, width = pixel_values.shape
        pixel_mask = torch.ones((batch_size, height, width), device=pixel_values.device)
        # DetrConvEncoder: the last feature map, the mask resized to it, and its position embedding
        feature_map = self.backbone(pixel_values)[-1]
        mask = F.interpolate(pixel_mask[None].float(), size=feature_map.shape[-2:]).to(torch.bool)[0]
        object_queries = self.position_embedding(feature_map, mask).to(feature_map.dtype)
        projected_feature_map = self.input_projection(feature_map)
        flattened_features = projected_feature_map.flatten(2).permute(0, 2, 1)
        object_queries = object_queries.flatten(2).permute(0, 2, 1)
        flattened_mask = mask.flatten(1)
        # DetrEncoder
        hidden_states = flattened_features
        encoder_mask = inverted_mask(flattened_mask, hidden_states.shape[1])
        for layer in self.encoder_layers:
            hidden_states = layer(hidden_states, encoder_mask, object_queries)
        encoder_hidden_states = hidden_states
        # DetrDecoder: zero targets, the learned query positions
        query_position_embeddings = self.query_position_embeddings.weight.unsqueeze(0).repeat(batch_size, 1, 1)
        hidden_states = torch.zeros_like(query_position_embeddings)
        cross_mask = inverted_mask(flattened_mask, hidden_states.shape[1])
        for layer in self.decoder_layers:
            hidden_states = layer(hidden_states, object_queries, query_position_embeddings, encoder_hidden_states, cross_mask)
        sequence_output = self.decoder_layernorm(hidden_states)
        return self.class_labels_classifier(sequence_output), self.bbox_predictor(sequence_output).sigmoid()


# ---------------------------------------------------------------- RT-DETR's decoder (transformers' modeling_rt_detr)
def multi_scale_deformable_attention(value, value_spatial_shapes, sampling_locations, attention_weights):
    """The pure-PyTorch path (mmcv's multi_scale_deformable_attn_pytorch, HF's fallback)."""
    batch_size, _, num_heads, hidden_dim = value.shape
    _, num_queries, num_heads, num_levels, num_points, _ = sampling_locations.shape
    value_list = value.split([height * width for height, width in value_spatial_shapes], dim=1)
    sampling_grids = 2 * sampling_locations - 1
    sampling_value_list = []
    for level_id, (height, width) in enumerate(value_spatial_shapes):
        # batch_size, height*width, num_heads, hidden_dim -> batch_size*num_heads, hidden_dim, height, width
        value_l_ = value_list[level_id].flatten(2).transpose(1, 2).reshape(batch_size * num_heads, hidden_dim, height, width)
        # batch_size, num_queries, num_heads, num_points, 2 -> batch_size*num_heads, num_queries, num_points, 2
        sampling_grid_l_ = sampling_grids[:, :, :, level_id].transpose(1, 2).flatten(0, 1)
        sampling_value_l_ = F.grid_sample(value_l_, sampling_grid_l_, mode="bilinear", padding_mode="zeros", align_corners=False)
        sampling_value_list.append(sampling_value_l_)
    attention_weights = attention_weights.transpose(1, 2).reshape(batch_size * num_heads, 1, num_queries, num_levels * num_points)
    output = (torch.stack(sampling_value_list, dim=-2).flatten(-2) * attention_weights).sum(-1).view(batch_size, num_heads * hidden_dim, num_queries)
    return output.transpose(1, 2).contiguous()


class MSDeformableAttention(nn.Module):
    def __init__(self, d=D, n_levels=2, n_heads=HEADS, n_points=4):
        super().__init__()
        self.d_model, self.n_levels, self.n_heads, self.n_points = d, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d, d)
        self.output_proj = nn.Linear(d, d)
        # HF's _reset_parameters gives the offsets a fan of directions as their bias; small random
        # weights here (not zeros) so that every query samples somewhere of its own
        thetas = torch.arange(n_heads, dtype=torch.float32) * (2.0 * math.pi / n_heads)
        grid_init = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid_init = (grid_init / grid_init.abs().max(-1, keepdim=True)[0]).view(n_heads, 1, 1, 2).repeat(1, n_levels, n_points, 1)
        for i in range(n_points):
            grid_init[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.weight.mul_(0.5)
            self.sampling_offsets.bias.copy_(grid_init.view(-1) + 0.1 * torch.randn(grid_init.numel()))

    def forward(self, hidden_states, position_embeddings, encoder_hidden_states, reference_points, spatial_shapes_list):
        hidden_states = hidden_states + position_embeddings
        batch_size, num_queries, _ = hidden_states.shape
        _, sequence_length, _ = encoder_hidden_states.shape
        value = self.value_proj(encoder_hidden_states)
        value = value.view(batch_size, sequence_length, self.n_heads, self.d_model // self.n_heads)
        sampling_offsets = self.sampling_offsets(hidden_states).view(batch_size, num_queries, self.n_heads, self.n_levels, self.n_points, 2)
        attention_weights = self.attention_weights(hidden_states).view(batch_size, num_queries, self.n_heads, self.n_levels * self.n_points)
        attention_weights = F.softmax(attention_weights, -1).view(batch_size, num_queries, self.n_heads, self.n_levels, self.n_points)
        # 4-d references (boxes): offsets scaled by the box's half size over the point count
        sampling_locations = reference_points[:, :, None, :, None, :2] + sampling_offsets / self.n_points * reference_points[:, :, None, :, None, 2:] * 0.5
        output = multi_scale_deformable_attention(value, spatial_shapes_list, sampling_locations, attention_weights)
        return self.output_proj(output)


class RTDetrMultiheadAttention(nn.Module):
    """HF's RTDetrMultiheadAttention: position embeddings added to queries and keys, not values."""

    def __init__(self, d=D, heads=HEADS):
        super().__init__()
        self.num_heads, self.head_dim, self.scaling = heads, d // heads, (d // heads) ** -0.5
        self.k_proj, self.v_proj, self.q_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def _shape(self, tensor, seq_len, batch_size):
        return tensor.view(batch_size, seq_len, self.num_heads, self.head_dim).transpose(1, 2).contiguous()

    def forward(self, hidden_states, position_embeddings):
        batch_size, target_len, embed_dim = hidden_states.size()
        hidden_states_original = hidden_states
        hidden_states = hidden_states + position_embeddings
        query_states = self.q_proj(hidden_states) * self.scaling
        key_states = self._shape(self.k_proj(hidden_states), -1, batch_size)
        value_states = self._shape(self.v_proj(hidden_states_original), -1, batch_size)
        proj_shape = (batch_size * self.num_heads, -1, self.head_dim)
        query_states = self._shape(query_states, target_len, batch_size).view(*proj_shape)
        attn_weights = F.softmax(torch.bmm(query_states, key_states.view(*proj_shape).transpose(1, 2)), dim=-1)
        attn_output = torch.bmm(attn_weights, value_states.view(*proj_shape))
        attn_output = attn_output.view(batch_size, self.num_heads, target_len, self.head_dim).transpose(1, 2).reshape(batch_size, target_len, embed_dim)
        return self.out_proj(attn_output)


class RTDetrDecoderLayer(nn.Module):
    def __init__(self, d=D, ffn=2 * D):
        super().__init__()
        self.self_attn, self.self_attn_layer_norm = RTDetrMultiheadAttention(d), nn.LayerNorm(d)
        self.encoder_attn, self.encoder_attn_layer_norm = MSDeformableAttention(d), nn.LayerNorm(d)
        self.fc1, self.fc2, self.final_layer_norm = nn.Linear(d, ffn), nn.Linear(ffn, d), nn.LayerNorm(d)

    def forward(self, hidden_states, position_embeddings, encoder_hidden_states, reference_points, spatial_shapes_list):
        hidden_states = self.self_attn_layer_norm(hidden_states + self.self_attn(hidden_states, position_embeddings))
        cross = self.encoder_attn(hidden_states, position_embeddings, encoder_hidden_states, reference_points, spatial_shapes_list)
        hidden_states = self.encoder_attn_layer_norm(hidden_states + cross)
        return self.final_layer_norm(hidden_states + self.fc2(F.relu(self.fc1(hidden_states))))


def inverse_sigmoid(x, eps=1e-5):
    x = x.clamp(min=0, max=1)
    x1 = x.clamp(min=eps)
    x2 = (1 - x).clamp(min=eps)
    return torch.log(x1 / x2)


DECODER_LAYERS = 2


class RTDetr(nn.Module):
    """RT-DETR's decoder on two levels of a tiny frozen-norm backbone, learned initial queries and boxes."""

    def __init__(self, d=D, queries=QUERIES, classes=CLASSES, layers=DECODER_LAYERS):
        super().__init__()
        self.backbone = TinyResNet(widths=(16, 24, 32), strides=(1, 2, 2))  # strides 8 and 16 from the last two stages
        self.decoder_input_proj = nn.ModuleList(nn.Sequential(nn.Conv2d(c, d, 1, bias=False), nn.BatchNorm2d(d)) for c in (24, 32))
        self.weight_embedding = nn.Embedding(queries, d)  # learn_initial_query
        self.reference_points = nn.Embedding(queries, 4)  # unactivated anchor boxes
        with torch.no_grad():
            self.reference_points.weight.mul_(0.5).add_(torch.tensor([0.0, 0.0, -1.0, -1.0]))
        self.query_pos_head = DetrMLPPredictor(4, 2 * d, d, 2)
        self.layers = nn.ModuleList(RTDetrDecoderLayer(d) for _ in range(layers))
        self.class_embed = nn.ModuleList(nn.Linear(d, classes + 1) for _ in range(layers))
        self.bbox_embed = nn.ModuleList(DetrMLPPredictor(d, d, 4, 3) for _ in range(layers))

    def forward(self, pixel_values):
        batch_size = pixel_values.shape[0]
        feats = self.backbone(pixel_values)[-2:]
        sources = [proj(f) for proj, f in zip(self.decoder_input_proj, feats)]
        spatial_shapes_list = [(s.shape[2], s.shape[3]) for s in sources]
        encoder_hidden_states = torch.cat([s.flatten(2).transpose(1, 2) for s in sources], 1)
        hidden_states = self.weight_embedding.weight.unsqueeze(0).repeat(batch_size, 1, 1)
        reference_points = F.sigmoid(self.reference_points.weight.unsqueeze(0).repeat(batch_size, 1, 1))
        for idx, layer in enumerate(self.layers):
            reference_points_input = reference_points.unsqueeze(2)  # one box for every level
            position_embeddings = self.query_pos_head(reference_points)
            hidden_states = layer(hidden_states, position_embeddings, encoder_hidden_states, reference_points_input, spatial_shapes_list)
            new_reference_points = F.sigmoid(self.bbox_embed[idx](hidden_states) + inverse_sigmoid(reference_points))
            reference_points = new_reference_points.detach()
            logits = self.class_embed[idx](hidden_states)
        return logits, new_reference_points


# ---------------------------------------------------------------- cases
def detection_target(out):
    """Matched labels (some queries 'no object', class C) and boxes in (0, 1)."""
    n, q, c = out[0].shape
    return {"y": torch.randint(0, c, (n, q)), "boxes": torch.rand(n, q, 4) * 0.8 + 0.1}


def detection_loss(out, t):
    return F.cross_entropy(out[0].flatten(0, 1), t["y"].flatten()) + F.mse_loss(out[1], t["boxes"])


def detr_case():
    return dict(model=Detr(), norms=(DetrFrozenBatchNorm2d,), inputs={"pixel_values": torch.randn(2, 3, 64, 64)}, outputs=["logits", "pred_boxes"], opset=12,
                dynamic={"pixel_values": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}, "pred_boxes": {0: "batch"}},
                target=detection_target, loss=detection_loss)


def refined_boxes(proto):
    """The Sigmoid outputs of the boxes each layer but the last refines: RT-DETR detaches them (forward's own F.sigmoid calls, the first the initial boxes)."""
    own = [n.output[0] for n in proto.graph.node if n.op_type == "Sigmoid" and re.fullmatch(r"/Sigmoid(_\d+)?", n.name)]
    return own[1:-1]


def rtdetr_case():
    return dict(model=RTDetr(), norms=(DetrFrozenBatchNorm2d,), stop_gradient=refined_boxes, inputs={"pixel_values": torch.randn(2, 3, 64, 64)}, outputs=["logits", "pred_boxes"], opset=16,
                dynamic={"pixel_values": {0: "batch"}, "logits": {0: "batch"}, "pred_boxes": {0: "batch"}},
                target=detection_target, loss=detection_loss)


class TinyBackbone(nn.Module):
    """Two stride-2 Conv-BN-ReLU stages to one 16-channel map at stride 4 ('0')."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.out_channels = 16

    def forward(self, x):
        return {"0": self.body(x)}


class FasterRCNNScores(nn.Module):
    """torchvision's own FasterRCNN (its transform, AnchorGenerator, RPN with NMS, MultiScaleRoIAlign,
    TwoMLPHead, FastRCNNPredictor and postprocess), as exported for inference: one image in, the
    kept detections' boxes and scores out."""

    def __init__(self):
        super().__init__()
        from torchvision.models.detection import FasterRCNN
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
        from torchvision.models.detection.rpn import AnchorGenerator
        from torchvision.ops import MultiScaleRoIAlign
        self.m = FasterRCNN(TinyBackbone(), num_classes=None, rpn_anchor_generator=AnchorGenerator(sizes=((16, 32),), aspect_ratios=((0.5, 1.0, 2.0),)),
                            box_roi_pool=MultiScaleRoIAlign(["0"], output_size=4, sampling_ratio=2), box_head=TwoMLPHead(16 * 4 * 4, 32),
                            box_predictor=FastRCNNPredictor(32, 4), min_size=64, max_size=64, rpn_pre_nms_top_n_test=60,
                            rpn_post_nms_top_n_test=20, box_detections_per_img=12, box_score_thresh=0.0)

    def forward(self, images):
        out = self.m([images[0]])[0]
        return out["boxes"], out["scores"]


class Tiny32Backbone(TinyBackbone):
    """TinyBackbone at 32 channels: FCOS's head has GroupNorm(32)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.out_channels = 32


class DetectorOutputs(nn.Module):
    """A torchvision detector as exported for inference: one image in, the named outputs of its one result out."""

    def __init__(self, m, keys):
        super().__init__()
        self.m, self.keys = m, keys

    def forward(self, images):
        out = self.m([images[0]])[0]
        return tuple(out[k] for k in self.keys)


def torchvision_detector(kind):
    """torchvision's own MaskRCNN, KeypointRCNN, RetinaNet or FCOS on the tiny backbone, 64×64."""
    from torchvision.models.detection import FCOS, KeypointRCNN, MaskRCNN, RetinaNet
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.models.detection.rpn import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign
    anchors = AnchorGenerator(sizes=((16, 32),), aspect_ratios=((0.5, 1.0, 2.0),))
    common = dict(min_size=64, max_size=64)
    # the heads at the backbone's 16 channels (torchvision's defaults, 256 to 1024 wide, would make 14–72 MB files)
    rpn = dict(rpn_anchor_generator=anchors, box_roi_pool=MultiScaleRoIAlign(["0"], 4, 2), box_head=TwoMLPHead(16 * 4 * 4, 32), rpn_pre_nms_top_n_test=60,
               rpn_post_nms_top_n_test=20, box_detections_per_img=8, box_score_thresh=0.0, **common)
    if kind == "mask_rcnn":
        return MaskRCNN(TinyBackbone(), num_classes=None, box_predictor=FastRCNNPredictor(32, 3), mask_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
                        mask_head=MaskRCNNHeads(16, (16, 16), 1), mask_predictor=MaskRCNNPredictor(16, 16, 3), **rpn)
    if kind == "keypoint_rcnn":
        return KeypointRCNN(TinyBackbone(), num_classes=None, box_predictor=FastRCNNPredictor(32, 2), keypoint_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
                            keypoint_head=KeypointRCNNHeads(16, (16, 16)), keypoint_predictor=KeypointRCNNPredictor(16, 5), **rpn)
    if kind == "retinanet":
        return RetinaNet(TinyBackbone(), num_classes=3, anchor_generator=anchors, detections_per_img=12, score_thresh=0.0, **common)
    return FCOS(Tiny32Backbone(), num_classes=3, anchor_generator=AnchorGenerator(sizes=((8,),), aspect_ratios=((1.0,),)), detections_per_img=12, score_thresh=0.0, **common)


def detector_case(kind, keys, loss):
    def case():
        m = torchvision_detector(kind)
        with torch.no_grad():  # distinct scores: RetinaNet's prior makes every fresh score 0.01, and ties pick detections arbitrarily
            for p in m.parameters():
                if p.dim() == 1:
                    p.add_(0.5 * torch.randn_like(p))
        return dict(model=DetectorOutputs(m, keys), stop_gradient=roi_align_boxes, inputs={"images": torch.rand(1, 3, 64, 64)},
                    outputs=list(keys), opset=11, dynamic={}, target=lambda out: {}, loss=loss)
    return case


def roi_align_boxes(proto):
    """The boxes RoiAlign reads: torchvision detaches its proposals, a cut the export loses."""
    return [n.input[1] for n in proto.graph.node if n.op_type == "RoiAlign"]


def faster_rcnn_case():
    return dict(model=FasterRCNNScores(), stop_gradient=roi_align_boxes, inputs={"images": torch.rand(1, 3, 64, 64)}, outputs=["boxes", "scores"], opset=11,
                dynamic={}, target=lambda out: {}, loss=lambda out, t: out[1].sum())


CASES = {"detr": detr_case, "rtdetr": rtdetr_case, "faster_rcnn": faster_rcnn_case,
         # the kept detections' scores, and what each head adds: the pasted masks, the keypoints' scores, the decoded boxes
         "mask_rcnn": detector_case("mask_rcnn", ("scores", "masks"), lambda out, t: out[0].sum() + out[1].mean()),
         "keypoint_rcnn": detector_case("keypoint_rcnn", ("scores", "keypoints_scores"), lambda out, t: out[0].sum() + 0.1 * out[1].sum()),
         "retinanet": detector_case("retinanet", ("scores", "boxes"), lambda out, t: out[0].sum() + 0.01 * out[1].sum()),
         "fcos": detector_case("fcos", ("scores", "boxes"), lambda out, t: out[0].sum() + 0.01 * out[1].sum())}
