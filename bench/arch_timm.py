"""timm's own model classes (timm 1.0.29, bench/requirements-timm.txt), not re-written: the
architectures most vision models on onnxruntime come from, built by `timm.create_model(name,
num_classes=10, exportable=True)` as timm's onnx_export.py builds them, random weights (timm's own
init; norms perturbed, then BatchNorm running statistics measured and the logits scaled: see
_calibrate), exported by torch.onnx (Debian's torch 1.13) with timm's names (input0, output0),
batch dynamic, and height and width dynamic for the convolutional nets (timm's --dynamic-size),
opset 14. For bench/popular_architectures.py.

One difference from timm's onnx_export: it exports with TrainingMode.EVAL, where torch.onnx folds
every BatchNorm that follows a convolution into the convolution's weights. This bench exports with
TrainingMode.PRESERVE on the eval-mode model (the same graph, BatchNorm kept), so that each
parameter's gradient has an initializer to compare with and Tent has norm layers to adapt; see
docs/real-models.md for what refit does with the folded file.

PyTorch's gradients, the reference, are computed in float64 (the model and the images cast; the
file is the float32 export): on these deep ReLU nets PyTorch's own float32 gradients differ from
its float64 ones by up to 1e-2 (Inception v3, Res2Net, DenseNet), with oneDNN on or off by turns,
where a ReLU input lies within float32 rounding of 0 (see _calibrate). ConViT makes float32
tensors in its forward and keeps a float32 reference.

Sizes: 64×64 inputs (56 where a 14- or 4·7-pixel grid needs it, 96 for Inception v3, 240 for
CrossViT), batch 2; the transformers' depths cut to 2 blocks where timm takes a depth. Loss:
cross-entropy of the 10 logits.

Without timm installed (pip install --no-deps --target tmp/pypi/timm -r bench/requirements-timm.txt)
this family has no cases and says so.
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
SITE = os.environ.get("REFIT_TIMM_SITE", os.path.join(HERE, "..", "tmp", "pypi", "timm"))
if os.path.isdir(SITE) and SITE not in sys.path:
    sys.path.insert(0, SITE)
try:
    import timm
except ImportError:
    timm = None
    print("arch_timm: timm is not installed (bench/requirements-timm.txt); no timm_* cases", file=sys.stderr)

# name: (timm model, input side, create_model kwargs, height and width dynamic)
MODELS = {
    # residual and grouped CNNs
    "resnet26d": ("resnet26d", 64, {}, True),
    "seresnext26d": ("seresnext26d_32x4d", 64, {}, True),
    "resnest14d": ("resnest14d", 64, {}, True),
    "res2net50": ("res2net50_14w_8s", 64, {}, True),
    "skresnet18": ("skresnet18", 64, {}, True),
    "resnetblur18": ("resnetblur18", 64, {}, True),
    "regnetx_002": ("regnetx_002", 64, {}, True),
    "regnety_002": ("regnety_002", 64, {}, True),
    "dla34": ("dla34", 64, {}, True),
    "dpn48b": ("dpn48b", 64, {}, True),
    "densenet121": ("densenet121", 64, {}, True),
    "inception_v3": ("inception_v3", 96, {}, True),
    "xception41": ("xception41", 64, {}, True),
    "cspresnet50": ("cspresnet50", 64, {}, True),
    "cs3darknet_focus_s": ("cs3darknet_focus_s", 64, {}, True),
    "hrnet_w18_small": ("hrnet_w18_small", 64, {}, True),
    "tresnet_m": ("tresnet_m", 64, {}, True),
    "selecsls42b": ("selecsls42b", 64, {}, True),
    "gernet_s": ("gernet_s", 64, {}, True),
    "repvgg_a0": ("repvgg_a0", 64, {}, True),
    "mobileone_s0": ("mobileone_s0", 64, {}, True),
    "nf_resnet26": ("nf_resnet26", 64, {}, True),
    "hgnetv2_b0": ("hgnetv2_b0", 64, {}, True),
    "ese_vovnet19b_dw": ("ese_vovnet19b_dw", 64, {}, True),
    # mobile CNNs: depthwise convolutions, squeeze-excitation, hard-swish
    "efficientnet_b0": ("efficientnet_b0", 64, {}, True),
    "tf_efficientnet_b0": ("tf_efficientnet_b0", 64, {}, False),  # TF 'same' padding, fixed at export (Conv2dSameExport)
    "efficientnetv2_rw_t": ("efficientnetv2_rw_t", 64, {}, True),
    "mobilenetv3_small": ("mobilenetv3_small_100", 64, {}, True),
    "mobilenetv3_large": ("mobilenetv3_large_100", 64, {}, True),
    "mobilenetv4_conv_small": ("mobilenetv4_conv_small", 64, {}, True),
    "lcnet_050": ("lcnet_050", 64, {}, True),
    "ghostnet": ("ghostnet_100", 64, {}, True),
    "ghostnetv2": ("ghostnetv2_100", 64, {}, True),
    "mixnet_s": ("mixnet_s", 64, {}, True),
    "mnasnet_small": ("mnasnet_small", 64, {}, True),
    "rexnet_100": ("rexnet_100", 64, {}, True),
    "repvit_m0_9": ("repvit_m0_9", 64, {}, True),
    "fastvit_t8": ("fastvit_t8", 64, {}, True),
    "efficientvit_b0": ("efficientvit_b0", 64, {}, True),
    "mobilevitv2_050": ("mobilevitv2_050", 64, {}, False),
    "edgenext_xx_small": ("edgenext_xx_small", 64, {}, False),
    # modern CNNs and metaformers
    "convnext_atto": ("convnext_atto", 64, {}, True),
    "convnextv2_atto": ("convnextv2_atto", 64, {}, True),
    "inception_next_tiny": ("inception_next_tiny", 64, {}, True),
    "poolformer_s12": ("poolformer_s12", 64, {}, True),
    "poolformerv2_s12": ("poolformerv2_s12", 64, {}, True),
    "focalnet_tiny_srf": ("focalnet_tiny_srf", 64, {}, False),
    "sequencer2d_s": ("sequencer2d_s", 64, {}, False),
    # attention in CNNs
    "botnet26t": ("botnet26t_256", 64, {"img_size": 64}, False),
    "lambda_resnet26t": ("lambda_resnet26t", 64, {"img_size": 64}, False),
    "efficientvit_m0": ("efficientvit_m0", 64, {"img_size": 64}, False),
    "coatnet_0_rw": ("coatnet_0_rw_224", 64, {"img_size": 64}, False),
    "maxvit_tiny_tf": ("maxvit_tiny_tf_224", 64, {"img_size": 64}, False),
    "levit_128s": ("levit_128s", 64, {"img_size": 64}, False),
    "efficientformerv2_s0": ("efficientformerv2_s0", 64, {"img_size": 64}, False),
    # vision transformers
    "vit_tiny": ("vit_tiny_patch16_224", 64, {"img_size": 64, "depth": 2}, False),
    "deit_tiny_distilled": ("deit_tiny_distilled_patch16_224", 64, {"img_size": 64, "depth": 2}, False),
    "deit3_small": ("deit3_small_patch16_224", 64, {"img_size": 64, "depth": 2}, False),
    "beit": ("beit_base_patch16_224", 64, {"img_size": 64, "depth": 2, "embed_dim": 96, "num_heads": 3}, False),
    "eva02_tiny": ("eva02_tiny_patch14_224", 56, {"img_size": 56, "depth": 2}, False),
    "cait_xxs24": ("cait_xxs24_224", 64, {"img_size": 64, "depth": 2}, False),
    "xcit_nano_12_p16": ("xcit_nano_12_p16_224", 64, {"img_size": 64, "depth": 2}, False),
    "crossvit_tiny": ("crossvit_tiny_240", 240, {"depth": [[1, 1, 0]]}, False),
    "tnt_s": ("tnt_s_patch16_224", 64, {"img_size": 64, "depth": 2}, False),
    "pit_ti": ("pit_ti_224", 64, {"img_size": 64}, False),
    "convit_tiny": ("convit_tiny", 64, {"img_size": 64}, False),
    "coat_lite_tiny": ("coat_lite_tiny", 64, {"img_size": 64}, False),
    "pvt_v2_b0": ("pvt_v2_b0", 64, {}, False),
    "twins_svt_small": ("twins_svt_small", 64, {}, False),
    "swin_tiny": ("swin_tiny_patch4_window7_224", 56, {"img_size": 56, "depths": (2, 2, 2, 2)}, False),
    "swinv2_cr_tiny": ("swinv2_cr_tiny_224", 64, {"img_size": 64}, False),
    "gcvit_xxtiny": ("gcvit_xxtiny", 64, {"img_size": 64}, False),
    "davit_tiny": ("davit_tiny", 64, {}, False),
    "nest_tiny": ("nest_tiny", 64, {"img_size": 64}, False),
    "mvitv2_tiny": ("mvitv2_tiny", 64, {"img_size": 64}, False),
    "hiera_tiny": ("hiera_tiny_224", 64, {"img_size": 64}, False),
    # MLPs
    "mixer_s16": ("mixer_s16_224", 64, {"img_size": 64}, False),
    "resmlp_12": ("resmlp_12_224", 64, {"img_size": 64}, False),
    "gmlp_ti16": ("gmlp_ti16_224", 64, {"img_size": 64}, False),
}


def _norm_classes():
    """timm's own norm layers that are no torch.nn norm subclass (main perturbs those)."""
    from timm.layers import norm

    return tuple(getattr(norm, n) for n in ("RmsNorm", "RmsNorm2d", "SimpleNorm", "SimpleNorm2d") if hasattr(norm, n))


KINKS = {nn.ReLU: (0.0,), nn.ReLU6: (0.0, 6.0), nn.LeakyReLU: (0.0,), nn.Hardswish: (-3.0, 3.0), nn.Hardsigmoid: (-3.0, 3.0)}


def _kink_margin(m, x):
    """How many float32 rounding errors away from a point where its derivative jumps the nearest
    input of the model's ReLU-family modules is, on x: min over elements of |v64| / |v32 − v64|,
    v32 and v64 the inputs in a float32 and a float64 forward. Where that is small, refit's forward
    and PyTorch's (which sum in other orders) can land on opposite sides and take different
    gradients, both right: PyTorch's own float32 and float64 gradients then differ as much."""
    seen, hooks = {}, []
    for mod in m.modules():
        points = next((v for k, v in KINKS.items() if isinstance(mod, k)), None)
        if points:
            hooks.append(mod.register_forward_pre_hook(lambda mod, i, points=points: seen.setdefault(i[0].dtype, []).append([(i[0].double() - p) for p in points])))
    with torch.no_grad():
        m(x)
        try:
            m.double()
            m(x.double())
        except RuntimeError:  # a model that makes float32 tensors in its forward (ConViT): no margin to measure
            seen.pop(torch.float64, None)
        m.float()
    for h in hooks:
        h.remove()
    margin = float("inf")
    for a, b in zip(seen.get(torch.float32, []), seen.get(torch.float64, [])):
        for u, v in zip(a, b):
            margin = min(margin, float((v.abs() / ((u - v).abs() + 1e-30)).min()))
    return margin


def _calibrate(inputs, side):
    """Statistics as a trained model has them, measured after main perturbs the norms: BatchNorm's
    running mean and variance those of what each layer sees on the case's images and 14 more
    random ones, the variance floored at a tenth of the layer's median (a fresh model's 0 and 1 let
    DLA-34's and Inception v3's activations grow to losses of 1e3 and 1e10; a channel nearly
    constant on these images would divide whatever else it sees by √eps); then the classifier
    scaled so that the logits' standard deviation on the case's images is 2 (EfficientNet's reached
    hundreds, a one-hot softmax; without BatchNorm many nets' logits stay near 0, a uniform one).
    The case's images are drawn again while a ReLU-family input lies within 30 of its own float32
    rounding errors of a kink (_kink_margin), up to 50 times, keeping the draw with the widest
    margin: ResNet-26-D's first draw put one at 9e-7, and refit's gradients then differed from
    PyTorch's by 4e-3; on a Res2Net draw PyTorch's own float32 and float64 gradients differed by 0.2."""
    extra = torch.randn(14, 3, side, side)

    def fit(m, x, head):
        """Running statistics measured on x and the extra images; the head scaled for x."""
        bns = [mod for mod in m.modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.track_running_stats]
        momenta = [mod.momentum for mod in bns]
        for mod in bns:
            mod.reset_running_stats()
            mod.momentum = None  # a cumulative average
        m.train()
        if bns:
            m(torch.cat([x, extra]))
        for mod, mo in zip(bns, momenta):
            mod.momentum = mo
            mod.running_var.clamp_(min=0.1 * float(mod.running_var.median()))
        m.eval()
        for p, v in head.items():
            p.copy_(v)
        scale = 2 / float(m(x).std())
        for p in head:
            p.mul_(scale)

    def run(m):
        with torch.no_grad():
            h = m.get_classifier()
            params = [p for part in (h if isinstance(h, (tuple, list)) else (h,)) for p in part.parameters()]
            for p in params:  # MLP-Mixer's, ResMLP's, gMLP's, Hiera's and Sequencer's heads start at zero
                if p.dim() > 1 and not p.any():
                    p.normal_(0, 0.02)
            seen = set()  # values one tensor shares with another name neither (onnx_names): layer scales
            for p in m.parameters():  # (1e-5 or 1e-6 everywhere), GRN's zeros, ConViT's gates and local-init positions
                key = (tuple(p.shape), p.detach().numpy().tobytes())
                if (p.numel() > 1 and not (p != p.flatten()[0]).any()) or key in seen:
                    p.add_(0.1 * torch.randn_like(p)) if not p.any() else p.mul_(1 + 0.1 * torch.randn_like(p))
                if p.dim() == 2 and p.shape[0] == p.shape[1] and torch.equal(p, p.t()):  # ConViT's identity v: is the
                    p.add_(0.02 * torch.randn_like(p))  # export's transposed copy the weight or its transpose?
                seen.add((tuple(p.shape), p.detach().numpy().tobytes()))
            head = {p: p.clone() for p in params}
            draws = []  # (margin, images)
            for _ in range(50):
                fit(m, inputs["input0"], head)
                draws.append((_kink_margin(m, inputs["input0"]), inputs["input0"]))
                if draws[-1][0] > 30:
                    break
                inputs["input0"] = torch.randn(2, 3, side, side)
            d, x = max(draws, key=lambda t: t[0])
            if x is not draws[-1][1]:  # the draw with the widest margin
                inputs["input0"] = x
                fit(m, x, head)
            if len(draws) > 1:
                print(f"arch_timm: {len(draws)} draws of the case's images, the nearest ReLU kink {d:.1f} float32 rounding errors away", file=sys.stderr)

    return run


def _case(model, side, kwargs, dynamic_size):
    def make():
        m = timm.create_model(model, num_classes=10, exportable=True, **kwargs)
        inputs = {"input0": torch.randn(2, 3, side, side)}
        axes = {0: "batch", 2: "height", 3: "width"} if dynamic_size else {0: "batch"}
        return dict(model=m, inputs=inputs, after_norms=_calibrate(inputs, side), outputs=["output0"], opset=14,
                    dynamic={"input0": axes, "output0": {0: "batch"}}, norms=_norm_classes(), reference_float64=True,
                    target=lambda out: torch.tensor([3, 7]), loss=lambda out, y: F.cross_entropy(out[0], y))

    return make


CASES = {} if timm is None else {f"timm_{k}": _case(*v) for k, v in MODELS.items()}
