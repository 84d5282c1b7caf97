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

Writes <name>.fused.onnx, <name>.int8.onnx and <name>.fp16.onnx (its float16 tool, float32 inputs
and outputs kept, as transformers.js's model_fp16.onnx) beside <name>.onnx, <name>.variants.json (what
each holds, by op type), and for the fused file PyTorch's gradients under its initializers' names
(<name>.fused.grads.safetensors: a tensor the optimizer kept, by name; the Q|K|V weight and bias it
packed for an Attention node, the three gradients concatenated as it concatenated the values) with
<name>.fused.json (the loss; inputs are <name>'s).
"""
import argparse
import collections
import json
import os
import struct

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers import float16, optimizer

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


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    return {k: np.frombuffer(data[v["data_offsets"][0]:v["data_offsets"][1]], dtype=np.float32).reshape(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def write_safetensors(path, tensors):
    header, blobs, at = {}, [], 0
    for k, v in tensors.items():
        b = np.ascontiguousarray(v, dtype=np.float32).tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [at, at + len(b)]}
        blobs.append(b)
        at += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def fused_grads(src, fused, grads):
    """PyTorch's gradients for the fused file's float initializers: by name, or for a tensor packed
    from three of the original's along its last axis (an Attention's Q|K|V), concatenated alike."""
    original = {i.name: numpy_helper.to_array(i) for i in onnx.load(src).graph.initializer}
    out = {}
    for init in onnx.load(fused).graph.initializer:
        v = numpy_helper.to_array(init)
        if init.name in grads:
            out[init.name] = grads[init.name]
        elif v.dtype == np.float32 and v.shape and v.shape[-1] % 3 == 0:
            parts = np.split(v, 3, axis=-1)
            names = [next((k for k, o in original.items() if o.shape == p.shape and np.array_equal(o, p)), None) for p in parts]
            if all(n in grads for n in names):
                out[init.name] = np.concatenate([grads[n] for n in names], axis=-1)
    return out


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
        # transformers.js's model_fp16.onnx: the float16 tool of onnxruntime's transformer package, float32 inputs and outputs kept
        fp16 = onnx.load(src)
        onnx.save(float16.convert_float_to_float16(fp16, keep_io_types=True), os.path.join(a.dir, f"{name}.fp16.onnx"))
        quantize_dynamic(src, int8, weight_type=QuantType.QInt8)
        info = {"fused": ops(fused), "int8": ops(int8), "fused_stats": opt.get_fused_operator_statistics()}
        write_safetensors(os.path.join(a.dir, f"{name}.fused.grads.safetensors"), fused_grads(src, fused, read_safetensors(os.path.join(a.dir, f"{name}.grads.safetensors"))))
        with open(os.path.join(a.dir, f"{name}.json")) as f:
            ref = json.load(f)
        with open(os.path.join(a.dir, f"{name}.fused.json"), "w") as f:
            json.dump({"loss": ref["loss"], "inputs": ref["inputs"], "inputsFrom": name, "variantOf": name}, f)
        with open(os.path.join(a.dir, f"{name}.variants.json"), "w") as f:
            json.dump(info, f, indent=1)
        print(name, "fused:", {k: v for k, v in info["fused_stats"].items() if v}, "| int8:", {k: v for k, v in info["int8"].items() if "Integer" in k or "Quantize" in k}, flush=True)


if __name__ == "__main__":
    main()
