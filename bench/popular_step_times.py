"""PyTorch's time for one full training step (zero_grad, forward, the case's loss, backward) of each
popular-architectures case, as bench/popular_architectures.py builds it (same seeds, sizes and
losses), at 2 intra-op threads (OpenBLAS, single-threaded inside them; the reference BLAS is refused): median of 7 calls after 2 warm-up calls, in ms. For
bench/popular-architectures.ts --torch-times, which puts refit's step time beside it.

  /usr/bin/python3 bench/popular_step_times.py --out tmp/popular-step-times.json [--only yolov8,clip]
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# as the other benches' PyTorch sides: intra-op threads from --threads, OpenBLAS single-threaded
# inside them (two pools of 2 threads on 2 cores would contend)
os.environ.setdefault("OMP_NUM_THREADS", sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv else "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import torch  # noqa: E402
import popular_architectures as pa  # noqa: E402
from torch_blas import require_fast_blas  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", default=",".join(pa.CASES))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    require_fast_blas()  # refuse to time PyTorch on the reference BLAS (torch_blas.py)
    times = {}
    for name in a.only.split(","):
        torch.manual_seed(0)
        case = pa.CASES[name]()
        m = case["model"].eval()  # as the export: dropout off; the norms' batch statistics as each case sets them
        if "after_norms" in case:  # statistics a case measures on its model (arch_timm.py)
            case["after_norms"](m)
        inputs = case["inputs"]

        def step():
            m.zero_grad(set_to_none=True)
            out = m(*inputs.values())
            out = out if isinstance(out, tuple) else (out,)
            case["loss"](out, case["target"](out)).backward()

        try:
            step()
            step()
            t = []
            for _ in range(7):
                t0 = time.perf_counter()
                step()
                t.append((time.perf_counter() - t0) * 1000)
            times[name] = statistics.median(t)
        except RuntimeError as e:  # a case whose forward caches tensors across calls (LeViT's attention biases)
            times[name] = None
            print(f"{name}: not timed ({str(e).splitlines()[0][:100]})", flush=True)
            continue
        print(f"{name}: {times[name]:.2f} ms", flush=True)
    with open(a.out, "w") as f:
        json.dump({"torch": torch.__version__, "threads": a.threads, "ms": times}, f, indent=1)


if __name__ == "__main__":
    main()
