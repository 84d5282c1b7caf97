#!/usr/bin/env python3
"""PyTorch side of bench/detector-bn-adapt.ts: YOLOv8n's layout at full width (bench/popular_architectures.py,
80 classes, 3.2M parameters, random weights), exported at opset 12 with batch, height and width dynamic,
and timed here: plain inference (eval, no_grad) and BN-adapt (BatchNorm on the batch's statistics, no grad).

    /usr/bin/python3 bench/detector_bn_adapt.py --out tmp/detector --batch 4 --size 640 --export
        writes yolov8n.onnx, yolov8n.pt (the same weights) and x.npy (the batch, uniform [0, 1))
    /usr/bin/python3 bench/detector_bn_adapt.py --out tmp/detector --threads 2 --reps 5
        times inference and BN-adapt in a fresh process (its peak RSS is not the exporter's), writes
        bn_adapt.npy (PyTorch's BN-adapted output) and prints one JSON line: median ms of each, peak RSS.
"""
import argparse
import json
import os
import resource
import sys
import time
import warnings

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--batch", type=int, default=4)
ap.add_argument("--size", type=int, default=640)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--reps", type=int, default=5)
ap.add_argument("--export", action="store_true")
a = ap.parse_args()
os.environ["OMP_NUM_THREADS"] = str(a.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from popular_architectures import YOLOv8  # noqa: E402

warnings.filterwarnings("ignore")
torch.set_num_threads(a.threads)
m = YOLOv8(nc=80, w=(16, 32, 64, 128, 256)).eval()
if a.export:
    torch.manual_seed(0)
    m = YOLOv8(nc=80, w=(16, 32, 64, 128, 256))
    with torch.no_grad():  # calibrated running statistics, as a trained model has
        m.train()
        for _ in range(3):
            m(torch.rand(4, 3, 128, 128))
    m.eval()
    os.makedirs(a.out, exist_ok=True)
    x = torch.rand(a.batch, 3, a.size, a.size)
    torch.onnx.export(m, (x,), os.path.join(a.out, "yolov8n.onnx"), opset_version=12, input_names=["images"], output_names=["output0"],
                      dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 2: "anchors"}},
                      training=torch.onnx.TrainingMode.PRESERVE)
    torch.save(m.state_dict(), os.path.join(a.out, "yolov8n.pt"))
    np.save(os.path.join(a.out, "x.npy"), x.numpy())
    sys.exit(0)
m.load_state_dict(torch.load(os.path.join(a.out, "yolov8n.pt")))
x = torch.from_numpy(np.load(os.path.join(a.out, "x.npy")))


def median_ms(f):
    f()
    ts = []
    for _ in range(a.reps):
        t = time.perf_counter()
        f()
        ts.append((time.perf_counter() - t) * 1000)
    return sorted(ts)[len(ts) // 2]


with torch.no_grad():
    infer = median_ms(lambda: m(x))
    for mod in m.modules():  # BN-adapt as its papers' code: batch statistics, no running update
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.train()
            mod.track_running_stats, mod.running_mean, mod.running_var = False, None, None
    bn = median_ms(lambda: m(x))
    np.save(os.path.join(a.out, "bn_adapt.npy"), m(x).numpy())
print(json.dumps({"params": sum(p.numel() for p in m.parameters()), "infer_ms": infer, "bn_adapt_ms": bn,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "torch": torch.__version__}))
