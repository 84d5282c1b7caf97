#!/usr/bin/env python3
"""PyTorch side of bench/foreign.ts (issue 12): foreign CNNs, the papers' TTA code, training steps.

Run with Debian's system python (torch 1.13, torchvision 0.14):

    /usr/bin/python3 bench/foreign_torch.py --export tmp/foreign-models
        writes <name>.onnx (opset 13, BatchNormalization kept, dynamic batch) and <name>.pt (the
        same weights) for: cnn28 (bench/torch_models.make_cnn, the ResNet-style CNN of
        bench/models/cnn.onnx), resnet18_64 / resnet18_224 (torchvision resnet18, one torch model
        exported at two input sizes), mobilenet_v2_224 (torchvision mobilenet_v2); with
        --only NAME,… just those, among them torchvision efficientnet_b0, mobilenet_v3_large,
        resnet50 and regnet_y_400mf at 224×224 (efficientnet_b0_224, …), which bench/foreign.ts
        exports when asked for them.
    /usr/bin/python3 bench/foreign_torch.py --run NAME --config CFG --batch 64 --threads 2 --reps 10
        times one configuration in this process and prints one JSON line (median ms, peak RSS).

Configurations: infer (eval, no_grad), bn-adapt (train-mode BN forward, no grad: batch
statistics), tent / eata / sar (make_tta_fixtures.py's tent_step / eata_step / sar_step,
which follow the papers' code, with configure_norm_adapt + collect_params), full (CE, every
parameter, SGD), norm (CE, BatchNorm affine only), lora (CE, rank-8 LoRA on every non-grouped
Conv2d and Linear as HF PEFT builds it: A = Conv(k×k, r), B = 1×1 Conv; base weights frozen).
Training steps run BatchNorm in train mode, as refit's batchNorm: 'train'.

EATA and SAR filter samples by entropy; on random weights and random inputs the filters would
drop every sample (then no backward runs). Both sides therefore open the margins (EATA's e_margin
and SAR's margin = 1.001·ln C, which no softmax entropy exceeds; EATA's d_margin = 2, which no
|cosine| reaches) so that every sample updates: the cost of an adapting batch.
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time
import warnings


def _threads_from_argv(default=2):
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
    return str(default)


# As bench/torch_step.py: BLAS single-threaded inside torch's intra-op threads.
os.environ.setdefault("OMP_NUM_THREADS", _threads_from_argv())
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", _threads_from_argv())

import torch  # noqa: E402
from torch_blas import require_fast_blas  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "test", "fixtures", "tta"))
from torch_models import make_cnn  # noqa: E402
import make_tta_fixtures as ref  # noqa: E402  (the papers' Tent/EATA/SAR code, as used for parity)

warnings.filterwarnings("ignore")
CLASSES = 10
MARGIN_FACTOR = 1.001  # margin = 1.001·ln C: softmax entropy never exceeds ln C, so every sample passes
D_MARGIN = 2.0  # |cosine| < 2 always: EATA's redundancy filter keeps every sample

# name -> (architecture, input C,H,W)
MODELS = {
    "cnn28": ("cnn", (1, 28, 28)),
    "resnet18_64": ("resnet18", (3, 64, 64)),
    "resnet18_224": ("resnet18", (3, 224, 224)),
    "mobilenet_v2_224": ("mobilenet_v2", (3, 224, 224)),
    "efficientnet_b0_224": ("efficientnet_b0", (3, 224, 224)),
    "mobilenet_v3_large_224": ("mobilenet_v3_large", (3, 224, 224)),
    "resnet50_224": ("resnet50", (3, 224, 224)),
    "regnet_y_400mf_224": ("regnet_y_400mf", (3, 224, 224)),
}
FIRST = ("cnn28", "resnet18_64", "resnet18_224", "mobilenet_v2_224")  # --export without --only
SEEDS = {"cnn": 0, "resnet18": 10, "mobilenet_v2": 11, "efficientnet_b0": 12, "mobilenet_v3_large": 13, "resnet50": 14, "regnet_y_400mf": 15}


def build(arch):
    """Deterministic weights; BN statistics calibrated and BN affine perturbed (so the export keeps
    one initializer per tensor, as bench/torch_models.make_cnn explains), head scaled so the
    predictions are confident and varied (softmax entropy well below ln C)."""
    torch.manual_seed(SEEDS[arch])
    if arch == "cnn":
        return make_cnn(32, CLASSES, seed=0)
    m = getattr(torchvision.models, arch)(num_classes=CLASSES)
    hw = 64
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.add_(0.01 * torch.randn(mod.weight.shape))
                mod.bias.add_(0.01 * torch.randn(mod.bias.shape))
            elif arch not in ("resnet18", "mobilenet_v2") and isinstance(mod, (nn.Conv2d, nn.Linear)) and mod.bias is not None:
                # zero-initialised biases (squeeze-excitation, the head) would be one initializer in the export
                mod.bias.add_(0.01 * torch.randn(mod.bias.shape))
        m.train()
        for _ in range(3):
            m(torch.randn(8, 3, hw, hw))
        head = [mod for mod in m.modules() if isinstance(mod, nn.Linear)][-1]
        head.weight.mul_(20.0)
    return m


def export(out_dir, only=None):
    import onnx
    os.makedirs(out_dir, exist_ok=True)
    made = {}
    for name, (arch, chw) in MODELS.items():
        if (only is None and name not in FIRST) or (only is not None and name not in only):
            continue
        if arch not in made:
            made[arch] = build(arch).eval()
            torch.save(made[arch].state_dict(), os.path.join(out_dir, f"{arch}.pt"))
        m = made[arch]
        path = os.path.join(out_dir, f"{name}.onnx")
        torch.onnx.export(m, (torch.randn(2, *chw),), path, input_names=["x"], output_names=["logits"], opset_version=13,
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, do_constant_folding=False,
                          training=torch.onnx.TrainingMode.PRESERVE)
        p = onnx.load(path)
        onnx.checker.check_model(p)
        inits = {i.name for i in p.graph.initializer}
        missing = [n for n, _ in m.named_parameters() if n not in inits]
        print(f"{path}: {len(p.graph.node)} nodes, {sum(x.numel() for x in m.parameters())} params, missing initializers: {missing}")


class Wrap(nn.Module):
    """The parity code's models return (logits, features)."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x), None


class LoraConv(nn.Module):
    def __init__(self, base, r=8, alpha=8):
        super().__init__()
        self.base = base
        self.A = nn.Conv2d(base.in_channels, r, base.kernel_size, base.stride, base.padding, base.dilation, bias=False)
        self.B = nn.Conv2d(r, base.out_channels, 1, bias=False)
        nn.init.zeros_(self.B.weight)
        self.s = alpha / r

    def forward(self, x):
        return self.base(x) + self.s * self.B(self.A(x))


class LoraLinear(nn.Module):
    def __init__(self, base, r=8, alpha=8):
        super().__init__()
        self.base = base
        self.A = nn.Linear(base.in_features, r, bias=False)
        self.B = nn.Linear(r, base.out_features, bias=False)
        nn.init.zeros_(self.B.weight)
        self.s = alpha / r

    def forward(self, x):
        return self.base(x) + self.s * self.B(self.A(x))


def add_lora(m):
    for name, child in list(m.named_children()):
        if isinstance(child, nn.Conv2d) and child.groups == 1:
            setattr(m, name, LoraConv(child))
        elif isinstance(child, nn.Linear):
            setattr(m, name, LoraLinear(child))
        else:
            add_lora(child)
    return m


def median_ms(fn, reps, warmup):
    """Median ms of reps calls after warmup calls, every call's ms, and minor page faults per call."""
    for _ in range(warmup):
        fn()
    ts = []
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts), ts, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / reps


def run(args):
    torch.set_num_threads(args.threads)
    require_fast_blas()  # refuse to time PyTorch on the reference BLAS (torch_blas.py)
    arch, chw = MODELS[args.run]
    m = build(arch)
    m.load_state_dict(torch.load(os.path.join(args.dir, f"{arch}.pt")))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, *chw, generator=g)
    y = torch.randint(0, CLASSES, (args.batch,), generator=g)
    cfg = args.config
    extra = {}
    if cfg == "infer":
        m.eval()

        def fn():
            with torch.no_grad():
                m(x)
    elif cfg == "bn-adapt":
        m.train()

        def fn():
            with torch.no_grad():
                m(x)
    elif cfg in ("tent", "eata", "sar"):
        model = ref.configure_norm_adapt(Wrap(m))
        params, names = ref.norm_params(model, sar_rule=(cfg == "sar"))
        extra["trainable"] = sum(p.numel() for p in params)
        lr = 0.00025 if args.batch >= 32 else 0.00025 / 64 * args.batch * 2  # SAR's main.py, as refit's paperLr
        if cfg == "tent":
            opt = torch.optim.SGD(params, lr, momentum=0.9)

            def fn():
                ref.tent_step(model, opt, x)
        elif cfg == "eata":
            opt = torch.optim.SGD(params, lr, momentum=0.9)
            # Fisher on two batches of the same distribution (refit: fisherData of the same size).
            fx = torch.randn(2 * args.batch, *chw, generator=torch.Generator().manual_seed(2))
            fishers = ref.compute_fishers(model, params, [fx[: args.batch], fx[args.batch:]])
            state = {"probs": None}

            def fn():
                _, _, used, state["probs"] = ref.eata_step(model, opt, x, fishers, MARGIN_FACTOR * math.log(CLASSES), state["probs"], 2000.0, D_MARGIN)
                extra["used"] = int(used.numel())
        else:
            opt = ref.SAM(params, torch.optim.SGD, lr=lr, momentum=0.9)
            state = {"ema": None}

            def fn():
                _, _, _, used, _, state["ema"] = ref.sar_step(model, opt, x, MARGIN_FACTOR * math.log(CLASSES), state["ema"])
                extra["used"] = int(used.numel())
    else:
        if cfg == "lora":
            add_lora(m)
        m.train()
        if cfg == "full":
            train = [p for p in m.parameters()]
        elif cfg == "norm":
            m.requires_grad_(False)
            for mod in m.modules():
                if isinstance(mod, nn.BatchNorm2d):
                    mod.requires_grad_(True)
            train = [p for p in m.parameters() if p.requires_grad]
        else:
            m.requires_grad_(False)
            for mod in m.modules():
                if isinstance(mod, (LoraConv, LoraLinear)):
                    mod.A.requires_grad_(True)
                    mod.B.requires_grad_(True)
            train = [p for p in m.parameters() if p.requires_grad]
        extra["trainable"] = sum(p.numel() for p in train)
        opt = torch.optim.SGD(train, lr=1e-3)

        def fn():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(m(x), y).backward()
            opt.step()
    t0 = time.perf_counter()
    fn()
    first = (time.perf_counter() - t0) * 1e3
    med, ts, minflt = median_ms(fn, args.reps, args.warmup)
    return {"engine": "torch", "model": args.run, "config": cfg, "batch": args.batch, "threads": torch.get_num_threads(),
            "ms": med, "times": ts, "minflt_per_call": minflt, "first_ms": first, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "cpu_s": resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_SELF).ru_stime,
            "torch": torch.__version__, **extra}


def profile(args):
    """Top autograd ops of one Tent step and one full step (torch.autograd.profiler)."""
    torch.set_num_threads(args.threads)
    require_fast_blas()  # refuse to time PyTorch on the reference BLAS (torch_blas.py)
    arch, chw = MODELS[args.run]
    out = {}
    for cfg in ("tent", "full"):
        m = build(arch)
        m.load_state_dict(torch.load(os.path.join(args.dir, f"{arch}.pt")))
        x = torch.randn(args.batch, *chw, generator=torch.Generator().manual_seed(1))
        y = torch.randint(0, CLASSES, (args.batch,))
        if cfg == "tent":
            model = ref.configure_norm_adapt(Wrap(m))
            params, _ = ref.norm_params(model)
            opt = torch.optim.SGD(params, 0.00025, momentum=0.9)
            fn = lambda: ref.tent_step(model, opt, x)  # noqa: E731
        else:
            m.train()
            opt = torch.optim.SGD(m.parameters(), lr=1e-3)

            def fn():
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(m(x), y).backward()
                opt.step()
        fn()
        fn()
        with torch.autograd.profiler.profile() as prof:
            for _ in range(3):
                fn()
        rows = []
        for e in prof.key_averages():
            rows.append({"op": e.key, "self_ms": e.self_cpu_time_total / 1e3 / 3, "calls": e.count / 3})
        rows.sort(key=lambda r: -r["self_ms"])
        out[cfg] = rows[:15]
    return {"engine": "torch", "model": args.run, "batch": args.batch, "profile": out}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--export", metavar="DIR")
    ap.add_argument("--only", help="with --export: these models (comma-separated)")
    ap.add_argument("--run", choices=list(MODELS))
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--dir", default=os.path.join(HERE, "..", "tmp", "foreign-models"))
    ap.add_argument("--config", default="infer")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    if args.export:
        only = args.only.split(",") if args.only else None
        unknown = [n for n in only or [] if n not in MODELS]
        if unknown:
            sys.exit(f"--only: unknown models {unknown}; known: {list(MODELS)}")
        export(args.export, only)
        return
    print(json.dumps(profile(args) if args.profile else run(args)))


if __name__ == "__main__":
    main()
