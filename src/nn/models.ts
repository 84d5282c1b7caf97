// refit's shipped source models for 1×28×28 images (Fashion-MNIST). Each has input `x`
// [N, 1, 28, 28] and outputs `logits` [N, classes] and `features` [N, D], the penultimate
// representation that test-time adaptation methods such as LAME and T3A read.
import type { Model } from '../onnx/ir.ts';
import { NetBuilder, NetError, type Value } from './net-builder.ts';

export interface ResnetCnnOptions {
  /** Width of the first stage; stages have widths w, 2w, 4w. @default 32 */
  width?: number;
  /** Basic blocks per stage. @default [1, 1, 1] */
  blocks?: [number, number, number];
  /** @default 10 */
  classes?: number;
  seed: number;
}

/**
 * A ResNet-style CNN with BatchNorm (He et al. 2016, "basic" blocks): stem conv 3×3 → three stages
 * at widths w, 2w, 4w (stride-2 downsampling with 1×1 projection shortcuts entering stages 2 and 3)
 * → global average pool (`features`, [N, 4w]) → linear head (`logits`).
 * Names follow torchvision: `stem.conv`, `layer2.0.conv1`, `layer2.0.bn1`, `layer2.0.downsample.conv`, `head`.
 * @default width 32 → 308,074 parameters (plus 1,344 BatchNorm running statistics)
 * @see https://arxiv.org/abs/1512.03385
 */
export function resnetCnn(o: ResnetCnnOptions): Model {
  const w = o.width ?? 32, classes = o.classes ?? 10, blocks = o.blocks ?? [1, 1, 1];
  const net = new NetBuilder({ name: 'resnet_cnn', seed: o.seed });
  const x = net.input('x', ['N', 1, 28, 28]);
  let h = net.scope('stem', () => net.relu(net.batchNorm(net.conv2d(x, { name: 'conv', out: w, kernel: 3, pad: 1, bias: false }), { name: 'bn' })));
  [w, 2 * w, 4 * w].forEach((width, s) => {
    for (let b = 0; b < blocks[s]!; b++) {
      h = net.scope(`layer${s + 1}.${b}`, () => basicBlock(net, h, width, s > 0 && b === 0 ? 2 : 1));
    }
  });
  const features = net.flatten(net.globalAvgPool(h));
  net.output(features, 'features');
  net.output(net.linear(features, { name: 'head', out: classes }), 'logits');
  return net.build();
}

/** conv3×3-BN-ReLU-conv3×3-BN, plus the shortcut (a 1×1 conv + BN when the shape changes), then ReLU. */
function basicBlock(net: NetBuilder, x: Value, out: number, stride: number): Value {
  const conv = (v: Value, name: string, s: number) => net.conv2d(v, { name, out, kernel: 3, stride: s, pad: 1, bias: false });
  let h = net.relu(net.batchNorm(conv(x, 'conv1', stride), { name: 'bn1' }));
  h = net.batchNorm(conv(h, 'conv2', 1), { name: 'bn2' });
  const shortcut = stride !== 1 || x.shape[1] !== out
    ? net.scope('downsample', () => net.batchNorm(net.conv2d(x, { name: 'conv', out, kernel: 1, stride, bias: false }), { name: 'bn' }))
    : x;
  return net.relu(net.add(h, shortcut));
}

export interface VitOptions {
  /** Patch size; must divide 28. @default 4 (7×7 = 49 tokens) */
  patch?: number;
  /** Number of transformer blocks. @default 6 */
  depth?: number;
  /** Token width D. @default 96 */
  dim?: number;
  /** @default 4 */
  heads?: number;
  /** MLP hidden width = mlpRatio · D. @default 2 */
  mlpRatio?: number;
  /** @default 10 */
  classes?: number;
  /** Dropout rate after attention and MLP; identity at inference and in refit's train step. @default 0 */
  dropout?: number;
  seed: number;
}

/**
 * A small Vision Transformer (Dosovitskiy et al. 2021) with pre-LN blocks:
 * patch embedding + learned positional embedding → depth × [x + attn(LN(x)); x + mlp(LN(x))]
 * → LayerNorm → mean over tokens (`features`, [N, D]) → linear head (`logits`). No class token.
 * Names follow timm: `patch_embed`, `pos_embed`, `blocks.0.norm1`, `blocks.0.attn.q`, `blocks.0.mlp.fc1`, `norm`, `head`.
 * @default patch 4, depth 6, dim 96, heads 4, mlpRatio 2 → 456,202 parameters
 * @see https://arxiv.org/abs/2010.11929
 */
export function vit(o: VitOptions): Model {
  const patch = o.patch ?? 4, depth = o.depth ?? 6, dim = o.dim ?? 96, heads = o.heads ?? 4;
  const hidden = Math.round((o.mlpRatio ?? 2) * dim), classes = o.classes ?? 10, p = o.dropout ?? 0;
  if (28 % patch !== 0) throw new NetError(`vit: patch ${patch} must divide the image size 28 (use 4 or 7)`);
  const net = new NetBuilder({ name: 'vit', seed: o.seed, opset: 17 });
  const x = net.input('x', ['N', 1, 28, 28]);
  let h = net.posEmbed(net.patchEmbed(x, { name: 'patch_embed', patch, dim }), { name: 'pos_embed' });
  for (let i = 0; i < depth; i++) {
    h = net.scope(`blocks.${i}`, () => {
      const a = net.add(h, net.dropout(net.selfAttention(net.layerNorm(h, { name: 'norm1' }), { name: 'attn', heads }), p));
      const n2 = net.layerNorm(a, { name: 'norm2' });
      const m = net.scope('mlp', () => net.linear(net.gelu(net.linear(n2, { name: 'fc1', out: hidden })), { name: 'fc2', out: dim }));
      return net.add(a, net.dropout(m, p));
    });
  }
  const features = net.meanTokens(net.layerNorm(h, { name: 'norm' }));
  net.output(features, 'features');
  net.output(net.linear(features, { name: 'head', out: classes }), 'logits');
  return net.build();
}
