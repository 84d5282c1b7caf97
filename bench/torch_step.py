#!/usr/bin/env python3
"""PyTorch CPU reference timing for the refit train-step benchmark.

    /usr/bin/python3 bench/torch_step.py --model cnn|transformer --batch 64 --threads 2 \
        --params all|norm --iters 30 --json [--export bench/models/cnn.onnx]

Times the median of `iters` runs (after 5 warmup runs) of
  step:  zero_grad + forward (train mode) + cross-entropy + backward + SGD step
  infer: no_grad forward (eval mode)
With --params norm only BatchNorm/LayerNorm affine params require grad (and are stepped).
--export writes the same model (same seed => same weights, eval mode, BN as inference op)
to ONNX opset 17 with a dynamic batch axis, before any timing touches the weights.
"""
import argparse
import json
import os
import statistics
import sys
import time
import warnings


def _threads_from_argv(default=2):
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return str(default)


# Debian's torch (BLAS_INFO=generic) calls the system libblas.so.3 for Linear/bmm: the netlib
# reference BLAS by default (very slow), OpenBLAS once `apt-get install libopenblas0-pthread`
# switches the alternative. OpenBLAS's own pthread pool spins against torch's OpenMP pool and
# makes timings erratic (2-5x swings measured), so by default BLAS runs single-threaded inside
# torch's --threads intra-op threads (total threads = --threads). Override via the environment.
os.environ.setdefault("OMP_NUM_THREADS", _threads_from_argv())
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", _threads_from_argv())

import torch  # noqa: E402
from torch_blas import require_fast_blas  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_models import Transformer, example_input, make_cnn, make_transformer, norm_param_names  # noqa: E402


def blas_library():
    """Which libblas.so.3 this process actually loaded (reference vs openblas matters a lot)."""
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "blas" in line.lower() and "/" in line}
        return sorted(os.path.realpath(p) for p in libs)
    except OSError:
        return []


def export_onnx(model, path, batch=2):
    import copy

    m = copy.deepcopy(model).eval()
    x = example_input(m, batch)
    in_name = "tokens" if isinstance(m, Transformer) else "x"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            m,
            (x,),
            path,
            input_names=[in_name],
            output_names=["logits"],
            opset_version=17,
            do_constant_folding=False,
            dynamic_axes={in_name: {0: "batch"}, "logits": {0: "batch"}},
            # PRESERVE on an eval() model: BN stays an inference-mode BatchNormalization op.
            # TrainingMode.EVAL would fuse Conv+BN into renamed onnx::Conv_* weights in torch 1.13.
            training=torch.onnx.TrainingMode.PRESERVE,
            keep_initializers_as_inputs=False,
        )
    try:
        import onnx

        proto = onnx.load(path)
        onnx.checker.check_model(proto)
        inits = {i.name for i in proto.graph.initializer}
        missing = [n for n, _ in m.named_parameters() if n not in inits]
        if missing:
            raise RuntimeError(f"exported initializers miss parameters: {missing}")
    except ImportError:
        pass


def median_ms(fn, iters, warmup=5):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["cnn", "transformer"], required=True)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--params", choices=["all", "norm"], default="all")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--width", type=int, default=32, help="cnn width (channels of the first stage)")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--export", metavar="PATH", help="also export the model to ONNX (opset 17, dynamic batch)")
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    require_fast_blas()  # refuse to time PyTorch on the reference BLAS (torch_blas.py)
    model = make_cnn(args.width, seed=args.seed) if args.model == "cnn" else make_transformer(seed=args.seed)
    if args.export:
        export_onnx(model, args.export)

    trainable = norm_param_names(model) if args.params == "norm" else {n for n, _ in model.named_parameters()}
    for n, p in model.named_parameters():
        p.requires_grad_(n in trainable)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=args.lr)

    g = torch.Generator().manual_seed(args.seed + 1)
    if args.model == "cnn":
        x = torch.randn(args.batch, 1, 28, 28, generator=g)
    else:
        x = torch.randint(0, model.vocab, (args.batch, model.T), generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    def infer():
        with torch.no_grad():
            model(x)

    model.train()
    step_ms = median_ms(step, args.iters)
    model.eval()
    infer_ms = median_ms(infer, args.iters)

    res = {
        "model": args.model,
        "batch": args.batch,
        "threads": args.threads,
        "params": args.params,
        "step_ms": round(step_ms, 3),
        "infer_ms": round(infer_ms, 3),
        "torch_version": torch.__version__,
        "n_params": sum(p.numel() for p in model.parameters()),
        "n_trainable": sum(p.numel() for p in params),
        "blas": blas_library(),
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "peak_rss_mb": round(__import__("resource").getrusage(__import__("resource").RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k}: {v}")


if __name__ == "__main__":
    main()
