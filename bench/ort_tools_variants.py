#!/usr/bin/env python3
"""The files transformers.js and optimum users actually download are not the plain torch.onnx
export: onnxruntime's transformer optimizer fuses it (Attention, SkipLayerNormalization,
EmbedLayerNormalization, BiasGelu / FastGelu, …: optimum's "O2") and its dynamic quantizer turns
the MatMuls into int8 (DynamicQuantizeLinear + MatMulInteger: transformers.js's
model_quantized.onnx). This writes both variants of bench/arch_hf.py's exports with onnxruntime's
own Python tools, for bench/ort-tools-variants.ts.

It needs onnxruntime 1.30, onnx and numpy 2 for Python (bench/requirements-ort-tools.txt), kept in
their own folder so Debian's torch keeps its numpy; it imports no torch:

    pip install --no-deps --target tmp/pypi/ortnp -r bench/requirements-ort-tools.txt
    PYTHONPATH=tmp/pypi/ortnp /usr/bin/python3 bench/ort_tools_variants.py --dir tmp/popular-architectures --only hf_bert,hf_gpt2

Writes <name>.fused.onnx and <name>.int8.onnx beside <name>.onnx, and <name>.variants.json (what
each holds, by op type).
"""
import argparse
import collections
import json
import os

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers import optimizer

# model_type for onnxruntime's optimizer, and heads / hidden size of bench/arch_hf.py's configs
CASES = {
    "hf_bert": ("bert", 4, 32),
    "hf_distilbert": ("bert", 4, 32),
    "hf_roberta": ("bert", 4, 32),
    "hf_gpt2": ("gpt2", 4, 32),
    "hf_vit": ("vit", 4, 32),
    "hf_bart": ("bart", 4, 32),
    "hf_t5": ("t5", 4, 32),
    "hf_minilm_l6": ("bert", 12, 384),
}


def ops(path):
    return dict(collections.Counter(f"{n.domain + '.' if n.domain else ''}{n.op_type}" for n in onnx.load(path).graph.node))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--only", default=",".join(CASES))
    a = ap.parse_args()
    for name in a.only.split(","):
        model_type, heads, hidden = CASES[name]
        src = os.path.join(a.dir, f"{name}.onnx")
        fused, int8 = (os.path.join(a.dir, f"{name}.{v}.onnx") for v in ("fused", "int8"))
        opt = optimizer.optimize_model(src, model_type=model_type, num_heads=heads, hidden_size=hidden, opt_level=1, use_gpu=False)
        opt.save_model_to_file(fused)
        quantize_dynamic(src, int8, weight_type=QuantType.QInt8)
        info = {"fused": ops(fused), "int8": ops(int8), "fused_stats": opt.get_fused_operator_statistics()}
        with open(os.path.join(a.dir, f"{name}.variants.json"), "w") as f:
            json.dump(info, f, indent=1)
        print(name, "fused:", {k: v for k, v in info["fused_stats"].items() if v}, "| int8:", {k: v for k, v in info["int8"].items() if "Integer" in k or "Quantize" in k}, flush=True)


if __name__ == "__main__":
    main()
